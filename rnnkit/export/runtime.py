"""Running an exported file in ONNX Runtime with the layer's own input checks.

ONNX Runtime reports a wrong state as a broadcast or dimension failure deep in a
kernel, or, for a ``Scan`` body, may broadcast a wrong batch silently; the file's
``rnnkit`` metadata (written by :func:`~rnnkit.export.export_onnx`) says what the graph
expects, so :class:`OnnxRecurrent` checks first and names the problem.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, ConfigError, DtypeError, ShapeError
from .onnx import METADATA_KEY


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("running an ONNX export needs onnxruntime: pip install 'rnnkit[export]'") from None
    return onnxruntime


def _array(t, what: str) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor
        t = t.detach().cpu().numpy()
    if not isinstance(t, np.ndarray):
        raise TypeError(f"OnnxRecurrent: {what} must be a numpy array or torch tensor, got {type(t).__name__}")
    return t


class OnnxRecurrent:
    """An exported layer or language model in an ONNX Runtime session (``threads``
    intra-op threads; 1 for latency on a shared machine).

    ``run(x, state=None, lengths=None) -> (y, state)`` as the layer's ``forward``
    (sequence graphs) or ``step`` (step graphs), on numpy arrays (torch tensors are
    accepted); ``state`` a tuple in ``state_names`` order, zeros if omitted."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        ort = require_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise ArgumentError(f"OnnxRecurrent: {path} was not written by rnnkit's export (no {METADATA_KEY!r} "
                                f"metadata)")
        self.meta = json.loads(raw)
        self.state_names: tuple[str, ...] = tuple(self.meta["states"])
        self._outputs = [o.name for o in self.session.get_outputs()]

    def init_state(self, batch: int) -> tuple[np.ndarray, ...]:
        """Zeros in the state's layout (a learned initial state: the layer's ``init_state``)."""
        L = self.meta["state_layers"]
        return tuple(np.zeros((L, batch, n), dtype=np.float32) for n in self.meta["state_sizes"])

    def run(self, x, state=None, lengths=None) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        m = self.meta
        x = _array(x, m["input"])
        tokens = m["input"] == "tokens"
        step = m["mode"] == "step"
        want_dim = (1 if step else 2) if tokens else (2 if step else 3)
        if x.ndim != want_dim or (not tokens and x.shape[-1] != m["input_size"]):
            layout = ("(batch,)" if step else "(batch, time)") if tokens else \
                ("(batch, input_size)" if step else "(batch, time, input_size)" if m["batch_first"]
                 else "(time, batch, input_size)")
            raise ShapeError(f"OnnxRecurrent: {m['input']} has shape {x.shape}, expected {layout}"
                             + ("" if tokens else f" with input_size={m['input_size']}"))
        x = x.astype(np.int64 if tokens else np.float32, copy=False)
        B = x.shape[0] if step or tokens or m["batch_first"] else x.shape[1]
        feeds = {m["input"]: x}
        if m["lengths"]:
            T = x.shape[1] if tokens or m["batch_first"] else x.shape[0]
            feeds["lengths"] = self._lengths(lengths, B, T)
        elif lengths is not None:
            raise ArgumentError("OnnxRecurrent: this graph takes no lengths (exported with mode='step' or "
                                "lengths=False)")
        for name, s in zip(self.state_names, self._state(state, B)):
            feeds[f"{name}0"] = s
        out = self.session.run(self._outputs, feeds)
        return out[0], tuple(out[1:])

    def _lengths(self, lengths, B: int, T: int) -> np.ndarray:
        if lengths is None:
            return np.full(B, T, dtype=np.int64)
        lengths = _array(lengths, "lengths")
        if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ShapeError(f"OnnxRecurrent: lengths must be integers of shape (batch,) = ({B},), "
                             f"got {lengths.dtype} {lengths.shape}")
        if lengths.size and (lengths.min() < 1 or lengths.max() > T):
            raise ShapeError(f"OnnxRecurrent: lengths must lie in [1, {T}] (seq_len), got {lengths.tolist()}")
        return lengths.astype(np.int64)

    def _state(self, state, B: int) -> tuple[np.ndarray, ...]:
        if state is None:
            return self.init_state(B)
        states = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        names = self.state_names
        if len(states) != len(names):
            raise ShapeError(f"OnnxRecurrent: state must hold {len(names)} tensor(s) ({', '.join(names)}), got "
                             f"{len(states)} (a state from another kind of model?)")
        out = []
        for name, s, n in zip(names, states, self.meta["state_sizes"]):
            s = _array(s, f"state {name}")
            want = (self.meta["state_layers"], B, n)
            if s.shape != want:
                raise ShapeError(f"OnnxRecurrent: state {name} has shape {s.shape}, expected (num_layers * "
                                 f"num_directions, batch, size) = {want} (a state from another model or "
                                 f"batch size?)")
            if s.dtype != np.float32:
                raise DtypeError(f"OnnxRecurrent: state {name} has dtype {s.dtype}, expected float32")
            out.append(s)
        return tuple(out)
