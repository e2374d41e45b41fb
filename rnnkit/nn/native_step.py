"""One step of a whole recurrent stack in C, for streaming inference at small batch.

A deployed stream steps one input at a time. At batch 1 the step is a matrix-vector
product over the layer's weights plus ~10 pointwise ops; through torch that is GEMM
calls sized for matrices (oneDNN reads a row vector at about half the memory bandwidth
a plain dot product gets) and one dispatch per op, so torch.nn's ``LSTMCell`` spends
most of a step outside arithmetic. The C functions of
``rnnkit/kernels/cpu/native/stream_step.h`` do the layer's whole step in one call on a
row-major ``[W_ih | W_hh]`` kept here (rebuilt whenever a weight changes), reading it
once for all the streams.

Taken by :func:`rnnkit.nn.streaming.step_layers` when: the native library is built, the
input is a CPU float32/float64 tensor of at most :data:`NATIVE_MAX_BATCH` streams,
nothing is differentiated (``torch.no_grad``/``inference_mode`` or frozen weights), no
autocast, and every layer is an LSTM (optionally with peepholes and/or layer norm; no
projection), an Elman RNN, a GRU (any variant), a minGRU or a minLSTM. Otherwise
:func:`step_stack` returns None and the torch step runs. Both compute the same function;
the tests compare them.

The C steps are bound to the layer's weights once (:class:`StackProgram`, rebuilt when
a weight changes); after a first step through the general path, ``layer.step`` calls
:func:`fast_step`, which only confirms the step is the one that program was made for
(the general path's checks and dispatch cost more than the arithmetic at batch 1).
``layer(x, hx)`` on a one-step chunk in evaluation mode does the same through
:func:`fast_forward` (torch.nn's way of streaming: 100 -> 16 us at B1 H128 here).
"""
from __future__ import annotations

import ctypes
import functools
import operator
import weakref
from typing import NamedTuple

import torch
from torch import Tensor

from ..cells.gru import GRU_VARIANTS, GRUCell
from ..cells.lstm import LSTMCell
from ..cells.min_rnn import MinGRUCell, MinLSTMCell
from ..kernels.cpu import native
from ..kernels.cpu.native import step_guard
from ..kernels.specs import LN_EPS

#: most streams a C step takes (its GEMV meets every stream's vector while four weight
#: rows sit in L1); above, torch's GEMM (packed, tiled for many rows) is the faster
NATIVE_MAX_BATCH = 8
_DTYPES = (torch.float32, torch.float64)
#: outputs a stream's step makes ahead (StackProgram._outputs): at most this many steps' worth, and bytes
OUTPUTS_AHEAD, OUTPUT_BYTES_AHEAD = 32, 1 << 16
#: scratch values the C steps keep on their own stack (stream_step.h's STREAM_STACK_REALS)
STACK_SCRATCH = 8192
#: per kind of C step, the scratch values it needs for input size I, hidden size H, B streams
_SCRATCH = {"lstm": lambda I, H, B: B * (I + 5 * H), "lstm_ln": lambda I, H, B: 8 * B * H + 5 * H,
            "rnn": lambda I, H, B: B * (I + 2 * H), "gru": lambda I, H, B: 7 * B * H,
            "min_rnn": lambda I, H, B: 3 * B * H}


class LayerStep(NamedTuple):
    """How one layer of the stack steps in C."""

    kind: str                 # the C function <kind>_stream_step: a key of _SCRATCH
    options: tuple[int, ...]  # its option arguments (rnn: relu; gru: variant; min_rnn: gates, positive)
    names: tuple[str | None, ...]  # the layer's parameter attributes the step reads


_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()     # layer -> tuple[LayerStep] | None
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> StackProgram


