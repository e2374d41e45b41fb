"""Many-to-one regression: a recurrent stack read at the last step, then a linear head."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from ..options import option, require
from .cells import (CELLS, RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks,
                    stack_checks)


@dataclass(frozen=True)
class RegressorConfig(RegularizationOptions):
    """Architecture of a :class:`SequenceRegressor`; sizes of input and output come from the task."""

    input_size: int
    output_size: int
    cell: str = option("lstm", "recurrent cell: " + ", ".join(CELLS))
    hidden_size: int = option(128, "recurrent state size")
    num_layers: int = option(1, "stacked recurrent layers")
    dropout: float = option(0.0, "dropout between recurrent layers")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")
    forget_bias: float | None = option(None, "initial LSTM forget-gate bias (Jozefowicz et al. 2015)")

    def __post_init__(self) -> None:
        checks = [
            (self.input_size > 0 and self.output_size > 0, "input_size and output_size must be > 0"),
            (self.forget_bias is None or abs(self.forget_bias) <= 1e3, f"forget_bias must be in [-1000, 1000], got {self.forget_bias}"),
        ]
        require(checks + stack_checks(self) + regularization_checks(self), "model config:")

    def to_dict(self) -> dict:
        return asdict(self)


class SequenceRegressor(nn.Module):
    """``forward(x (B, T, I), lengths=None) -> (B, O)``: the head reads the top layer's
    state at each sequence's last real step (many-to-one)."""

    def __init__(self, config: RegressorConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rnn = recurrent_layer(c.cell, c.input_size, c.hidden_size, c.num_layers, dropout=c.dropout,
                                   init=c.init, forget_bias=c.forget_bias, **layer_regularization(c))
        self.head = nn.Linear(c.hidden_size, c.output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.config.input_size:
            raise ValueError(f"SequenceRegressor: x must be (batch, seq, {self.config.input_size}), "
                             f"got shape {tuple(x.shape)}")
        _, state = self.rnn(x, lengths=lengths)
        h = state[0] if isinstance(state, tuple) else state    # (L, B, H): h_n at each last real step
        return self.head(h[-1])
