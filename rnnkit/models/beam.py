"""Greedy decoding and batched beam search over any model with the encoder–decoder step
contract: ``encode(src, lengths) -> state``, ``step(y_prev (B,), state) -> (logits (B, V),
state)`` and ``reorder(state, index) -> state`` (rows of the hypotheses kept).

Beam search keeps ``beam`` live hypotheses per sentence, expands each by every token and
keeps the ``beam`` best non-finished ones among the ``2 * beam`` best candidates; a
candidate ending in ``<eos>`` is finished and scored by its log-probability divided by
``length ** length_penalty`` (length normalisation: without it short outputs win). A
sentence stops once it has ``beam`` finished hypotheses; at ``max_len`` the live ones
count as finished. With ``beam=1`` this is greedy decoding.
"""
from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def greedy_decode(model, src: Tensor, src_lengths: Tensor, max_len: int, eos_id: int) -> list[list[int]]:
    """The most likely token at every step until ``<eos>`` (not included) or ``max_len``."""
    state = model.encode(src, src_lengths)
    y = torch.full((src.shape[0],), eos_id, dtype=torch.long, device=src.device)
    out, done = [], torch.zeros_like(y, dtype=torch.bool)
    for _ in range(max_len):
        logits, state = model.step(y, state)
        y = logits.argmax(-1)
        out.append(y)
        done |= y == eos_id
        if bool(done.all()):
            break
    rows = torch.stack(out, 1).tolist()
    return [row[:row.index(eos_id)] if eos_id in row else row for row in rows]


@torch.no_grad()
def beam_search(model, src: Tensor, src_lengths: Tensor, max_len: int, eos_id: int, beam: int = 5,
                length_penalty: float = 1.0) -> list[list[int]]:
    """The best finished hypothesis of each source sentence (``<eos>`` not included)."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    b = src.shape[0]
    state = model.encode(src, src_lengths)
    state = model.reorder(state, torch.arange(b, device=src.device).repeat_interleave(beam))
    scores = torch.full((b, beam), float("-inf"), device=src.device)
    scores[:, 0] = 0.0                                   # one live hypothesis per sentence at first
    seqs: list[list[int]] = [[] for _ in range(b * beam)]
    y = torch.full((b * beam,), eos_id, dtype=torch.long, device=src.device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b
    for _ in range(max_len):
        logits, state = model.step(y, state)
        logp = torch.log_softmax(logits.float(), -1)
        vocab = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(b, beam * vocab)
        top_scores, top_idx = cand.topk(min(2 * beam, cand.shape[1]), dim=1)
        rows, new_scores, new_seqs = [], [], []
        for i in range(b):
            kept = []
            if not done[i]:
                for score, idx in zip(top_scores[i].tolist(), top_idx[i].tolist()):
                    if score == float("-inf"):
                        break
                    row, token = i * beam + idx // vocab, idx % vocab
                    if token == eos_id:
                        finished[i].append((score / (len(seqs[row]) + 1) ** length_penalty, seqs[row]))
                    else:
                        kept.append((row, score, seqs[row] + [token]))
                    if len(kept) == beam:
                        break
                done[i] = len(finished[i]) >= beam
            while len(kept) < beam:                      # a finished sentence: rows kept only for the shapes
                kept.append((i * beam, float("-inf"), []))
            for row, score, seq in kept:
                rows.append(row)
                new_scores.append(score if not done[i] else float("-inf"))
                new_seqs.append(seq)
        if all(done):
            break
        index = torch.tensor(rows, device=src.device)
        state = model.reorder(state, index)
        scores = torch.tensor(new_scores, device=src.device).view(b, beam)
        seqs = new_seqs
        y = torch.tensor([s[-1] if s else eos_id for s in seqs], dtype=torch.long, device=src.device)
    for i in range(b):
        if not done[i]:                                  # max_len reached: the live hypotheses count
            for j in range(beam):
                score = float(scores[i, j])
                if score > float("-inf"):
                    finished[i].append((score / (len(seqs[i * beam + j]) + 1) ** length_penalty, seqs[i * beam + j]))
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]
