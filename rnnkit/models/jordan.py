r"""Jordan (output-recurrence) networks: the recurrence runs through the network's
*output*, never hidden-to-hidden (Jordan 1986; Goodfellow et al. 2016, §10.2.1):

.. math::
    h_t = \phi(W_{ih} x_t + b_{ih} + W_{oh} y_{t-1}),\qquad
    y_t = \psi(W_{ho} h_t + b_{ho})

exactly :class:`~rnnkit.cells.JordanCell`'s step (the model wraps one, so the cell's
weights are the model's). The only state is :math:`y_{t-1}`, so under *teacher
forcing* — feeding the previous target in place of the previous output — every
step's input is known in advance and the whole sequence is one batched pass: the
same step computed for all ``B*T`` rows at once (two matrix multiplies, no loop over
time). Without targets (generation, free running) the model runs
closed-loop, one step after another, feeding back its own outputs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..cells.jordan import JordanCell
from ..errors import ConfigError
from ..kernels.jordan_parallel import Workspace, teacher_forced
from ..nn.init import INIT_SCHEMES, init_cell_parameters
from ..options import option

#: the choices JordanCell takes for ``nonlinearity`` (phi) and ``output_activation`` (psi)
ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")


@dataclass(frozen=True)
class JordanConfig:
    """Architecture of a :class:`JordanRNN`; input and output sizes come from the task."""

    input_size: int
    output_size: int
    hidden_size: int = option(128, "hidden layer size (the state is the output, not this)")
    nonlinearity: str = option("tanh", "hidden activation phi: " + ", ".join(ACTIVATIONS))
    output_activation: str = option("identity", "output activation psi: " + ", ".join(ACTIVATIONS))
    bias: bool = option(True, "biases b_ih and b_ho")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"model config: {msg}")
        for name in ("input_size", "output_size", "hidden_size"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                 f"{name} must be an int > 0, got {value!r}")
        for name in ("nonlinearity", "output_activation"):
            value = getattr(self, name)
            need(value in ACTIVATIONS, f"{name} must be one of {ACTIVATIONS}, got {value!r}")
        need(isinstance(self.bias, bool), f"bias must be true or false, got {self.bias!r}")
        need(self.init in INIT_SCHEMES, f"init must be one of {INIT_SCHEMES}, got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class JordanRNN(nn.Module):
    r"""Jordan network over batch-first sequences, built on :class:`~rnnkit.cells.JordanCell`.

    .. math::
        h_t = \phi(W_{ih} x_t + b_{ih} + W_{oh} y_{t-1}),\qquad
        y_t = \psi(W_{ho} h_t + b_{ho}),\qquad y_{-1} = y_0 \text{ (zeros by default)}

    Parameters are the cell's, under ``cell.``: ``cell.weight_ih (H, I)``,
    ``cell.bias_ih (H,)``, ``cell.weight_oh (H, O)``, ``cell.weight_ho (O, H)``,
    ``cell.bias_ho (O,)``; a JordanCell's ``state_dict`` loads into ``model.cell``
    (or use :meth:`from_cell`).

    * ``forward(x (B, T, I), y_prev (B, T, O) = None, y0 (B, O) = None) -> y (B, T, O)``:
      with ``y_prev`` (teacher forcing: ``y_prev[:, t]`` is what step ``t`` sees as
      :math:`y_{t-1}`, see :meth:`teacher_inputs`) one parallel pass over all steps;
      without, closed-loop from ``y0``.
    * ``step(x_t (B, I), y_prev_t (B, O) = None) -> (y_t (B, O), state)``: one step; the state
      of a Jordan network *is* its last output, so ``state`` is ``y_t`` and a decoding
      loop is ``y, s = model.step(x_t, s)``.
    * ``teacher_inputs(targets (B, T, O), y0=None) -> (B, T, O)``: targets shifted right
      one step, ``y0`` (zeros by default) in front.

    Inputs must be batched (an unbatched ``(T, I)`` is refused, not guessed) and have
    the parameters' dtype and device.

    The parallel pass's backward keeps its ``(B*T, H)`` scratch between calls (memory not
    faulted in again every step, like cuDNN's workspace); :meth:`clear_workspace` frees it.
    """

    def __init__(self, config: JordanConfig) -> None:
        super().__init__()
        self.config = c = config
        self.cell = JordanCell(c.input_size, c.hidden_size, c.bias, output_size=c.output_size,
                               nonlinearity=c.nonlinearity, output_activation=c.output_activation)
        init_cell_parameters(self.cell, dict(self.cell.named_parameters(recurse=False)), c.init)
        self._workspace = Workspace()  # the parallel pass's backward scratch, kept between calls

    @classmethod
    def from_cell(cls, cell: JordanCell) -> JordanRNN:
        """A model computing exactly ``cell``'s steps, with a copy of its weights."""
        if not isinstance(cell, JordanCell) or not cell.own_parameters:
            raise TypeError(f"JordanRNN.from_cell: expected a JordanCell with its own parameters, "
                            f"got {type(cell).__name__}")
        config = JordanConfig(cell.input_size, cell.jordan_output_size, cell.hidden_size,
                              nonlinearity=cell.nonlinearity, output_activation=cell.output_activation,
                              bias=cell.bias)
        ref = cell.weight_ih
        model = cls(config).to(device=ref.device, dtype=ref.dtype)
        model.cell.load_state_dict(cell.state_dict())
        return model

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def output_size(self) -> int:
        return self.config.output_size

    # --- the three entry points -------------------------------------------------------
    def forward(self, x: Tensor, y_prev: Tensor | None = None, y0: Tensor | None = None) -> Tensor:
        """``x (B, T, I)`` -> ``y (B, T, O)``: teacher-forced in one pass when ``y_prev
        (B, T, O)`` is given, else closed-loop from ``y0 (B, O)`` (zeros if None)."""
        B, T = self._check_input("x", x, 3, self.input_size, "(batch, seq, input_size)")
        if y_prev is not None:
            if y0 is not None:
                raise ValueError("JordanRNN: pass y_prev or y0, not both (with teacher forcing y_prev[:, 0] "
                                 "is the initial output; build y_prev with teacher_inputs(targets, y0))")
            self._check_input("y_prev", y_prev, 3, self.output_size, "(batch, seq, output_size)", (B, T))
            return self._parallel(x, y_prev)
        y = self._initial(y0, B)
        return self._closed_loop(x, y)

    def step(self, x_t: Tensor, y_prev_t: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step (the ``step(input_t, state) -> (output_t, state)`` contract of
        :mod:`rnnkit.models.feedback`): ``x_t (B, I)`` and the previous output ``y_prev_t
        (B, O)`` (zeros if None) -> ``(y_t, y_t)``: the output, and the state for the next
        step, which is the same tensor."""
        (B,) = self._check_input("x_t", x_t, 2, self.input_size, "(batch, input_size)")
        if y_prev_t is None:
            y_prev_t = self._initial(None, B)
        self._check_input("y_prev_t", y_prev_t, 2, self.output_size, "(batch, output_size)", (B,))
        y, _ = self.cell.step(x_t, (y_prev_t,), self.cell.own_params())
        return y, y

    def teacher_inputs(self, targets: Tensor, y0: Tensor | None = None) -> Tensor:
        """What teacher forcing feeds: ``targets (B, T, O)`` shifted right by one step with
        ``y0 (B, O)`` (zeros if None) in front, so step ``t`` sees ``targets[:, t-1]``."""
        B, T = self._check_input("targets", targets, 3, self.output_size, "(batch, seq, output_size)")
        first = self._initial(y0, B, like=targets)
        return torch.cat([first.unsqueeze(1), targets[:, :-1]], dim=1)[:, :T]  # T = 0 stays empty

    def clear_workspace(self) -> None:
        """Free the parallel pass's kept scratch (made again at the next backward)."""
        self._workspace.clear()

    # --- the two passes --------------------------------------------------------------
    def _parallel(self, x: Tensor, y_prev: Tensor) -> Tensor:
        """All ``B*T`` steps as rows of one batch, no loop over time: the cell's step with
        its two pre-activation GEMMs fused into one over ``z = [x_t, y_{t-1}, 1]`` (K = I + O
        + 1), as one autograd Function (:mod:`rnnkit.kernels.jordan_parallel`). The column
        of ones carries ``b_ih`` inside the GEMM: the bias costs no pass over the ``(N, H)``
        pre-activations forward (addmm copies it into every row first) and its gradient
        comes out of the weight-gradient GEMM, not a separate sum over ``N`` rows."""
        B, T, _ = x.shape
        c = self.cell
        parts, columns = [x, y_prev], [c.weight_ih, c.weight_oh]
        if c.bias:
            parts.append(x.new_ones(()).expand(B, T, 1))
            columns.append(c.bias_ih.unsqueeze(1))
        w = torch.cat(columns, dim=1)                                            # (H, K)
        z = torch.cat(parts, dim=-1).reshape(B * T, w.shape[1])                  # (B*T, K)
        y = teacher_forced(z, w, None, c.weight_ho, getattr(c, "bias_ho", None),
                           c.nonlinearity, c.output_activation, self._workspace)  # (B*T, O)
        return y.reshape(B, T, self.output_size)

    def _closed_loop(self, x: Tensor, y: Tensor) -> Tensor:
        """Step by step from ``y (B, O)``, each step fed the previous step's output; the
        input projection (no recurrence in it) is hoisted out of the loop."""
        B, T, _ = x.shape
        if T == 0:
            return x.new_zeros(B, 0, self.output_size)
        cell, p = self.cell, self.cell.own_params()
        xp = cell.project_input(x, p)                                            # (B, T, H)
        outputs = []
        for xp_t in xp.unbind(1):
            y, _ = cell.recur(xp_t, (y,), p)
            outputs.append(y)
        return torch.stack(outputs, dim=1)

    # --- checks ---------------------------------------------------------------------
    def _initial(self, y0: Tensor | None, batch: int, like: Tensor | None = None) -> Tensor:
        if y0 is None:
            ref = self.cell.weight_ih if like is None else like
            return ref.new_zeros(batch, self.output_size)
        self._check_input("y0", y0, 2, self.output_size, "(batch, output_size)", (batch,))
        return y0

    def _check_input(self, name: str, t, dims: int, size: int, layout: str,
                     leading: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """``t`` is a floating tensor of rank ``dims`` ending in ``size`` (leading dims equal
        to ``leading`` when given) with the parameters' dtype and device; returns its
        leading dims."""
        if not isinstance(t, Tensor):
            raise TypeError(f"JordanRNN: {name} must be a Tensor, got {type(t).__name__}")
        expected = f"expected {layout} = ({', '.join(['B', 'T'][:dims - 1] + [str(size)])})"
        if t.dim() != dims:
            unbatched = " (unbatched input is not supported: add a batch dim with .unsqueeze(0))" \
                if t.dim() == dims - 1 else ""
            raise ValueError(f"JordanRNN: {name} must be {dims}-D, got shape {tuple(t.shape)}; "
                             f"{expected}{unbatched}")
        if t.shape[-1] != size:
            raise ValueError(f"JordanRNN: {name} has {t.shape[-1]} features, expected {size} "
                             f"(shape {tuple(t.shape)}; {expected})")
        if leading is not None and tuple(t.shape[:-1]) != leading:
            raise ValueError(f"JordanRNN: {name} has shape {tuple(t.shape)}, but its leading dims must "
                             f"match x's {leading} (never broadcast)")
        weight = self.cell.weight_ih
        if not t.is_floating_point():
            raise TypeError(f"JordanRNN: {name} must be floating point, got {t.dtype}")
        if t.dtype != weight.dtype and not torch.is_autocast_enabled(t.device.type):
            raise TypeError(f"JordanRNN: {name} dtype {t.dtype} does not match the parameters' "
                            f"{weight.dtype}; convert one with .to()")
        if t.device != weight.device:
            raise ValueError(f"JordanRNN: {name} is on {t.device} but the parameters are on "
                             f"{weight.device}; move one with .to(device)")
        return tuple(t.shape[:-1])

    def extra_repr(self) -> str:
        c = self.config
        return (f"input_size={c.input_size}, hidden_size={c.hidden_size}, output_size={c.output_size}, "
                f"nonlinearity={c.nonlinearity}, output_activation={c.output_activation}")
