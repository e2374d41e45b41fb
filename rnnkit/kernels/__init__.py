"""Fast paths for custom cells.

A kernel is a callable with the signature of :func:`rnnkit.nn.scan.scan`
``(cell, p, x (T, B, I), state, mask, reverse) -> (y (T, B, O), final_state)``
that computes exactly what the cell's reference step computes, only faster.
:func:`find` is the seam the scan asks; each kernel is tested against the
reference step, forward and backward.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

from torch import Tensor

from ..cells.base import RecurrentCell

Kernel = Callable[..., tuple]


def find(cell: RecurrentCell, x: Tensor, p: SimpleNamespace) -> Kernel | None:
    """The fused kernel for this cell, input and parameters, or None for the reference loop."""
    return None  # no fused kernels registered yet: the reference scan runs
