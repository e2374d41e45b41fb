"""Long short-term memory, with peepholes, layer normalisation and projection."""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from ..errors import ArgumentError
from .base import (Params, RecurrentCell, State, check_bool, check_int, layer_norm, linear, owner_name,
                   recurrent_input)


class LSTMCell(RecurrentCell):
    r"""LSTM cell (Hochreiter & Schmidhuber 1997, forget gate of Gers et al. 2000),
    gate order ``i, f, g, o`` as in ``torch.nn.LSTM``:

    .. math::
        \begin{aligned}
        a_t &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} = [a^i, a^f, a^g, a^o] \\
        i_t &= \sigma(a^i + w_{ci} \odot c_{t-1}) \qquad f_t = \sigma(a^f + w_{cf} \odot c_{t-1}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot \tanh(a^g) \\
        o_t &= \sigma(a^o + w_{co} \odot c_t) \\
        h_t &= W_{hr}\,(o_t \odot \tanh(c_t))
        \end{aligned}

    Options:
        peephole: diagonal peephole weights ``w_ci, w_cf, w_co`` (Gers & Schmidhuber 2000);
            without them those terms are absent.
        layer_norm: Ba et al. (2016): normalise the two affine maps separately and the
            cell before its tanh, :math:`a_t = LN(W_{ih}x_t) + LN(W_{hh}h_{t-1}) + b`,
            :math:`h_t = o_t \odot \tanh(LN(c_t))`. Gains ``ln_ih_weight, ln_hh_weight (4H,)``,
            ``ln_c_weight, ln_c_bias (H,)``; the shift of the gate norms is the usual bias.
        proj_size: if > 0, ``h_t`` is projected to ``proj_size`` by ``W_hr (P, H)``
            (Sak et al. 2014), as in ``torch.nn.LSTM``; otherwise :math:`W_{hr}` is the identity.

    Parameters: ``weight_ih (4H, I)``, ``weight_hh (4H, R)``, ``bias_ih, bias_hh (4H,)``,
    ``weight_hr (P, H)`` where ``R = P`` if projecting else ``H``.
    State: ``(h (B, R), c (B, H))``. Output: ``h_t``.
    """

    state_names = ("h", "c")
    num_gates = 4
    forget_gate = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 proj_size: int = 0, peephole: bool = False, layer_norm: bool = False,
                 own_parameters: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias, own_parameters=own_parameters)
        name = owner_name(type(self))
        check_int(name, "proj_size", proj_size)
        if proj_size < 0:  # torch.nn.LSTM's messages
            raise ArgumentError(f"{name}: proj_size should be a positive integer or zero to disable "
                                f"projections, got {proj_size}")
        if proj_size != 0 and proj_size >= hidden_size:
            raise ArgumentError(f"{name}: proj_size has to be smaller than hidden_size "
                                f"(proj_size must be in [0, hidden_size={hidden_size})), got {proj_size}")
        check_bool(name, "peephole", peephole)
        check_bool(name, "layer_norm", layer_norm)
        self.proj_size = proj_size
        self.peephole = peephole
        self.layer_norm = layer_norm
        self.torch_mode = None if (peephole or layer_norm) else "LSTM"
        self._finish_init(device, dtype)

    @property
    def recurrent_size(self) -> int:
        return self.proj_size or self.hidden_size

    def state_sizes(self) -> tuple[int, ...]:
        return (self.recurrent_size, self.hidden_size)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I, R = self.hidden_size, self.input_size, self.recurrent_size
        shapes = {"weight_ih": (4 * H, I), "weight_hh": (4 * H, R)}
        if self.bias:
            shapes |= {"bias_ih": (4 * H,), "bias_hh": (4 * H,)}
        if self.proj_size:
            shapes["weight_hr"] = (self.proj_size, H)
        if self.peephole:
            shapes |= {"weight_ci": (H,), "weight_cf": (H,), "weight_co": (H,)}
        if self.layer_norm:
            shapes |= {"ln_ih_weight": (4 * H,), "ln_hh_weight": (4 * H,),
                       "ln_c_weight": (H,), "ln_c_bias": (H,)}
        return shapes

    def project_input(self, x: Tensor, p: Params) -> Tensor:
        if not self.layer_norm:
            return linear(x, p.weight_ih, p.bias_ih)
        # the bias is the norm's shift: one pass over (T, B, 4H) instead of two
        return layer_norm(linear(x, p.weight_ih), p.ln_ih_weight, p.bias_ih)

    def recur(self, xp: Tensor, state: State, p: Params) -> tuple[Tensor, State]:
        h, c = state
        h_in = recurrent_input(h, p)
        if self.layer_norm:
            hp = layer_norm(F.linear(h_in, p.weight_hh), p.ln_hh_weight)
            a = xp + (hp if p.bias_hh is None else hp + p.bias_hh)
        else:
            a = xp + F.linear(h_in, p.weight_hh, p.bias_hh)
        ai, af, ag, ao = a.chunk(4, dim=-1)
        if self.peephole:
            ai = ai + p.weight_ci * c
            af = af + p.weight_cf * c
        c = torch.sigmoid(af) * c + torch.sigmoid(ai) * torch.tanh(ag)
        if self.peephole:
            ao = ao + p.weight_co * c
        c_out = layer_norm(c, p.ln_c_weight, p.ln_c_bias) if self.layer_norm else c
        h = torch.sigmoid(ao) * torch.tanh(c_out)
        if self.proj_size:
            h = F.linear(h, p.weight_hr)
        return h, (h, c)

    def extra_repr(self) -> str:
        extras = [f"proj_size={self.proj_size}"] if self.proj_size else []
        extras += ["peephole=True"] if self.peephole else []
        extras += ["layer_norm=True"] if self.layer_norm else []
        return ", ".join([super().extra_repr(), *extras])
