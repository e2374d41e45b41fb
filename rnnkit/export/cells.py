"""Every cell's step in ONNX primitives, one function per cell, mirroring its
``project_input`` and ``recur`` (:mod:`rnnkit.cells`) line by line, so reading one
next to the other is checking it; ``tests/export/test_onnx.py`` checks it numerically.

A cell without an entry in :data:`EMITTERS` cannot be exported, and the export says
so, naming the cell, rather than guess at its equations.

Names here are ONNX value names (strings); ``xp`` is the projected input ``(*, G)``,
``state`` the cell's state tensors ``(B, S)``.
"""
from __future__ import annotations

from typing import Callable

from ..cells.base import Params as CellParams
from ..cells import ElmanCell, GRUCell, JordanCell, LSTMCell, MinGRUCell, MinLSTMCell, RecurrentCell
from ..errors import ArgumentError
from .graph import Graph

#: the activations the cells name, as ONNX ops
_ACT = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid", "identity": "Identity"}
LN_EPS = 1e-5  # rnnkit.cells.base.layer_norm's (and F.layer_norm's) default


class Params:
    """One (layer, direction)'s parameters, registered as initialisers on first use."""

    def __init__(self, g: Graph, tensors: CellParams, prefix: str) -> None:
        self.g, self.tensors, self.prefix = g, vars(tensors), prefix
        self._names: dict = {}

    def has(self, name: str) -> bool:
        return self.tensors.get(name) is not None

    def w(self, name: str, rows: slice = slice(None)) -> str:
        """``W[rows]^T`` for a MatMul (a weight ``(O, I)`` stored ``(I, O)``)."""
        return self._get(name, rows, True)

    def v(self, name: str, rows: slice = slice(None)) -> str | None:
        """A vector parameter (bias, gain, peephole), or None if the cell has none."""
        return self._get(name, rows, False) if self.has(name) else None

    def _get(self, name: str, rows: slice, transpose: bool) -> str:
        key = (name, rows.start, rows.stop, transpose)
        if key not in self._names:
            self._names[key] = self.g.weight(self.tensors[name][rows], f"{self.prefix}.{name}", transpose)
        return self._names[key]


def emitter(cell: RecurrentCell) -> tuple[Callable, Callable]:
    """``(project, recur)`` for ``cell``: ``project(g, cell, p, x) -> xp`` and
    ``recur(g, cell, p, xp, state) -> (y, new_state)``."""
    for cls, fns in EMITTERS.items():
        if type(cell) is cls:
            return fns
    raise ArgumentError(f"export: cell {type(cell).__name__} has no ONNX export (exportable cells: "
                        f"{', '.join(c.__name__ for c in EMITTERS)}); add its step to rnnkit/export/cells.py")


def project_linear(g: Graph, cell, p: Params, x: str) -> str:
    """:meth:`RecurrentCell.project_input`: ``F.linear(x, W_ih, b_ih)``."""
    return g.linear(x, p.w("weight_ih"), p.v("bias_ih"))


def layer_norm(g: Graph, x: str, weight: str, bias: str | None) -> str:
    return g.op("LayerNormalization", x, weight, bias, axis=-1, epsilon=LN_EPS)


# --- LSTM ------------------------------------------------------------------------------
def lstm_project(g: Graph, cell: LSTMCell, p: Params, x: str) -> str:
    if not cell.layer_norm:
        return project_linear(g, cell, p, x)
    return layer_norm(g, g.op("MatMul", x, p.w("weight_ih")), p.v("ln_ih_weight"), p.v("bias_ih"))


def lstm_recur(g: Graph, cell: LSTMCell, p: Params, xp: str, state: list[str]):
    h, c = state
    H = cell.hidden_size
    if cell.layer_norm:
        hp = layer_norm(g, g.op("MatMul", h, p.w("weight_hh")), p.v("ln_hh_weight"), None)
        a = g.op("Add", xp, hp if not p.has("bias_hh") else g.op("Add", hp, p.v("bias_hh")))
    else:
        a = g.op("Add", xp, g.linear(h, p.w("weight_hh"), p.v("bias_hh")))
    ai, af, ag, ao = g.split(a, [H] * 4)
    if cell.peephole:
        ai = g.op("Add", ai, g.op("Mul", p.v("weight_ci"), c))
        af = g.op("Add", af, g.op("Mul", p.v("weight_cf"), c))
    c = g.op("Add", g.op("Mul", g.op("Sigmoid", af), c),
             g.op("Mul", g.op("Sigmoid", ai), g.op("Tanh", ag)))
    if cell.peephole:
        ao = g.op("Add", ao, g.op("Mul", p.v("weight_co"), c))
    c_out = layer_norm(g, c, p.v("ln_c_weight"), p.v("ln_c_bias")) if cell.layer_norm else c
    h = g.op("Mul", g.op("Sigmoid", ao), g.op("Tanh", c_out))
    if cell.proj_size:
        h = g.op("MatMul", h, p.w("weight_hr"))
    return h, [h, c]


