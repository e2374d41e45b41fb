"""Tests of batched sampling from recurrent language models."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from rnnkit.generate import filter_logits, sample


class TableLM(nn.Module):
    """Fake LM whose next-token logits depend only on the current token.

    ``state`` counts the tokens seen so far, so carrying it is observable.
    """

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.calls: list[tuple[tuple[int, ...], Any]] = []  # (tokens shape, state in)

    def forward(self, tokens: torch.Tensor, state: int | None) -> tuple[torch.Tensor, int]:
        self.calls.append((tuple(tokens.shape), state))
        return self.table[tokens], (state or 0) + tokens.shape[1]


class GRULM(nn.Module):
    """Small deterministic recurrent LM; dropout makes train mode visibly random."""

    def __init__(self, vocab: int = 11, hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.drop = nn.Dropout(0.5)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.seen_training: list[bool] = []

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen_training.append(self.training)
        out, h = self.gru(self.drop(self.emb(tokens)), state)
        return self.head(out), h


class Recorder(nn.Module):
    """Wraps a model and keeps every call's input and last-step logits."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.last_logits: list[torch.Tensor] = []

    def forward(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = self.inner(tokens, state)
        self.inputs.append(tokens.clone())
        self.last_logits.append(logits[:, -1].clone())
        return logits, state


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_table(vocab: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(vocab, vocab, generator=gen(seed)) * scale


# ---------------------------------------------------------------- filter_logits
def test_filter_top_p_keeps_expected_set() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    perm = torch.tensor([2, 0, 3, 1])  # second row: same distribution, shuffled ids
    logits = torch.stack([probs.log(), probs[perm].log()])
    expected = {0.01: {0}, 0.4: {0}, 0.75: {0, 1}, 0.85: {0, 1, 2}, 0.97: {0, 1, 2, 3}, 1.0: {0, 1, 2, 3}}
    for top_p, keep in expected.items():
        out = filter_logits(logits, top_p=top_p)
        assert set(torch.isfinite(out[0]).nonzero().flatten().tolist()) == keep, top_p
        kept_row1 = {int(perm[i]) for i in torch.isfinite(out[1]).nonzero().flatten().tolist()}
        assert kept_row1 == keep, top_p
        assert torch.equal(out[0][list(keep)], logits[0][list(keep)])  # survivors unchanged


def test_filter_top_k_temperature_and_forbid() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0], [5.0, 0.0, 1.0, 2.0, 3.0]])
    out = filter_logits(logits, top_k=2)
    assert torch.isfinite(out).tolist() == [[False, True, True, False, False], [True, False, False, False, True]]
    assert torch.equal(filter_logits(logits, top_k=99), logits)
    assert torch.allclose(filter_logits(logits, temperature=0.5), logits * 2)
    out = filter_logits(logits, forbid=[1], top_k=2)  # top-k chooses among allowed tokens
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [2, 3]
    assert torch.isneginf(out[:, 1]).all()
    before = logits.clone()
    filter_logits(logits, temperature=0.3, top_k=1, top_p=0.5, forbid=[0])
    assert torch.equal(logits, before)  # input untouched


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"forbid": [7]}, "forbid"),
        ({"forbid": [0, 1, 2]}, "forbid"),
    ],
)
def test_filter_validates_arguments(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        filter_logits(torch.zeros(2, 3), **kwargs)


# ---------------------------------------------------------------- sample
def test_top_k_never_leaves_the_k_most_likely() -> None:
    table = random_table(8)
    lm = TableLM(table)
    out = sample(lm, batch_size=200, max_new_tokens=30, start_id=0, top_k=3, generator=gen(1))
    top3 = table.topk(3, dim=-1).indices
    emitted = set()
    for seq in out:
        assert len(seq) == 30
        prev = 0
        for tok in seq:
            assert tok in top3[prev].tolist()
            prev = tok
            emitted.add(tok)
    assert len(emitted) > 3  # it really samples, along different paths


def test_forbidden_unk_never_appears() -> None:
    unk = 1
    table = random_table(6)
    table[:, unk] = table.max() + 5.0  # <unk> is the most likely token everywhere
    lm = TableLM(table)
    assert sample(lm, start_id=0, max_new_tokens=5, greedy=True) == [[unk] * 5]  # sanity
    out = sample(lm, batch_size=100, max_new_tokens=20, start_id=0, forbid=[unk], generator=gen(2))
    assert all(unk not in seq for seq in out)
    greedy = sample(lm, batch_size=2, max_new_tokens=10, start_id=0, forbid=[unk], greedy=True)[0]
    assert unk not in greedy


def eos_table() -> torch.Tensor:
    """eos=0. From 2 the sure next token is eos; 3 and 4 alternate forever."""
    table = torch.full((5, 5), -50.0)
    table[2, 0] = table[3, 4] = table[4, 3] = table[0, 2] = table[1, 2] = 0.0
    return table


def test_eos_stops_only_that_sequence() -> None:
    lm = TableLM(eos_table())
    prime = torch.tensor([[1, 2], [1, 3]])
    out = sample(lm, prime=prime, max_new_tokens=6, eos_id=0, generator=gen(0))
    assert out == [[0], [4, 3, 4, 3, 4, 3]]
    assert sample(lm, prime=prime, max_new_tokens=6, eos_id=0, greedy=True) == out
    # Without eos_id the first sequence just goes on.
    assert sample(lm, prime=prime, max_new_tokens=4, greedy=True)[0] == [0, 2, 0, 2]


def test_stops_early_when_all_sequences_ended() -> None:
    lm = TableLM(eos_table())
    out = sample(lm, prime=torch.tensor([[2], [1]]), max_new_tokens=50, eos_id=0, greedy=True)
    assert out == [[0], [2, 0]]
    assert len(lm.calls) == 2  # the prime, then one step; never 50


def test_state_is_carried_one_token_per_step() -> None:
    lm = TableLM(random_table(5))
    sample(lm, prime=torch.tensor([[1, 2, 3]]), max_new_tokens=4, generator=gen(0))
    assert lm.calls == [((1, 3), None), ((1, 1), 3), ((1, 1), 4), ((1, 1), 5)]


def test_greedy_equals_independent_argmax_chain() -> None:
    model = GRULM().eval()
    prime = torch.randint(0, 11, (3, 4), generator=gen(3))
    out = sample(model, prime=prime, max_new_tokens=10, greedy=True)
    seq = prime.clone()
    with torch.no_grad():
        for _ in range(10):
            logits, _ = model(seq, None)  # re-run the whole prefix every step
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert out == seq[:, 4:].tolist()


def test_incremental_logits_match_full_prefix_rerun() -> None:
    rec = Recorder(GRULM().train())  # train mode: sample must switch dropout off
    prime = torch.randint(0, 11, (3, 5), generator=gen(4))
    out = sample(rec, prime=prime, max_new_tokens=8, top_p=0.9, generator=gen(5))
    assert [tuple(x.shape) for x in rec.inputs] == [(3, 5)] + [(3, 1)] * 7
    full = torch.cat([prime, torch.tensor(out)], dim=1)
    model = rec.inner.eval()
    with torch.no_grad():
        full_logits, _ = model(full, None)
    for i, step_logits in enumerate(rec.last_logits):
        torch.testing.assert_close(step_logits, full_logits[:, 5 - 1 + i], atol=1e-5, rtol=1e-5)


def test_low_temperature_approaches_greedy() -> None:
    table = torch.randperm(9 * 9, generator=gen(6)).reshape(9, 9).float()  # distinct: margins >= 1
    lm = TableLM(table)
    greedy = sample(lm, batch_size=50, start_id=3, max_new_tokens=15, greedy=True)
    cold = sample(lm, batch_size=50, start_id=3, max_new_tokens=15, temperature=0.01, generator=gen(7))
    assert cold == greedy
    warm = sample(lm, batch_size=50, start_id=3, max_new_tokens=15, temperature=50.0, generator=gen(7))
    assert warm != greedy


def test_mode_restored() -> None:
    model = GRULM().train()
    model.drop.eval()  # mixed modes must come back exactly
    sample(model, start_id=0, batch_size=2, max_new_tokens=3, generator=gen(0))
    assert model.seen_training == [False, False, False]
    assert model.training and model.gru.training and not model.drop.training
    model.eval()
    sample(model, start_id=0, max_new_tokens=2)
    assert not any(m.training for m in model.modules())


def test_mode_restored_after_error() -> None:
    class Broken(GRULM):
        def forward(self, tokens: torch.Tensor, state: Any) -> Any:
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        sample(model, start_id=0, max_new_tokens=3)
    assert all(m.training for m in model.modules())


def test_reproducible_with_generator_and_shapes() -> None:
    model = GRULM()
    a = sample(model, start_id=0, batch_size=4, max_new_tokens=12, generator=gen(9))
    b = sample(model, start_id=0, batch_size=4, max_new_tokens=12, generator=gen(9))
    assert a == b and len(a) == 4 and all(len(s) == 12 for s in a)
    shared = sample(model, prime=torch.tensor([1, 2, 3]), batch_size=5, max_new_tokens=2, generator=gen(0))
    assert len(shared) == 5  # a 1-D / single-row prime is shared by the batch
    assert sample(model, start_id=0, batch_size=3, max_new_tokens=0) == [[], [], []]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({}, "start_id"),
        ({"start_id": 0, "max_new_tokens": -1}, "max_new_tokens"),
        ({"start_id": 0, "batch_size": 0}, "batch_size"),
        ({"prime": torch.zeros(2, 3, dtype=torch.long), "batch_size": 3}, "batch_size"),
        ({"prime": torch.zeros(2, 0, dtype=torch.long)}, "prime"),
        ({"prime": torch.zeros(2, 3)}, "prime"),
        ({"start_id": 0, "temperature": 0.0}, "temperature"),
        ({"start_id": 0, "top_k": 0}, "top_k"),
        ({"start_id": 0, "top_p": 2.0}, "top_p"),
    ],
)
def test_sample_validates_arguments(kwargs: dict[str, Any], name: str) -> None:
    kwargs.setdefault("max_new_tokens", 3)
    with pytest.raises(ValueError, match=name):
        sample(GRULM(), **kwargs)
