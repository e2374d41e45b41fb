"""Tests of the interpolated (modified) Kneser-Ney n-gram baseline."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

import rnnkit.baselines.ngram as ngram
from rnnkit.baselines import KneserNeyLM
from rnnkit.baselines.ngram import FALLBACK_MODIFIED, kn_discounts
from rnnkit.errors import DataError

A, B, C, D = 0, 1, 2, 3  # D never occurs in training
ABABC = [A, B, A, B, C]


def p(lm: KneserNeyLM, context: list[int], token: int) -> float:
    return math.exp(lm.logprob(context, token))


# ---------------------------------------------------------------- by hand
def test_hand_bigram_modified() -> None:
    lm = KneserNeyLM(order=2, vocab_size=4).fit(ABABC)
    V = 4
    # Bigram raw counts: ab=2, ba=1, bc=1 -> n1=2, n2=1, n3=0: the modified
    # estimate needs n3 > 0, so the order falls back to (0.5, 1, 1.5).
    # Unigram continuation counts N1+(.w): a=1 (ba), b=1 (ab), c=1 (bc), d=0
    # -> n1=3, n2=0: fallback too.
    assert lm.discount_values == [FALLBACK_MODIFIED, FALLBACK_MODIFIED]
    D1, D2 = 0.5, 1.0
    # Unigram level: total N1+(..) = 3, three types with count 1.
    gamma1 = D1 * 3 / 3
    p1_a = (1 - D1) / 3 + gamma1 / V  # = 7/24
    p1_b = (1 - D1) / 3 + gamma1 / V
    p1_c = (1 - D1) / 3 + gamma1 / V
    p1_d = 0 + gamma1 / V
    assert p1_a == pytest.approx(7 / 24, abs=1e-15)
    # Context a: followed by b twice -> c(a.) = 2, N2(a.) = 1.
    gamma_a = D2 * 1 / 2
    p_b_a = (2 - D2) / 2 + gamma_a * p1_b
    p_d_a = gamma_a * p1_d
    # Context b: followed by a once and c once -> c(b.) = 2, N1(b.) = 2.
    gamma_b = D1 * 2 / 2
    p_c_b = (1 - D1) / 2 + gamma_b * p1_c
    # Context c is never followed by anything (end of stream): back off fully.
    p_a_c = p1_a

    assert p(lm, [A], B) == pytest.approx(p_b_a, abs=1e-12)
    assert p(lm, [A], D) == pytest.approx(p_d_a, abs=1e-12)
    assert p(lm, [B], C) == pytest.approx(p_c_b, abs=1e-12)
    assert p(lm, [C], A) == pytest.approx(p_a_c, abs=1e-12)
    assert p(lm, [], A) == pytest.approx(p1_a, abs=1e-12)  # stream start: empty context
    assert p(lm, [D], A) == pytest.approx(p1_a, abs=1e-12)  # context token never seen
    # Numbers, to catch a formula that is wrong the same way in test and code.
    assert p_b_a == pytest.approx(0.5 + 0.5 * 7 / 24, abs=1e-15)
    assert p_c_b == pytest.approx(0.25 + 0.5 * 7 / 24, abs=1e-15)


def test_hand_trigram_modified() -> None:
    lm = KneserNeyLM(order=3, vocab_size=4).fit(ABABC)
    V = 4
    D1 = 0.5  # every order falls back: all counts below are 1 (n2 = 0)
    assert lm.discount_values == [FALLBACK_MODIFIED] * 3
    # Trigrams (raw): aba=1, bab=1, abc=1.
    # Bigram continuation counts: ab=1 (b.ab), ba=1 (a.ba), bc=1 (a.bc).
    # Unigram continuation counts from bigram types: a=1, b=1, c=1.
    gamma1 = D1 * 3 / 3
    p1_a = (1 - D1) / 3 + gamma1 / V
    p1_b = p1_a
    p1_c = p1_a
    # Order 2, context b: ba=1, bc=1 -> total 2, N1 = 2.
    p2_c_b = (1 - D1) / 2 + (D1 * 2 / 2) * p1_c
    # Order 2, context a: ab=1 -> total 1, N1 = 1.
    p2_b_a = (1 - D1) / 1 + (D1 * 1 / 1) * p1_b
    # Order 3, context ab: aba=1, abc=1 -> total 2, N1 = 2.
    p3_c_ab = (1 - D1) / 2 + (D1 * 2 / 2) * p2_c_b
    # Order 3, context ba: bab=1 -> total 1, N1 = 1.
    p3_b_ba = (1 - D1) / 1 + (D1 * 1 / 1) * p2_b_a
    # Context bc is never followed; neither is c: back off to the unigram.
    p3_a_bc = p1_a

    assert p(lm, [A, B], C) == pytest.approx(p3_c_ab, abs=1e-12)
    assert p(lm, [B, A], B) == pytest.approx(p3_b_ba, abs=1e-12)
    assert p(lm, [B, C], A) == pytest.approx(p3_a_bc, abs=1e-12)
    assert p(lm, [B], C) == pytest.approx(p2_c_b, abs=1e-12)  # short context at stream start
    assert p(lm, [C, A, B], C) == pytest.approx(p3_c_ab, abs=1e-12)  # only the last 2 count
    assert p3_c_ab == pytest.approx(0.25 + 0.5 * (0.25 + 0.5 * 7 / 24), abs=1e-15)


def test_hand_bigram_single_discount() -> None:
    lm = KneserNeyLM(order=2, vocab_size=4, discounts="single").fit(ABABC)
    V = 4
    # Bigrams: n1=2, n2=1 -> D = 2 / (2 + 2*1) = 0.5.
    # Unigram continuation counts: n1=3, n2=0 -> D = 3 / 3 = 1.
    d2, d1 = 2 / (2 + 2 * 1), 3 / (3 + 0)
    assert lm.discount_values == [(d1, d1, d1), (d2, d2, d2)]
    p1_b = max(1 - d1, 0) / 3 + (d1 * 3 / 3) / V  # = 1/4
    p_b_a = (2 - d2) / 2 + (d2 * 1 / 2) * p1_b
    assert p(lm, [A], B) == pytest.approx(p_b_a, abs=1e-12)
    assert p_b_a == pytest.approx(0.8125, abs=1e-15)


def test_modified_discounts_formula() -> None:
    counts = np.array([1, 1, 1, 1, 2, 2, 3, 4, 0])  # n1=4, n2=2, n3=1, n4=1; zeros ignored
    y = 4 / (4 + 2 * 2)
    expect = (1 - 2 * y * 2 / 4, 2 - 3 * y * 1 / 2, 3 - 4 * y * 1 / 1)
    assert expect == (0.5, 1.25, 1.0)
    assert kn_discounts(counts) == pytest.approx(expect, abs=1e-15)
    assert kn_discounts(counts, "single") == pytest.approx((y, y, y), abs=1e-15)
    # Undefined (n3 = 0) or out of range (D3+ <= 0) -> fallback for the order.
    assert kn_discounts(np.array([1, 1, 2])) == FALLBACK_MODIFIED
    assert kn_discounts(np.array([1, 2, 3] + [4] * 10)) == FALLBACK_MODIFIED


def test_order1_is_discounted_unigram_interpolated_with_uniform() -> None:
    counts = {0: 1, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3, 7: 4}  # tokens 8, 9 unseen
    stream = [t for t, c in counts.items() for _ in range(c)]
    np.random.default_rng(0).shuffle(stream)
    V, N = 10, 15
    lm = KneserNeyLM(order=1, vocab_size=V).fit(stream)
    disc = {1: 0.5, 2: 1.25, 3: 1.0}  # from test_modified_discounts_formula
    assert lm.discount_values == [(0.5, 1.25, 1.0)]
    gamma = (disc[1] * 4 + disc[2] * 2 + disc[3] * 2) / N
    for w in range(V):
        c = counts.get(w, 0)
        expect = (max(c - disc[min(c, 3)], 0) / N if c else 0.0) + gamma / V
        assert p(lm, [], w) == pytest.approx(expect, abs=1e-12)
        assert p(lm, [7, 3, 1], w) == pytest.approx(expect, abs=1e-12)  # context ignored


# ---------------------------------------------------------------- properties
def _reference_logprob(stream: list[int], order: int, V: int, mode: str):
    """Direct dictionary implementation of the interpolated KN recursion."""
    grams = {k: Counter(tuple(stream[i : i + k]) for i in range(len(stream) - k + 1)) for k in range(1, order + 1)}
    counts = {order: grams[order]}
    for k in range(1, order):
        counts[k] = Counter(g[1:] for g in grams[k + 1])  # one per distinct left neighbour
    disc = {k: kn_discounts(np.array(list(counts[k].values()) or [0]), mode) for k in counts}

    def logprob(context: list[int], w: int) -> float:
        prob = 1.0 / V
        for k in range(1, order + 1):
            if len(context) < k - 1:
                break
            h = tuple(context[len(context) - (k - 1) :]) if k > 1 else ()
            ext = [c for g, c in counts[k].items() if g[:-1] == h and c > 0]
            if not ext:
                continue
            D = lambda c: disc[k][min(c, 3) - 1] if c else 0.0  # noqa: E731
            total = sum(ext)
            gamma = sum(D(c) for c in ext) / total
            c = counts[k].get(h + (w,), 0)
            prob = max(c - D(c), 0) / total + gamma * prob
        return math.log(prob)

    return logprob


def _skewed_corpus(seed: int, vocab: int, size: int) -> list[int]:
    """Zipf-like stream: counts 1..4 all occur, so most orders use the estimate."""
    w = 1 / np.arange(1, vocab + 1)
    return np.random.default_rng(seed).choice(vocab, size=size, p=w / w.sum()).tolist()


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", ["modified", "single"])
@pytest.mark.parametrize("seen_vocab", [6, 25])
def test_matches_reference_implementation(order: int, mode: str, seen_vocab: int) -> None:
    V = seen_vocab + 3  # a few ids never seen in training
    train = _skewed_corpus(order, seen_vocab, 300)
    test = np.random.default_rng(100 + order).integers(0, V, size=60).tolist()
    lm = KneserNeyLM(order=order, vocab_size=V, discounts=mode).fit(train)
    if mode == "modified" and order >= 2 and seen_vocab == 25:
        assert lm.discount_values[1] != FALLBACK_MODIFIED  # the estimate itself is exercised
    ref = _reference_logprob(train, order, V, mode)
    for t in range(len(test)):
        ctx = test[max(0, t - order + 1) : t]
        assert lm.logprob(ctx, test[t]) == pytest.approx(ref(ctx, test[t]), abs=1e-12)
    nll = -np.mean([ref(test[max(0, t - order + 1) : t], test[t]) for t in range(len(test))])
    assert lm.evaluate(test)["nll"] == pytest.approx(nll, abs=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("mode", ["modified", "single"])
def test_probabilities_sum_to_one(order: int, mode: str) -> None:
    V = 9  # ids 7, 8 never appear in training
    train = np.random.default_rng(order).integers(0, 7, size=300)
    lm = KneserNeyLM(order=order, vocab_size=V, discounts=mode).fit(train)
    contexts = [[], [0], [1, 2], train[:6].tolist(), train[-4:].tolist(), [8], [8, 7, 8, 7], [3, 3, 3, 3, 3, 8]]
    for ctx in contexts:
        probs = lm.probs(ctx)
        assert probs.shape == (V,) and (probs > 0).all()
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        by_token = sum(math.exp(lm.logprob(ctx, w)) for w in range(V))
        assert by_token == pytest.approx(1.0, abs=1e-12)


def test_unseen_context_backs_off_to_unigram() -> None:
    V = 6  # 4, 5 never in training
    lm = KneserNeyLM(order=3, vocab_size=V).fit([0, 1, 2, 3, 0, 1, 2, 0, 2, 1])
    for w in range(V):
        unigram = p(lm, [], w)
        assert p(lm, [4, 5], w) == pytest.approx(unigram, abs=1e-15)
        assert p(lm, [5], w) == pytest.approx(unigram, abs=1e-15)
        # An unseen older token only removes the trigram level.
        assert p(lm, [5, 1], w) == pytest.approx(p(lm, [1], w), abs=1e-15)
    assert p(lm, [0, 1], 5) > 0  # unseen token: still mass from the uniform floor


def test_evaluate_metrics_and_chunking(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    lm = KneserNeyLM(order=3, vocab_size=5).fit(rng.integers(0, 5, size=200))
    test = rng.integers(0, 5, size=50)
    direct = -np.mean([lm.logprob(test[max(0, t - 2) : t].tolist(), int(test[t])) for t in range(test.size)])
    res = lm.evaluate(test)
    assert res["tokens"] == 50
    assert res["nll"] == pytest.approx(direct, abs=1e-12)
    assert res["ppl"] == pytest.approx(math.exp(direct), rel=1e-12)
    assert res["bits_per_token"] == pytest.approx(direct / math.log(2), rel=1e-12)
    monkeypatch.setattr(ngram, "_EVAL_CHUNK", 7)  # contexts must cross chunk boundaries
    assert lm.evaluate(test.tolist(), show_progress=True)["nll"] == pytest.approx(direct, abs=1e-12)


def test_vocab_size_inferred_and_short_stream() -> None:
    lm = KneserNeyLM(order=5).fit([2, 0, 2])  # shorter than the order
    assert lm.vocab_size == 3
    assert lm.probs([2, 0, 2, 2]).sum() == pytest.approx(1.0, abs=1e-12)
    assert KneserNeyLM(order=2).fit([4]).probs([4]) == pytest.approx(np.full(5, 0.2), abs=1e-15)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("order", [0, -1, 2.5, True])
def test_bad_order(order: object) -> None:
    with pytest.raises(ValueError, match="order"):
        KneserNeyLM(order=order)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="discounts"):
        KneserNeyLM(discounts="absolute")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vocab_size"):
        KneserNeyLM(vocab_size=0)
    with pytest.raises(DataError, match="empty"):
        KneserNeyLM(order=3).fit([])
    with pytest.raises(ValueError, match="empty"):  # DataError is a ValueError
        KneserNeyLM(order=3).fit(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        KneserNeyLM(order=2, vocab_size=3).fit([0, 1, 3])
    with pytest.raises(ValueError, match="negative"):
        KneserNeyLM(order=2).fit([0, -1, 2])
    with pytest.raises(ValueError, match="integer"):
        KneserNeyLM(order=2).fit([0.5, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        KneserNeyLM(order=2).fit([[0, 1], [1, 0]])
    with pytest.raises(RuntimeError, match="not fitted"):
        KneserNeyLM(order=2).logprob([0], 1)


def test_query_ids_out_of_range() -> None:
    lm = KneserNeyLM(order=2, vocab_size=3).fit([0, 1, 2, 0])
    with pytest.raises(ValueError, match="token"):
        lm.logprob([0], 3)
    with pytest.raises(ValueError, match="context"):
        lm.logprob([5], 0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.evaluate([0, 1, 7])
    with pytest.raises(ValueError, match="empty"):
        lm.evaluate([])
