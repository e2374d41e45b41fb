"""Multivariate multi-step forecaster: read ``lookback`` steps of ``C`` channels, predict
``horizon`` future values of the target channels.

Two modes (``mode``):

* ``direct``: the recurrent encoder reads the context and a linear head maps its last
  state to all ``horizon x output_size`` future values at once (one pass, no feedback).
* ``autoregressive``: a one-step-ahead model of *all* channels with the step contract
  (:mod:`rnnkit.models.feedback`): ``step(x_t (B, C), state) -> (x_{t+1} (B, C), state)``;
  :meth:`Forecaster.forecast` reads the context and rolls out closed loop.

The targets are the *last* ``output_size`` input channels (the task orders the
columns so; ETTh1's OT is last already, as in Informer's "MS" setting). With
``residual`` the network predicts the change from the last observed value, which keeps
forecasts at the current level when the series drifts away from the training range
(NLinear's observation, Zeng et al. 2023; ETTh1's test OT sits lower than its train OT).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from ..errors import ConfigError
from ..options import option, require
from .cells import (CELLS, RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks,
                    stack_checks)
from .feedback import closed_loop

MODES = ("direct", "autoregressive")


@dataclass(frozen=True)
class MultiForecasterConfig(RegularizationOptions):
    """Architecture of a :class:`Forecaster`; sizes, horizon and mode come from the task."""

    input_size: int                    # channels read (from the data)
    output_size: int                   # target channels predicted (the last output_size inputs)
    horizon: int                       # direct: future steps the head predicts
    mode: str = "direct"               # direct or autoregressive (the task's option)
    cell: str = option("gru", "recurrent cell: " + ", ".join(CELLS))
    hidden_size: int = option(64, "recurrent state size")
    num_layers: int = option(1, "stacked recurrent layers")
    dropout: float = option(0.0, "dropout between recurrent layers")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")
    residual: bool = option(True, "predict the change from the last observed value; direct: read the context "
                                   "relative to it too (robust to level shifts)")

    def __post_init__(self) -> None:
        checks = [(self.input_size > 0, f"input_size must be > 0, got {self.input_size}"),
                  (0 < self.output_size <= self.input_size,
                   f"output_size must be in [1, input_size={self.input_size}], got {self.output_size}"),
                  (self.horizon > 0, f"horizon must be > 0, got {self.horizon}"),
                  (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")]
        require(checks + stack_checks(self) + regularization_checks(self), "model config:")

    def to_dict(self) -> dict:
        return asdict(self)


class Forecaster(nn.Module):
    """``forward(x (B, T, C), state=None) -> (y, state)``:

    * direct: ``y (B, horizon, O)``, the forecast after the last step of ``x``;
    * autoregressive: ``y (B, T, C)``, the one-step-ahead prediction of ``x[:, t+1]`` at each t.

    :meth:`forecast` gives ``(B, horizon, O_or_C)`` in both modes.
    """

    def __init__(self, config: MultiForecasterConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rnn = recurrent_layer(c.cell, c.input_size, c.hidden_size, c.num_layers, dropout=c.dropout, init=c.init,
                                   **layer_regularization(c))
        out = c.horizon * c.output_size if c.mode == "direct" else c.input_size
        self.head = nn.Linear(c.hidden_size, out)

    @property
    def autoregressive(self) -> bool:
        return self.config.mode == "autoregressive"

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, object]:
        c = self.config
        if x.dim() != 3 or x.shape[-1] != c.input_size:
            raise ValueError(f"Forecaster: x must be (batch, seq, {c.input_size}), got shape {tuple(x.shape)}")
        if self.autoregressive:
            out, state = self.rnn(x, state)
            y = self.head(out)                                          # (B, T, C)
            return (y + x if c.residual else y), state
        last = x[:, -1:]                                                # (B, 1, C)
        # residual: read the context relative to its last value, so the mapping learnt on
        # the train months does not depend on the level, which drifts between splits
        out, state = self.rnn(x - last if c.residual else x, state)
        y = self.head(out[:, -1]).view(len(x), c.horizon, c.output_size)  # (B, H, O)
        if c.residual:
            y = y + last[..., c.input_size - c.output_size:]             # the targets' last values
        return y, state

    # --- the step-wise decoding contract (rnnkit.models.feedback) -------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None):
        """The state a stream starts from (the recurrent layer's, see
        :meth:`rnnkit.nn.Recurrent.init_state`), for :meth:`step` or ``forward``."""
        return self.rnn.init_state(batch_size, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state=None) -> tuple[Tensor, object]:
        """Autoregressive mode: ``(B, C)`` -> the prediction of the next value ``(B, C)``, and the state."""
        if not self.autoregressive:
            raise ConfigError("Forecaster.step needs mode = 'autoregressive' (a direct model predicts "
                              "the whole horizon at once)")
        y, state = self(x_t.unsqueeze(1), state)
        return y[:, 0], state

    def forecast(self, context: Tensor, horizon: int | None = None) -> Tensor:
        """Read ``context (B, T, C)``, predict ``horizon`` (default the configured one) steps:
        direct -> ``(B, horizon, O)``, the head's first ``horizon`` steps; autoregressive ->
        ``(B, horizon, C)``, closed loop, every prediction fed back as the next input."""
        horizon = self.config.horizon if horizon is None else horizon
        if self.autoregressive:
            return closed_loop(self, context, horizon)
        if horizon > self.config.horizon:
            raise ConfigError(f"this direct Forecaster predicts {self.config.horizon} steps, asked for {horizon}")
        return self(context)[0][:, :horizon]
