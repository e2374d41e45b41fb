"""Recurrent language model: input encoding -> recurrent layer -> softmax head."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..nn import GRU, LSTM, RNN, MinGRU, MinLSTM
from ..nn.hashing import HashEmbedding
from ..nn.recurrent import Recurrent

#: cell name -> (layer class, extra constructor arguments)
CELLS: dict[str, tuple[type[Recurrent], dict]] = {
    "lstm": (LSTM, {}),
    "lstm_peephole": (LSTM, {"peephole": True}),
    "lstm_layer_norm": (LSTM, {"layer_norm": True}),
    "gru": (GRU, {}),
    "gru_reset_before": (GRU, {"variant": "reset_before"}),
    "gru_simplified": (GRU, {"variant": "simplified"}),
    "rnn_tanh": (RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (RNN, {"nonlinearity": "relu"}),
    "mingru": (MinGRU, {}),
    "minlstm": (MinLSTM, {}),
}
INPUTS = ("embedding", "onehot", "hashing")


@dataclass(frozen=True)
class LMConfig:
    """Architecture of a :class:`LanguageModel`. Plain data, saved with every checkpoint."""

    vocab_size: int
    cell: str = "lstm"
    input: str = "embedding"          # "embedding", "onehot" or "hashing" (the hashing trick)
    embedding_dim: int = 128          # ignored for one-hot input (then = vocab_size)
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0              # Zaremba et al. 2014: on non-recurrent connections only
    tie_weights: bool = False         # Press & Wolf 2017 / Inan et al. 2017
    init: str = "torch"
    init_range: float | None = None   # U(-r, r) for every weight, as Zaremba (overrides init)
    forget_bias: float | None = None
    hash_buckets: int = 0             # hashing input: number of buckets (0 = vocab_size // 2)
    num_hashes: int = 2

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"model config: {msg}")
        need(isinstance(self.vocab_size, int) and self.vocab_size > 0, f"vocab_size must be > 0, got {self.vocab_size!r}")
        need(self.cell in CELLS, f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        need(self.input in INPUTS, f"input must be one of {INPUTS}, got {self.input!r}")
        need(self.hidden_size > 0 and self.num_layers > 0, "hidden_size and num_layers must be > 0")
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
        layer_cls, extras = CELLS[c.cell]
        self.rnn = layer_cls(in_size, c.hidden_size, num_layers=c.num_layers, batch_first=True,
                             dropout=c.dropout if c.num_layers > 1 else 0.0, init=c.init,
                             forget_bias=c.forget_bias, **extras)
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

    @staticmethod
    def detach_state(state):
        """Cut the graph at a batch boundary (truncated BPTT) keeping the values."""
        if state is None:
            return None
        return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
