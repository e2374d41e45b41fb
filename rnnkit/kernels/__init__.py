"""Fast paths for custom cells.

A kernel is a callable with the signature of the reference loop
:func:`rnnkit.kernels.reference.scan` (re-exported as :func:`rnnkit.nn.scan.scan`)
``(cell, p, x (T, B, I), state, mask, reverse) -> (y (T, B, O), final_state)``
that computes exactly what the cell's reference step computes, only faster; a
kernel handed inputs it does not take calls the reference itself.
Each kernel module exposes ``match(cell, x, p) -> Kernel | None``; :func:`find`
is the seam the scan asks. Every kernel is tested against the reference step,
forward and backward.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

from torch import Tensor

from ..cells.base import RecurrentCell
from . import cpu_fused, parallel_scan, triton_cells

Kernel = Callable[..., tuple]
_MODULES = (parallel_scan, triton_cells, cpu_fused)  # first match wins


def find(cell: RecurrentCell, x: Tensor, p: SimpleNamespace) -> Kernel | None:
    """The fused kernel for this cell, input and parameters, or None for the reference loop."""
    for module in _MODULES:
        kernel = module.match(cell, x, p)
        if kernel is not None:
            return kernel
    return None
