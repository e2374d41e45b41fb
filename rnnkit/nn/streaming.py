"""Streaming a recurrent layer: one step at a time, or chunk after chunk, with
per-stream resets. The methods live on :class:`~rnnkit.nn.recurrent.Recurrent`
(``init_state``, ``step``, ``forward(..., reset=)``); this module holds what they need.

* :func:`step_layers` — one time step through the stack, the fast way: at batch 1 a
  step is a few small GEMVs, so the generic forward's checks, transposes and dispatch
  would cost as much as the arithmetic. Without gradients, for up to 8 streams, the C
  steps of :mod:`~rnnkit.nn.native_step` take it (every cell but the projected LSTM); otherwise
  torch.nn configurations call ATen's fused cell
  (``_VF.lstm_cell``, ``gru_cell``, ``rnn_*_cell``) on the layer's own weights, or, when
  nothing is differentiated (``torch.no_grad`` or frozen weights), one GEMM on a cached
  ``[W_ih | W_hh]`` for the LSTM and the Elman RNN (one weight read instead of two
  matrix calls and a sum); every other cell runs its own reference step
  (``project_input`` then ``recur``), the definition every path must match.
* :func:`check_step_state` — the state a step receives: one cheap check of its
  structure, shapes, dtype and device, naming what was expected.
* :func:`check_reset` — a ``reset=`` mask, per chunk ``(B,)`` or per step.
* :func:`reset_segments` — a per-step reset splits the chunk where a stream restarts.

Tensors here are time-major, ``x (T, B, I)``, and states ``(L*D, B, S)``.
"""
from __future__ import annotations

import weakref
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor, _VF
import torch.nn.functional as F

from ..errors import DeviceError, DtypeError, ShapeError
from . import native_step
from .native_step import NATIVE_MAX_BATCH

_CELL_FNS = {"GRU": _VF.gru_cell, "RNN_TANH": _VF.rnn_tanh_cell, "RNN_RELU": _VF.rnn_relu_cell}


def check_step_state(name: str, state, state_names: Sequence[str], expected: Sequence[tuple[int, ...]],
                     param: Tensor) -> tuple[Tensor, ...]:
    """``state`` (a tensor, or a tuple for the LSTM) as a tuple, after checking it is what
    this layer's :meth:`init_state`/:meth:`step` return: one tensor per state name, each
    of shape ``expected``, the parameters' dtype and device."""
    states = (state,) if isinstance(state, Tensor) else state
    if not isinstance(states, (tuple, list)) or len(states) != len(state_names):
        got = (f"{len(states)} tensors" if isinstance(states, (tuple, list)) else type(state).__name__)
        raise ShapeError(f"{name}.step: state must be {_layout(state_names)} as init_state(batch) returns, "
                         f"got {got} (a state from another kind of layer?)")
    for s, t, shape in zip(state_names, states, expected):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}.step: state {s} must be a Tensor, got {type(t).__name__}")
        if t.shape != shape:
            raise ShapeError(f"{name}.step: state {s} has shape {tuple(t.shape)}, expected "
                             f"(num_layers, batch, size) = {tuple(shape)} (a state from another layer "
                             f"or batch size?)")
        if t.dtype != param.dtype:
            raise DtypeError(f"{name}.step: state {s} has dtype {t.dtype}, expected the parameters' "
                             f"{param.dtype}")
        if t.device != param.device:
            raise DeviceError(f"{name}.step: state {s} is on {t.device} but the parameters are on "
                              f"{param.device}; move one with .to(device)")
    return tuple(states)


def _layout(state_names: Sequence[str]) -> str:
    if len(state_names) == 1:
        return f"one tensor ({state_names[0]})"
    return f"a tuple of {len(state_names)} tensors ({', '.join(state_names)})"


def check_reset(name: str, reset, steps: int, batch: int, batched: bool, batch_first: bool,
                device: torch.device) -> Tensor:
    """``reset`` as a bool tensor on ``device``: ``(B,)`` per chunk, or ``(T, B)`` per step
    (given ``(B, T)`` for a batch-first layer; unbatched input: ``()`` or ``(T,)``)."""
    if not isinstance(reset, Tensor):
        raise TypeError(f"{name}: reset must be a bool Tensor, got {type(reset).__name__}")
    if reset.dtype != torch.bool:
        raise DtypeError(f"{name}: reset must be a bool tensor (True: the stream restarts), got dtype {reset.dtype}")
    per_chunk, per_step = ((batch,), (batch, steps) if batch_first else (steps, batch)) if batched \
        else ((), (steps,))
    if tuple(reset.shape) == per_chunk:
        out = reset if batched else reset.reshape(1)
    elif tuple(reset.shape) == per_step:
        out = reset.t() if batched and batch_first else (reset if batched else reset.unsqueeze(1))
    else:
        step_layout = "(batch, seq)" if batch_first else "(seq, batch)"
        raise ShapeError(f"{name}: reset has shape {tuple(reset.shape)}, expected {per_chunk} (per stream, "
                         f"at the chunk's start) or {step_layout} = {per_step} (per step)"
                         if batched else
                         f"{name}: reset has shape {tuple(reset.shape)}, expected () or (seq,) = ({steps},) "
                         f"for unbatched input")
    return out.to(device)


def apply_reset(state: tuple[Tensor, ...], initial: tuple[Tensor, ...], reset: Tensor) -> tuple[Tensor, ...]:
    """Per stream (``reset (B,)`` True), the initial state instead of ``state`` (each ``(L*D, B, S)``)."""
    r = reset.view(1, -1, 1)
    return tuple(torch.where(r, i, s) for s, i in zip(state, initial))


