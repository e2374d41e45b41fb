"""Reservoir computing: echo-state networks and extreme learning machines.

An echo-state network (Jaeger 2001; Lukosevicius 2012, "A practical guide to applying
echo state networks") drives a fixed, random, sparse recurrent layer (the reservoir)
with the input and trains only a linear readout, in closed form, by ridge regression:

    x_t = (1 - a) x_{t-1} + a tanh(W_in u_t + W x_{t-1} + b [+ W_fb y_{t-1}])
    y_t = W_out [1; u_t; x_t]          (the input term only with ``include_input``)

``W`` is rescaled so that its spectral radius (largest eigenvalue modulus) is
``spectral_radius``; ``W_in`` is uniform in [-input_scaling, input_scaling], ``b`` in
[-bias_scaling, bias_scaling] and ``W_fb`` in [-feedback_scaling, feedback_scaling].
Every random weight comes from ``seed`` through a :class:`torch.Generator` and is a
buffer, never a parameter: the optimiser-free ``fit`` is the only training.

The readout is solved from the normal equations ``(XᵀX + λI) W = XᵀY`` with XᵀX and
XᵀY accumulated in float64 chunk by chunk (:class:`RidgeAccumulator`), so memory does
not grow with the length of the series. The reservoir itself runs in float64.

An :class:`ExtremeLearningMachine` (Huang et al. 2006) is the same idea without time:
a fixed random hidden layer and a ridge readout for ``(N, features)`` data.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .errors import ConfigError, DataError

__all__ = ["ESNConfig", "EchoStateNetwork", "EchoStatePropertyWarning", "ExtremeLearningMachine",
           "RidgeAccumulator", "spectral_radius"]

_DTYPE = torch.float64
#: input or bias scalings above this drive tanh into saturation for any ordinary input
_SATURATION_SCALING = 10.0
#: a fitted reservoir whose states have more than this fraction of |x| > 0.99 is saturated
_SATURATED_FRACTION = 0.5


class EchoStatePropertyWarning(UserWarning):
    """The settings make the echo-state property (the state forgetting its initial
    condition) unlikely: the effective spectral radius exceeds 1, or tanh saturates."""


# --------------------------------------------------------------------------- helpers

def spectral_radius(matrix: Tensor) -> float:
    """Largest eigenvalue modulus of a square (dense) matrix, via ``torch.linalg.eigvals``."""
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"spectral_radius: need a square matrix, got shape {tuple(matrix.shape)}")
    if matrix.numel() == 0:
        return 0.0
    return float(torch.linalg.eigvals(matrix.to(_DTYPE)).abs().max())


def _as_tensor(x, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise TypeError(f"{name}: need a real-valued array, got dtype {t.dtype}")
    return t.to(_DTYPE)


def _check_finite(t: Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise DataError(f"{name} contains {kind} values (first non-finite entry at index {tuple(bad)})")


def _uniform(shape: tuple[int, ...], scale: float, gen: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=gen, dtype=_DTYPE) * 2.0 - 1.0) * scale


# --------------------------------------------------------------------------- ridge

class RidgeAccumulator:
    """Streaming ridge regression: accumulates XᵀX and XᵀY in float64 over chunks.

    ``update(X, Y)`` takes rows ``X (..., features)`` and ``Y (..., outputs)``;
    ``solve(ridge)`` returns ``W (features, outputs)`` solving ``(XᵀX + ridge I) W = XᵀY``,
    equal to the batch solution on all rows at once. Memory is O(features²) whatever
    the number of rows.
    """

    def __init__(self, n_features: int, n_outputs: int) -> None:
        if n_features < 1 or n_outputs < 1:
            raise ValueError(f"RidgeAccumulator: need n_features >= 1 and n_outputs >= 1, "
                             f"got {n_features}, {n_outputs}")
        self.n_features, self.n_outputs = int(n_features), int(n_outputs)
        self.xtx = torch.zeros(self.n_features, self.n_features, dtype=_DTYPE)
        self.xty = torch.zeros(self.n_features, self.n_outputs, dtype=_DTYPE)
        self.n_rows = 0

    def update(self, x: Tensor, y: Tensor) -> None:
        x = _as_tensor(x, "X")
        y = _as_tensor(y, "Y")
        if y.dim() == x.dim() - 1 and self.n_outputs == 1:
            y = y.unsqueeze(-1)
        if x.shape[-1] != self.n_features or y.shape[-1] != self.n_outputs or x.shape[:-1] != y.shape[:-1]:
            raise ValueError(f"RidgeAccumulator.update: need X (..., {self.n_features}) and Y "
                             f"(..., {self.n_outputs}) with the same leading shape; got X {tuple(x.shape)}, "
                             f"Y {tuple(y.shape)}")
        _check_finite(x, "X")
        _check_finite(y, "Y")
        x = x.reshape(-1, self.n_features)
        y = y.reshape(-1, self.n_outputs)
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.n_rows += x.shape[0]

    def solve(self, ridge: float = 0.0) -> Tensor:
        if not math.isfinite(ridge) or ridge < 0:
            raise ConfigError(f"ridge must be a finite number >= 0, got {ridge}")
        if self.n_rows == 0:
            raise DataError("RidgeAccumulator.solve: no rows were accumulated")
        a = self.xtx + ridge * torch.eye(self.n_features, dtype=_DTYPE)
        try:
            return torch.linalg.solve(a, self.xty)
        except RuntimeError:  # singular (ridge 0, too few rows): the minimum-norm solution
            return torch.linalg.lstsq(a, self.xty, driver="gelsd").solution


# --------------------------------------------------------------------------- ESN

@dataclass(frozen=True)
class ESNConfig:
    """Settings of an :class:`EchoStateNetwork` (validated on construction)."""

    input_size: int
    reservoir_size: int
    output_size: int
    spectral_radius: float = 0.9
    leak_rate: float = 1.0
    input_scaling: float = 1.0
    bias_scaling: float = 0.0
    density: float = 0.1            #: fraction of non-zero recurrent weights
    washout: int = 100              #: initial steps of each sequence left out of the fit
    ridge: float = 1e-6
    output_feedback: bool = False
    feedback_scaling: float = 1.0
    include_input: bool = True      #: readout on [1; u_t; x_t] instead of [1; x_t]
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("input_size", "reservoir_size", "output_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ESNConfig.{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.washout, bool) or not isinstance(self.washout, int) or self.washout < 0:
            raise ConfigError(f"ESNConfig.washout must be an integer >= 0, got {self.washout!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"ESNConfig.seed must be an integer, got {self.seed!r}")
        for name in ("spectral_radius", "leak_rate", "input_scaling", "bias_scaling", "density", "ridge",
                     "feedback_scaling"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"ESNConfig.{name} must be a finite number, got {v!r}")
        if self.spectral_radius <= 0:
            raise ConfigError(f"ESNConfig.spectral_radius must be > 0, got {self.spectral_radius}")
        if not 0 < self.leak_rate <= 1:
            raise ConfigError(f"ESNConfig.leak_rate must be in (0, 1], got {self.leak_rate}")
        if not 0 < self.density <= 1:
            raise ConfigError(f"ESNConfig.density must be in (0, 1], got {self.density}")
        if self.ridge < 0:
            raise ConfigError(f"ESNConfig.ridge must be >= 0, got {self.ridge}")
        for name in ("input_scaling", "bias_scaling", "feedback_scaling"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ESNConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.output_feedback, bool):
            raise ConfigError(f"ESNConfig.output_feedback must be a bool, got {self.output_feedback!r}")
        if not isinstance(self.include_input, bool):
            raise ConfigError(f"ESNConfig.include_input must be a bool, got {self.include_input!r}")

    @property
    def n_features(self) -> int:
        """Width of the readout's feature vector [1; (u_t;) x_t]."""
        return 1 + (self.input_size if self.include_input else 0) + self.reservoir_size


