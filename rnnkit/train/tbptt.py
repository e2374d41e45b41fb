"""Truncated backpropagation through time over a long stream (Williams & Peng 1990).

A streaming task cuts its ``(B, L)`` streams into the windows below; the loop
carries the recurrent state from one window to the next (see
:attr:`rnnkit.train.task.Task.carries_state`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..data.batching import batchify, shard_streams


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


class StreamWindows(Sequence):
    """The TBPTT windows of ``(B, L, ...)`` streams: item ``i`` is ``(window, x, y)``."""

    def __init__(self, streams: Tensor, windows: list[Window]) -> None:
        self.streams, self.windows = streams, windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[Window, Tensor, Tensor]:
        w = self.windows[i]
        return w, self.streams[:, w.start:w.end], self.streams[:, w.start + 1:w.end + 1]


def stream_windows(values: Tensor, plan, eval_streams: int) -> tuple[Tensor, list[Window]]:
    """A split's ``(N,)`` stream cut for ``plan`` (a :class:`~rnnkit.train.task.Plan`):
    training, ``plan.batch_size`` parallel streams sharded over the processes in
    TBPTT(k1, k2) windows; evaluation, up to ``eval_streams`` streams (every process
    evaluates the whole split) in consecutive ``plan.bptt`` windows."""
    if plan.split == "train":
        streams = shard_streams(batchify(values, plan.batch_size), plan.rank, plan.world_size)
        return streams, tbptt_windows(streams.shape[1], plan.bptt_k1 or plan.bptt, plan.bptt)
    streams = batchify(values, max(1, min(eval_streams, len(values) // 2)))
    return streams, tbptt_windows(streams.shape[1], plan.bptt, plan.bptt)


def detach_state(state: Any) -> Any:
    """Cut the graph at a window boundary, keeping the values (a tensor or a tuple of them)."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state.detach()
