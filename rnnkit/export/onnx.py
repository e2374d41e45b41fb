"""ONNX export of rnnkit recurrent layers and language models: :func:`export_onnx`.

How the graph is built, and why: directly, node by node with ``onnx.helper``, from the
layer's weights and each cell's equations (:mod:`.cells`), not by tracing PyTorch.
``torch.onnx.export``'s TorchScript exporter traces the Python time loop, unrolled to the
example's length; the dynamo exporter captures whichever path rnnkit's dispatch took
(the CPU kernels are C called through ctypes, which it cannot trace); neither yields a
``Scan`` over a dynamic time axis with rnnkit's exact length masking. Built directly,
the graph needs only ``onnx``, exports in milliseconds, and every decision is explicit:

* torch.nn configurations (plain LSTM, the ``reset_after`` GRU, tanh/ReLU RNN) become
  ONNX's ``LSTM``/``GRU``/``RNN`` operators (:mod:`.standard`), which runtimes fuse;
* every other cell (peephole / layer-norm / projected LSTMs, the other GRU variants,
  Jordan, minGRU, minLSTM, and any cell under zoneout) a ``Scan`` of primitive ops over
  time (:mod:`.loop`);
* ``mode="step"`` graphs run one time step (the streaming step, :meth:`Recurrent.step`).

The graph computes the module in evaluation mode: dropout, recurrent dropout and weight
drop are training-only and absent; zoneout is its evaluation expectation. The state is
explicit: graph inputs ``h0`` (and ``c0``), ``(L*D, B, S)`` as the layer's ``hx``
(feed ``layer.init_state(B)`` for a fresh stream, learned initial state included), and
outputs ``h_n`` (``c_n``). Batch and time axes are dynamic; ``lengths (B,)`` masks
exactly as the layer does (outputs past a length 0, final state at each length).
:class:`rnnkit.export.runtime.OnnxRecurrent` runs an exported file with these checks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import ArgumentError, ConfigError, DtypeError
from ..nn.recurrent import Recurrent
from . import loop, standard
from .cells import emitter
from .graph import Graph

MODES = ("sequence", "step")
DEFAULT_OPSET = 17  # LayerNormalization's first opset; ONNX Runtime >= 1.14 runs it
METADATA_KEY = "rnnkit"


def require_onnx():
    """The ``onnx`` module, or a clear error saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'rnnkit[export]' "
                          "(onnx and onnxruntime)") from None
    return onnx


def export_onnx(module: nn.Module, path: str | Path, *, mode: str = "sequence", opset: int = DEFAULT_OPSET,
                lengths: bool = True) -> Path:
    """Write ``module`` (an :class:`rnnkit.nn.Recurrent` layer or a
    :class:`rnnkit.models.LanguageModel`) as an ONNX file at ``path``; returns the path.

    ``mode="sequence"``: inputs ``x`` ``(T, B, I)`` (``(B, T, I)`` for a batch-first
    layer; ``tokens (B, T)`` int64 for a language model), ``lengths (B,)`` int64 (with
    ``lengths=True``), the state ``h0`` (``c0``) ``(L*D, B, S)``; outputs ``y``
    (``logits``) laid out like the input and the final state ``h_n`` (``c_n``).
    ``mode="step"``: one step, ``x (B, I)`` (``tokens (B,)``) and the state in,
    ``y (B, O)`` (``logits (B, V)``) and the next state out; unidirectional only.
    The file is written atomically; nothing is written if the module cannot be exported.
    """
    onnx = require_onnx()
    if mode not in MODES:
        raise ArgumentError(f"export: mode must be one of {MODES}, got {mode!r}")
    top = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not DEFAULT_OPSET <= opset <= top:
        raise ArgumentError(f"export: opset must be an int in [{DEFAULT_OPSET}, {top}] (this onnx's newest), "
                            f"got {opset!r}")
    g = Graph()
    if isinstance(module, Recurrent):
        inputs, outputs, meta = _layer_graph(g, module, mode, lengths)
    elif _is_language_model(module):
        inputs, outputs, meta = _language_model_graph(g, module, mode, lengths)
    else:
        raise ArgumentError(f"export: {type(module).__name__} has no ONNX export; exportable are rnnkit "
                            f"recurrent layers (rnnkit.nn: LSTM, GRU, RNN, MinGRU, MinLSTM, a Recurrent of any rnnkit "
                            f"cell) and language models")
    graph = g.graph(f"rnnkit_{type(module).__name__}_{mode}", inputs, outputs)
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="rnnkit",
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    atomic_write_bytes(path, model.SerializeToString())
    return path


