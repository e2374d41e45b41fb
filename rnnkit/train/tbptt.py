"""Truncated backpropagation through time over a long stream (Williams & Peng 1990).

A streaming task cuts its ``(B, L)`` streams into the windows below; the loop
carries the recurrent state from one window to the next (see
:attr:`rnnkit.train.task.Task.carries_state`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Window:
    """One update: inputs ``[start, end)``, loss on targets from ``score_from``,
    state to carry taken after ``carry_at`` steps (TBPTT(k1, k2))."""

    start: int
    end: int
    score_from: int
    carry_at: int


def tbptt_windows(length: int, k1: int, k2: int) -> list[Window]:
    """Windows over a stream of ``length`` tokens for TBPTT(k1, k2): every k1 steps,
    backpropagate through the last k2. Each target is scored exactly once; with
    k1 == k2 this is the usual split into consecutive chunks."""
    windows, j = [], 0
    while True:
        start = j * k1
        end = min(start + k2, length - 1)
        score_from = start if j == 0 else start + k2 - k1
        if score_from >= end:
            return windows
        windows.append(Window(start, end, score_from, min(k1, end - start)))
        j += 1


def detach_state(state: Any) -> Any:
    """Cut the graph at a window boundary, keeping the values (a tensor or a tuple of them)."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state.detach()
