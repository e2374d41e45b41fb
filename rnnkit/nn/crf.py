"""Linear-chain conditional random field (CRF) for sequence tagging.

The output layer of the BiLSTM-CRF tagger of Lample et al. (2016), "Neural
Architectures for Named Entity Recognition". A network produces emission
scores ``E[b, t, k]`` (how much token ``t`` of sequence ``b`` looks like tag
``k``); the CRF adds learned transition scores between neighbouring tags, so
the tags are predicted jointly instead of independently.

For one sequence of length ``L`` with emissions ``E (L, K)`` and a tag path
``y = (y_1, ..., y_L)`` the score is

    s(y) = start[y_1] + sum_{t=1}^{L} E[t, y_t]
                      + sum_{t=2}^{L} A[y_{t-1}, y_t] + end[y_L],

with ``A (K, K)`` the transition matrix (``A[i, j]``: tag ``i`` followed by
tag ``j``) and ``start (K,)``, ``end (K,)`` the scores of the first and last tag.
The model is ``p(y | E) = exp(s(y)) / Z`` with ``Z = sum_y' exp(s(y'))`` over all
``K^L`` paths. The loss is the negative log-likelihood

    nll(y) = log Z - s(y)  >= 0.

``log Z`` comes from the forward algorithm in log space (O(L K^2) instead of K^L):

    alpha_1[j] = start[j] + E[1, j]
    alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + E[t, j]
    log Z      = logsumexp_j(alpha_L[j] + end[j]),

and the most likely path from Viterbi, the same recursion with ``max`` for
``logsumexp`` plus back-pointers ``argmax_i``.

Constraints. With a tagging scheme (:func:`allowed_transitions`) some tag
bigrams are impossible, e.g. ``O -> I-PER`` in BIO. Their scores are replaced by
the constant ``-1e4`` (:data:`DISALLOWED`), so such paths get probability
``~exp(-1e4) = 0`` and Viterbi never picks them while an allowed path exists.
A finite constant rather than ``-inf`` keeps every ``logsumexp`` and its
gradient finite (``-inf - -inf`` is NaN), even for a gold path that breaks the rules.

Batching. Sequences are padded to ``T`` steps; ``mask (B, T)`` is True at real
tokens and must be left-aligned (each row a prefix of True), with at least one
real token per row. Padding never changes a result: at a padded step the
recursions carry ``alpha`` unchanged, and padded emissions and tags are never read.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from ..errors import ArgumentError, ConfigError, DtypeError, ShapeError

__all__ = ["SCHEMES", "DISALLOWED", "allowed_transitions", "CRF"]

SCHEMES = ("IOB1", "BIO", "IOBES")
"""Tagging schemes understood by :func:`allowed_transitions`:

* ``IOB1``: original CoNLL-2003; ``I-X`` may start an entity, ``B-X`` only
  starts an entity directly after another entity of the same type ``X``.
* ``BIO`` (alias ``IOB2``): every entity starts with ``B-X``; ``I-X`` continues it.
* ``IOBES`` (alias ``BIOES``): ``B-X`` begins, ``I-X`` continues, ``E-X`` ends a
  multi-token entity; ``S-X`` is a single-token entity.
