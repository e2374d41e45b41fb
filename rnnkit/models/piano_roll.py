"""A recurrent model of polyphonic music: the next piano-roll frame, one Bernoulli per key.

``forward(x (B, T, K), state=None, lengths=None) -> (logits (B, T, K), state)``:
a recurrent stack reads frames and a linear head gives, at each step, the logit of
every key sounding in the *next* frame, the keys independent given the state (the
RNN baseline of Boulanger-Lewandowski et al. 2012 and Chung et al. 2014). The step
contract (:meth:`PianoRollModel.step`) and :meth:`PianoRollModel.sample` generate
one-to-many: each sampled frame is fed back as the next input.

Inputs start with an all-zero *start frame*, so a piece's first real frame is
predicted too (:mod:`rnnkit.tasks.music`); :meth:`~PianoRollModel.sample` does the same.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from ..options import option, require
from .cells import (CELLS, RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks,
                    stack_checks)


@dataclass(frozen=True)
class PianoRollConfig(RegularizationOptions):
    """Architecture of a :class:`PianoRollModel`; ``keys`` comes from the data (88 piano keys)."""

    keys: int = 88
    cell: str = option("gru", "recurrent cell: " + ", ".join(CELLS))
    hidden_size: int = option(200, "recurrent state size")
    num_layers: int = option(1, "stacked recurrent layers")
    dropout: float = option(0.0, "dropout between recurrent layers and on the top layer's output")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")

    def __post_init__(self) -> None:
        checks = [(self.keys > 0, f"keys must be > 0, got {self.keys}")]
        require(checks + stack_checks(self) + regularization_checks(self), "model config:")

    def to_dict(self) -> dict:
        return asdict(self)


class PianoRollModel(nn.Module):
    """Next-frame logits of a piano roll; see the module docstring."""

    def __init__(self, config: PianoRollConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rnn = recurrent_layer(c.cell, c.keys, c.hidden_size, c.num_layers, dropout=c.dropout, init=c.init,
                                   **layer_regularization(c))
        # dropout before the head too: with one layer the stack has none of its own
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, c.keys)

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None):
        """``x (B, T, K)`` frames (0/1 floats), ``lengths (B,)`` of a padded batch ->
        ``(logits (B, T, K) of the next frame, state)``; with ``lengths`` the state is
        each sequence's at its last real step."""
        if x.dim() != 3 or x.shape[-1] != self.config.keys:
            raise ShapeError(f"PianoRollModel: x must be (batch, steps, {self.config.keys}), "
                             f"got shape {tuple(x.shape)}")
        out, state = self.rnn(x, state, lengths=lengths)
        return self.head(self.drop(out)), state

    # --- the step-wise decoding contract ----------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None):
        """The state a stream starts from (the recurrent layer's, see
        :meth:`rnnkit.nn.Recurrent.init_state`), for :meth:`step` or ``forward``."""
        return self.rnn.init_state(batch_size, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state=None):
        """One frame ``(B, K)`` -> the next frame's logits ``(B, K)``, and the state."""
        if x_t.dim() != 2:
            raise ShapeError(f"PianoRollModel.step: x_t must be (batch, {self.config.keys}), "
                             f"got shape {tuple(x_t.shape)}")
        logits, state = self(x_t.unsqueeze(1), state)
        return logits[:, 0], state

    @torch.no_grad()
    def sample(self, steps: int, primer: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0, batch_size: int = 1) -> Tensor:
        """``steps`` new frames ``(B, steps, K)`` (0/1 floats), each key drawn from
        ``Bernoulli(sigmoid(logit / temperature))`` and fed back as the next input.

        The model first reads the start frame, then ``primer (B, T0, K)`` if given
        (``B`` is then the primer's batch, else ``batch_size``). Runs in the model's
        current mode: call ``eval()`` first to sample without dropout.
        """
        if steps < 0 or not temperature > 0:
            raise ConfigError(f"sample: steps must be >= 0 and temperature > 0, got {steps}, {temperature}")
        p = next(self.parameters())
        if primer is not None:
            if primer.dim() != 3 or primer.shape[-1] != self.config.keys:
                raise ShapeError(f"sample: primer must be (batch, steps, {self.config.keys}), "
                                 f"got shape {tuple(primer.shape)}")
            batch_size = primer.shape[0]
        start = torch.zeros(batch_size, 1, self.config.keys, device=p.device, dtype=p.dtype)
        x = start if primer is None else torch.cat([start, primer.to(start)], 1)
        logits, state = self(x)
        logits = logits[:, -1]
        frames = []
        for _ in range(steps):
            frame = torch.bernoulli(torch.sigmoid(logits.float() / temperature), generator=generator).to(p.dtype)
            frames.append(frame)
            logits, state = self.step(frame, state)
        return torch.stack(frames, 1) if frames else start[:, :0]