def reset_segments(reset: Tensor) -> list[int]:
    """The steps where a chunk with per-step ``reset (T, B)`` is cut: 0, every later step
    at which some stream restarts, and ``T``. (Reads the mask on the host: one sync.)"""
    T = reset.shape[0]
    cuts = reset[1:].any(1).nonzero().flatten().add(1).tolist() if T > 1 else []
    return [0, *cuts, T]


# --- one step ----------------------------------------------------------------------------
#: layer -> its step plan (:func:`plan`); and layer -> per layer index, the fused weights
#: ``(the weights they came from, their stamps, W^T (I+S, G*S), bias)``. Weak: a cache never
#: outlives its layer, is never saved with it, never copied by deepcopy or pickle.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FUSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class StepPlan(NamedTuple):
    """What a step reads from a layer, looked up once (a layer's cells never change)."""

    state_names: tuple[str, ...]
    state_sizes: tuple[int, ...]
    #: per layer: (cell, torch mode or None for its reference step, (W_ih, W_hh, b_ih, b_hh) names)
    layers: tuple[tuple[Any, str | None, tuple[str | None, ...]], ...]


def plan(layer) -> StepPlan:
    p = _PLANS.get(layer)
    if p is None:
        steps = []
        for k, cell in enumerate(layer.cells):
            names = layer._param_names[k][0]
            mode = cell.torch_mode
            if mode == "LSTM" and cell.proj_size:
                mode = None  # ATen's lstm_cell has no projection: the cell's reference step
            steps.append((cell, mode, tuple(names.get(n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))))
        p = StepPlan(tuple(layer.cells[0].state_names), tuple(layer._state_sizes()), tuple(steps))
        _PLANS[layer] = p
    return p


def step_layers(layer, x: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One step of a unidirectional stack without regularisation in the loop:
    ``x (B, I)``, ``states`` each ``(L, B, S)`` -> ``(y (B, O), new states)``."""
    dropout = layer.dropout if layer.training else 0.0
    grad = torch.is_grad_enabled()
    if x.shape[0] <= NATIVE_MAX_BATCH and not (dropout and layer.num_layers > 1):
        done = native_step.step_stack(layer, x, states, grad)
        if done is not None:
            return done
    params = layer._parameters
    new: list[tuple[Tensor, ...]] = []
    for k, (cell, mode, names) in enumerate(plan(layer).layers):
        if k > 0 and dropout:
            x = F.dropout(x, dropout, True)
        st = tuple(s[k] for s in states)
        if mode is None:
            p = layer._params(k, 0)
            x, st = cell.recur(cell.project_input(x, p), st, p)
        else:
            # a parametrised weight (weight norm) is not in _parameters: getattr computes it
            w = tuple(None if n is None else (params.get(n) if n in params else getattr(layer, n)) for n in names)
            x, st = _torch_step(layer, k, mode, cell.hidden_size, x, st, w, grad)
        new.append(st)
    if len(new) == 1:
        return x, tuple(s.unsqueeze(0) for s in new[0])
    return x, tuple(torch.stack([st[i] for st in new]) for i in range(len(states)))


def _torch_step(layer, k: int, mode: str, H: int, x: Tensor, st: tuple[Tensor, ...], w: tuple, grad: bool):
    """A torch.nn cell's step on its weights ``w = (W_ih, W_hh, b_ih, b_hh)``."""
    # the cached [W_ih | W_hh] is a constant: only where no gradient is asked of the weights
    fused = mode != "GRU" and not (grad and any(t is not None and t.requires_grad for t in w))
    if not fused:
        if mode == "LSTM":
            h, c = _VF.lstm_cell(x, st, *w)
            return h, (h, c)
        h = _CELL_FNS[mode](x, st[0], *w)
        return h, (h,)
    w_t, b = _fused_weights(layer, k, w)
    xh = torch.cat((x, st[0]), 1)
    a = torch.mm(xh, w_t) if b is None else torch.addmm(b, xh, w_t)
    if mode == "LSTM":
        i, f, _, o = torch.sigmoid(a).chunk(4, 1)  # g's sigmoid is wasted: one op instead of three
        c = torch.addcmul(f * st[1], i, torch.tanh(a[:, 2 * H:3 * H]))
        h = o * torch.tanh(c)
        return h, (h, c)
    h = torch.tanh(a) if mode == "RNN_TANH" else torch.relu(a)
    return h, (h,)


def _fused_weights(layer, k: int, w: tuple) -> tuple[Tensor, Tensor | None]:
    """``([W_ih | W_hh]^T, b_ih + b_hh)`` of layer ``k`` from its weights ``w``, rebuilt
    whenever one changed: replaced (another tensor: a parametrisation), its data swapped
    (``.to()``, ``.float()``: its storage) or written in place (its version counter: an
    optimiser step, ``load_state_dict``)."""
    per_layer = _FUSED.get(layer)
    if per_layer is None:
        per_layer = _FUSED[layer] = {}
    stamps = tuple(None if t is None else (t._version, t.data_ptr()) for t in w)
    hit = per_layer.get(k)
    if hit is not None and hit[1] == stamps and all(a is b for a, b in zip(hit[0], w)):
        return hit[2], hit[3]
    # a plain constant even when built under inference_mode (which the next call may be outside of)
    with torch.inference_mode(False), torch.no_grad():
        w_t = torch.cat((w[0], w[1]), 1).t().contiguous()
        b = None if w[2] is None else w[2] + w[3]
    per_layer[k] = (w, stamps, w_t, b)
    return w_t, b
