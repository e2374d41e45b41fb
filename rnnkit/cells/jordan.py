"""Jordan recurrence: output-to-hidden feedback only."""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from ..errors import ArgumentError, ShapeError
from .base import Params, RecurrentCell, State, check_int, owner_name, recurrent_input

_ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid, "identity": lambda v: v}


class JordanCell(RecurrentCell):
    r"""Jordan (1986) cell: the recurrence runs only through the previous *output*
    (Goodfellow et al. 2016, §10.2.1, fig. 10.4), never hidden-to-hidden:

    .. math::
        h_t = \phi(W_{ih} x_t + b_{ih} + W_{oh} y_{t-1}),\qquad
        y_t = \psi(W_{ho} h_t + b_{ho})

    Because :math:`y_{t-1}` can be replaced by the target during training (teacher
    forcing), all steps can then be trained in parallel.

    Args:
        output_size: size of ``y_t`` (defaults to ``hidden_size``).
        nonlinearity: :math:`\phi` ("tanh", "relu", "sigmoid").
        output_activation: :math:`\psi` ("identity", "tanh", "sigmoid").

    Parameters: ``weight_ih (H, I)``, ``bias_ih (H,)``, ``weight_oh (H, O)``,
    ``weight_ho (O, H)``, ``bias_ho (O,)``. State: ``(y (B, O),)``. Output: ``y_t``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 output_size: int | None = None, nonlinearity: str = "tanh",
                 output_activation: str = "identity", own_parameters: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, own_parameters=own_parameters)
        owner = owner_name(type(self))
        for name, value in (("nonlinearity", nonlinearity), ("output_activation", output_activation)):
            if value not in _ACTIVATIONS:
                raise ArgumentError(f"{owner}: {name} must be one of {sorted(_ACTIVATIONS)}, got {value!r}")
        if output_size is not None:
            check_int(owner, "output_size", output_size)
            if output_size < 0:
                raise ShapeError(f"{owner}: output_size must be >= 0, got {output_size}")
        self.jordan_output_size = hidden_size if output_size is None else output_size
        self.nonlinearity = nonlinearity
        self.output_activation = output_activation
        self._finish_init(device, dtype)

    def state_sizes(self) -> tuple[int, ...]:
        return (self.jordan_output_size,)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I, O = self.hidden_size, self.input_size, self.jordan_output_size
        shapes = {"weight_ih": (H, I), "weight_oh": (H, O), "weight_ho": (O, H)}
        if self.bias:
            shapes |= {"bias_ih": (H,), "bias_ho": (O,)}
        return shapes

    def recur(self, xp: Tensor, state: State, p: Params) -> tuple[Tensor, State]:
        h = _ACTIVATIONS[self.nonlinearity](xp + F.linear(recurrent_input(state[0], p), p.weight_oh))
        y = _ACTIVATIONS[self.output_activation](F.linear(h, p.weight_ho, getattr(p, "bias_ho", None)))
        return y, (y,)
