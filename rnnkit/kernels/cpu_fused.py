"""Fused CPU paths for the custom cells torch.nn has no kernel for.

* :mod:`rnnkit.kernels.cpu_lstm_native`: :class:`~rnnkit.cells.LSTMCell` with
  peepholes and/or layer norm, with or without projection, its time loop compiled C
  (:mod:`rnnkit.kernels.native`, built on first use); where no C compiler is found,
  :mod:`rnnkit.kernels.cpu_lstm` computes the same in torch ops;
* :mod:`rnnkit.kernels.cpu_gru_native`: :class:`~rnnkit.cells.GRUCell` ``"reset_before"``
  and ``"simplified"``, the same way (fallback :mod:`rnnkit.kernels.cpu_gru`).

Each runs the whole sequence as one ``torch.autograd.Function`` with a hand-derived
backward (no per-step autograd graph): the input projection for all steps as one
GEMM, the time loop (in C, or per step a torch GEMM plus a handful of in-place
elementwise ops in the fallback), and the weight gradients as a few large GEMMs after
the backward loop. That backward is first-order; a backward that builds a graph
(``create_graph=True``: double backward) differentiates the reference scan instead
(:mod:`rnnkit.kernels.higher_order`). Padded steps are selected away, never
multiplied by the mask (see :mod:`rnnkit.kernels.cpu_common`).

Anything else (other devices and dtypes, tracing or compiling, autocast, subclasses
of the cells, ``GRUCell("reset_after")`` and the plain LSTM, which torch.nn runs)
gets None here, so the reference :func:`rnnkit.nn.scan.scan` runs.

Why C and not ``torch.compile`` for the pointwise part, measured on the 2-core
CPU box: 35 s to compile on the first call (it needs gcc), and the compiled LSTM
pointwise step took as long per call as the eager ops it replaces (97 us vs 95 us
at B=32, H=128): the call overhead eats the fusion.
"""
from __future__ import annotations

from types import SimpleNamespace

from torch import Tensor

from ..cells.base import RecurrentCell
from ..cells.gru import GRUCell
from ..cells.lstm import LSTMCell
from . import cpu_gru, cpu_gru_native, cpu_lstm, cpu_lstm_native, native
from .cpu_common import eager_cpu_ok, tensors_ok
from .step_masks import has_masks, parameter_tensors


def match(cell: RecurrentCell, x: Tensor, p: SimpleNamespace):
    """The fused CPU kernel for ``cell`` on ``x (T, B, I)`` with parameters ``p``, or None."""
    if not eager_cpu_ok(x) or not tensors_ok(x, parameter_tensors(p)):
        return None
    if has_masks(p):  # recurrent dropout, zoneout: in the C loops (any LSTMCell without projection, the GRU variants)
        if not native.available(x.dtype):
            return None
        if type(cell) is LSTMCell and cell.proj_size == 0:
            return cpu_lstm_native.lstm_scan
        return cpu_gru_native.gru_scan if isinstance(cell, GRUCell) and cpu_gru.supports(cell) else None
    if isinstance(cell, LSTMCell) and cpu_lstm.supports(cell):
        return cpu_lstm_native.lstm_scan if native.available(x.dtype) else cpu_lstm.lstm_scan
    if isinstance(cell, GRUCell) and cpu_gru.supports(cell):
        return cpu_gru_native.gru_scan if native.available(x.dtype) else cpu_gru.gru_scan
    return None
