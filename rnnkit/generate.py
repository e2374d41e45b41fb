"""Sampling novel sequences from a recurrent language model.

A *model* here is any ``nn.Module`` called as ``logits, state = model(tokens,
state)`` with ``tokens`` a LongTensor (B, T), ``logits`` (B, T, V) and
``state`` an opaque object (``None`` at the start) carried across calls.
Generation feeds the prime once and then one token per step with the carried
state, so each new token costs one O(1) recurrent step rather than a re-run of
the whole prefix. A model with the step-wise decoding contract
(:mod:`rnnkit.models.feedback`: ``step(ids (B,), state) -> (logits (B, V), state)``)
is stepped through it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn


def _check_filter_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError naming the first invalid sampling argument."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def filter_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    forbid: Sequence[int] = (),
) -> torch.Tensor:
    """Temper and truncate next-token logits; removed tokens get ``-inf``.

    Applied in this order: ``forbid`` (so top-k/top-p choose among allowed
    tokens only), ``temperature``, ``top_k``, ``top_p`` (nucleus on the
    tempered, top-k-truncated distribution).

    Args:
        logits: (B, V) unnormalised scores for the next token. Not modified.
        temperature: divide the logits by this (> 0); < 1 sharpens.
        top_k: keep only the k largest logits per row (exactly k; ties broken
            by ``torch.topk``). ``None`` or ``>= V``: keep all.
        top_p: keep the smallest set of most likely tokens whose probability
            mass is ``>= top_p`` (always at least one). ``None`` or 1: keep all.
        forbid: token ids never to emit (e.g. ``<unk>``).

    Returns:
        (B, V) filtered logits, floating point.
    """
    _check_filter_args(temperature, top_k, top_p)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}")
    vocab = logits.shape[-1]
    out = (logits if logits.is_floating_point() else logits.float()) / temperature  # new tensor
    if len(forbid) > 0:
        ids = torch.as_tensor(list(forbid), dtype=torch.long, device=out.device)
        if ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"forbid ids must be in [0, {vocab}), got {list(forbid)}")
        out[:, ids] = -math.inf
        if torch.isneginf(out).all(dim=-1).any():
            raise ValueError("forbid removes every token of the vocabulary")
    if top_k is not None and top_k < vocab:
        kept = out.topk(top_k, dim=-1).indices
        drop = torch.ones_like(out, dtype=torch.bool).scatter_(-1, kept, False)
        out = out.masked_fill(drop, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Mass strictly before each token in sorted order: a token is needed
        # while that mass is still < top_p. The first one always survives.
        before = torch.cat([torch.zeros_like(probs[:, :1]), probs.cumsum(dim=-1)[:, :-1]], dim=-1)
        drop_sorted = before >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        out = out.masked_fill(drop, -math.inf)
    return out


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _initial_tokens(
    prime: torch.Tensor | Sequence[int] | None, batch_size: int, start_id: int | None, device: torch.device
) -> torch.Tensor:
    """The (B, T0) LongTensor fed on the first call."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if prime is None:
        if start_id is None:
            raise ValueError("give a prime or a start_id (e.g. the <eos> id) to start generation from")
        return torch.full((batch_size, 1), int(start_id), dtype=torch.long, device=device)
    tokens = torch.as_tensor(prime, device=device)
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"prime must hold integer token ids, got dtype {tokens.dtype}")
    tokens = tokens.long()
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 2 or tokens.shape[1] == 0:
        raise ValueError(f"prime must have shape (B, T0) with T0 >= 1, got {tuple(tokens.shape)}")
    if tokens.shape[0] == 1 and batch_size > 1:
        return tokens.expand(batch_size, -1)  # one prime shared by the whole batch
    if batch_size not in (1, tokens.shape[0]):
        raise ValueError(f"batch_size={batch_size} does not match prime batch of {tokens.shape[0]}")
    return tokens


def _step(model: nn.Module, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    """One model call; returns the last position's logits (B, V) and the new state."""
    out = model(tokens, state)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("model(tokens, state) must return a (logits, state) pair")
    logits, state = out
    if logits.dim() != 3 or logits.shape[0] != tokens.shape[0]:
        raise ValueError(f"model must return logits of shape (B, T, V), got {tuple(logits.shape)}")
    return logits[:, -1, :], state


@torch.no_grad()
def sample(
    model: nn.Module,
    *,
    prime: torch.Tensor | None = None,
    batch_size: int = 1,
    max_new_tokens: int,
    start_id: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    forbid: Sequence[int] = (),
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Generate token sequences from a language model, batched.

    Args:
        model: ``logits, state = model(tokens, state)`` module (see module doc).
            Put in eval mode while sampling; every submodule's train/eval mode
            is restored afterwards, also on error.
        prime: (B, T0) or (T0,) token ids to condition on. A single row is
            shared by ``batch_size`` sequences.
        batch_size: number of sequences when there is no prime (or it has
            one row).
        max_new_tokens: number of tokens to generate per sequence (>= 0).
        start_id: without a prime, every sequence starts from this token (the
            LM's ``<eos>``, which separates sentences). Ignored with a prime.
        temperature, top_k, top_p, forbid: see :func:`filter_logits`.
        greedy: take the most likely allowed token instead of sampling
            (only ``forbid`` still applies).
        eos_id: a sequence ends after emitting this token (included in its
            output); the others go on, and sampling stops once all ended.
        generator: random source for reproducible samples.

    Returns:
        B lists with the *new* token ids only.
    """
    _check_filter_args(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    tokens = _initial_tokens(prime, batch_size, start_id, _model_device(model))
    out: list[list[int]] = [[] for _ in range(tokens.shape[0])]
    if max_new_tokens == 0:
        return out

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        last, state = _step(model, tokens, None)
        done = [False] * len(out)
        for step in range(max_new_tokens):
            if greedy:
                nxt = filter_logits(last, forbid=forbid).argmax(dim=-1)
            else:
                logits = filter_logits(last, temperature=temperature, top_k=top_k, top_p=top_p, forbid=forbid)
                nxt = torch.multinomial(logits.float().softmax(dim=-1), 1, generator=generator).squeeze(1)
            for b, tok in enumerate(nxt.tolist()):
                if not done[b]:
                    out[b].append(tok)
                    done[b] = tok == eos_id
            if all(done) or step == max_new_tokens - 1:
                break
            # Ended sequences keep being fed (the batch stays rectangular); their
            # outputs are ignored.
            last, state = model.step(nxt, state) if hasattr(model, "step") else _step(model, nxt.unsqueeze(1), state)
    finally:
        for m, mode in modes:
            m.training = mode  # per module: a blanket model.train(mode) would lose mixed modes
    return out
