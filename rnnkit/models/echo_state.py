"""An echo state network as a one-step-ahead forecaster the training loop fits in closed form.

Same calling convention as :class:`~rnnkit.models.forecaster.SequenceForecaster`
(``forward(x (B, T, C), state) -> (prediction of x[t+1], state)`` and the step
contract), so the forecast task evaluates it like any trained forecaster. Training is
not gradient descent: the loop's closed-form hook (``closed_form = True``) calls
:meth:`begin_fit`, then :meth:`accumulate` on every training window (streaming XᵀX and
XᵀY, bounded memory), then :meth:`solve` (the ridge readout).

The carried state is ``(x (B, N) float64, seen (1,) float64)``: the reservoir state and
how many steps it has run since a zero state, so the washout (the first ``washout``
steps, while the zero initial state is still echoing) spans windows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..options import option
from ..reservoir import ESNConfig, EchoStateNetwork, RidgeAccumulator
from .feedback import closed_loop


@dataclass(frozen=True)
class EchoStateConfig:
    channels: int                     # from the series
    reservoir_size: int = option(300, "reservoir units N")
    spectral_radius: float = option(0.9, "largest |eigenvalue| of the recurrent matrix W")
    leak_rate: float = option(0.3, "leaky integration a: x_t = (1 - a) x_(t-1) + a tanh(...)")
    input_scaling: float = option(1.0, "input weights ~ U(-s, s)")
    bias_scaling: float = option(0.0, "bias ~ U(-s, s)")
    density: float = option(0.1, "fraction of non-zero recurrent weights")
    washout: int = option(100, "steps after a zero state left out of the fit")
    ridge: float = option(1e-8, "ridge (Tikhonov) penalty of the readout")
    reservoir_seed: int = option(0, "seed of the random reservoir")

    def __post_init__(self) -> None:
        self.esn_config()   # validates, with the ESN's own messages

    def esn_config(self) -> ESNConfig:
        return ESNConfig(input_size=self.channels, reservoir_size=self.reservoir_size, output_size=self.channels,
                         spectral_radius=self.spectral_radius, leak_rate=self.leak_rate,
                         input_scaling=self.input_scaling, bias_scaling=self.bias_scaling, density=self.density,
                         washout=self.washout, ridge=self.ridge, seed=self.reservoir_seed)

    def to_dict(self) -> dict:
        return asdict(self)


class EchoStateForecaster(nn.Module):
    """``forward(x (B, T, C), state=None) -> (prediction (B, T, C), state)``; fitted by the
    loop's closed-form hook, never by an optimiser (it has no parameters, only buffers)."""

    closed_form = True

    def __init__(self, config: EchoStateConfig) -> None:
        super().__init__()
        self.config = config
        self.esn = EchoStateNetwork(config.esn_config())
        self._acc: RidgeAccumulator | None = None

    def _start(self, x: Tensor, state) -> tuple[Tensor, Tensor]:
        if state is None:
            return self.esn._init_state(x.shape[0])[0], torch.zeros(1, dtype=torch.float64, device=x.device)
        h, seen = state
        return h.to(torch.float64), seen

    def _states(self, x: Tensor, state) -> tuple[Tensor, tuple[Tensor, Tensor], int]:
        """Reservoir states ``(B, T, N)``, the state after them, and how many leading steps
        are still inside the washout."""
        if x.dim() != 3 or x.shape[-1] != self.config.channels:
            raise ValueError(f"EchoStateForecaster: x must be (batch, seq, {self.config.channels}), "
                             f"got shape {tuple(x.shape)}")
        h, seen = self._start(x, state)
        u = x.to(torch.float64)
        states, h, _, _ = self.esn._run(u, h, None, None, False)
        return states, (h, seen + x.shape[1]), self.washout_left(state, x.shape[1])

    def washout_left(self, state, steps: int) -> int:
        """How many of the next ``steps`` steps from ``state`` are still inside the washout."""
        seen = 0 if state is None else int(state[1].item())
        return min(max(self.config.washout - seen, 0), steps)

    def forward(self, x: Tensor, state=None, feedback=None):
        if feedback is not None:
            raise ValueError("EchoStateForecaster is fitted in closed form under teacher forcing; "
                             "it takes no feedback regime")
        states, state, _ = self._states(x, state)
        return self.esn._readout(x.to(torch.float64), states).to(x.dtype), state

    # --- the closed-form hook of the training loop ----------------------------------
    def begin_fit(self) -> None:
        self._acc = RidgeAccumulator(self.esn.config.n_features, self.config.channels)

    @torch.no_grad()
    def accumulate(self, x: Tensor, y: Tensor, state=None):
        """Add one window's rows (past the washout) to the normal equations; returns the
        carried state. ``x, y (B, T, C)``: inputs and next-step targets."""
        if self._acc is None:
            raise RuntimeError("EchoStateForecaster.accumulate before begin_fit")
        states, state, washout = self._states(x, state)
        u = x.to(torch.float64)
        if washout < x.shape[1]:
            self._acc.update(self.esn._features(u[:, washout:], states[:, washout:]), y[:, washout:].double())
        return state

    def solve(self) -> None:
        if self._acc is None or self._acc.n_rows == 0:
            raise RuntimeError("EchoStateForecaster.solve: no rows past the washout were accumulated "
                               f"(washout={self.config.washout}); use a longer series or a smaller washout")
        self.esn.W_out.copy_(self._acc.solve(self.config.ridge).T)
        self.esn.fitted.fill_(True)
        self._acc = None

    # --- the step-wise decoding contract (rnnkit.models.feedback) -------------------
    def step(self, x_t: Tensor, state=None):
        """``(B, C)`` -> the prediction of the next value ``(B, C)``, and the state."""
        y, state = self(x_t.unsqueeze(1), state)
        return y[:, 0], state

    def feedback(self, y_t: Tensor, feed: str = "argmax", grad: str = "stop", generator=None) -> Tensor:
        return y_t.detach()

    def forecast(self, context: Tensor, horizon: int) -> Tensor:
        """Closed loop: read ``context (B, T0, C)``, then predict ``horizon`` steps, each
        from the previous prediction -> ``(B, horizon, C)``."""
        return closed_loop(self, context, horizon)
