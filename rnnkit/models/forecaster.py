"""One-step-ahead forecaster of a (multivariate) series, with the step contract.

``forward(x (B, T, C), state=None, feedback=None) -> (prediction of x[t+1] (B, T, C), state)``:
a recurrent stack and a linear head. Fed its own predictions (``feedback``, or
:meth:`step` in a loop) it runs closed-loop multi-step forecasts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..options import option, require
from .cells import (CELLS, RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks,
                    stack_checks)
from .feedback import Feedback, closed_loop, unroll


@dataclass(frozen=True)
class ForecasterConfig(RegularizationOptions):
    channels: int                     # from the series
    cell: str = option("gru", "recurrent cell: " + ", ".join(CELLS))
    hidden_size: int = option(64, "recurrent state size")
    num_layers: int = option(1, "stacked recurrent layers")
    dropout: float = option(0.0, "dropout between recurrent layers")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")

    def __post_init__(self) -> None:
        checks = [(self.channels > 0, f"channels must be > 0, got {self.channels}")]
        require(checks + stack_checks(self) + regularization_checks(self), "model config:")

    def to_dict(self) -> dict:
        return asdict(self)


class SequenceForecaster(nn.Module):
    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rnn = recurrent_layer(c.cell, c.channels, c.hidden_size, c.num_layers, dropout=c.dropout, init=c.init,
                                   **layer_regularization(c))
        self.head = nn.Linear(c.hidden_size, c.channels)

    def forward(self, x: Tensor, state=None, feedback: Feedback | None = None):
        if x.dim() != 3 or x.shape[-1] != self.config.channels:
            raise ValueError(f"SequenceForecaster: x must be (batch, seq, {self.config.channels}), "
                             f"got shape {tuple(x.shape)}")
        if feedback is not None:
            return unroll(self, x, state, feedback)
        out, state = self.rnn(x, state)
        return self.head(out), state

    # --- the step-wise decoding contract (rnnkit.models.feedback) -------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None):
        """The state a stream starts from (the recurrent layer's, see
        :meth:`rnnkit.nn.Recurrent.init_state`), for :meth:`step` or ``forward``."""
        return self.rnn.init_state(batch_size, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state=None):
        """``(B, C)`` -> the prediction of the next value ``(B, C)``, and the state."""
        y, state = self(x_t.unsqueeze(1), state)
        return y[:, 0], state

    def feedback(self, y_t: Tensor, feed: str = "argmax", grad: str = "stop", generator=None) -> Tensor:
        """A forecaster feeds back its predicted value (``feed`` has no choice to make);
        ``grad="stop"`` treats it as data, ``"straight_through"`` differentiates through it."""
        return y_t.detach() if grad == "stop" else y_t

    def mix(self, teacher: Tensor, true_x: Tensor, fed: Tensor) -> Tensor:
        return torch.where(teacher.unsqueeze(-1), true_x, fed)

    def forecast(self, context: Tensor, horizon: int) -> Tensor:
        """Closed loop: read ``context (B, T0, C)``, then predict ``horizon`` steps, each
        from the previous prediction -> ``(B, horizon, C)``."""
        return closed_loop(self, context, horizon)