"""

_ALIASES = {"IOB1": "IOB1", "BIO": "BIO", "IOB2": "BIO", "IOBES": "IOBES", "BIOES": "IOBES"}
_PREFIXES = {"IOB1": ("B", "I"), "BIO": ("B", "I"), "IOBES": ("B", "I", "E", "S")}

DISALLOWED = -1e4
"""Score given to a disallowed transition/start/end. Large enough that
``exp(DISALLOWED)`` underflows to 0 in float32 and float64, finite so gradients stay finite."""


# --- tagging schemes ---------------------------------------------------------------------

def _parse_tag(tag: object, scheme: str) -> tuple[str, str]:
    """``"O" -> ("O", "")``, ``"B-PER" -> ("B", "PER")``; ConfigError if the tag does not fit."""
    if tag == "O":
        return "O", ""
    prefixes = _PREFIXES[scheme]
    if isinstance(tag, str) and "-" in tag:
        # Split once only: entity types may themselves contain '-' (e.g. "B-MISC-X").
        prefix, entity = tag.split("-", 1)
        if prefix in prefixes and entity:
            return prefix, entity
    forms = ", ".join(f"'{p}-<TYPE>'" for p in prefixes)
    raise ConfigError(f"allowed_transitions: tag {tag!r} does not fit scheme {scheme!r}; "
                      f"expected 'O' or one of {forms}")


def _allowed(scheme: str, prev: tuple[str, str], nxt: tuple[str, str]) -> bool:
    """May tag ``prev`` be directly followed by tag ``nxt`` under ``scheme``?"""
    (p, p_type), (n, n_type) = prev, nxt
    same = p_type == n_type
    if scheme == "BIO":
        # I-X only continues an entity of type X (begun by B-X or continued by I-X).
        return n != "I" or (p in ("B", "I") and same)
    if scheme == "IOB1":
        # I-X may open an entity anywhere; B-X exists only to split two adjacent
        # entities of the same type, so it must follow B-X or I-X.
        return n != "B" or (p in ("B", "I") and same)
    # IOBES: inside an entity (after B-X/I-X) only I-X or E-X may come next;
    # outside one (after O, E-*, S-*) only O, B-* or S-* may.
    if p in ("B", "I"):
        return n in ("I", "E") and same
    return n in ("O", "B", "S")


def allowed_transitions(tags: Sequence[str], scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    """Which tag bigrams, first tags and last tags a tagging scheme allows.

    Args:
        tags: the ``K`` tag names in index order, e.g. ``["O", "B-PER", "I-PER"]``.
            Each is ``"O"`` or ``"<PREFIX>-<TYPE>"`` with a prefix of the scheme.
        scheme: one of :data:`SCHEMES` (``"IOB1"``, ``"BIO"``, ``"IOBES"``), or
            the alias ``"IOB2"`` (= BIO) or ``"BIOES"`` (= IOBES); case-insensitive.

    Returns:
        ``(transitions (K, K), start (K,), end (K,))``, all ``torch.bool`` on CPU:
        ``transitions[i, j]`` -- tag ``i`` may be followed by tag ``j``;
        ``start[k]`` -- a sequence may begin with tag ``k``;
        ``end[k]`` -- a sequence may end with tag ``k``.
        Pass the tuple as ``CRF(K, allowed=...)``.

    Raises:
        ConfigError: unknown scheme, or a tag that does not fit it (e.g. ``"X-PER"`` or
            ``"E-PER"`` in BIO), or an empty / duplicated tag list.
    """
    key = scheme.upper() if isinstance(scheme, str) else scheme
    if key not in _ALIASES:
        raise ConfigError(f"allowed_transitions: unknown tagging scheme {scheme!r}; valid choices: "
                          f"{', '.join(SCHEMES)} (aliases: IOB2 = BIO, BIOES = IOBES)")
    scheme = _ALIASES[key]
    tags = list(tags)
    if not tags:
        raise ConfigError("allowed_transitions: tags is empty")
    duplicates = sorted({t for t in tags if tags.count(t) > 1})
    if duplicates:
        raise ConfigError(f"allowed_transitions: duplicate tags {duplicates}")
    parsed = [_parse_tag(t, scheme) for t in tags]
    k = len(parsed)
    # device="cpu" even inside ``with torch.device("meta")`` (a checkpoint's shape-only build):
    # the masks are data, checked below, not parameters.
    transitions = torch.tensor([[_allowed(scheme, a, b) for b in parsed] for a in parsed],
                               dtype=torch.bool, device="cpu").reshape(k, k)
    # A path may begin/end wherever "outside any entity" could precede/follow it:
    # that is exactly the transitions out of / into an "O" tag, whether or not the
    # tag list contains one.
    outside = ("O", "")
    start = torch.tensor([_allowed(scheme, outside, t) for t in parsed], dtype=torch.bool, device="cpu")
    end = torch.tensor([_allowed(scheme, t, outside) for t in parsed], dtype=torch.bool, device="cpu")
    return transitions, start, end


# --- the CRF layer -----------------------------------------------------------------------

class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags, batched and length-masked.

    Args:
        num_tags: number of tags ``K``.
        allowed: optional ``(transitions (K, K), start (K,), end (K,))`` bool masks,
            e.g. from :func:`allowed_transitions`. Disallowed entries score
            :data:`DISALLOWED` (-1e4) whatever the parameters hold, and get zero gradient.

    Parameters:
        ``transitions (K, K)`` (``[i, j]``: tag ``i`` then tag ``j``),
        ``start_transitions (K,)``, ``end_transitions (K,)``; initialised
        ``U(-0.1, 0.1)``. The masks are (non-learnable) buffers
        ``transitions_allowed``, ``start_allowed``, ``end_allowed``, saved in the state dict.

    Shapes (``B`` batch, ``T`` time steps, ``K`` tags):
        ``emissions (B, T, K)`` float; ``tags (B, T)`` integer in ``[0, K)`` at real
        tokens (anything at padding); ``mask (B, T)`` bool (or 0/1 integers), True at
        real tokens, left-aligned, >= 1 real token per row; ``None`` means all True.
        All computation happens in the emissions' dtype (float32 or float64).
    """

    def __init__(self, num_tags: int, *, allowed: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        super().__init__()
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags < 1:
            raise ArgumentError(f"CRF: num_tags must be a positive int, got {num_tags!r}")
        self.num_tags = num_tags
        k = num_tags
        self.transitions = nn.Parameter(torch.empty(k, k))
        self.start_transitions = nn.Parameter(torch.empty(k))
        self.end_transitions = nn.Parameter(torch.empty(k))
        if allowed is None:
            masks = (torch.ones(k, k, dtype=torch.bool), torch.ones(k, dtype=torch.bool),
                     torch.ones(k, dtype=torch.bool))
        else:
            masks = self._check_allowed(allowed, k)
        self.register_buffer("transitions_allowed", masks[0])
        self.register_buffer("start_allowed", masks[1])
        self.register_buffer("end_allowed", masks[2])
        self.reset_parameters()

    @staticmethod
    def _check_allowed(allowed: tuple[Tensor, Tensor, Tensor], k: int) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(allowed, (tuple, list)) or len(allowed) != 3:
            raise ArgumentError("CRF: allowed must be a tuple (transitions (K, K), start (K,), end (K,))")
        shapes = ((k, k), (k,), (k,))
        out = []
        for name, mask, shape in zip(("transitions", "start", "end"), allowed, shapes):
            mask = mask if isinstance(mask, Tensor) else torch.as_tensor(mask, device="cpu")
            if tuple(mask.shape) != shape:
                raise ShapeError(f"CRF: allowed {name} mask must have shape {shape} for num_tags={k}, "
                                 f"got {tuple(mask.shape)}")
            if mask.dtype != torch.bool:
                raise DtypeError(f"CRF: allowed {name} mask must be torch.bool, got {mask.dtype}")
            out.append(mask.detach().to("cpu", copy=True))   # CPU even in a meta-device (shape-only) build
        if not out[1].any() or not out[2].any():
            # Every path would be disallowed: the loss and decode would be meaningless.
            raise ConfigError("CRF: allowed masks permit no start tag or no end tag")
        return out[0], out[1], out[2]

    def reset_parameters(self) -> None:
        """Small uniform init (as pytorch-crf): transitions start nearly uninformative."""
        for p in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(p, -0.1, 0.1)

    def extra_repr(self) -> str:
        constrained = not (bool(self.transitions_allowed.all()) and bool(self.start_allowed.all())
                           and bool(self.end_allowed.all()))
        return f"num_tags={self.num_tags}, constrained={constrained}"

    # --- helpers -------------------------------------------------------------------------

    def _scores(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """Effective ``(transitions, start, end)`` in ``dtype``, disallowed entries at -1e4.

        ``torch.where`` (not an in-place fill of the parameter) so that the masked
        entries receive exactly zero gradient and the optimiser never moves them.
        """
        fill = torch.tensor(DISALLOWED, dtype=dtype, device=self.transitions.device)
        return (torch.where(self.transitions_allowed, self.transitions.to(dtype), fill),
                torch.where(self.start_allowed, self.start_transitions.to(dtype), fill),
                torch.where(self.end_allowed, self.end_transitions.to(dtype), fill))

    def _check(self, emissions: Tensor, mask: Tensor | None, tags: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """Validate inputs; return ``(emissions with padding zeroed, bool mask)``."""
        if not isinstance(emissions, Tensor) or emissions.dim() != 3:
            got = tuple(emissions.shape) if isinstance(emissions, Tensor) else type(emissions).__name__
            raise ShapeError(f"CRF: emissions must be 3-D (B, T, K), got {got}")
        b, t, k = emissions.shape
        if k != self.num_tags:
            raise ShapeError(f"CRF: emissions have K={k} tags in the last dim, expected "
                             f"num_tags={self.num_tags}; shape {tuple(emissions.shape)}")
        if t == 0:
            raise ShapeError("CRF: emissions have T=0 time steps; every row needs >= 1 real token")
        if not emissions.is_floating_point():
            raise DtypeError(f"CRF: emissions must be floating point, got {emissions.dtype}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=emissions.device)
        else:
            if tuple(mask.shape) != (b, t):
                raise ShapeError(f"CRF: mask must have shape (B, T) = {(b, t)}, got {tuple(mask.shape)}")
            if mask.is_floating_point() or mask.is_complex():
                raise DtypeError(f"CRF: mask must be bool (or 0/1 integers), got {mask.dtype}")
            mask = mask.to(device=emissions.device) != 0
            # These checks read values back (a device sync); they catch masks that would
            # otherwise silently give wrong sums (right-padding assumed everywhere below).
            empty = (~mask[:, 0]).nonzero().flatten().tolist()
            if empty:
                raise ShapeError(f"CRF: mask rows {empty[:10]} have no real tokens (mask[:, 0] is False); "
                                 "every row needs >= 1 real token and the mask must be left-aligned")
            gaps = (mask[:, 1:] & ~mask[:, :-1]).any(1).nonzero().flatten().tolist()
            if gaps:
                raise ShapeError(f"CRF: mask rows {gaps[:10]} are not left-aligned (True after False); "
                                 "real tokens must come first, padding last")
        if tags is not None:
            if not isinstance(tags, Tensor) or tuple(tags.shape) != (b, t):
                got = tuple(tags.shape) if isinstance(tags, Tensor) else type(tags).__name__
                raise ShapeError(f"CRF: tags must have shape (B, T) = {(b, t)}, got {got}")
            if tags.is_floating_point() or tags.is_complex() or tags.dtype == torch.bool:
                raise DtypeError(f"CRF: tags must be an integer tensor, got {tags.dtype}")
            real = tags.to(emissions.device)[mask]
            if real.numel() and (real.min() < 0 or real.max() >= k):
                raise ValueError(f"CRF: tags at real tokens must be in [0, {k}) (num_tags={k}), got values "
                                 f"in [{int(real.min())}, {int(real.max())}]")
        # Zero the padding so garbage there (huge, inf, NaN) can never leak in, not even
        # through a 0 * inf = NaN in the backward pass; masked_fill gives it zero gradient.
        emissions = emissions.masked_fill(~mask.unsqueeze(-1), 0.0)
        return emissions, mask

    # --- the algorithms ------------------------------------------------------------------

    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """``log Z`` per sequence by the forward algorithm: ``(B, T, K), (B, T) -> (B,)``.

        Vectorised over batch and tags; loops over time only.
        """
        emissions, mask = self._check(emissions, mask)
        trans, start, end = self._scores(emissions.dtype)
        alpha = start + emissions[:, 0]                                        # (B, K)
        for t in range(1, emissions.shape[1]):
            # (B, K_prev, 1) + (K_prev, K_next) -> logsumexp over K_prev -> (B, K_next)
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
            # Padded step: keep alpha, so a row's result is that of its real prefix.
            alpha = torch.where(mask[:, t].unsqueeze(1), nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """Score ``s(y)`` of the given tag paths: ``(B, T, K), (B, T), (B, T) -> (B,)``."""
        emissions, mask = self._check(emissions, mask, tags)
        trans, start, end = self._scores(emissions.dtype)
        # Padding may hold any value (e.g. -100); index with a safe 0 and mask it out.
        tags = tags.to(emissions.device).long().masked_fill(~mask, 0)
        weights = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)               # (B, T)
        total = (emit * weights).sum(1)
        # Bigram t-1 -> t is real iff token t is (mask is left-aligned).
        total = total + (trans[tags[:, :-1], tags[:, 1:]] * weights[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)        # (B,)
        return total + start[tags[:, 0]] + end[last]

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None,
                reduction: Literal["sum", "mean", "none"] = "sum") -> Tensor:
        """Negative log-likelihood ``log Z - s(tags)`` (>= 0): ``(B, T, K), (B, T) -> ()`` or ``(B,)``.

        ``reduction``: ``"sum"`` over the batch (default), ``"mean"`` over the batch,
        or ``"none"`` for the ``(B,)`` per-sequence losses -- as in torch losses.
        """
        if reduction not in ("sum", "mean", "none"):
            raise ArgumentError(f"CRF: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
        # score() validates tags and mask; log_partition() re-validates cheaply.
        nll = self.log_partition(emissions, mask) - self.score(emissions, tags, mask)
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        return nll

    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Viterbi: the highest-scoring path per sequence and its score.

        Returns:
            ``(tags (B, T) long, -1 at padding; scores (B,) in the emissions' dtype)``.
            The scores are differentiable w.r.t. emissions and parameters.
        """
        emissions, mask = self._check(emissions, mask)
        trans, start, end = self._scores(emissions.dtype)
        b, t_max, _ = emissions.shape
        best = start + emissions[:, 0]                                         # (B, K)
        backpointers = []                                                      # T-1 of (B, K)
        for t in range(1, t_max):
            # best previous tag i for each next tag j: max over K_prev of (B, K_prev, K_next)
            top, arg = (best.unsqueeze(2) + trans).max(dim=1)
            best = torch.where(mask[:, t].unsqueeze(1), top + emissions[:, t], best)
            backpointers.append(arg)
        scores, last = (best + end).max(dim=1)                                 # (B,), (B,)

        # Backtrack, vectorised over the batch. ``cur`` is each row's tag at step t; it
        # stays at the row's best last tag through the padded steps (not updated while
        # not ``real``), so each row starts following back-pointers at its own last token.
        lengths = mask.sum(1)
        out = torch.full((b, t_max), -1, dtype=torch.long, device=emissions.device)
        cur = last
        for t in range(t_max - 1, -1, -1):
            real = t < lengths
            out[:, t] = torch.where(real, cur, out[:, t])
            if t > 0:
                prev = backpointers[t - 1].gather(1, cur.unsqueeze(1)).squeeze(1)
                cur = torch.where(real, prev, cur)
        return out, scores