def _is_language_model(module: nn.Module) -> bool:
    from ..models.language_model import LanguageModel  # late: the models pull in the tasks' vocabularies

    return isinstance(module, LanguageModel)


# --- a layer -----------------------------------------------------------------------------
def _layer_meta(layer: Recurrent, mode: str, lengths: bool, x_name: str) -> dict:
    cell = layer.cells[0]
    return {"mode": mode, "module": type(layer).__name__, "input": x_name, "input_size": layer.input_size,
            "batch_first": bool(layer.batch_first) and mode == "sequence", "lengths": lengths and mode == "sequence",
            "states": list(cell.state_names), "state_sizes": list(layer._state_sizes()),
            "state_layers": layer.num_layers * layer.num_directions,
            "description": f"{type(layer).__name__}({layer.extra_repr()})"}


def _check_exportable(layer: Recurrent, mode: str) -> None:
    name = type(layer).__name__
    if mode == "step" and layer.bidirectional:
        raise ArgumentError(f"export: a bidirectional {name} has no one-step graph (its reverse direction reads "
                            f"the future); export mode='sequence'")
    for cell in layer.cells:
        emitter(cell)  # names the cell if it has no ONNX form
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            for pname, t in vars(layer._params(k, d)).items():
                if t is not None and t.dtype != torch.float32:
                    raise DtypeError(f"export: {name} parameter {pname} (layer {k}) is {t.dtype}; the ONNX "
                                     f"export writes float32 graphs: convert with .float() first")


def _state_io(g: Graph, layer: Recurrent) -> tuple[list, list[str]]:
    LD = layer.num_layers * layer.num_directions
    names = [f"{s}0" for s in layer.cells[0].state_names]
    values = [g.value(n, [LD, "batch", size]) for n, size in zip(names, layer._state_sizes())]
    return values, names


def _layer_graph(g: Graph, layer: Recurrent, mode: str, lengths: bool):
    _check_exportable(layer, mode)
    I = layer.input_size
    state_values, states = _state_io(g, layer)
    if mode == "step":
        x_value = g.value("x", ["batch", I])
        y, finals = stack_step(g, layer, "x", states)
        y_shape = ["batch", layer_output_size(layer)]
        len_values = []
    else:
        x_value = g.value("x", ["batch", "time", I] if layer.batch_first else ["time", "batch", I])
        x = g.op("Transpose", "x", perm=[1, 0, 2]) if layer.batch_first else "x"
        len_values = [g.value("lengths", ["batch"], g.TensorProto.INT64)] if lengths else []
        y, finals = stack_sequence(g, layer, x, "lengths" if lengths else None, states)
        if layer.batch_first:
            y = g.op("Transpose", y, perm=[1, 0, 2])
        O = layer_output_size(layer) * layer.num_directions
        y_shape = ["batch", "time", O] if layer.batch_first else ["time", "batch", O]
    outputs = _name_outputs(g, layer, y, "y", y_shape, finals)
    return [x_value, *len_values, *state_values], outputs, _layer_meta(layer, mode, lengths, "x")


def layer_output_size(layer: Recurrent) -> int:
    return layer.cells[-1].output_size


def _name_outputs(g: Graph, layer: Recurrent, y: str, y_name: str, y_shape: list, finals: list[str]) -> list:
    """Route the results to the graph's output names (``Identity``: an output may not be an input)."""
    LD = layer.num_layers * layer.num_directions
    g.nodes.append(g.helper.make_node("Identity", [y], [y_name]))
    values = [g.value(y_name, y_shape)]
    for s, size, f in zip(layer.cells[0].state_names, layer._state_sizes(), finals):
        g.nodes.append(g.helper.make_node("Identity", [f], [f"{s}_n"]))
        values.append(g.value(f"{s}_n", [LD, "batch", size]))
    return values


