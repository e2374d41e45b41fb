"""Recurrent language model: input encoding -> recurrent layer -> softmax head."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..nn.hashing import HashEmbedding
from ..options import option
from .cells import CELLS, INITS, recurrent_layer

INPUTS = ("embedding", "onehot", "hashing")


@dataclass(frozen=True)
class LMConfig:
    """Architecture of a :class:`LanguageModel`. Plain data, saved with every checkpoint."""

    vocab_size: int                   # from the data's vocabulary, never a user option
    cell: str = option("lstm", "recurrent cell: " + ", ".join(CELLS))
    input: str = option("embedding", "input encoding: embedding, onehot or hashing (the hashing trick)")
    embedding_dim: int = option(128, "input embedding size (ignored for one-hot input)")
    hidden_size: int = option(256, "recurrent state size")
    num_layers: int = option(2, "stacked recurrent layers")
    dropout: float = option(0.0, "dropout on non-recurrent connections (Zaremba et al. 2014)")
    tie_weights: bool = option(False, "share the embedding and softmax weights (Press & Wolf 2017)")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")
    init_range: float | None = option(None, "U(-r, r) for every weight, as Zaremba (overrides init)")
    forget_bias: float | None = option(None, "initial LSTM forget-gate bias (Jozefowicz et al. 2015)")
    hash_buckets: int = option(0, "hashing input: number of buckets (0 = vocab_size // 2)")
    num_hashes: int = option(2, "hashing input: hash functions per token")

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"model config: {msg}")
        need(isinstance(self.vocab_size, int) and self.vocab_size > 0, f"vocab_size must be > 0, got {self.vocab_size!r}")
        need(self.cell in CELLS, f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        need(self.input in INPUTS, f"input must be one of {INPUTS}, got {self.input!r}")
        need(self.hidden_size > 0 and self.num_layers > 0, "hidden_size and num_layers must be > 0")
        need(self.embedding_dim > 0, f"embedding_dim must be > 0, got {self.embedding_dim}")
        need(self.init in INITS, f"init must be one of {INITS}, got {self.init!r}")
        need(self.init_range is None or 0 < self.init_range <= 1e3, f"init_range must be in (0, 1000] or null, got {self.init_range}")
        need(self.forget_bias is None or abs(self.forget_bias) <= 1e3, f"forget_bias must be in [-1000, 1000], got {self.forget_bias}")
        need(self.hash_buckets >= 0 and self.num_hashes > 0,
             f"hash_buckets must be >= 0 and num_hashes > 0, got {self.hash_buckets} and {self.num_hashes}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(not self.tie_weights or self.input == "embedding",
             "tie_weights needs input='embedding' (the softmax reuses the embedding matrix)")
        need(not self.tie_weights or self.embedding_dim == self.hidden_size,
             f"tie_weights needs embedding_dim == hidden_size, got {self.embedding_dim} and {self.hidden_size}")

    def to_dict(self) -> dict:
        return asdict(self)


class LanguageModel(nn.Module):
    r"""Next-token model :math:`p(w_{t+1} \mid w_{\le t}) = \mathrm{softmax}(W h_t + b)`.

    ``forward(tokens (B, T), state=None, lengths=None) -> (logits (B, T, V), state)``;
    the state is the recurrent layer's (a tensor, or ``(h, c)`` for LSTMs) and is
    what truncated BPTT carries from one batch to the next.
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.input == "embedding":
            self.encoder: nn.Module | None = nn.Embedding(c.vocab_size, c.embedding_dim)
            in_size = c.embedding_dim
        elif c.input == "hashing":
            self.encoder = HashEmbedding(c.hash_buckets or max(2, c.vocab_size // 2), c.embedding_dim,
                                         num_hashes=c.num_hashes)
            in_size = c.embedding_dim
        else:  # one-hot: the identity matrix as input, nothing learned
            self.encoder = None
            in_size = c.vocab_size
        self.rnn = recurrent_layer(c.cell, in_size, c.hidden_size, c.num_layers, dropout=c.dropout,
                                   init=c.init, forget_bias=c.forget_bias)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)
        if c.init_range is not None:
            for p in self.parameters():
                nn.init.uniform_(p, -c.init_range, c.init_range)
        if c.tie_weights:
            self.decoder.weight = self.encoder.weight  # type: ignore[union-attr]

    def encode(self, tokens: Tensor) -> Tensor:
        """``tokens (B, T)`` -> input vectors ``(B, T, E)``."""
        if self.encoder is None:
            return F.one_hot(tokens, self.config.vocab_size).to(self.decoder.weight.dtype)
        return self.encoder(tokens)

    def forward(self, tokens: Tensor, state=None, lengths: Tensor | None = None):
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"LanguageModel: tokens must be a LongTensor (batch, seq), "
                             f"got {tokens.dtype} of shape {tuple(tokens.shape)}")
        x = self.drop(self.encode(tokens))
        out, state = self.rnn(x, state, lengths=lengths)
        return self.decoder(self.drop(out)), state
