"""Any cell over directions and layers: each (layer, direction) runs a fused kernel
(:mod:`rnnkit.kernels`) where one exists, else the reference loop :func:`scan`.

:func:`scan` itself is defined in :mod:`rnnkit.kernels.reference`, next to the
kernels that must match it (the registry runs it where no kernel takes an input);
it is re-exported here, where the layers and tests have always found it.

Tensors here are time-major: ``x (T, B, I)``.
"""
from __future__ import annotations


import torch
from torch import Tensor
import torch.nn.functional as F

from ..cells.base import Params, RecurrentCell, State
from .. import kernels
from ..kernels.reference import scan
from .regularization import locked_dropout

__all__ = ["scan", "scan_layers"]


def scan_layers(cells: list[RecurrentCell], params: list[list[Params]], x: Tensor,
                states: list[list[State]], lengths: Tensor | None = None,
                dropout: float = 0.0, training: bool = False,
                use_kernels: bool = True, hidden_dropout: float = 0.0) -> tuple[Tensor, list[list[State]]]:
    """Stacked (and, with two entries per layer, bidirectional) recurrence.

    ``params[k][d]`` and ``states[k][d]`` belong to layer ``k``, direction ``d``
    (0 forward, 1 reverse). Directions' outputs are concatenated on features;
    dropout is applied between layers, not after the last (as torch.nn), and so is
    ``hidden_dropout``, variational (one mask per sequence for all steps).
    With ``use_kernels``, a cell's fused kernel (:mod:`rnnkit.kernels`) replaces
    the reference :func:`scan` where one exists.
    Returns ``(y (T, B, D*O), final_states)`` laid out like ``states``.

    Under ``torch.compile`` and ``torch.export`` the fused CPU kernels are custom ops
    in the graph (:mod:`rnnkit.kernels.cpu`): no break, the same kernel as eager.
    On an accelerator, ``torch.compile`` (not export) runs the stack outside the graph
    (one break), so the Triton kernels still run: tracing the reference loop instead
    unrolls every step (measured on CPU: 18 s to compile a T=50 peephole LSTM, then 11x
    the eager kernel's time). ``backend="scan"`` layers, TorchScript and
    ``torch.jit.trace`` trace the reference steps.
    """
    if use_kernels and x.device.type != "cpu" and _compiling_not_exporting():
        # wrapped here, not at import: torch.compiler.disable imports dynamo (and triton)
        outside_graph = torch.compiler.disable(_scan_layers)
        return outside_graph(cells, params, x, states, lengths, dropout, training, True, hidden_dropout)
    return _scan_layers(cells, params, x, states, lengths, dropout, training, use_kernels, hidden_dropout)


def _compiling_not_exporting() -> bool:
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return compiling and not exporting


def _scan_layers(cells: list[RecurrentCell], params: list[list[Params]], x: Tensor,
                states: list[list[State]], lengths: Tensor | None = None,
                dropout: float = 0.0, training: bool = False,
                use_kernels: bool = True, hidden_dropout: float = 0.0) -> tuple[Tensor, list[list[State]]]:
    """The body of :func:`scan_layers` (same arguments and result)."""
    mask = None
    if lengths is not None:
        steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
        mask = (steps < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
    finals: list[list[State]] = []
    for k, cell in enumerate(cells):
        if k > 0 and dropout > 0.0:
            x = F.dropout(x, dropout, training)
        if k > 0 and hidden_dropout > 0.0:
            x = locked_dropout(x, hidden_dropout, training)
        ys, layer_finals = [], []
        for d, (p, state) in enumerate(zip(params[k], states[k])):
            run = (kernels.find(cell, x, p, state, mask) if use_kernels else None) or scan
            y, final = run(cell, p, x, state, mask, reverse=d == 1)
            ys.append(y)
            layer_finals.append(final)
        x = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
        finals.append(layer_finals)
    return x, finals