class EchoStateNetwork(nn.Module):
    """Leaky-integrator echo-state network with a ridge-regression readout.

    >>> esn = EchoStateNetwork(ESNConfig(input_size=1, reservoir_size=300, output_size=1))
    >>> esn.fit(u, y)           # u (T, 1) or (B, T, 1), y likewise
    >>> esn(u_test)             # open loop: outputs for every step
    >>> esn.generate(u_warm, 100)  # closed loop: each output becomes the next input

    Also accepts the config's fields as keyword arguments: ``EchoStateNetwork(input_size=1, ...)``.
    Buffers: ``W_in (N, I)``, ``W (N, N)``, ``bias (N,)``, ``W_fb (N, O)`` (zero-size
    without feedback), ``W_out (O, features)``. All computation is float64; outputs come
    back in the input's floating dtype (float64 for integer input).
    """

    def __init__(self, config: Optional[ESNConfig] = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = ESNConfig(**kwargs)
        elif kwargs:
            raise TypeError("EchoStateNetwork: pass either a config or keyword arguments, not both")
        self.config = c = config
        n = c.reservoir_size
        if torch.empty(0).is_meta:   # a shape-only copy (a checkpoint's check): nothing to draw or solve
            self._register(*(torch.empty(shape, dtype=_DTYPE) for shape in
                             ((n, c.input_size), (n,), (n, n), (n, c.output_size if c.output_feedback else 0))))
            self.effective_spectral_radius = math.nan
            return
        gen = torch.Generator().manual_seed(c.seed)
        w_in = _uniform((n, c.input_size), c.input_scaling, gen)
        bias = _uniform((n,), c.bias_scaling, gen)
        w, eigs = None, None
        for _ in range(20):  # a very sparse small matrix can be nilpotent (radius 0): redraw
            mask = torch.rand((n, n), generator=gen, dtype=_DTYPE) < c.density
            cand = _uniform((n, n), 1.0, gen) * mask
            e = torch.linalg.eigvals(cand)
            rho = float(e.abs().max())
            if rho > 1e-12:
                w, eigs = cand * (c.spectral_radius / rho), e * (c.spectral_radius / rho)
                break
        if w is None:
            raise ConfigError(f"ESNConfig.density={c.density} is too small for reservoir_size={n}: every "
                              "drawn recurrent matrix had spectral radius 0; raise density or reservoir_size")
        w_fb = _uniform((n, c.output_size), c.feedback_scaling, gen) if c.output_feedback \
            else torch.zeros(n, 0, dtype=_DTYPE)
        self._register(w_in, bias, w, w_fb)
        #: largest |eigenvalue| of (1 - a) I + a W, the linearised state map
        self.effective_spectral_radius = float(((1 - c.leak_rate) + c.leak_rate * eigs).abs().max())
        self._warn_echo_state()

    def _register(self, w_in: Tensor, bias: Tensor, w: Tensor, w_fb: Tensor) -> None:
        c = self.config
        self.register_buffer("W_in", w_in)
        self.register_buffer("W", w)
        self.register_buffer("bias", bias)
        self.register_buffer("W_fb", w_fb)
        self.register_buffer("W_out", torch.zeros(c.output_size, c.n_features, dtype=_DTYPE))
        self.register_buffer("fitted", torch.tensor(False))

    # -- checks ------------------------------------------------------------------
    def _warn_echo_state(self) -> None:
        c = self.config
        if self.effective_spectral_radius > 1.0 + 1e-9:
            warnings.warn(f"EchoStateNetwork: the effective spectral radius of (1 - leak_rate) I + leak_rate W "
                          f"is {self.effective_spectral_radius:.3f} > 1 (spectral_radius={c.spectral_radius}, "
                          f"leak_rate={c.leak_rate}); the echo-state property is unlikely",
                          EchoStatePropertyWarning, stacklevel=3)
        for name in ("input_scaling", "bias_scaling", "feedback_scaling"):
            v = getattr(c, name)
            if v > _SATURATION_SCALING and (name != "feedback_scaling" or c.output_feedback):
                warnings.warn(f"EchoStateNetwork: {name}={v} > {_SATURATION_SCALING} saturates tanh; "
                              "the reservoir loses its memory of earlier inputs (echo-state property unlikely)",
                              EchoStatePropertyWarning, stacklevel=3)

    def _prepare(self, x, name: str, width: int) -> tuple[Tensor, bool]:
        """(B, T, width) float64 tensor and whether the input was unbatched (T, width)."""
        t = _as_tensor(x, name)
        shape = tuple(t.shape)
        if t.dim() not in (2, 3):
            raise ValueError(f"{name}: need shape (T, {width}) or (B, T, {width}), got {shape}")
        if t.shape[-1] != width:
            raise ValueError(f"{name}: last dimension must be {width}, got shape {shape}")
        _check_finite(t, name)                       # index reported in the caller's shape
        unbatched = t.dim() == 2
        if unbatched:
            t = t.unsqueeze(0)
        return t.to(self.W.device), unbatched

    @staticmethod
    def _out_dtype(x) -> torch.dtype:
        dt = getattr(x, "dtype", None)
        return dt if isinstance(dt, torch.dtype) and dt.is_floating_point else _DTYPE

    # -- the reservoir -------------------------------------------------------------
    def _run(self, u: Tensor, x: Tensor, y_prev: Optional[Tensor], teacher: Optional[Tensor],
             collect_outputs: bool) -> tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """Run over ``u (B, T, I)`` from state ``x (B, N)``. Feedback uses ``teacher[:, t-1]``
        when given (teacher forcing), else the readout's own output. Returns the states
        (B, T, N), the final state, the final previous output, and the outputs if asked."""
        c = self.config
        a = c.leak_rate
        drive = u @ self.W_in.T + self.bias          # (B, T, N), the input part, all at once
        w_t = self.W.T
        feedback = c.output_feedback
        need_out = feedback and teacher is None       # the readout is needed inside the loop
        states = torch.empty(u.shape[0], u.shape[1], c.reservoir_size, dtype=_DTYPE, device=u.device)
        outs = torch.empty(u.shape[0], u.shape[1], c.output_size, dtype=_DTYPE, device=u.device) \
            if need_out else None
        for t in range(u.shape[1]):
            pre = drive[:, t] + x @ w_t
            if feedback:
                pre = pre + y_prev @ self.W_fb.T
            x = (1 - a) * x + a * torch.tanh(pre) if a != 1 else torch.tanh(pre)
            states[:, t] = x
            if need_out:
                y = self._readout(u[:, t], x)
                outs[:, t] = y
            if feedback:
                y_prev = teacher[:, t] if teacher is not None else y
        if collect_outputs and outs is None:           # all at once after the loop
            outs = self._readout(u, states)
        return states, x, y_prev, outs

    def _features(self, u: Tensor, x: Tensor) -> Tensor:
        ones = torch.ones(*x.shape[:-1], 1, dtype=_DTYPE, device=x.device)
        parts = [ones, u, x] if self.config.include_input else [ones, x]
        return torch.cat(parts, dim=-1)

    def _readout(self, u: Tensor, x: Tensor) -> Tensor:
        return self._features(u, x) @ self.W_out.T

    def _init_state(self, batch: int) -> tuple[Tensor, Optional[Tensor]]:
        x = torch.zeros(batch, self.config.reservoir_size, dtype=_DTYPE, device=self.W.device)
        y = torch.zeros(batch, self.config.output_size, dtype=_DTYPE, device=self.W.device) \
            if self.config.output_feedback else None
        return x, y

    def states(self, inputs, teacher=None) -> Tensor:
        """Reservoir states ``(B, T, N)`` (or ``(T, N)``) for ``inputs`` from a zero state.
        With output feedback, ``teacher`` (shaped like the targets) is fed back; without
        it the readout's outputs are (which needs a fitted readout)."""
        u, unbatched = self._prepare(inputs, "inputs", self.config.input_size)
        tf = self._teacher(teacher, u, inputs) if teacher is not None else None
        if self.config.output_feedback and tf is None:
            self._require_fitted()
        x, y = self._init_state(u.shape[0])
        s = self._run(u, x, y, tf, False)[0]
        return s[0] if unbatched else s

    def _teacher(self, targets, u: Tensor, inputs) -> Tensor:
        y, _ = self._prepare(targets, "targets", self.config.output_size)
        if y.shape[:2] != u.shape[:2]:
            raise ValueError(f"targets shape {tuple(torch.as_tensor(targets).shape)} does not match inputs "
                             f"shape {tuple(torch.as_tensor(inputs).shape)} (batch and time must agree)")
        return y

    def _require_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("EchoStateNetwork: the readout is not fitted; call fit() first")

    # -- training ------------------------------------------------------------------
    def fit(self, inputs, targets, chunk_size: Optional[int] = 1024, ridge: Optional[float] = None
            ) -> "EchoStateNetwork":
        """Fit the readout by ridge regression on ``inputs (B, T, I)`` or ``(T, I)`` and
        ``targets`` of the same leading shape with ``output_size`` features. The reservoir
        runs ``chunk_size`` steps at a time (None: all at once) and the first ``washout``
        steps of every sequence are left out. With output feedback the targets are fed
        back (teacher forcing). Returns ``self``."""
        c = self.config
        ridge = c.ridge if ridge is None else ridge
        if not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
            raise ConfigError(f"ridge must be a finite number >= 0, got {ridge!r}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        u, _ = self._prepare(inputs, "inputs", c.input_size)
        y = self._teacher(targets, u, inputs)
        steps = u.shape[1]
        if steps <= c.washout:
            raise ValueError(f"fit: sequences of {steps} steps leave nothing after washout={c.washout}; "
                             "pass longer sequences or a smaller washout")
        chunk = steps if chunk_size is None else chunk_size
        acc = RidgeAccumulator(c.n_features, c.output_size)
        x, y_prev = self._init_state(u.shape[0])
        saturated, counted = 0, 0
        for start in range(0, steps, chunk):
            stop = min(start + chunk, steps)
            uc, yc = u[:, start:stop], y[:, start:stop]
            s, x, y_prev, _ = self._run(uc, x, y_prev, yc if c.output_feedback else None, False)
            keep = max(c.washout - start, 0)
            if keep >= stop - start:
                continue
            s, uc, yc = s[:, keep:], uc[:, keep:], yc[:, keep:]
            acc.update(self._features(uc, s), yc)
            saturated += int((s.abs() > 0.99).sum())
            counted += s.numel()
        self.W_out.copy_(acc.solve(ridge).T)
        self.fitted.fill_(True)
        if counted and saturated / counted > _SATURATED_FRACTION:
            warnings.warn(f"EchoStateNetwork.fit: {100 * saturated / counted:.0f}% of reservoir states have "
                          "|x| > 0.99 (tanh saturated); lower input_scaling or scale the inputs "
                          "(echo-state property unlikely)", EchoStatePropertyWarning, stacklevel=2)
        return self

    # -- inference -----------------------------------------------------------------
    def forward(self, inputs, teacher=None) -> Tensor:
        """Open-loop (teacher-forced input) outputs ``(B, T, O)`` or ``(T, O)`` for every step,
        from a zero state. With output feedback, ``teacher`` (target-shaped) is fed back
        if given, else the network's own previous outputs."""
        self._require_fitted()
        u, unbatched = self._prepare(inputs, "inputs", self.config.input_size)
        tf = self._teacher(teacher, u, inputs) if teacher is not None else None
        x, y = self._init_state(u.shape[0])
        out = self._run(u, x, y, tf, True)[3]
        out = out.to(self._out_dtype(inputs))
        return out[0] if unbatched else out

    predict = forward

    @torch.no_grad()
    def generate(self, warmup_inputs, steps: int) -> Tensor:
        """Closed-loop generation: run the ``warmup_inputs`` (teacher-forced), then feed each
        output back as the next input for ``steps`` steps. Needs ``input_size ==
        output_size`` (a one-step-ahead model). Returns ``(steps, O)`` or ``(B, steps, O)``;
        the first row is the prediction that follows the last warmup input."""
        c = self.config
        self._require_fitted()
        if c.input_size != c.output_size:
            raise ValueError(f"generate: the output is fed back as the input, so input_size ({c.input_size}) "
                             f"must equal output_size ({c.output_size})")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"generate: steps must be an integer >= 0, got {steps!r}")
        u, unbatched = self._prepare(warmup_inputs, "warmup_inputs", c.input_size)
        if u.shape[1] < 1:
            raise ValueError(f"generate: warmup_inputs need at least one step, got shape {tuple(u.shape)}")
        x, y_prev = self._init_state(u.shape[0])
        _, x, y_prev, outs = self._run(u, x, y_prev, None, True)
        y = outs[:, -1]
        gen = torch.empty(u.shape[0], steps, c.output_size, dtype=_DTYPE, device=u.device)
        for t in range(steps):
            gen[:, t] = y
            if t == steps - 1:
                break
            _, x, y_prev, o = self._run(y.unsqueeze(1), x, y_prev, None, True)
            y = o[:, 0]
        gen = gen.to(self._out_dtype(warmup_inputs))
        return gen[0] if unbatched else gen


# --------------------------------------------------------------------------- ELM

_ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
                "sin": torch.sin, "identity": lambda z: z}


