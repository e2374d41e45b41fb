"""Interpolated (modified) Kneser-Ney n-gram language model on integer token ids.

The classic count-based baseline for word- and character-level language
modelling (Chen & Goodman 1998, "An empirical study of smoothing techniques
for language modeling", sections 2.7 and 3). It works on the same integer
ids as the neural LMs, so perplexities are directly comparable.

For an order-``n`` model and a context ``h`` of ``k - 1`` tokens (``h'`` is
``h`` without its oldest token)::

    p_k(w | h) = max(c_k(h w) - D_k(c_k(h w)), 0) / c_k(h .)
                 + gamma_k(h) * p_{k-1}(w | h')
    gamma_k(h) = (D_k1 N1(h .) + D_k2 N2(h .) + D_k3+ N3+(h .)) / c_k(h .)
    p_0(w)     = 1 / V                        (uniform over the vocabulary)

where ``c_n`` are raw counts and, for ``k < n``, ``c_k(g) = N1+(. g)`` is the
continuation count (number of distinct tokens seen directly before ``g``).
``N_r(h .)`` is the number of distinct tokens seen after ``h`` with
``c_k = r``. A context with ``c_k(h .) = 0`` (unseen, or too short because it
is at the start of the stream) is skipped: ``p_k = p_{k-1}``. Every level is
a proper distribution, so ``sum_w p(w | h) = 1`` for every context.

Implementation: n-grams are stored as a *reversed trie* of dense ids. The id
of ``(w_1 .. w_k)`` is its index in the sorted key array of order ``k`` where
``key = id(w_2 .. w_k) * V + w_1``. Keys stay far below ``2**63`` (the number
of distinct (k-1)-grams times V) whatever the order, the parent of a k-gram is
its *suffix* so continuation counts are one ``bincount``, and the ids of all
suffixes of a query window come out of one right-to-left chain of
``searchsorted`` calls, vectorised over a whole evaluation stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from rnnkit.errors import DataError

# Used for an order whose counts-of-counts make Chen & Goodman's estimate
# undefined or out of range (tiny corpora); the same values as KenLM's
# --discount_fallback.
FALLBACK_MODIFIED: tuple[float, float, float] = (0.5, 1.0, 1.5)
FALLBACK_SINGLE: float = 0.75

_EVAL_CHUNK = 1 << 16  # windows scored per vectorised step; bounds memory

DiscountMode = Literal["modified", "single"]


def kn_discounts(counts: np.ndarray, mode: DiscountMode = "modified") -> tuple[float, float, float]:
    """Discounts ``(D1, D2, D3+)`` for one order from that order's counts.

    Args:
        counts: (U,) counts of the n-gram types of one order (raw counts at the
            top order, continuation counts below). Zeros are ignored.
        mode: ``"modified"``: Chen & Goodman's three discounts,
            ``Y = n1 / (n1 + 2 n2)``, ``D_r = r - (r + 1) Y n_{r+1} / n_r``.
            ``"single"``: one discount ``D = Y`` for every count (original KN).

    Returns:
        ``(D1, D2, D3+)``, each in ``(0, r]`` so no count goes negative and
        every seen context keeps some mass for the lower order. When the
        estimate is undefined (some ``n_r = 0``) or out of that range the whole
        order falls back to ``FALLBACK_MODIFIED`` (or ``FALLBACK_SINGLE``).
    """
    n1, n2, n3, n4 = (int(np.count_nonzero(counts == r)) for r in (1, 2, 3, 4))
    if mode == "single":
        if n1 == 0:
            return (FALLBACK_SINGLE,) * 3
        d = n1 / (n1 + 2 * n2)
        return (d, d, d)
    if min(n1, n2, n3) == 0:
        return FALLBACK_MODIFIED
    y = n1 / (n1 + 2 * n2)
    ds = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d <= r for r, d in zip((1, 2, 3), ds)):
        return FALLBACK_MODIFIED
    return ds


@dataclass(frozen=True)
class _Level:
    """Tables of one order k (U_k distinct k-grams, U_0 = 1 empty context)."""

    keys: np.ndarray  # (U_k,) int64, sorted: id_{k-1}(w_2..w_k) * V + w_1
    counts: np.ndarray  # (U_k,) int64: raw counts at the top order, N1+(. g) below
    ctx_total: np.ndarray  # (U_{k-1},) float64: c_k(h .) per context id
    ctx_gamma: np.ndarray  # (U_{k-1},) float64: backoff weight per context id
    discounts: np.ndarray  # (4,) float64: [0, D1, D2, D3+], indexed by min(c, 3)


def _lookup(keys: np.ndarray, query: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Index of each query in sorted ``keys``, -1 where absent or not ``valid``.

    Shapes: keys (U,), query (B,), valid (B,) bool -> (B,) int64.
    """
    if keys.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    idx = np.searchsorted(keys, query)
    idx = np.minimum(idx, keys.size - 1)
    found = valid & (keys[idx] == query)
    return np.where(found, idx, -1).astype(np.int64, copy=False)


