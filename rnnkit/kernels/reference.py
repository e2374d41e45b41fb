"""The reference scan: any cell over time, one step after another, with exact
length masking. Cells know nothing about time; this loop knows nothing about gates.

It is the definition every fused kernel in this package must match, and the path
a kernel falls back to for inputs it does not take, so it lives here, below the
kernels, rather than in :mod:`rnnkit.nn.scan` (which imports the kernels to stack
layers and re-exports :func:`scan`). It imports nothing from rnnkit but the cell
interface.

Tensors here are time-major: ``x (T, B, I)``.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor

from ..cells.base import RecurrentCell, State


def scan(cell: RecurrentCell, p: SimpleNamespace, x: Tensor, state: State,
         mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """Run ``cell`` over ``x (T, B, I)`` from ``state``.

    ``mask (T, B, 1)`` marks real steps; at padded steps the state is carried
    unchanged and the output is zero, so the final state of each sequence is its
    state at its last real step (for ``reverse``, sequences start at their last
    real step). Returns ``(y (T, B, O), final_state)``.
    """
    # one GEMM for all steps, hoisted out of the loop; unbind (not xp[t]) so that
    # backward writes each step's gradient once instead of a full-size zero tensor per step
    xps = cell.project_input(x, p).unbind(0)
    masks = mask.unbind(0) if mask is not None else None
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs: list[Tensor] = [None] * x.shape[0]  # type: ignore[list-item]
    for t in steps:
        y, new_state = cell.recur(xps[t], state, p)
        if masks is not None:
            m = masks[t]
            new_state = tuple(torch.where(m, new, old) for new, old in zip(new_state, state))
            y = y * m
        outputs[t] = y
        state = new_state
    return torch.stack(outputs), state
