"""What the fused LSTM and GRU kernels of every back end (:mod:`rnnkit.kernels.cpu`,
:mod:`rnnkit.kernels.triton`) share, device-neutral: the cells they compute, the
static configuration of one call (:class:`LSTMSpec`, :class:`GRUSpec`), the inputs
they take (as verdicts: True or the reason not), and the input projection they run
(the cell's own, ``b_hh`` folded into its bias).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cells.base import Params, RecurrentCell, State, layer_norm
from ..cells.gru import GRUCell
from ..cells.lstm import LSTMCell
from .registry import Verdict
from .step_masks import parameter_tensors

#: epsilon of the cells' layer norm (kept in sync with :func:`rnnkit.cells.base.layer_norm`).
LN_EPS: float = inspect.signature(layer_norm).parameters["eps"].default

#: the GRU variants with fused kernels ("reset_after" is torch.nn's own fused GRU).
GRU_VARIANTS = ("reset_before", "simplified")

#: the LSTM cell's parameters in the kernels' argument order (absent ones -> None)
LSTM_PARAMETERS = ("weight_hh", "weight_ci", "weight_cf", "weight_co", "ln_hh_weight", "ln_c_weight", "ln_c_bias",
                   "weight_hr")


@dataclass(frozen=True)
class LSTMSpec:
    """Static configuration of one LSTM kernel call."""
    peephole: bool
    layer_norm: bool
    proj: bool
    reverse: bool
    eps: float = LN_EPS
    #: whether a backward may follow (grad enabled, some input requires grad): without
    #: one, the kernel keeps no per-step buffers
    store: bool = True


@dataclass(frozen=True)
class GRUSpec:
    """Static configuration of one GRU kernel call."""
    variant: str
    reverse: bool


def lstm_supported(cell: RecurrentCell) -> Verdict:
    """The LSTMs the fused kernels compute: peephole and/or layer norm (the plain LSTM is
    torch.nn's job), the class itself (a subclass may change ``recur``)."""
    if type(cell) is not LSTMCell:
        return "not an LSTMCell (subclasses may change the step)"
    return cell.peephole or cell.layer_norm or "plain LSTM: torch.nn's kernel runs it"


def gru_supported(cell: RecurrentCell) -> Verdict:
    """The GRUs the fused kernels compute: :data:`GRU_VARIANTS`, the class itself."""
    if type(cell) is not GRUCell:
        return "not a GRUCell (subclasses may change the step)"
    return cell.variant in GRU_VARIANTS or f"GRU variant {cell.variant!r}: torch.nn's kernel runs it"


def compiling() -> bool:
    """Under ``torch.compile`` or ``torch.export`` (dynamo tracing a graph)."""
    return getattr(torch.compiler, "is_compiling", lambda: False)()


def tracing() -> bool:
    """Under TorchScript, ``torch.jit.trace``, ``torch.compile`` or ``torch.export``."""
    return torch.jit.is_scripting() or torch.jit.is_tracing() or compiling()


def tensors_ok(x: Tensor, tensors) -> bool:
    """All present tensors on ``x``'s device with ``x``'s dtype (the kernels never promote)."""
    return all(t is None or (t.device == x.device and t.dtype == x.dtype) for t in tensors)


def input_verdict(x: Tensor, p: Params, dtypes: tuple[torch.dtype, ...], graph: bool = False) -> Verdict:
    """The checks every fused kernel makes on ``x (T, B, I)`` and the parameters ``p``;
    ``graph``: the kernel has a custom-op form that ``torch.compile``/``torch.export``
    keep in their graphs (TorchScript and ``torch.jit.trace`` still get the reference)."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return "TorchScript or jit tracing: the reference steps are traced"
    if compiling() and not graph:
        return "compiling: the reference steps are traced"
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        return f"input of shape {tuple(x.shape)}: the reference raises its errors"
    if x.dtype not in dtypes:
        return f"dtype {x.dtype} (takes {', '.join(map(str, dtypes))})"
    if torch.is_autocast_enabled(x.device.type):
        return "autocast: the reference's matmuls change precision, the kernel's would not"
    if not tensors_ok(x, parameter_tensors(p)):
        return "parameters on another device or dtype than the input"
    return True


def state_verdict(cell: RecurrentCell, x: Tensor, state: State | None, mask: Tensor | None) -> Verdict:
    """What the kernels take, exactly: per entry of ``cell.state_sizes()`` a ``(B, S)``
    state on ``x``'s device and dtype (the reference also broadcasts ``(1, S)``; the kernels
    read ``B`` rows), and a bool ``mask (T, B, 1)`` on that device. None: not known yet."""
    T, B = x.shape[:2]
    if state is not None:
        sizes = cell.state_sizes()
        if len(state) != len(sizes) or not tensors_ok(x, state):
            return "state of another count, device or dtype than the cell's and the input's"
        shapes = [tuple(s.shape) for s in state]
        if shapes != [(B, n) for n in sizes]:
            return f"state shapes {shapes}, the kernels take {[(B, n) for n in sizes]}"
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (T, B, 1) or mask.device != x.device):
        return f"mask {mask.dtype} {tuple(mask.shape)} on {mask.device}, the kernels take bool {(T, B, 1)}"
    return True


def summed_bias(p: Params) -> Tensor | None:
    """``b_ih + b_hh`` (either may be None): the kernels fold ``b_hh`` into the input
    projection's bias, since it is additive in every variant they run (with layer
    norm it is the shift of LN_h, added after the norm)."""
    if p.bias_hh is None:
        return p.bias_ih
    return p.bias_hh if p.bias_ih is None else p.bias_ih + p.bias_hh


def folded_projection(cell: RecurrentCell, p: Params, x: Tensor) -> Tensor:
    """``cell.project_input`` with ``b_hh`` folded into its bias (:func:`summed_bias`),
    through the cell's own code so autograd differentiates it."""
    return cell.project_input(x, Params(**(vars(p) | {"bias_ih": summed_bias(p)})))