# --- GRU -------------------------------------------------------------------------------
def gru_recur(g: Graph, cell: GRUCell, p: Params, xp: str, state: list[str]):
    h, H = state[0], cell.hidden_size
    if cell.variant == "simplified":
        xu, xn = g.split(xp, [H, H])
        hu, hn = g.split(g.linear(h, p.w("weight_hh"), p.v("bias_hh")), [H, H])
        u = g.op("Sigmoid", g.op("Add", xu, hu))
        h = g.lerp(h, g.op("Tanh", g.op("Add", xn, hn)), u)
        return h, [h]
    xr, xz, xn = g.split(xp, [H, H, H])
    if cell.variant == "reset_after":
        hr, hz, hn = g.split(g.linear(h, p.w("weight_hh"), p.v("bias_hh")), [H, H, H])
        r, z = g.op("Sigmoid", g.op("Add", xr, hr)), g.op("Sigmoid", g.op("Add", xz, hz))
        n = g.op("Tanh", g.op("Add", xn, g.op("Mul", r, hn)))
    else:  # reset_before: r scales h before its projection
        rz, rest = slice(0, 2 * H), slice(2 * H, 3 * H)
        hr, hz = g.split(g.linear(h, p.w("weight_hh", rz), p.v("bias_hh", rz)), [H, H])
        r, z = g.op("Sigmoid", g.op("Add", xr, hr)), g.op("Sigmoid", g.op("Add", xz, hz))
        n = g.op("Tanh", g.op("Add", xn, g.linear(g.op("Mul", r, h), p.w("weight_hh", rest), p.v("bias_hh", rest))))
    h = g.lerp(n, h, z)
    return h, [h]


# --- Elman and Jordan ------------------------------------------------------------------
def elman_recur(g: Graph, cell: ElmanCell, p: Params, xp: str, state: list[str]):
    h = g.op(_ACT[cell.nonlinearity], g.op("Add", xp, g.linear(state[0], p.w("weight_hh"), p.v("bias_hh"))))
    return h, [h]


def jordan_recur(g: Graph, cell: JordanCell, p: Params, xp: str, state: list[str]):
    h = g.op(_ACT[cell.nonlinearity], g.op("Add", xp, g.op("MatMul", state[0], p.w("weight_oh"))))
    y = g.op(_ACT[cell.output_activation], g.linear(h, p.w("weight_ho"), p.v("bias_ho")))
    return y, [y]


# --- minGRU and minLSTM ----------------------------------------------------------------
def _candidate(g: Graph, cell, xh: str) -> str:
    """``g(x) = x + 0.5 if x >= 0 else sigmoid(x)`` (positive), else ``x``."""
    if not cell.positive:
        return xh
    nonneg = g.op("GreaterOrEqual", xh, g.const(0.0))
    return g.op("Where", nonneg, g.op("Add", xh, g.const(0.5)), g.op("Sigmoid", xh))


def _log_sigmoid(g: Graph, x: str) -> str:
    """``logsigmoid(x) = -softplus(-x)`` (no overflow: ONNX's Softplus is the stable one)."""
    return g.op("Neg", g.op("Softplus", g.op("Neg", x)))


def _linear_in_state(g: Graph, a: str, b: str, h: str):
    h = g.op("Add", b, g.op("Mul", a, h))  # torch.addcmul(b, a, h)
    return h, [h]


def mingru_recur(g: Graph, cell: MinGRUCell, p: Params, xp: str, state: list[str]):
    H = cell.hidden_size
    xz, xh = g.split(xp, [H, H])
    a = g.op("Sigmoid", g.op("Neg", xz))
    b = g.op("Mul", g.op("Sigmoid", xz), _candidate(g, cell, xh))
    return _linear_in_state(g, a, b, state[0])


def minlstm_recur(g: Graph, cell: MinLSTMCell, p: Params, xp: str, state: list[str]):
    H = cell.hidden_size
    xf, xi, xh = g.split(xp, [H, H, H])
    d = g.op("Sub", _log_sigmoid(g, xi), _log_sigmoid(g, xf))
    a = g.op("Sigmoid", g.op("Neg", d))
    b = g.op("Mul", g.op("Sigmoid", d), _candidate(g, cell, xh))
    return _linear_in_state(g, a, b, state[0])


#: cell class -> (project, recur); exact classes: a subclass may change the equations
EMITTERS: dict[type, tuple[Callable, Callable]] = {
    LSTMCell: (lstm_project, lstm_recur),
    GRUCell: (project_linear, gru_recur),
    ElmanCell: (project_linear, elman_recur),
    JordanCell: (project_linear, jordan_recur),
    MinGRUCell: (project_linear, mingru_recur),
    MinLSTMCell: (project_linear, minlstm_recur),
}
