"""Fast paths for custom cells, in an open registry.

A kernel computes exactly what the reference scan computes (:func:`rnnkit.kernels.reference.scan`,
re-exported as :func:`rnnkit.nn.scan.scan`:
``(cell, p, x (T, B, I), state, mask (T, B, 1), reverse) -> (y (T, B, O), final_state)``),
only faster. Each registers a :class:`Kernel` record; :func:`find` (the one seam
:mod:`rnnkit.nn.scan` and :mod:`rnnkit.nn.dispatch` use) asks them in priority order and
returns the first whose ``supports``/``match``/``available`` all say True, else None:
then the reference scan runs. A kernel never falls back itself: an input it cannot
take is refused by its ``match``, with a reason (:func:`explain` lists them).

Layout: :mod:`.registry` (the records), :mod:`.reference` (the scan every kernel
matches), :mod:`.specs` (what the LSTM/GRU kernels of every back end share),
:mod:`.grads` (post-loop weight gradients), :mod:`.step_masks` (recurrent dropout and
zoneout in kernel form), :mod:`.higher_order` (double backward through the reference),
:mod:`.jordan_parallel` (a Jordan network's teacher-forced pass, no scan: one batch of all steps);
the kernels: :mod:`.linear_scan` (any cell linear in its state), :mod:`.cpu` (C time
loops, sources in ``cpu/native/``, found by the loader; in graphs, ``torch.library`` custom ops), :mod:`.triton` (CUDA).

How to add a kernel (one registration and one sample; tests/kernels/test_kernel_parity.py
then checks it against the reference, forward and backward, masks, reverse, float64
gradcheck, with no test of its own needed)::

    from rnnkit.kernels import Kernel, Sample, register

    register(Kernel(
        name="cpu.elman", backend="cpu", run=elman_scan,         # the scan's signature
        supports=lambda cell: type(cell) is ElmanCell or "not an ElmanCell",
        match=lambda cell, x, p, state, mask: x.device.type == "cpu" or "CPU only",
        samples=(Sample("elman", lambda i, h, **kw: ElmanCell(i, h, **kw)),)))

and import its module from here (the built-in ones below), so it registers with the package.

The torch-ops CPU fallback (727 lines: the CPU kernels' loops as per-step torch ops, run
only without a C compiler) was removed: it did not clearly beat the reference scan.
Measured (docs/benchmarks/torch_ops_fallback.json, benchmarks/torch_ops_fallback.py,
B=32, T=100, 1 thread, AVX2 2-core EPYC, loaded machine), forward + backward speedup
over the reference scan: H=128 peephole LSTM 1.20, layer-norm LSTM 1.24, GRU
reset-before 1.68, GRU simplified 1.51; H=512 1.27, 1.00, 1.70, 1.18. Without a
compiler (or with ``RNNKIT_NATIVE=0``) the reference scan runs these cells.
"""
from __future__ import annotations

from .registry import Kernel, Sample, Verdict, explain, find, register, registered, unregister
from . import cpu, linear_scan, triton  # noqa: E402,F401  (the built-in kernels register on import)

__all__ = ["Kernel", "Sample", "Verdict", "explain", "find", "register", "registered", "unregister"]
