"""One step of a whole recurrent stack in C, for streaming inference at small batch.

A deployed stream steps one input at a time. At batch 1 the step is a matrix-vector
product over the layer's weights plus ~10 pointwise ops; through torch that is GEMM
calls sized for matrices (oneDNN reads a row vector at about half the memory bandwidth
a plain dot product gets) and one dispatch per op, so torch.nn's ``LSTMCell`` spends
most of a step outside arithmetic. The C functions of
``rnnkit/kernels/native/stream_step.h`` do the layer's whole step in one call on a
row-major ``[W_ih | W_hh]`` kept here (rebuilt whenever a weight changes).

Taken by :func:`rnnkit.nn.streaming.step_layers` when: the native library is built, the
input is a CPU float32/float64 tensor of at most :data:`NATIVE_MAX_BATCH` streams,
nothing is differentiated (``torch.no_grad``/``inference_mode`` or frozen weights), no
autocast, and every layer is an LSTM (optionally with peepholes; no projection, no
layer norm), an Elman RNN or torch.nn's GRU. Otherwise :func:`step_stack` returns None
and the torch step runs. Both compute the same function; the tests compare them.
"""
from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import torch
from torch import Tensor

from ..cells.lstm import LSTMCell

#: above this many streams one GEMM reading the weights once beats a dot product per stream
NATIVE_MAX_BATCH = 2
_DTYPES = (torch.float32, torch.float64)


class LayerStep(NamedTuple):
    """How one layer of the stack steps in C."""

    kind: str                 # "lstm", "rnn" or "gru"
    option: int               # lstm: peepholes (1/0); rnn: relu (1) or tanh (0)
    names: tuple[str | None, ...]  # the layer's parameter attributes the step reads


_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # layer -> tuple[LayerStep] | None
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> {k: (sources, stamps, packed)}


