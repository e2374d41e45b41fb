"""Choosing the path a recurrent layer runs on.

* ``"torch"`` — the configuration is one torch.nn supports: call PyTorch's fused
  kernel (cuDNN on GPU, oneDNN/ATen on CPU) on the layer's own parameters.
* ``"kernel"`` — a custom cell with a fused fast path in :mod:`rnnkit.kernels`.
* ``"scan"`` — the reference loop in :mod:`rnnkit.nn.scan`.
"""
from __future__ import annotations

from typing import Protocol

from torch import Tensor, _VF, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

BACKENDS = ("auto", "torch", "scan")
_VF_FUNCTIONS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}


class Layer(Protocol):
    """What choosing and running a path reads from a layer; :class:`rnnkit.nn.recurrent.Recurrent` is one.

    A protocol, not the class: ``recurrent.py`` imports this module, so naming the
    class here (even for type checking only) would make the two import each other.
    """

    cells: nn.ModuleList  # of RecurrentCell, one per layer
    backend: str
    bias: bool
    num_layers: int
    dropout: float
    training: bool
    bidirectional: bool

    def has_kernel(self) -> bool: ...

    def flat_weights(self) -> list[Tensor]: ...


def choose_path(layer: Layer) -> str:
    """Which path ``layer`` runs: "torch", "kernel" or "scan" (see module doc)."""
    mode = layer.cells[0].torch_mode
    if layer.backend == "torch" and mode is None:
        raise ValueError(f"{type(layer).__name__}: backend='torch' needs a torch.nn configuration; "
                         f"{type(layer.cells[0]).__name__}({layer.cells[0].extra_repr()}) is custom")
    if layer.backend in ("auto", "torch") and mode is not None:
        return "torch"
    if layer.backend == "auto" and layer.has_kernel():
        return "kernel"
    return "scan"


def run_torch(layer: Layer, x: Tensor, hx: tuple[Tensor, ...],
              lengths: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Fused torch.nn kernel on ``x (T, B, I)``; ``hx`` each ``(L*D, B, S)``.

    With ``lengths`` the batch is packed, so each sequence stops at its last real
    step exactly as ``torch.nn`` does for a ``PackedSequence``.
    """
    fn = _VF_FUNCTIONS[layer.cells[0].torch_mode]
    args = (layer.flat_weights(), layer.bias, layer.num_layers, float(layer.dropout),
            layer.training, layer.bidirectional)
    state = hx if len(hx) > 1 else hx[0]
    if lengths is None:
        out, *finals = fn(x, state, *args, False)
        return out, tuple(finals)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    state = _permute(state, packed.sorted_indices)
    data, *finals = fn(packed.data, packed.batch_sizes, state, *args)
    out, _ = pad_packed_sequence(packed._replace(data=data), total_length=x.shape[0])
    return out, tuple(_permute(tuple(finals), packed.unsorted_indices))


def _permute(state, index: Tensor):
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)