def _layer_step(cell, names: dict[str, str]) -> LayerStep | None:
    get = names.get
    gru = tuple(get(n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    if type(cell) is LSTMCell and not cell.proj_size:  # peepholes: their pointers are not NULL
        lstm = (*gru, *(get(n) for n in ("weight_ci", "weight_cf", "weight_co")))
        if cell.layer_norm:
            return LayerStep("lstm_ln", (), (*lstm, *(get(n) for n in (
                "ln_ih_weight", "ln_hh_weight", "ln_c_weight", "ln_c_bias"))))
        return LayerStep("lstm", (), lstm)
    if cell.torch_mode in ("RNN_TANH", "RNN_RELU"):
        return LayerStep("rnn", (int(cell.torch_mode == "RNN_RELU"),), gru)
    if type(cell) is GRUCell:
        return LayerStep("gru", (GRU_VARIANTS.index(cell.variant),), gru)
    if type(cell) in (MinGRUCell, MinLSTMCell):
        return LayerStep("min_rnn", (cell.num_gates, int(cell.positive)), (get("weight_ih"), get("bias_ih")))
    return None


def specs(layer) -> tuple[LayerStep, ...] | None:
    """Per layer, how it steps in C; None when some layer's cell has no C step."""
    if layer in _SPECS:
        return _SPECS[layer]
    steps = tuple(_layer_step(cell, layer._param_names[k][0]) for k, cell in enumerate(layer.cells))
    out = None if layer.bidirectional or any(s is None for s in steps) else steps
    _SPECS[layer] = out
    return out


@functools.lru_cache(maxsize=None)
def _functions(dtype: torch.dtype):
    """``{kind: C function}`` for ``dtype``, or None without the native library."""
    if not native.enabled() or native.library() is None:
        return None
    return {kind: native.bind(f"{kind}_stream_step", dtype) for kind in _SCRATCH}


def _weights(layer, names: tuple[str | None, ...]) -> tuple[Tensor | None, ...]:
    params = layer._parameters
    # a parametrised weight (weight norm) is not in _parameters: getattr computes it
    return tuple(None if n is None else (params[n] if n in params else getattr(layer, n)) for n in names)


def _stamps(sources: tuple[Tensor, ...]) -> list:
    """What changes when a weight is written in place (its version counter) or has its
    data swapped (``.to()``, ``.float()``: its storage). Not for inference tensors (they
    keep no version counter)."""
    return [(t._version, t.data_ptr()) for t in sources]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _readable(t: Tensor) -> bool:
    """Memory the C steps can read: a dense tensor, not one of functorch's vmap/grad
    wrappers (their data_ptr raises) or functionalize's (its data_ptr is 0)."""
    if t.layout is not torch.strided:
        return False
    try:
        return t.data_ptr() != 0
    except RuntimeError:
        return False


def _bound(spec: LayerStep, w: tuple[Tensor | None, ...], H: int) -> tuple[tuple, tuple]:
    """A layer's C-step constants: the tensors to keep alive, and the arguments (after
    the state's) that pass them."""
    def keep(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.contiguous()

    if spec.kind in ("gru", "min_rnn"):  # (GRUs: r meets the two products apart)
        packed = tuple(map(keep, w))
        return packed, (*spec.options, *map(_ptr, packed))
    W = torch.cat((w[0], w[1]), 1).contiguous()
    if spec.kind == "lstm_ln":  # the biases are the norms' shift; the C step needs one
        shift = w[0].new_zeros(4 * H) if w[2] is None else w[2] + w[3]
        packed = (W, shift, *map(keep, w[7:]), *map(keep, w[4:7]))
        return packed, (LN_EPS, *map(_ptr, packed))
    packed = (W, None if w[2] is None else (w[2] + w[3]).contiguous(), *map(keep, w[4:]))
    return packed, (*spec.options, *map(_ptr, packed))


class _StreamConsts(ctypes.Structure):
    """stream_step.h's ``stream_consts``: one layer's step constants, whatever its kind."""

    _fields_ = [("kind", ctypes.c_long), ("opt", ctypes.c_long * 2), ("eps", ctypes.c_double),
                ("p", ctypes.c_void_p * 10)]


#: stream_consts.kind of each kind of C step
_KINDS = {"lstm": 0, "lstm_ln": 1, "rnn": 2, "gru": 3, "min_rnn": 4}


def _stream_consts(spec: LayerStep, consts: tuple) -> _StreamConsts:
    """:func:`_bound`'s arguments (options, the layer norms' eps, pointers) as a stream_consts."""
    opts, rest = consts[:len(spec.options)], consts[len(spec.options):]
    eps = 0.0
    if spec.kind == "lstm_ln":
        eps, rest = rest[0], rest[1:]
    return _StreamConsts(_KINDS[spec.kind], (ctypes.c_long * 2)(*opts, *(0,) * (2 - len(opts))), eps,
                         (ctypes.c_void_p * 10)(*rest))


class StackProgram:
    """A layer stack's C steps bound to its weights as they are now: per layer, the C
    function and its constant arguments (the contiguous ``[W_ih | W_hh]``, the summed
    bias, peepholes), so a step only passes its input and state.
    Rebuilt when a weight is replaced, swapped or written in place (:func:`_unchanged`)."""

    __slots__ = ("dtype", "names", "sources", "tracked", "stamps", "regularization", "input_size", "hidden_size",
                 "num_layers", "lstm", "scratch_sizes", "calls", "keep", "sweep", "element_size", "spare", "guard")

    def __init__(self, layer, steps: tuple[LayerStep, ...], weights: list[tuple[Tensor | None, ...]],
                 fns: dict, dtype: torch.dtype):
        self.dtype = dtype
        self.names = tuple(n for s in steps for n in s.names if n is not None)
        self.sources = tuple(t for w in weights for t in w if t is not None)
        # weights made under inference_mode can change in place unseen: never reused then
        self.tracked = not any(t.is_inference() for t in self.sources)
        self.stamps = _stamps(self.sources) if self.tracked else None
        self.regularization = layer.regularization
        I, H = layer.input_size, layer.cells[0].hidden_size
        self.input_size, self.hidden_size, self.num_layers = I, H, len(steps)
        self.lstm = steps[0].kind.startswith("lstm")
        self.scratch_sizes = tuple(max(_SCRATCH[s.kind](I if k == 0 else H, H, B) for k, s in enumerate(steps))
                                   for B in range(NATIVE_MAX_BATCH + 1))  # by the number of streams
        # the bound weights' storages, held: a weight whose data is swapped (p.data = ...) can then
        # never come back at the same address, unseen by the address check (_stamps)
        self.keep, calls = [tuple(t.untyped_storage() for t in self.sources if t.layout is torch.strided)], []
        with torch.inference_mode(False), torch.no_grad():  # plain constants whatever mode built them
            for k, (spec, w) in enumerate(zip(steps, weights)):
                packed, consts = _bound(spec, w, H)
                self.keep.append(packed)
                calls.append((fns[spec.kind], I if k == 0 else H, consts))
        self.calls = tuple(calls)
        self.sweep = 1
        self.element_size = torch.empty(0, dtype=dtype).element_size()
        self.spare: dict[tuple[int, bool, int], list[tuple]] = {}  # (batch, batched, chunk) -> outputs made ahead
        # the fast step, checks and C calls, in C++ (step_guard.cpp) when it is built; tracked weights only
        ext = step_guard.module() if self.tracked else None
        self.guard = None if ext is None else self._guard(ext, steps, dtype)

    def _guard(self, ext, steps: tuple[LayerStep, ...], dtype: torch.dtype):
        """The C++ guard of this program: its checks, and each layer's C step through
        stream_step_any with the constants of :func:`_bound` in a ``stream_consts``."""
        structs = tuple(_stream_consts(spec, consts) for spec, (_, _, consts) in zip(steps, self.calls))
        self.keep.append(structs)
        step_any = ctypes.cast(native.bind("stream_step_any", dtype), ctypes.c_void_p).value
        return ext.guard(self.sources, torch.empty(0, dtype=dtype), self.input_size, self.hidden_size, self.num_layers,
                         2 if self.lstm else 1, NATIVE_MAX_BATCH, step_any,
                         tuple(ctypes.addressof(c) for c in structs), tuple(i for _, i, _ in self.calls),
                         self.scratch_sizes, self.element_size, STACK_SCRATCH, self.spare, self.names)

    def guarded_step(self, layer, x: Tensor, state, chunk: int = 0):
        """The C++ guard's step (its checks, then the C calls): ``(y, state)`` or None.
        ``chunk`` as in :meth:`_outputs`."""
        done = self.guard.step(x, state, layer._parameters, chunk)
        while done is ...:  # the outputs made ahead for this shape ran out (again, if another thread took them)
            self._refill(x, chunk)
            done = self.guard.step(x, state, layer._parameters, chunk)
        return done

    def _refill(self, x: Tensor, chunk: int) -> None:
        """More outputs made ahead for ``x``'s shape (the C++ step ran out)."""
        batched = x.dim() == (3 if chunk else 2)
        batch = x.shape[1 if chunk == 1 else 0] if batched else 1
        self.spare[(batch, batched, chunk)] = self._make_outputs(batch, batched, chunk)

    def run(self, x: Tensor, states: tuple[Tensor, ...], batch: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``x (B, I)`` or ``(I,)`` (or any layout of those values), ``states`` each
        ``(L, B, H)`` or ``(L, H)``, all contiguous -> ``(y, new states)``, ``y`` the last
        layer's new ``h``."""
        return self.run_at(batch, states[0].dim() == 3, x.data_ptr(), states[0].data_ptr(),
                           states[1].data_ptr() if self.lstm else 0, torch.get_num_threads())

    def run_at(self, batch: int, batched: bool, x_ptr: int, h_in: int, c_in: int,
               threads: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        """:meth:`run` on the tensors' addresses (``c_in`` 0 without a cell state);
        ``threads``: torch's (large weights: the GEMV's rows split over them)."""
        H = self.hidden_size
        y, h_out, c_out, h_at, c_at, _ = self._outputs(batch, batched)
        # layer k's slice of an (L, B, H) state by address: indexing would build a view per call
        stride = batch * H * self.element_size
        sweep = self.sweep = 1 - self.sweep  # alternate the rows' order step to step (stream_step.h: cache reuse)
        # per call, not kept (two threads may step the same layer at once): on the C
        # step's stack where it fits, else a tensor alive until the call returns
        size = self.scratch_sizes[batch]
        work = None if size <= STACK_SCRATCH else torch.empty(size, dtype=self.dtype)
        at, w_ptr = 0, _ptr(work)
        if self.lstm:
            for fn, I, consts in self.calls:
                fn(batch, I, H, threads, sweep, x_ptr, h_in + at, c_in + at, h_at + at, c_at + at, *consts, w_ptr)
                x_ptr = h_at + at
                at += stride
            return y, (h_out, c_out)
        for fn, I, consts in self.calls:
            fn(batch, I, H, threads, sweep, x_ptr, h_in + at, h_at + at, *consts, w_ptr)
            x_ptr = h_at + at
            at += stride
        return y, (h_out,)

    def _outputs(self, batch: int, batched: bool, chunk: int = 0) -> tuple:
        """A step's new states, its output and their addresses: made ahead, a few steps'
        worth at a time, so a step makes no tensor (after the GEMV's sweep, each torch
        call's code comes back from L3). Each step's are its own memory, never handed out
        again. ``chunk`` 0: a step's output ``y``, a view of the last layer's ``h`` (as the
        general path's); 1 (2 batch-first): a forward's one-step chunk's, its own memory."""
        key = (batch, batched, chunk)
        try:
            return self.spare[key].pop()
        except (KeyError, IndexError):  # (another thread may have taken the last one)
            made = self._make_outputs(batch, batched, chunk)
            mine = made.pop()  # before the list is shared: another thread could empty it first
            self.spare[key] = made
            return mine

    def _make_outputs(self, batch: int, batched: bool, chunk: int = 0) -> list[tuple]:
        """``(y or out, h, c or None, h's address, c's address or 0, out's address or 0)`` for
        a few steps (step_guard.cpp reads them)."""
        L, H = self.num_layers, self.hidden_size
        shape = (L, batch, H) if batched else (L, H)
        out_shape = (1, H) if not batched else ((1, batch, H) if chunk == 1 else (batch, 1, H))
        per_step = (2 if self.lstm else 1) * self.element_size * L * batch * H
        made = []
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, whatever mode the step runs in
            for _ in range(max(1, min(OUTPUTS_AHEAD, OUTPUT_BYTES_AHEAD // per_step))):
                h = torch.empty(shape, dtype=self.dtype)
                c = torch.empty(shape, dtype=self.dtype) if self.lstm else None
                y = h[-1] if chunk == 0 else torch.empty(out_shape, dtype=self.dtype)
                made.append((y, h, c, h.data_ptr(), 0 if c is None else c.data_ptr(), 0 if chunk == 0 else y.data_ptr()))
        return made


def program(layer, steps: tuple[LayerStep, ...], weights: list[tuple[Tensor | None, ...]], fns: dict,
            dtype: torch.dtype) -> StackProgram:
    """The layer's bound C steps for ``weights`` (cached; rebuilt when they changed)."""
    prog = _PROGRAMS.get(layer)
    if prog is None or prog.dtype is not dtype or not _unchanged(layer, prog):
        prog = _PROGRAMS[layer] = StackProgram(layer, steps, weights, fns, dtype)
    return prog


def _c_steps(layer, dtype: torch.dtype) -> tuple[tuple[LayerStep, ...], dict] | None:
    """The layer's C steps (:func:`specs`) and functions for ``dtype``, or None: a cell
    without one, zoneout (not in the C steps), or no native library."""
    steps = specs(layer)
    if steps is None or layer.regularization.steps_masked(False):
        return None
    fns = _functions(dtype)
    return None if fns is None else (steps, fns)


def step_stack(layer, x: Tensor, states: tuple[Tensor, ...], grad: bool) -> tuple[Tensor, tuple[Tensor, ...]] | None:
    """``x (B, I)``, ``states`` each ``(L, B, S)`` -> ``(y (B, O), new states)`` through the
    C steps, or None when this layer, input or mode is not one they take."""
    if (x.shape[0] > NATIVE_MAX_BATCH or x.device.type != "cpu" or x.dtype not in _DTYPES
            or torch._C._is_any_autocast_enabled() or not _untraced()):
        return None
    found = _c_steps(layer, x.dtype)
    if found is None:
        return None
    steps, fns = found
    weights = [_weights(layer, s.names) for s in steps]
    tensors = [t for w in weights for t in w if t is not None]
    if any(t.dtype != x.dtype or not t.is_cpu for t in tensors) or not all(map(_readable, (x, *states, *tensors))):
        return None  # (torch's step raises the clear error, or computes what C cannot read)
    if grad and (x.requires_grad or any(s.requires_grad for s in states) or any(t.requires_grad for t in tensors)):
        return None
    prog = program(layer, steps, weights, fns, x.dtype)
    return prog.run(x.contiguous(), tuple(s.contiguous() for s in states), x.shape[0])


def _untraced() -> bool:
    """Not under torch.compile / torch.export (they keep the kernels' custom ops in the
    graph) nor torch.jit.trace (a C call is invisible to it)."""
    return not torch.compiler.is_compiling() and not torch.jit.is_tracing()


def _unchanged(layer, prog: StackProgram) -> bool:
    """The same weight tensors as ``prog`` was bound to (none parametrised), unwritten."""
    return (layer.regularization is prog.regularization and _same_weights(layer, prog)
            and _stamps(prog.sources) == prog.stamps)


def _plain_states(prog: StackProgram, state, expected: tuple[int, ...]) -> tuple[Tensor, ...] | None:
    """``state`` as the C steps take it (a tuple of contiguous CPU tensors of shape
    ``expected`` and the program's dtype, as many as the cell has), or None."""
    states = (state,) if type(state) is Tensor else state
    if type(states) is not tuple or len(states) != (2 if prog.lstm else 1):
        return None
    for s in states:
        if (type(s) is not Tensor or s.shape != expected or s.dtype is not prog.dtype or not s.is_cpu
                or not s.is_contiguous() or not _readable(s)):
            return None
    return states


def _differentiated(x: Tensor, states: tuple[Tensor, ...], prog: StackProgram) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in (*states, *prog.sources)))


def fast_step(layer, x: Tensor, state) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]] | None:
    """The whole of ``layer.step(x, state)`` for the deployed case, or None to take the
    general path (which checks everything and raises the clear errors).

    A stream's step at batch 1 costs ~10 us of arithmetic at H=256 and, through the
    general path, twice that in Python (checks, plans, weight lookups, dispatch), whose
    working set also pushes the weights out of cache. So this path only confirms that the
    step is exactly the one the layer's bound program (:class:`StackProgram`, built by an
    earlier general step) was made for: evaluation mode, nothing differentiated, no
    autocast or tracing, an exact ``torch.Tensor`` input and state of the expected shapes,
    dtype and device, contiguous, and the same weights, unchanged. The tensors' part of
    that is read in C++ (:mod:`~rnnkit.kernels.cpu.native.step_guard`) when it is built,
    else by the same checks in Python.
    """
    if torch.compiler.is_compiling() or layer.training or state is None:  # (compiling: before any lookup)
        return None
    prog = _PROGRAMS.data.get(weakref.ref(layer))  # (WeakKeyDictionary.get, without its Python frame)
    if prog is None or layer.regularization is not prog.regularization:
        return None
    if prog.guard is not None:  # the rest of the checks, and the C calls, in C++
        return prog.guarded_step(layer, x, state)
    if not _same_weights(layer, prog):
        return None
    found = _checked(prog, x, state)
    if found is None:
        return None
    y, states = prog.run_at(*found)
    return y, (states if prog.lstm else states[0])


def _same_weights(layer, prog: StackProgram) -> bool:
    """The layer holds the same weight tensors ``prog`` was bound to (whether they were
    written since: :func:`_stamps`; its regularisation: the callers check it first)."""
    return prog.tracked and not any(map(operator.is_not, map(layer._parameters.get, prog.names), prog.sources))


def _checked(prog: StackProgram, x, state) -> tuple[int, bool, int, int, int, int] | None:
    """What the C++ guard's ``check`` computes (step_guard.cpp), in Python: ``(batch,
    batched, x, h, c addresses, threads)`` when ``x`` and ``state`` are what ``prog`` takes,
    its weights are unwritten, nothing is differentiated, no autocast and no
    torch.jit.trace, else None."""
    if (type(x) is not Tensor or x.dtype is not prog.dtype or not x.is_cpu or not x.is_contiguous()
            or not _readable(x) or torch._C._is_any_autocast_enabled() or torch.jit.is_tracing()):
        return None
    shape, L, H = x.shape, prog.num_layers, prog.hidden_size
    if len(shape) == 2:
        B, I = shape
        expected = (L, B, H)
    elif len(shape) == 1:
        B, I, expected = 1, shape[0], (L, H)
    else:
        return None
    if I != prog.input_size or not 0 < B <= NATIVE_MAX_BATCH or _stamps(prog.sources) != prog.stamps:
        return None
    states = _plain_states(prog, state, expected)
    if states is None or _differentiated(x, states, prog):
        return None
    return (B, len(shape) == 2, x.data_ptr(), states[0].data_ptr(), states[1].data_ptr() if prog.lstm else 0,
            torch.get_num_threads())


def _current_program(layer, dtype: torch.dtype) -> StackProgram | None:
    """The layer's program for ``dtype``, bound again if its weights changed; None when
    the layer has no C steps, its weights are not CPU ``dtype`` tensors, or binding them
    would be needed every call (parametrised weights, computed anew each time; weights
    made under inference_mode, whose changes cannot be seen): the general path is then
    as fast."""
    prog = _PROGRAMS.get(layer)
    if prog is not None and prog.dtype is dtype:
        if not prog.tracked:
            return None
        if _unchanged(layer, prog):
            return prog
    found = _c_steps(layer, dtype)
    if found is None or any(n is not None and n not in layer._parameters for s in found[0] for n in s.names):
        return None
    steps, fns = found
    weights = [_weights(layer, s.names) for s in steps]
    if any(t is not None and (t.dtype is not dtype or not t.is_cpu) for w in weights for t in w):
        return None
    prog = _PROGRAMS[layer] = StackProgram(layer, steps, weights, fns, dtype)  # (the cached one is stale)
    return prog


def fast_forward(layer, x: Tensor, hx) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]] | None:
    """``layer(x, hx)`` for a chunk of one time step, the way a stream calls torch.nn's
    layers, through the C steps (binding them on first use), or None to take the general
    path. The same conditions as :func:`fast_step`, for the forward's layouts: ``x`` of
    shape ``(1, B, I)`` (``(B, 1, I)`` batch-first) or unbatched ``(1, I)``, ``hx`` given."""
    if hx is None or layer.training or torch.compiler.is_compiling():  # (compiling: before any lookup)
        return None
    prog = _PROGRAMS.data.get(weakref.ref(layer))
    if prog is not None and prog.guard is not None and layer.regularization is prog.regularization:  # in C++
        done = prog.guarded_step(layer, x, hx, 2 if layer.batch_first else 1)
        if done is not None:
            return done
    if type(x) is not Tensor or x.dtype not in _DTYPES or not x.is_cpu or not _readable(x):
        return None
    shape = x.shape
    batched = len(shape) == 3
    if batched:
        (B, T) = (shape[0], shape[1]) if layer.batch_first else (shape[1], shape[0])
    elif len(shape) == 2:
        B, T = 1, shape[0]
    else:
        return None
    if (T != 1 or not 0 < B <= NATIVE_MAX_BATCH or not x.is_contiguous() or torch._C._is_any_autocast_enabled()
            or not _untraced()):
        return None
    prog = _current_program(layer, x.dtype)
    if prog is None or shape[-1] != prog.input_size:
        return None
    L, H = prog.num_layers, prog.hidden_size
    states = _plain_states(prog, hx, (L, B, H) if batched else (L, H))
    if states is None or _differentiated(x, states, prog):
        return None
    _, outs = prog.run(x, states, B)
    out = outs[0][-1:].clone()  # (1, B, H) or unbatched (1, H); its own memory, as torch.nn's output
    if batched and layer.batch_first:
        out = out.transpose(0, 1)
    return out, (outs if prog.lstm else outs[0])
