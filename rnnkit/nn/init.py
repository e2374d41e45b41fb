"""Initialisation schemes for recurrent layers, applied per gate block.

* ``"torch"`` — torch.nn's default, U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
* ``"orthogonal"`` — each gate block of ``weight_hh`` (and ``weight_hr``) orthogonal
  (Saxe et al. 2014), ``weight_ih`` Xavier-uniform per block, biases zero.
* ``"identity"`` — IRNN (Le et al. 2015): each block of ``weight_hh`` = gain * I,
  ``weight_ih`` ~ N(0, 0.001^2), biases zero. Meant for ReLU Elman RNNs.
* ``"xavier"`` — Xavier-uniform per gate block for all weights, biases zero.

Layer-norm gains start at 1 and shifts at 0 in every scheme, peephole weights at 0
except under ``"torch"``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..cells.base import RecurrentCell, reset_parameter

INIT_SCHEMES = ("torch", "orthogonal", "identity", "xavier")


def init_cell_parameters(cell: RecurrentCell, params: dict[str, Tensor], scheme: str = "torch",
                         gain: float = 1.0, forget_bias: float | None = None) -> None:
    """Initialise ``params`` (name -> tensor, names as in ``cell.parameter_shapes()``) in place."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r}")
    with torch.no_grad():
        for name, param in params.items():
            if scheme == "torch" or name.startswith("ln_"):
                reset_parameter(cell, name, param)
            elif name.startswith("bias") or name.startswith("weight_c"):
                param.zero_()  # biases and peepholes
            elif name in ("weight_hh", "weight_hr", "weight_oh"):
                _per_block(param, cell.num_gates if name == "weight_hh" else 1,
                           lambda b: _recurrent_block(b, scheme, gain))
            else:  # weight_ih, weight_ho
                blocks = cell.num_gates if name == "weight_ih" else 1
                if scheme == "identity":
                    param.normal_(0.0, 0.001)
                else:
                    _per_block(param, blocks, lambda b: nn.init.xavier_uniform_(b, gain=gain))
        if forget_bias is not None:
            _set_forget_bias(cell, params, forget_bias)


def _recurrent_block(block: Tensor, scheme: str, gain: float) -> None:
    if scheme == "orthogonal":
        nn.init.orthogonal_(block, gain=gain)
    elif scheme == "identity":
        block.copy_(gain * torch.eye(*block.shape, dtype=block.dtype, device=block.device))
    else:
        nn.init.xavier_uniform_(block, gain=gain)


def _per_block(param: Tensor, num_blocks: int, fn) -> None:
    for block in param.chunk(num_blocks, dim=0):
        fn(block)


def _set_forget_bias(cell: RecurrentCell, params: dict[str, Tensor], value: float) -> None:
    if cell.forget_gate is None:
        raise ValueError(f"forget_bias: {type(cell).__name__} has no forget gate")
    if "bias_ih" not in params:
        raise ValueError("forget_bias needs bias=True")
    H, k = cell.hidden_size, cell.forget_gate
    # the gate sees b_ih + b_hh: put the whole value in one so the sum is exactly `value`
    params["bias_ih"][k * H:(k + 1) * H] = value
    if "bias_hh" in params:  # cells without recurrent weights (minLSTM) have one bias
        params["bias_hh"][k * H:(k + 1) * H] = 0.0
