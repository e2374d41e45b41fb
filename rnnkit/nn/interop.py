"""Conversion between rnnkit layers and ``torch.nn.RNN/LSTM/GRU`` (same weights)."""
from __future__ import annotations

from torch import nn

from .gru import GRU
from .lstm import LSTM
from .recurrent import Recurrent
from .rnn import RNN

_SHARED_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")


def from_torch(module: nn.RNNBase, **extras) -> Recurrent:
    """An rnnkit layer computing what ``module`` (torch.nn.RNN/LSTM/GRU) computes,
    with a copy of its weights on the same device and dtype. ``extras`` are rnnkit
    options (e.g. ``backend="scan"``)."""
    if not isinstance(module, nn.RNNBase):
        raise TypeError(f"from_torch: expected torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    kwargs = {k: getattr(module, k) for k in _SHARED_ARGS}
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
    """The ``torch.nn`` module with a copy of ``layer``'s weights. Only torch.nn
    configurations convert (no peepholes, layer norm, GRU variants or learned h0)."""
    mode = layer.cells[0].torch_mode
    if mode is None or layer.learn_initial_state:
        raise ValueError(f"to_torch: {type(layer).__name__}({layer.extra_repr()}) has no torch.nn "
                         "equivalent (custom cell or learned initial state)")
    kwargs = {k: getattr(layer, k) for k in _SHARED_ARGS}
    w = layer.weight_ih_l0
    kwargs |= {"device": w.device, "dtype": w.dtype}
    if mode == "LSTM":
        module = nn.LSTM(proj_size=layer.cells[0].proj_size, **kwargs)
    elif mode == "GRU":
        module = nn.GRU(**kwargs)
    else:
        module = nn.RNN(nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kwargs)
    module.load_state_dict(layer.state_dict())
    return module