class KneserNeyLM:
    """Order-n interpolated Kneser-Ney language model over token ids ``0..V-1``.

    Args:
        order: n, the longest n-gram used (context of ``order - 1`` tokens).
        vocab_size: V. ``None``: taken as ``max(id) + 1`` of the training data
            at each ``fit``. Tokens never seen still get probability mass via
            the uniform ``1 / V`` floor.
        discounts: ``"modified"`` (three discounts per order, Chen & Goodman's
            best variant) or ``"single"`` (one discount per order).

    Example::

        lm = KneserNeyLM(order=5, vocab_size=10_000).fit(train_ids)
        lm.evaluate(test_ids)["ppl"]
    """

    def __init__(
        self, order: int = 5, vocab_size: int | None = None, discounts: DiscountMode = "modified"
    ) -> None:
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        if vocab_size is not None and (
            isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1
        ):
            raise ValueError(f"vocab_size must be a positive integer or None, got {vocab_size!r}")
        if discounts not in ("modified", "single"):
            raise ValueError(f"discounts must be 'modified' or 'single', got {discounts!r}")
        self.order = int(order)
        self._given_vocab = None if vocab_size is None else int(vocab_size)
        self.vocab_size: int | None = self._given_vocab
        self.discounts: DiscountMode = discounts
        self._levels: list[_Level] = []

    # ------------------------------------------------------------------ fit
    def fit(self, ids: Sequence[int] | np.ndarray) -> KneserNeyLM:
        """Count n-grams of one long token stream and estimate the model.

        Args:
            ids: (N,) integer token ids, one stream (e.g. the LM training
                stream with ``<eos>`` between sentences). The first tokens
                simply have shorter histories; nothing is padded.

        Returns:
            ``self``.
        """
        x = self._as_ids(ids, "ids", check_range=self._given_vocab is not None, vocab=self._given_vocab)
        if x.size == 0:
            raise DataError("cannot fit KneserNeyLM on empty training data (got 0 tokens)")
        vocab = self._given_vocab if self._given_vocab is not None else int(x.max()) + 1
        n, total_tokens = self.order, x.size

        # Pass 1, orders 1..n: distinct grams, one start position of each, raw
        # counts, and per-position gram ids (needed to build the next order).
        keys: list[np.ndarray] = []
        first: list[np.ndarray] = []
        raw: list[np.ndarray] = []
        ctx_of: list[np.ndarray] = []  # per distinct k-gram: id of its (k-1)-token prefix
        prev_pos = np.zeros(total_tokens + 1, dtype=np.int64)  # id of the empty gram everywhere
        prev_size = 1
        for k in range(1, n + 1):
            m = max(total_tokens - k + 1, 0)  # number of k-gram positions
            if prev_size > (np.iinfo(np.int64).max - vocab) // vocab:
                raise ValueError(f"{k}-gram keys would overflow int64 (vocab_size={vocab})")
            # prev_pos[i + 1] is the id of x[i+1 .. i+k-1], the suffix of x[i .. i+k-1].
            key = prev_pos[1 : m + 1] * vocab + x[:m]
            uniq, first_idx, inverse, counts = np.unique(
                key, return_index=True, return_inverse=True, return_counts=True
            )
            # The prefix x[i .. i+k-2] of the gram starting at i is the (k-1)-gram at i.
            ctx_of.append(prev_pos[first_idx] if k > 1 else np.zeros(uniq.size, dtype=np.int64))
            keys.append(uniq)
            first.append(first_idx)
            raw.append(counts)
            prev_pos = inverse.reshape(-1).astype(np.int64, copy=False)
            prev_size = uniq.size

        # Pass 2: counts used at each order, discounts, per-context statistics.
        levels: list[_Level] = []
        for k in range(1, n + 1):
            if k == n:
                counts = raw[k - 1].astype(np.int64)
            else:
                # N1+(. g): distinct (k+1)-grams whose suffix (= trie parent) is g.
                counts = np.bincount(keys[k] // vocab, minlength=keys[k - 1].size).astype(np.int64)
            d = kn_discounts(counts, self.discounts)
            disc = np.array([0.0, *d])
            n_ctx = 1 if k == 1 else keys[k - 2].size
            ctx = ctx_of[k - 1]
            total = np.bincount(ctx, weights=counts, minlength=n_ctx).astype(np.float64)
            mass = np.bincount(ctx, weights=disc[np.minimum(counts, 3)], minlength=n_ctx)
            gamma = np.divide(mass, total, out=np.zeros(n_ctx), where=total > 0)
            levels.append(_Level(keys[k - 1], counts, total, gamma, disc))

        self.vocab_size = vocab
        self._levels = levels
        return self

    # --------------------------------------------------------------- query
    def logprob(self, context: Sequence[int], token: int) -> float:
        """Natural log of ``p(token | context)``.

        Args:
            context: preceding token ids, oldest first; only the last
                ``order - 1`` are used, and a shorter (even empty) one is fine.
            token: the predicted token id.
        """
        vocab = self._require_fitted()
        tok = self._as_ids([token], "token", vocab=vocab)
        win = self._windows(self._as_ids(context, "context", vocab=vocab), tok)
        return float(self._window_logprobs(win)[0])

    def probs(self, context: Sequence[int]) -> np.ndarray:
        """The whole next-token distribution after ``context``: (V,) float64, sums to 1."""
        vocab = self._require_fitted()
        win = self._windows(self._as_ids(context, "context", vocab=vocab), np.arange(vocab))
        return np.exp(self._window_logprobs(win))

    def evaluate(self, ids: Sequence[int] | np.ndarray, *, show_progress: bool = False) -> dict[str, Any]:
        """Score every token of one stream, each given its preceding ones.

        Args:
            ids: (N,) token ids; token ``t`` is predicted from
                ``ids[max(0, t - order + 1):t]``.
            show_progress: show a tqdm bar over chunks of tokens.

        Returns:
            ``{"nll": mean nats per token, "ppl": exp(nll),
            "bits_per_token": nll / ln 2, "tokens": N}``.
        """
        x = self._as_ids(ids, "ids", vocab=self._require_fitted())
        if x.size == 0:
            raise DataError("cannot evaluate on an empty token stream")
        nll = -float(self.token_logprobs(x, show_progress=show_progress).sum()) / x.size
        return {"nll": nll, "ppl": math.exp(nll), "bits_per_token": nll / math.log(2), "tokens": int(x.size)}

    def token_logprobs(self, ids: Sequence[int] | np.ndarray, context: Sequence[int] = (), *,
                       show_progress: bool = False) -> np.ndarray:
        """``(N,)`` natural-log probability of each token of ``ids`` given the ones before
        it (and ``context``, which precedes the stream and is not scored)."""
        vocab = self._require_fitted()
        x = self._as_ids(ids, "ids", vocab=vocab)
        ctx = self._as_ids(context, "context", vocab=vocab)[-(self.order - 1):] if self.order > 1 else x[:0]
        pad = np.full(self.order - 1 - ctx.size, -1, dtype=np.int64)
        padded = np.concatenate([pad, ctx, x])
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.order)  # (N, order) view
        starts = range(0, x.size, _EVAL_CHUNK)
        if show_progress:
            from tqdm.auto import tqdm  # imported lazily: only needed for the bar

            starts = tqdm(starts, desc=f"KN{self.order} eval", unit="chunk")
        parts = [self._window_logprobs(np.ascontiguousarray(windows[s: s + _EVAL_CHUNK])) for s in starts]
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def discount_values(self) -> list[tuple[float, float, float]]:
        """``(D1, D2, D3+)`` actually used at orders 1..n (after any fallback)."""
        self._require_fitted()
        return [tuple(float(v) for v in lvl.discounts[1:]) for lvl in self._levels]  # type: ignore[misc]

    # ------------------------------------------------------------- helpers
    def _window_logprobs(self, win: np.ndarray) -> np.ndarray:
        """Log-probabilities of the last column given the others.

        Args:
            win: (B, order) int64; ``win[:, -1]`` are the predicted tokens and
                ``win[:, :-1]`` their contexts, oldest first, left-padded with
                -1 where the history is shorter.

        Returns:
            (B,) float64 natural-log probabilities.
        """
        vocab, n = self.vocab_size, self.order
        assert vocab is not None
        p = np.full(win.shape[0], 1.0 / vocab)
        gram = np.zeros(win.shape[0], dtype=np.int64)  # id of the k-gram ending at the target
        ctx = np.zeros(win.shape[0], dtype=np.int64)  # id of the (k-1)-token context
        everywhere = np.ones(win.shape[0], dtype=bool)
        for k, lvl in enumerate(self._levels, start=1):
            if lvl.keys.size == 0:
                break  # training stream shorter than k: no k-grams, nor any longer ones
            tok = win[:, n - k]  # w_{t-k+1}: the token that extends both chains to order k
            if k > 1:
                ctx = _lookup(self._levels[k - 2].keys, ctx * vocab + tok, (ctx >= 0) & (tok >= 0))
            gram = _lookup(lvl.keys, gram * vocab + tok, everywhere if k == 1 else (gram >= 0) & (tok >= 0))
            safe_ctx = np.maximum(ctx, 0)
            total = lvl.ctx_total[safe_ctx]
            active = (ctx >= 0) & (total > 0)  # unseen/too-short context: p_k = p_{k-1}
            c = np.where(gram >= 0, lvl.counts[np.maximum(gram, 0)], 0)
            direct = np.maximum(c - lvl.discounts[np.minimum(c, 3)], 0.0)
            p_k = direct / np.where(active, total, 1.0) + lvl.ctx_gamma[safe_ctx] * p
            p = np.where(active, p_k, p)
        return np.log(p)

    def _windows(self, context: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """(len(tokens), order) windows sharing one context, left-padded with -1."""
        hist = context[max(context.size - (self.order - 1), 0) :] if self.order > 1 else context[:0]
        row = np.concatenate([np.full(self.order - 1 - hist.size, -1, dtype=np.int64), hist])
        return np.concatenate([np.broadcast_to(row, (tokens.size, row.size)), tokens[:, None]], axis=1)

    def _require_fitted(self) -> int:
        if not self._levels or self.vocab_size is None:
            raise RuntimeError("KneserNeyLM is not fitted; call fit(ids) first")
        return self.vocab_size

    @staticmethod
    def _as_ids(
        ids: Sequence[int] | np.ndarray, name: str, *, vocab: int | None, check_range: bool = True
    ) -> np.ndarray:
        """Validate token ids and return them as a 1-D int64 array."""
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {arr.shape}")
        if arr.size == 0:
            return arr.astype(np.int64)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must contain integer token ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise ValueError(f"{name} contains negative token id {lo}")
        if check_range and vocab is not None and hi >= vocab:
            raise ValueError(f"{name} contains token id {hi} outside the vocabulary [0, {vocab})")
        return arr