def stack_sequence(g: Graph, layer: Recurrent, x: str, lengths: str | None, states: list[str]):
    """The whole stack on ``x (T, B, I)``: ``(y (T, B, D*O), final states (L*D, B, S))``."""
    D, std = layer.num_directions, standard.standard_op(layer) is not None
    mask = lengths32 = None
    if lengths is not None and std:
        lengths32 = g.op("Cast", lengths, to=g.TensorProto.INT32)
    elif lengths is not None:  # (T, B, 1): step t of sequence b is real
        T = g.op("Squeeze", g.op("Slice", g.op("Shape", x), g.const(np.array([0], dtype=np.int64)),
                                 g.const(np.array([1], dtype=np.int64))), g.const(np.array([0], dtype=np.int64)))
        steps = g.op("Range", g.const(np.array(0, dtype=np.int64)), T, g.const(np.array(1, dtype=np.int64)))
        mask = g.unsqueeze(g.op("Less", g.unsqueeze(steps, 1), g.unsqueeze(lengths, 0)), 2)
    per_layer: list[list[str]] = []
    for k in range(layer.num_layers):
        if std:  # one operator for both directions, its states (D, B, S)
            layer_states = [g.op("Slice", s, g.const(np.array([k * D], dtype=np.int64)),
                                 g.const(np.array([(k + 1) * D], dtype=np.int64))) for s in states]
            x, finals = standard.emit_layer(g, layer, k, x, lengths32, layer_states)
        else:
            ys, dir_finals = [], []
            for d in range(D):
                st = [g.op("Gather", s, g.const(np.array(k * D + d, dtype=np.int64)), axis=0) for s in states]
                y, f = loop.scan_direction(g, layer, k, d, x, mask, st)
                ys.append(y)
                dir_finals.append([g.unsqueeze(t, 0) for t in f])
            x = ys[0] if D == 1 else g.op("Concat", *ys, axis=-1)
            finals = [g.op("Concat", *parts, axis=0) if D > 1 else parts[0] for parts in zip(*dir_finals)]
        per_layer.append(finals)
    return x, [g.op("Concat", *parts, axis=0) if len(parts) > 1 else parts[0] for parts in zip(*per_layer)]


def stack_step(g: Graph, layer: Recurrent, x: str, states: list[str]):
    """One step of the (unidirectional) stack: ``x (B, I)`` -> ``(y (B, O), states (L, B, S))``."""
    if standard.standard_op(layer) is not None:  # the operator over a one-step sequence
        y, finals = stack_sequence(g, layer, g.unsqueeze(x, 0), None, states)
        return g.squeeze(y, 0), finals
    per_layer = []
    for k in range(layer.num_layers):
        st = [g.op("Gather", s, g.const(np.array(k, dtype=np.int64)), axis=0) for s in states]
        x, new = loop.step_direction(g, layer, k, x, st)
        per_layer.append([g.unsqueeze(t, 0) for t in new])
    return x, [g.op("Concat", *parts, axis=0) if len(parts) > 1 else parts[0] for parts in zip(*per_layer)]


# --- a language model -------------------------------------------------------------------
def _language_model_graph(g: Graph, model, mode: str, lengths: bool):
    """Token ids in, logits out: encoder (embedding or one-hot), the layer, the softmax head."""
    layer: Recurrent = model.rnn
    _check_exportable(layer, mode)
    c = model.config
    if c.input not in ("embedding", "onehot"):
        raise ArgumentError(f"export: a language model with input={c.input!r} has no ONNX export (the hashing "
                            f"trick's hash functions are not ONNX ops); exportable inputs: embedding, onehot")
    state_values, states = _state_io(g, layer)
    dims = ["batch"] if mode == "step" else ["batch", "time"]
    tokens = g.value("tokens", dims, g.TensorProto.INT64)
    if c.input == "embedding":
        x = g.op("Gather", g.weight(model.encoder.weight, "encoder.weight"), "tokens", axis=0)
    else:
        x = g.op("OneHot", "tokens", g.const(np.array(c.vocab_size, dtype=np.int64)),
                 g.const(np.array([0.0, 1.0], dtype=np.float32)), axis=-1)
    if mode == "step":
        y, finals = stack_step(g, layer, x, states)
        len_values = []
    else:  # tokens are (B, T); the stack runs time-major
        x = g.op("Transpose", x, perm=[1, 0, 2])
        y, finals = stack_sequence(g, layer, x, "lengths" if lengths else None, states)
        y = g.op("Transpose", y, perm=[1, 0, 2])
        len_values = [g.value("lengths", ["batch"], g.TensorProto.INT64)] if lengths else []
    logits = g.linear(y, g.weight(model.decoder.weight, "decoder.weight", transpose=True),
                      g.weight(model.decoder.bias, "decoder.bias"))
    outputs = _name_outputs(g, layer, logits, "logits", [*dims, c.vocab_size], finals)
    meta = _layer_meta(layer, mode, lengths, "tokens") | {"module": type(model).__name__,
                                                          "batch_first": mode == "sequence"}
    return [tokens, *len_values, *state_values], outputs, meta
