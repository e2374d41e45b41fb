"""Gated recurrent units: torch.nn/cuDNN "reset after", Cho et al. "reset before",
and the simplified GRU with an update gate only."""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from ..errors import ArgumentError
from .base import Params, RecurrentCell, State, owner_name, recurrent_input

GRU_VARIANTS = ("reset_after", "reset_before", "simplified")


class GRUCell(RecurrentCell):
    r"""GRU cell (Cho et al. 2014), gate order ``r, z, n`` as in ``torch.nn.GRU``.

    ``variant="reset_after"`` (default; torch.nn and cuDNN) — the reset gate scales
    the *projected* previous state:

    .. math::
        \begin{aligned}
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{aligned}

    ``variant="reset_before"`` (Cho et al. 2014) — the reset gate scales the state
    before its projection: :math:`n_t = \tanh(W_{in} x_t + b_{in} + W_{hn}(r_t \odot h_{t-1}) + b_{hn})`.
    Same parameter shapes, so it loads torch.nn weights (it computes a different function).

    ``variant="simplified"`` — the GRU taught first in the Sequence Models notes,
    an update gate and no reset gate, gate order ``u, n``:

    .. math::
        u_t = \sigma(W_{iu} x_t + W_{hu} h_{t-1} + b_u),\quad
        n_t = \tanh(W_{in} x_t + W_{hn} h_{t-1} + b_n),\quad
        h_t = u_t \odot n_t + (1 - u_t) \odot h_{t-1}

    Parameters: ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih, bias_hh (G*H,)``
    with ``G = 3`` (``2`` for simplified). State: ``(h (B, H),)``. Output: ``h_t``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 variant: str = "reset_after", own_parameters: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias, own_parameters=own_parameters)
        if variant not in GRU_VARIANTS:
            raise ArgumentError(f"{owner_name(type(self))}: variant must be one of {GRU_VARIANTS}, got {variant!r}")
        self.variant = variant
        self.num_gates = 2 if variant == "simplified" else 3
        self.torch_mode = "GRU" if variant == "reset_after" else None
        self._finish_init(device, dtype)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I, G = self.hidden_size, self.input_size, self.num_gates
        shapes = {"weight_ih": (G * H, I), "weight_hh": (G * H, H)}
        if self.bias:
            shapes |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
        return shapes

    def recur(self, xp: Tensor, state: State, p: Params) -> tuple[Tensor, State]:
        h = state[0]
        h_in = recurrent_input(h, p)  # h where it meets W_hh (recurrent dropout); the update mixes h
        if self.variant == "simplified":
            xu, xn = xp.chunk(2, dim=-1)
            hu, hn = F.linear(h_in, p.weight_hh, p.bias_hh).chunk(2, dim=-1)
            u = torch.sigmoid(xu + hu)
            h = torch.lerp(h, torch.tanh(xn + hn), u)  # u*n + (1-u)*h
            return h, (h,)
        xr, xz, xn = xp.chunk(3, dim=-1)
        if self.variant == "reset_after":
            hr, hz, hn = F.linear(h_in, p.weight_hh, p.bias_hh).chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
        else:  # reset_before: the candidate needs r first, so the hh GEMM is split in two
            H = self.hidden_size
            b_rz = None if p.bias_hh is None else p.bias_hh[: 2 * H]
            b_n = None if p.bias_hh is None else p.bias_hh[2 * H:]
            hr, hz = F.linear(h_in, p.weight_hh[: 2 * H], b_rz).chunk(2, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + F.linear(r * h_in, p.weight_hh[2 * H:], b_n))
        h = torch.lerp(n, h, z)  # (1-z)*n + z*h
        return h, (h,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", variant={self.variant!r}"
