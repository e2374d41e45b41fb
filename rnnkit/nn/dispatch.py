"""Choosing the path a recurrent layer runs on.

* ``"torch"`` — the configuration is one torch.nn supports: call PyTorch's fused
  kernel (cuDNN on GPU, oneDNN/ATen on CPU) on the layer's own parameters.
* ``"kernel"`` — a custom cell with a fused fast path in :mod:`rnnkit.kernels`.
* ``"scan"`` — the reference loop in :mod:`rnnkit.nn.scan`.

The Triton kernels (:mod:`rnnkit.kernels.triton`) are only chosen on request:
``backend="triton"``, or ``RNNKIT_TRITON=1`` in the environment (or Triton's own CPU
interpreter, ``TRITON_INTERPRET=1``, which the kernel tests use). They have not yet
passed a parity run on a GPU, so on CUDA a custom cell runs the reference scan
(torch ops, autograd) unless asked otherwise; :func:`triton_requested` is the switch.
"""
from __future__ import annotations

import os
from typing import Protocol

from torch import Tensor, _VF, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..cells.base import Params
from .. import kernels
from ..errors import ArgumentError
from ..kernels.specs import compiling
from ..kernels.triton import interpreting

BACKENDS = ("auto", "torch", "scan", "triton")
_VF_FUNCTIONS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}
#: environment switch that lets ``backend="auto"`` layers run the Triton kernels
TRITON_ENV = "RNNKIT_TRITON"


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

    def extra_repr(self) -> str: ...


def check_backend(layer: Layer) -> None:
    """At construction: the requested backend can run this layer's cell (a wrong choice
    is an error now, not at the first forward)."""
    cell, name = layer.cells[0], type(layer).__name__
    if layer.backend == "torch" and cell.torch_mode is None:
        raise ArgumentError(f"{name}: backend='torch' needs a torch.nn configuration; "
                            f"{name}({layer.extra_repr()}) is custom (torch.nn has no kernel for it)")
    reg = getattr(layer, "regularization", None)
    if layer.backend == "torch" and reg is not None and (reg.recurrent_dropout or reg.zoneout):
        raise ArgumentError(f"{name}: backend='torch' cannot run recurrent_dropout or zoneout (PyTorch's "
                            f"kernels have no step masks); use backend='auto'")
    if layer.backend == "triton" and not any(k.backend == "triton" and k.supports(cell) is True
                                             for k in kernels.registered()):
        raise ArgumentError(f"{name}: backend='triton' needs a cell with a Triton kernel (an LSTM with "
                            f"peephole and/or layer_norm and no proj_size, or a GRU with variant "
                            f"'reset_before' or 'simplified'); {name}({layer.extra_repr()}) has none")


def triton_requested(layer: Layer) -> bool:
    """Whether ``layer`` may run the Triton kernels: ``backend="triton"``, ``RNNKIT_TRITON=1``,
    or Triton's CPU interpreter (``TRITON_INTERPRET=1``, itself an explicit request)."""
    flag = os.environ.get(TRITON_ENV, "").strip().lower() in ("1", "true", "yes", "on", "y")
    return layer.backend == "triton" or flag or interpreting()


def _is_triton(kernel: kernels.Kernel | None) -> bool:
    return kernel is not None and kernel.backend == "triton"


def use_kernels(layer: Layer, x: Tensor, p: Params) -> bool:
    """Whether the scan over ``x (T, B, I)`` may use rnnkit's fused kernels: backend
    ``"auto"``/``"triton"``, and a Triton kernel only on request (:func:`triton_requested`;
    refused, the reference scan runs: on CUDA no other kernel applies to those cells)."""
    if layer.backend not in ("auto", "triton"):
        return False
    return not (_is_triton(kernels.find(layer.cells[0], x, p)) and not triton_requested(layer))


def kernel_for(layer: Layer, x: Tensor, p: Params):
    """The fused kernel the scan would run on ``x`` for the first layer, or None."""
    return kernels.find(layer.cells[0], x, p) if use_kernels(layer, x, p) else None


def runs_torch(layer: Layer) -> bool:
    """Whether ``layer`` runs PyTorch's fused kernel (a torch.nn configuration, backend auto/torch,
    and no regularisation inside the time loop: recurrent dropout or zoneout)."""
    reg = getattr(layer, "regularization", None)
    if reg is not None and reg.steps_masked(layer.training):
        return False
    return layer.backend in ("auto", "torch") and layer.cells[0].torch_mode is not None


def runs_torch_on(layer: Layer, lengths: Tensor | None) -> bool:
    """:func:`runs_torch` for a forward with these ``lengths``: torch.nn's kernel takes
    lengths as a packed batch, and packing cannot be traced, so under ``torch.compile``
    (``fullgraph=True`` included) and ``torch.export`` a forward with lengths masks in the
    scan instead (the same results: the tests compare packed and masked runs)."""
    return runs_torch(layer) and not (lengths is not None and compiling())


def choose_path(layer: Layer) -> str:
    """Which path ``layer`` runs: "torch", "kernel" or "scan" (see module doc)."""
    if layer.backend == "torch" and layer.cells[0].torch_mode is None:  # refused at construction too
        raise ArgumentError(f"{type(layer).__name__}: backend='torch' needs a torch.nn configuration; "
                            f"{type(layer).__name__}({layer.extra_repr()}) is custom")
    if runs_torch(layer):
        return "torch"
    if layer.has_kernel():
        return "kernel"
    return "scan"


def run_torch(layer: Layer, x: Tensor, hx: tuple[Tensor, ...], lengths: Tensor | None,
              weights: list[Tensor] | None = None, num_layers: int | None = None,
              ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Fused torch.nn kernel on ``x (T, B, I)``; ``hx`` each ``(L*D, B, S)``.

    With ``lengths`` the batch is packed, so each sequence stops at its last real
    step exactly as ``torch.nn`` does for a ``PackedSequence``. ``weights`` and
    ``num_layers`` replace the layer's own (a weight-dropped copy, or one layer of the
    stack at a time, as regularised layers run).
    """
    fn = _VF_FUNCTIONS[layer.cells[0].torch_mode]
    weights = layer.flat_weights() if weights is None else weights
    num_layers = layer.num_layers if num_layers is None else num_layers
    args = (weights, layer.bias, num_layers, float(layer.dropout) if num_layers > 1 else 0.0,
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
