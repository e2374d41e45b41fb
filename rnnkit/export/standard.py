"""torch.nn configurations as ONNX's own ``LSTM``/``GRU``/``RNN`` operators, one node
per layer (both directions in it), which runtimes implement as fused kernels.

Only where the semantics are exactly torch's: a plain LSTM (no peepholes, layer norm or
projection: ONNX's peepholes ``P`` are torch-style ``w*c`` too, but a layer-normed or
projected LSTM has no ONNX form), the ``reset_after`` GRU (``linear_before_reset=1``),
and the tanh/ReLU Elman RNN; and no zoneout (evaluation mixes old and new state, which
the operators cannot). Everything else runs the generic ``Scan`` (:mod:`.loop`).

Gate orders differ: torch stacks ``i, f, g, o`` (LSTM) and ``r, z, n`` (GRU); ONNX
``i, o, f, c`` and ``z, r, h``; the weights are reordered here, once.
"""
from __future__ import annotations

import numpy as np
import torch

from .graph import Graph

#: torch mode -> (ONNX op, torch gate blocks in ONNX's order)
_OPS = {"LSTM": ("LSTM", (0, 3, 1, 2)), "GRU": ("GRU", (1, 0, 2)),
        "RNN_TANH": ("RNN", (0,)), "RNN_RELU": ("RNN", (0,))}


def standard_op(layer) -> str | None:
    """The torch mode whose ONNX operator computes ``layer`` exactly, else None."""
    cell = layer.cells[0]
    mode = cell.torch_mode
    if mode is None or getattr(cell, "proj_size", 0) or layer.regularization.zoneout:
        return None
    return mode


def _reorder(t: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    blocks = t.detach().chunk(len(order), dim=0)
    return torch.cat([blocks[i] for i in order], dim=0)


def emit_layer(g: Graph, layer, k: int, x: str, lengths32: str | None, states: list[str]):
    """Layer ``k`` of ``layer`` on ``x (T, B, I)`` from ``states`` (each ``(D, B, S)``):
    ``(y (T, B, D*H), finals (D, B, S) each)``."""
    mode = standard_op(layer)
    op, order = _OPS[mode]
    cell, D, H = layer.cells[k], layer.num_directions, layer.hidden_size
    ps = [layer._params(k, d) for d in range(D)]
    W = torch.stack([_reorder(p.weight_ih, order) for p in ps])
    R = torch.stack([_reorder(p.weight_hh, order) for p in ps])
    inputs = [x, g.weight(W, f"l{k}.W"), g.weight(R, f"l{k}.R")]
    if cell.bias:
        inputs.append(g.weight(torch.stack([torch.cat([_reorder(p.bias_ih, order), _reorder(p.bias_hh, order)])
                                            for p in ps]), f"l{k}.B"))
    else:
        inputs.append(None)
    inputs += [lengths32, states[0]] + ([states[1]] if op == "LSTM" else [])
    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    if op == "RNN":
        attrs["activations"] = ["Tanh" if mode == "RNN_TANH" else "Relu"] * D
    outs = g.op(op, *inputs, outputs=3 if op == "LSTM" else 2, **attrs)
    y = outs[0]  # (T, D, B, H) -> (T, B, D*H), torch's layout of the two directions
    y = g.op("Reshape", g.op("Transpose", y, perm=[0, 2, 1, 3]), g.const(np.array([0, 0, -1], dtype=np.int64)))
    return y, list(outs[1:])
