"""The cell protocol: one step of a recurrence, knowing nothing about time,
lengths, layers or direction (those belong to :mod:`rnnkit.nn.scan`).

A cell declares the shapes of its parameters (:meth:`RecurrentCell.parameter_shapes`)
and computes one step from a namespace of tensors ``p``. Keeping parameters out
of the step is what lets a layer store them under torch.nn's names
(``weight_ih_l0``, ``weight_hh_l1_reverse``) and hand any cell the slice it needs,
and what lets a fused kernel be tested against the very same step.

Every step is split in two so the scan can hoist work out of the time loop:

* :meth:`project_input` — the part that depends only on ``x_t`` (the input GEMM),
  run once for all time steps as a single matrix multiply;
* :meth:`recur` — the part that depends on the previous state.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Sequence

import torch
from torch import Tensor, nn
import torch.nn.functional as F

State = tuple[Tensor, ...]


class RecurrentCell(nn.Module):
    """Base class of all cells.

    Args:
        input_size: features of ``x_t``.
        hidden_size: features of the hidden state ``h_t``.
        bias: whether the affine maps carry biases.
        own_parameters: register the parameters on this module (standalone use,
            like ``torch.nn.LSTMCell``). Layers pass ``False`` and own them instead.

    Subclasses set ``state_names`` and implement :meth:`parameter_shapes`,
    :meth:`state_sizes` and :meth:`recur`.
    """

    #: names of the state tensors, e.g. ``("h",)`` or ``("h", "c")``.
    state_names: tuple[str, ...] = ("h",)
    #: number of gate blocks stacked in ``weight_ih``/``weight_hh`` (for per-gate init).
    num_gates: int = 1
    #: index of the forget gate block, if the cell has one (for ``forget_bias``).
    forget_gate: int | None = None
    #: torch.nn mode this cell computes exactly ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"),
    #: or None for a custom cell. Dispatch uses it to pick the cuDNN/oneDNN kernel.
    torch_mode: str | None = None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 *, own_parameters: bool = True) -> None:
        super().__init__()
        if not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f"{type(self).__name__}: input_size must be a positive int, got {input_size!r}")
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"{type(self).__name__}: hidden_size must be a positive int, got {hidden_size!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.own_parameters = own_parameters

    def _finish_init(self, device=None, dtype=None) -> None:
        """Register own parameters (standalone cells); call at the end of ``__init__``."""
        if not self.own_parameters:
            return
        for name, shape in self.parameter_shapes().items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's default: U(-1/sqrt(H), 1/sqrt(H)) for every weight; norm gains 1."""
        for name, param in self.named_parameters(recurse=False):
            reset_parameter(self, name, param)

    # --- what subclasses define -------------------------------------------------
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter, in torch.nn's flat-weights order."""
        raise NotImplementedError

    def state_sizes(self) -> tuple[int, ...]:
        """Feature size of each state tensor, in ``state_names`` order."""
        return (self.hidden_size,)

    @property
    def output_size(self) -> int:
        """Feature size of the step's output ``y_t`` (the next layer's input)."""
        return self.state_sizes()[0]

    def project_input(self, x: Tensor, p: SimpleNamespace) -> Tensor:
        """Input half of the step for any leading dims: ``(*, I) -> (*, G)``."""
        return F.linear(x, p.weight_ih, p.bias_ih)

    def recur(self, xp: Tensor, state: State, p: SimpleNamespace) -> tuple[Tensor, State]:
        """Recurrent half: ``xp (B, G)``, ``state`` -> ``(y_t (B, O), new_state)``."""
        raise NotImplementedError

    # --- what everyone calls ----------------------------------------------------
    def step(self, x: Tensor, state: State, p: SimpleNamespace | None = None) -> tuple[Tensor, State]:
        """One reference step ``(x_t (B, I), state) -> (y_t, state)``."""
        p = self.own_params() if p is None else p
        return self.recur(self.project_input(x, p), state, p)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        """Zero state, one ``(B, size)`` tensor per state name."""
        return tuple(torch.zeros(batch_size, n, device=device, dtype=dtype) for n in self.state_sizes())

    def own_params(self) -> SimpleNamespace:
        if not self.own_parameters:
            raise RuntimeError(f"{type(self).__name__} was built without parameters; pass p=")
        return params_namespace(self.parameter_shapes(), dict(self.named_parameters(recurse=False)))

    def forward(self, x: Tensor, state: Tensor | Sequence[Tensor] | None = None):
        """Standalone use like ``torch.nn.LSTMCell``: ``x (B, I)``; returns the state
        (a tensor for one-state cells, a tuple otherwise)."""
        if x.dim() != 2 or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input has shape {tuple(x.shape)}, "
                             f"expected (batch, input_size) = (B, {self.input_size})")
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        elif isinstance(state, Tensor):
            state = (state,)
        _, new_state = self.step(x, tuple(state))
        return new_state[0] if len(new_state) == 1 else new_state

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


def params_namespace(shapes: dict[str, tuple[int, ...]], tensors: dict[str, Tensor]) -> SimpleNamespace:
    """Namespace with every declared parameter; absent ones (e.g. no bias) are None."""
    return SimpleNamespace(**{"bias_ih": None, "bias_hh": None,
                              **{name: tensors.get(name) for name in shapes}})


def reset_parameter(cell: RecurrentCell, name: str, param: Tensor) -> None:
    """torch.nn's default initialisation for one parameter of ``cell``."""
    with torch.no_grad():
        if name.startswith("ln_") and name.endswith("_weight"):
            param.fill_(1.0)
        elif name.startswith("ln_"):
            param.zero_()
        else:
            bound = 1.0 / math.sqrt(cell.hidden_size)
            param.uniform_(-bound, bound)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last dim (Ba et al. 2016)."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
