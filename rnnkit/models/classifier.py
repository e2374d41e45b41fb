r"""Many-to-one classification: read a whole sequence, predict one label (sentiment, a
DNA motif, any symbolic sequence).

``forward(x, lengths) -> logits (B, C)``: ``x`` is token ids ``(B, T)`` (learned or
hashed embeddings, or one-hot) or feature vectors ``(B, T, I)``; a recurrent stack
(any rnnkit cell, uni- or bidirectional, deep) reads it (feature input may first have
``frame_stack`` consecutive frames concatenated into one step, ``T' = ceil(T / k)``, as
:class:`~rnnkit.models.ctc.CTCModel` does); a pooling turns the per-step
outputs ``o_t (B, T, D)`` into one vector:

* ``last``: the final state of each direction at the sequence's own last real step
  (the backward direction's state after reading back to the first step);
* ``mean`` / ``max``: over the real steps only;
* ``attention``: :math:`a_t = \mathrm{softmax}_t(v^\top \tanh(W o_t))`, :math:`\sum_t a_t o_t`
  (Bahdanau-style additive attention pooling, as in Yang et al. 2016), padding masked.

Padding never reaches the result: the recurrent layer stops at each length and every
pooling masks the padded steps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from ..options import option, require
from .cells import (CELLS, RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks,
                    stack_checks)
from .inputs import TOKEN_INPUTS, TokenEncoder, stack_frames

POOLINGS = ("last", "mean", "max", "attention")
INPUTS = TOKEN_INPUTS + ("features",)


@dataclass(frozen=True)
class ClassifierConfig(RegularizationOptions):
    """Architecture of a :class:`SequenceClassifier`; the recurrent layer's regularisation
    comes from :class:`RegularizationOptions`."""

    num_classes: int                  # from the data
    vocab_size: int = 0               # from the data: token/character ids (0 for feature input)
    input_size: int = 0               # from the data: feature width (0 for ids)
    input: str = option("embedding", "input encoding: embedding, hashing, onehot (ids) or features (vectors)")
    embedding_dim: int = option(100, "embedding size (embedding and hashing input)")
    hash_buckets: int = option(0, "hashing input: number of buckets (0 = vocab_size // 2)")
    num_hashes: int = option(2, "hashing input: hash functions per token")
    cell: str = option("lstm", "recurrent cell: " + ", ".join(CELLS))
    hidden_size: int = option(128, "recurrent state size (per direction)")
    num_layers: int = option(1, "stacked recurrent layers")
    bidirectional: bool = option(True, "read the sequence both ways")
    pooling: str = option("last", "how the outputs become one vector: " + ", ".join(POOLINGS))
    dropout: float = option(0.0, "dropout on the embeddings, between layers and before the head")
    frame_stack: int = option(1, "features input: concatenate this many consecutive frames into one step")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")

    def __post_init__(self) -> None:
        ids = self.input in TOKEN_INPUTS
        checks = [
            (self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}"),
            (self.input in INPUTS, f"input must be one of {INPUTS}, got {self.input!r}"),
            (not ids or self.vocab_size > 0, f"input {self.input!r} needs vocab_size > 0"),
            (ids or self.input_size > 0, "input 'features' needs input_size > 0"),
            (self.embedding_dim > 0 and self.num_hashes > 0 and self.hash_buckets >= 0,
             "embedding_dim and num_hashes must be > 0, hash_buckets >= 0"),
            (self.pooling in POOLINGS, f"pooling must be one of {POOLINGS}, got {self.pooling!r}"),
            (self.frame_stack >= 1, f"frame_stack must be >= 1, got {self.frame_stack}"),
        ]
        require(checks + stack_checks(self) + regularization_checks(self), "model config:")

    def to_dict(self) -> dict:
        return asdict(self)



class SequenceClassifier(nn.Module):
    """``forward(x (B, T) ids or (B, T, I) features, lengths (B,) = None) -> logits (B, C)``."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        # checked here, not in the config: a run's config is first validated with id placeholders
        if c.frame_stack != 1 and c.input in TOKEN_INPUTS:
            raise ConfigError(f"model config: frame_stack applies to 'features' input only, not {c.input!r}")
        self.encoder = TokenEncoder(c.input, c.vocab_size, c.embedding_dim, c.hash_buckets, c.num_hashes) \
            if c.input in TOKEN_INPUTS else None
        in_size = self.encoder.size if self.encoder is not None else c.input_size * c.frame_stack
        self.rnn = recurrent_layer(c.cell, in_size, c.hidden_size, c.num_layers, dropout=c.dropout, init=c.init,
                                   bidirectional=c.bidirectional, **layer_regularization(c))
        width = c.hidden_size * (2 if c.bidirectional else 1)
        self.drop = nn.Dropout(c.dropout)
        if c.pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1, bias=False))
        self.head = nn.Linear(width, c.num_classes)

    def _inputs(self, x: Tensor) -> Tensor:
        c = self.config
        if self.encoder is not None:
            if x.dim() != 2 or x.dtype != torch.long:
                raise ShapeError(f"SequenceClassifier: input {c.input!r} takes token ids, a LongTensor "
                                 f"(batch, seq); got {x.dtype} of shape {tuple(x.shape)}")
            return self.encoder(x)
        if x.dim() != 3 or x.shape[-1] != c.input_size or not x.is_floating_point():
            raise ShapeError(f"SequenceClassifier: feature input must be float (batch, seq, {c.input_size}), "
                             f"got {x.dtype} of shape {tuple(x.shape)}")
        return x

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        inputs = self.drop(self._inputs(x))
        b, t = inputs.shape[:2]
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        lengths = lengths.to("cpu", torch.long)
        if lengths.shape != (b,) or int(lengths.min()) < 1 or int(lengths.max()) > t:
            raise ShapeError(f"SequenceClassifier: lengths must be (batch={b},) in [1, {t}], got "
                             f"{tuple(lengths.shape)} with range [{int(lengths.min())}, {int(lengths.max())}]")
        inputs, lengths = stack_frames(inputs, lengths, self.config.frame_stack)
        t = inputs.shape[1]
        out, state = self.rnn(inputs, lengths=lengths)              # out (B, T, D)
        mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).to(out.device)   # (B, T) real steps
        return self.head(self.drop(self.pool(out, state, mask)))

    def pool(self, out: Tensor, state, mask: Tensor) -> Tensor:
        """``(B, T, D)`` outputs -> ``(B, D)``, ignoring padded steps."""
        return pool_sequence(out, state, mask, self.config.pooling, self.config.bidirectional,
                             getattr(self, "attention", None))


def pool_sequence(out: Tensor, state, mask: Tensor, how: str, bidirectional: bool,
                  attention: nn.Module | None = None) -> Tensor:
    """A recurrent layer's outputs ``out (B, T, D)`` (``mask (B, T)``: True at real steps)
    as one vector per sequence ``(B, D)``: ``last`` (the final state of each direction,
    at each sequence's last real step: from ``state``), ``mean``, ``max`` or ``attention``
    (``attention``: a module scoring each step ``(B, T, D) -> (B, T, 1)``), padded steps
    ignored. Many-to-one models (classifiers, frame sequences) share it."""
    if how == "last":
        h = state[0] if isinstance(state, tuple) else state     # (L * dirs, B, H), at each last real step
        return torch.cat([h[-2], h[-1]], dim=-1) if bidirectional else h[-1]
    m = mask.unsqueeze(-1)
    if how == "mean":
        return (out * m).sum(1) / m.sum(1)
    if how == "max":
        return out.masked_fill(~m, float("-inf")).max(1).values
    scores = attention(out).squeeze(-1).masked_fill(~mask, float("-inf"))   # (B, T)
    return (torch.softmax(scores, dim=1).unsqueeze(-1) * out).sum(1)
