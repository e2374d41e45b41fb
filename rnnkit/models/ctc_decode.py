r"""Decoding CTC outputs: from per-frame label log-probabilities ``(T, C)`` to a labelling.

A labelling :math:`l` has probability :math:`p(l) = \sum_{\pi \in B^{-1}(l)} \prod_t p(\pi_t \mid t)`,
where :math:`B` collapses repeated labels and then removes blanks.

* :func:`greedy_decode` (best path): the most probable label of each frame, collapsed. It
  finds the most probable *path*, which is usually, not always, the most probable labelling.
* :func:`prefix_beam_search` (Hannun et al. 2014, "First-pass large vocabulary continuous
  speech recognition using bi-directional recurrent DNNs", Algorithm 1, without a language
  model): keeps the ``beam`` most probable label *prefixes*, each with the probability of
  its paths ending in blank and in a non-blank, so paths that collapse to the same prefix
  are summed. With a beam that never prunes (every prefix kept) it returns the most probable
  labelling exactly; with ``beam=1`` it keeps one prefix, which agrees with best path when
  each frame's top label carries most of its mass (as a trained model's outputs do).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError, ShapeError
from .ctc import BLANK

NEG_INF = float("-inf")


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def _check(log_probs: Tensor) -> None:
    if log_probs.dim() != 2 or not log_probs.is_floating_point():
        raise ShapeError(f"CTC decoding takes float log-probabilities (frames, labels), got {log_probs.dtype} "
                         f"of shape {tuple(log_probs.shape)}")


def greedy_decode(log_probs: Tensor, blank: int = BLANK) -> list[int]:
    """Best path of ``log_probs`` ``(T, C)``: argmax per frame, repeats collapsed, blanks removed."""
    _check(log_probs)
    out: list[int] = []
    prev = None
    for c in log_probs.argmax(-1).tolist():
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def prefix_beam_search(log_probs: Tensor, beam: int = 8, blank: int = BLANK) -> tuple[list[int], float]:
    """The most probable labelling of ``log_probs`` ``(T, C)`` found by CTC prefix beam
    search, and its log-probability (summed over all its paths that the beam kept)."""
    _check(log_probs)
    if beam < 1:
        raise ConfigError(f"beam must be >= 1, got {beam}")
    frames = log_probs.detach().to("cpu", torch.float64).tolist()
    labels = [c for c in range(log_probs.shape[1]) if c != blank]
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}  # prefix -> (log p blank, non-blank)
    for lp in frames:
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], which: int, value: float) -> None:
            entry = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
            entry[which] = _logaddexp(entry[which], value)

        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            add(prefix, 0, total + lp[blank])                      # a blank: the prefix stays, ending in blank
            last = prefix[-1] if prefix else None
            for c in labels:
                if c == last:
                    add(prefix, 1, pnb + lp[c])                    # a repeat collapses into the same prefix
                    add(prefix + (c,), 1, pb + lp[c])              # ... unless a blank separated them
                else:
                    add(prefix + (c,), 1, total + lp[c])
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    best, (pb, pnb) = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))
    return list(best), _logaddexp(pb, pnb)


def decode_batch(log_probs: Tensor, lengths: Tensor, beam: int | None = None, blank: int = BLANK) -> list[list[int]]:
    """Each row of ``log_probs`` ``(B, T, C)`` up to its length: best path when ``beam`` is
    None or 0, else prefix beam search of that width."""
    rows = log_probs.detach().cpu()
    out = []
    for row, n in zip(rows, lengths.tolist()):
        out.append(greedy_decode(row[:n], blank) if not beam else prefix_beam_search(row[:n], beam, blank)[0])
    return out
