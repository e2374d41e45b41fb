"""Elman recurrence (simple RNN), tanh or ReLU."""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from ..errors import ArgumentError
from .base import Params, RecurrentCell, State, owner_name, recurrent_input

_ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu}


class ElmanCell(RecurrentCell):
    r"""Elman (1990) cell, the recurrence of ``torch.nn.RNN``:

    .. math::
        h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),\quad \phi \in \{\tanh, \mathrm{ReLU}\}

    With ``nonlinearity="relu"`` and identity-initialised :math:`W_{hh}` this is the
    IRNN of Le et al. (2015) (``rnnkit.RNN(..., init="identity")``).

    Parameters: ``weight_ih (H, I)``, ``weight_hh (H, H)``, ``bias_ih (H,)``, ``bias_hh (H,)``.
    State: ``(h,)`` with ``h (B, H)``. Output: ``h_t``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None, *,
                 own_parameters: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias, own_parameters=own_parameters)
        if nonlinearity not in _ACTIVATIONS:  # torch.nn.RNN's check and message (RNNCell waits for forward)
            raise ArgumentError(f"{owner_name(type(self))}: Unknown nonlinearity {nonlinearity!r}. "
                                "Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        self.torch_mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self._finish_init(device, dtype)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I = self.hidden_size, self.input_size
        shapes = {"weight_ih": (H, I), "weight_hh": (H, H)}
        if self.bias:
            shapes |= {"bias_ih": (H,), "bias_hh": (H,)}
        return shapes

    def recur(self, xp: Tensor, state: State, p: Params) -> tuple[Tensor, State]:
        h = _ACTIVATIONS[self.nonlinearity](xp + F.linear(recurrent_input(state[0], p), p.weight_hh, p.bias_hh))
        return h, (h,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"
