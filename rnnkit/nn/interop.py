"""Conversion between rnnkit layers and ``torch.nn.RNN/LSTM/GRU`` (same weights)."""
from __future__ import annotations

from torch import nn

from .gru import GRU
from .lstm import LSTM
from .recurrent import TORCH_ARGS, Recurrent
from .rnn import RNN


def from_torch(module: nn.RNNBase, **extras) -> Recurrent:
    """An rnnkit layer computing what ``module`` (torch.nn.RNN/LSTM/GRU) computes,
    with a copy of its weights on the same device and dtype. ``extras`` are rnnkit
    options (e.g. ``backend="scan"``)."""
    if not isinstance(module, nn.RNNBase):
        raise TypeError(f"from_torch: expected torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    kwargs = {k: getattr(module, k) for k in TORCH_ARGS}
    w = module.weight_ih_l0
    kwargs |= {"device": w.device, "dtype": w.dtype, **extras}
    if isinstance(module, nn.LSTM):
        layer = LSTM(proj_size=module.proj_size, **kwargs)
    elif isinstance(module, nn.GRU):
        layer = GRU(**kwargs)
    elif isinstance(module, nn.RNN):
        layer = RNN(nonlinearity=module.nonlinearity, **kwargs)
    else:
        raise TypeError(f"from_torch: unsupported module {type(module).__name__}")
    layer.load_state_dict(module.state_dict())
    return layer


def to_torch(layer: Recurrent) -> nn.RNNBase:
    """The ``torch.nn`` module with a copy of ``layer``'s weights: :meth:`Recurrent.to_torch
    <rnnkit.nn.recurrent.Recurrent.to_torch>`, as a function to pair with :func:`from_torch`.
    Only torch.nn configurations convert (no peepholes, layer norm, GRU variants or learned h0)."""
    return layer.to_torch()
