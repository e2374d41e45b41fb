"""Fused CPU kernels for the custom cells torch.nn has no kernel for, their time loops
in compiled C (:mod:`rnnkit.kernels.cpu.native`, built on first use):

* :mod:`rnnkit.kernels.cpu.lstm` (``"cpu.lstm"``): :class:`~rnnkit.cells.LSTMCell` with
  peepholes and/or layer norm, with or without projection; any ``LSTMCell`` without
  projection with recurrent dropout or zoneout;
* :mod:`rnnkit.kernels.cpu.gru` (``"cpu.gru"``): :class:`~rnnkit.cells.GRUCell`
  ``"reset_before"`` and ``"simplified"``, step masks included.

Each runs the whole sequence as one ``torch.autograd.Function`` with a hand-derived
backward (no per-step autograd graph): the input projection for all steps as one
GEMM, the time loop in C, and the weight gradients as a few large GEMMs after the
backward loop. That backward is first-order; a backward that builds a graph
(``create_graph=True``: double backward) differentiates the reference scan instead
(:mod:`rnnkit.kernels.higher_order`). In a graph (``torch.compile``, ``torch.export``)
each runs as ``torch.library`` custom ops instead (``rnnkit::lstm_scan``, ``rnnkit::gru_scan``
and their ``_backward`` ops: the same C loops, with fake implementations for shapes), since
dynamo cannot trace a Function that hands addresses to C: no graph break, the same kernel. Padded steps are selected away, never
multiplied by the mask (see :mod:`rnnkit.kernels.cpu.common`).

Without a C compiler (or with ``RNNKIT_NATIVE=0``) both say they are unavailable and
the reference scan runs: the torch-ops versions of these kernels were removed (see
:mod:`rnnkit.kernels` for the measurement).

Why C and not ``torch.compile`` for the pointwise part, measured on the 2-core
CPU box: 35 s to compile on the first call (it needs gcc), and the compiled LSTM
pointwise step took as long per call as the eager ops it replaces (97 us vs 95 us
at B=32, H=128): the call overhead eats the fusion.
"""
from . import gru, lstm, native  # noqa: F401  (importing registers the kernels)