class ExtremeLearningMachine(nn.Module):
    """A fixed random hidden layer ``h = act(W_in x + b)`` and a ridge readout
    ``y = W_out [1; h]`` for ``(N, features)`` data. ``fit(X, Y)`` then ``predict(X)``."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int = 1, *, activation: str = "tanh",
                 input_scaling: float = 1.0, bias_scaling: float = 1.0, ridge: float = 1e-6, seed: int = 0) -> None:
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ExtremeLearningMachine.{name} must be an integer >= 1, got {v!r}")
        for name, v in (("input_scaling", input_scaling), ("bias_scaling", bias_scaling), ("ridge", ridge)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"ExtremeLearningMachine.{name} must be a finite number >= 0, got {v!r}")
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"ExtremeLearningMachine.activation must be one of {sorted(_ACTIVATIONS)}, "
                              f"got {activation!r}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.activation, self.ridge = activation, float(ridge)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("W_in", _uniform((hidden_size, input_size), input_scaling, gen))
        self.register_buffer("bias", _uniform((hidden_size,), bias_scaling, gen))
        self.register_buffer("W_out", torch.zeros(output_size, hidden_size + 1, dtype=_DTYPE))
        self.register_buffer("fitted", torch.tensor(False))

    def _x(self, x, name: str = "X") -> Tensor:
        t = _as_tensor(x, name)
        shape = tuple(t.shape)
        if t.dim() == 1 and self.input_size == 1:
            t = t.unsqueeze(-1)
        if t.dim() != 2 or t.shape[1] != self.input_size:
            raise ValueError(f"{name}: need shape (N, {self.input_size}), got {shape}")
        _check_finite(t, name)
        return t.to(self.W_in.device)

    def hidden(self, x) -> Tensor:
        """Features ``[1; h]`` ``(N, hidden_size + 1)`` of ``x (N, input_size)``."""
        t = self._x(x)
        h = _ACTIVATIONS[self.activation](t @ self.W_in.T + self.bias)
        return torch.cat([torch.ones(h.shape[0], 1, dtype=_DTYPE, device=h.device), h], dim=1)

    def fit(self, x, y, chunk_size: Optional[int] = None, ridge: Optional[float] = None) -> "ExtremeLearningMachine":
        ridge = self.ridge if ridge is None else ridge
        xt = self._x(x)
        yt = _as_tensor(y, "Y")
        y_shape = tuple(yt.shape)
        if yt.dim() == 1 and self.output_size == 1:
            yt = yt.unsqueeze(-1)
        if yt.dim() != 2 or yt.shape[1] != self.output_size or yt.shape[0] != xt.shape[0]:
            raise ValueError(f"Y: need shape ({xt.shape[0]}, {self.output_size}) to match X {tuple(xt.shape)}, "
                             f"got {y_shape}")
        _check_finite(yt, "Y")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        chunk = xt.shape[0] if chunk_size is None else chunk_size
        acc = RidgeAccumulator(self.hidden_size + 1, self.output_size)
        for s in range(0, xt.shape[0], max(chunk, 1)):
            acc.update(self.hidden(xt[s:s + chunk]), yt[s:s + chunk])
        self.W_out.copy_(acc.solve(ridge).T)
        self.fitted.fill_(True)
        return self

    def forward(self, x) -> Tensor:
        if not bool(self.fitted):
            raise RuntimeError("ExtremeLearningMachine: not fitted; call fit() first")
        out = self.hidden(x) @ self.W_out.T
        dt = getattr(x, "dtype", None)
        return out.to(dt) if isinstance(dt, torch.dtype) and dt.is_floating_point else out

    predict = forward
