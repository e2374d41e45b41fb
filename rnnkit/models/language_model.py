"""Recurrent language model: input encoding -> recurrent layer -> softmax head."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..nn.hashing import HashEmbedding
from ..options import option
from ..nn.regularization import activation_penalty, embedding_dropout, locked_dropout
from .cells import (CELLS, INITS, RegularizationOptions, layer_regularization, recurrent_layer,
                    regularization_checks)
from .feedback import Feedback, choose_tokens, unroll

INPUTS = ("embedding", "onehot", "hashing")


@dataclass(frozen=True)
class LMConfig(RegularizationOptions):
    """Architecture of a :class:`LanguageModel`. Plain data, saved with every checkpoint.
    The recurrent layer's regularisation (``recurrent_dropout``, ``weight_drop``,
    ``hidden_dropout``, ``zoneout_h``, ``zoneout_c``) comes from :class:`RegularizationOptions`."""

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
    # regularisation around the recurrent layer (rnnkit.nn.regularization; AWD-LSTM, Merity et al. 2018);
    # the layer's own (recurrent_dropout, weight_drop, hidden_dropout, zoneout_h/_c): RegularizationOptions
    embedding_dropout: float = option(0.0, "drop whole word types from the embedding, per batch")
    input_dropout: float = option(0.0, "variational (locked) dropout on the embeddings")
    output_dropout: float = option(0.0, "variational dropout on the last layer's output")
    ar: float = option(0.0, "activation regularisation: ar * mean(dropped output^2)")
    tar: float = option(0.0, "temporal activation regularisation: tar * mean((h_t - h_t-1)^2)")

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
        for rate in ("embedding_dropout", "input_dropout", "output_dropout"):
            need(0.0 <= getattr(self, rate) < 1.0, f"{rate} must be in [0, 1), got {getattr(self, rate)}")
        need(not self.embedding_dropout or self.input == "embedding", "embedding_dropout needs input='embedding'")
        need(self.ar >= 0 and self.tar >= 0, f"ar and tar must be >= 0, got {self.ar} and {self.tar}")
        for ok, msg in regularization_checks(self):
            need(ok, msg)

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
                                   init=c.init, forget_bias=c.forget_bias, **layer_regularization(c))
        #: AR/TAR of the last training forward (0 when off); the LM task adds it to the loss
        self.activation_penalty: Tensor | None = None
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
        if self.config.embedding_dropout and isinstance(self.encoder, nn.Embedding):
            return embedding_dropout(self.encoder, tokens, self.config.embedding_dropout, self.training)
        return self.encoder(tokens)

    def forward(self, tokens: Tensor, state=None, lengths: Tensor | None = None, feedback: Feedback | None = None):
        """``tokens``: ids ``(B, T)``, or input vectors ``(B, T, E)`` (e.g. expected embeddings).
        With ``feedback``, runs step by step feeding back its own outputs (see
        :mod:`rnnkit.models.feedback`); without, one parallel pass (teacher forcing)."""
        if feedback is not None:
            if lengths is not None:
                raise ValueError("LanguageModel: lengths= and feedback= cannot be combined")
            return unroll(self, tokens, state, feedback)
        if tokens.dim() == 3 and tokens.is_floating_point() and tokens.shape[-1] == self.input_size:
            x = tokens
        elif tokens.dim() == 2 and tokens.dtype == torch.long:
            x = self.encode(tokens)
        else:
            raise ValueError(f"LanguageModel: tokens must be a LongTensor (batch, seq) or input vectors "
                             f"(batch, seq, {self.input_size}), got {tokens.dtype} of shape {tuple(tokens.shape)}")
        c, train = self.config, self.training
        x = locked_dropout(self.drop(x), c.input_dropout, train, time_dim=1)
        out, state = self.rnn(x, state, lengths=lengths)
        dropped = locked_dropout(self.drop(out), c.output_dropout, train, time_dim=1)
        self.activation_penalty = activation_penalty(out, dropped, c.ar, c.tar) if train and (c.ar or c.tar) else None
        return self.decoder(dropped), state

    @property
    def input_size(self) -> int:
        return self.rnn.input_size

    # --- the step-wise decoding contract (rnnkit.models.feedback) -------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None):
        """The state a stream starts from (the recurrent layer's, see
        :meth:`rnnkit.nn.Recurrent.init_state`), for :meth:`step` or ``forward``."""
        return self.rnn.init_state(batch_size, device=device, dtype=dtype)

    def step(self, inputs: Tensor, state=None):
        """One step: ids ``(B,)`` or input vectors ``(B, E)`` -> ``(logits (B, V), state)``."""
        logits, state = self(inputs.unsqueeze(1), state)
        return logits[:, 0], state

    def feedback(self, logits: Tensor, feed: str = "argmax", grad: str = "stop",
                 generator: torch.Generator | None = None) -> Tensor:
        """How a step's logits become the next input: token ids ``(B,)`` when nothing
        is differentiated through them, else input vectors ``(B, E)``."""
        if feed != "soft" and grad == "stop":
            return choose_tokens(logits, feed, generator)
        probs = logits.float().softmax(-1).to(self.decoder.weight.dtype)
        if feed != "soft":  # straight through: the hard token forward, the softmax's gradient back
            hard = F.one_hot(choose_tokens(logits, feed, generator), self.config.vocab_size).to(probs.dtype)
            probs = hard + probs - probs.detach()
        elif grad == "stop":
            probs = probs.detach()
        return self.weights_to_inputs(probs)

    def weights_to_inputs(self, weights: Tensor) -> Tensor:
        """``(B, V)`` weights over the vocabulary -> the weighted input vector ``(B, E)``."""
        if self.encoder is None:
            return weights
        if not isinstance(self.encoder, nn.Embedding):
            raise ValueError("LanguageModel: soft or straight-through feedback needs input='embedding' or "
                             "'onehot' (a hashed input has no embedding matrix to weight)")
        return weights @ self.encoder.weight

    def mix(self, teacher: Tensor, true_inputs: Tensor, fed: Tensor) -> Tensor:
        """Per sequence, the true input (``teacher`` True) or the fed-back one."""
        if fed.dtype == torch.long:
            return torch.where(teacher, true_inputs, fed)
        return torch.where(teacher.unsqueeze(-1), self.encode(true_inputs), fed)
