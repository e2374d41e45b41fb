"""The weight gradients after a hand-derived backward through time, device-neutral:
each a few large GEMMs or reductions over all steps at once (no per-step work).

Convention (every fused kernel's): ``Y (T, B, S)`` holds the state *after* step ``t``
at index ``t`` in both directions, so the state *before* step ``t`` is ``Y[t - 1]``
(forward) or ``Y[t + 1]`` (reverse), or the initial state for the first processed step.
"""
from __future__ import annotations

from torch import Tensor


def step_order(T: int, reverse: bool) -> list[int]:
    """Time indices in processing order."""
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def prev_split(T: int, reverse: bool) -> tuple[slice, slice, int]:
    """``(cur, prev, first)``: the steps whose previous state is in ``Y``, where those
    states are in ``Y``, and the one step whose previous state is the initial one."""
    if reverse:
        return slice(0, T - 1), slice(1, T), T - 1
    return slice(1, T), slice(0, T - 1), 0


def grad_weight_prev(dA: Tensor, Y: Tensor, s0: Tensor, reverse: bool) -> Tensor:
    r"""``\sum_t dA_t^T s_{t-1}`` for a recurrent weight: ``dA (T, B, G)``, ``Y (T, B, S)``
    -> ``(G, S)``, as one big GEMM plus one for the initial state (no concatenation)."""
    G, S = dA.shape[-1], Y.shape[-1]
    cur, prev, first = prev_split(Y.shape[0], reverse)
    out = dA[first].t() @ s0
    if Y.shape[0] > 1:
        out.addmm_(dA[cur].reshape(-1, G).t(), Y[prev].reshape(-1, S))
    return out


def sum_prev_products(d: Tensor, Y: Tensor, s0: Tensor, reverse: bool) -> Tensor:
    r"""``\sum_{t,b} d_t \odot s_{t-1}`` for a diagonal (peephole) weight: ``d (T, B, *F)``
    with ``Y (T, B, *F')`` and ``s0 (B, *F')`` broadcasting against it -> ``F``."""
    cur, prev, first = prev_split(Y.shape[0], reverse)
    return sum_tb(d[cur] * Y[prev]) + (d[first] * s0).sum(0)


def sum_tb(x: Tensor) -> Tensor:
    """Sum over time and batch: ``(T, B, *F) -> (*F)``."""
    return x.sum(dim=(0, 1))