def _layer_step(cell, names: dict[str, str]) -> LayerStep | None:
    get = names.get
    if type(cell) is LSTMCell and not cell.proj_size and not cell.layer_norm:
        return LayerStep("lstm", int(cell.peephole), tuple(get(n) for n in (
            "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ci", "weight_cf", "weight_co")))
    if cell.torch_mode in ("RNN_TANH", "RNN_RELU"):
        return LayerStep("rnn", int(cell.torch_mode == "RNN_RELU"),
                         tuple(get(n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    if cell.torch_mode == "GRU":
        return LayerStep("gru", 0, tuple(get(n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    return None


def specs(layer) -> tuple[LayerStep, ...] | None:
    """Per layer, how it steps in C; None when some layer's cell has no C step."""
    if layer in _SPECS:
        return _SPECS[layer]
    steps = tuple(_layer_step(cell, layer._param_names[k][0]) for k, cell in enumerate(layer.cells))
    out = None if any(s is None for s in steps) else steps
    _SPECS[layer] = out
    return out


@functools.lru_cache(maxsize=None)
def _functions(dtype: torch.dtype):
    """``{kind: C function}`` for ``dtype``, or None without the native library."""
    from ..kernels.cpu import native

    if not native.enabled() or native.library() is None:
        return None
    return {kind: native.bind(f"{kind}_stream_step", dtype) for kind in ("lstm", "rnn", "gru")}


def _weights(layer, names: tuple[str | None, ...]) -> tuple[Tensor | None, ...]:
    params = layer._parameters
    # a parametrised weight (weight norm) is not in _parameters: getattr computes it
    return tuple(None if n is None else (params[n] if n in params else getattr(layer, n)) for n in names)


def _stamps(w: tuple[Tensor | None, ...]) -> list:
    """What changes when a weight is written in place (its version counter) or has its
    data swapped (``.to()``, ``.float()``: its storage)."""
    return [(t._version, t.data_ptr()) for t in w if t is not None]


def _packed(layer, k: int, spec: LayerStep, w: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
    """The contiguous tensors layer ``k``'s C step reads, rebuilt whenever a weight was
    replaced (a parametrisation computes a new tensor), had its data swapped or was
    written in place (an optimiser step, ``load_state_dict``)."""
    per_layer = _PACKED.get(layer)
    if per_layer is None:
        per_layer = _PACKED[layer] = {}
    hit = per_layer.get(k)
    if hit is not None and hit[1] == _stamps(w) and all(a is b for a, b in zip(hit[0], w)):
        return hit[2]
    with torch.inference_mode(False), torch.no_grad():
        if spec.kind == "gru":  # the reset gate multiplies W_hn h + b_hn: the two products stay apart
            packed = tuple(None if t is None else t.contiguous() for t in w)
        else:
            bias = None if w[2] is None else (w[2] + w[3]).contiguous()
            packed = (torch.cat((w[0], w[1]), 1).contiguous(), bias,
                      *(None if t is None else t.contiguous() for t in w[4:]))
    per_layer[k] = (w, _stamps(w), packed)
    return packed


def _next_sweep(layer) -> int:
    """0, 1, 0, 1, ... per call for ``layer``: the order the C step runs its weight rows in."""
    per_layer = _PACKED.get(layer)
    if per_layer is None:
        per_layer = _PACKED[layer] = {}
    sweep = per_layer["sweep"] = 1 - per_layer.get("sweep", 1)
    return sweep


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def step_stack(layer, x: Tensor, states: tuple[Tensor, ...], grad: bool) -> tuple[Tensor, tuple[Tensor, ...]] | None:
    """``x (B, I)``, ``states`` each ``(L, B, S)`` -> ``(y (B, O), new states)`` through the
    C steps, or None when this layer, input or mode is not one they take."""
    steps = specs(layer)
    if steps is None or x.device.type != "cpu" or x.dtype not in _DTYPES or torch.is_autocast_enabled():
        return None
    fns = _functions(x.dtype)
    if fns is None:
        return None
    weights = [_weights(layer, s.names) for s in steps]
    if grad and (x.requires_grad or any(s.requires_grad for s in states)
                 or any(t is not None and t.requires_grad for w in weights for t in w)):
        return None
    B, H = x.shape[0], states[0].shape[2]
    x = x.contiguous()
    states = tuple(s.contiguous() for s in states)
    outs = tuple(torch.empty_like(s) for s in states)
    # layer k's slice of an (L, B, H) state by address: indexing would build a view per call
    stride = B * H * x.element_size()
    h_in, h_out = states[0].data_ptr(), outs[0].data_ptr()
    c_in, c_out = (states[1].data_ptr(), outs[1].data_ptr()) if len(states) > 1 else (0, 0)
    I = x.shape[1]
    scratch = torch.empty(max(I, H) + 5 * H, dtype=x.dtype)  # kept alive: C writes to it
    work, x_ptr = scratch.data_ptr(), x.data_ptr()
    threads = torch.get_num_threads()  # large weights: the GEMV's rows split over torch's threads
    sweep = _next_sweep(layer)  # alternate the rows' order step to step (stream_step.h: cache reuse)
    for k, (spec, w) in enumerate(zip(steps, weights)):
        p = _packed(layer, k, spec, w)
        at = k * stride
        if spec.kind == "lstm":
            fns["lstm"](B, I, H, threads, sweep, p[0].data_ptr(), _ptr(p[1]), x_ptr, h_in + at, c_in + at, _ptr(p[2]),
                        _ptr(p[3]), _ptr(p[4]), h_out + at, c_out + at, work)
        elif spec.kind == "rnn":
            fns["rnn"](B, I, H, threads, sweep, spec.option, p[0].data_ptr(), _ptr(p[1]), x_ptr, h_in + at, h_out + at, work)
        else:
            fns["gru"](B, I, H, threads, sweep, p[0].data_ptr(), p[1].data_ptr(), _ptr(p[2]), _ptr(p[3]), x_ptr, h_in + at,
                       h_out + at, work)
        x_ptr, I = h_out + at, H
    return outs[0][-1], outs
