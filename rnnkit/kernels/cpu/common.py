"""Shared pieces of the fused CPU kernels (:mod:`rnnkit.kernels.cpu.lstm`,
:mod:`rnnkit.kernels.cpu.gru`): which inputs they take, masks, and the C calls' arguments.

The mask is applied by selection, never as a product (``NaN * 0`` is NaN): the
kernels zero the padded input steps before their projection
(:func:`~rnnkit.kernels.reference.zero_padding`), and set the padded rows of the
outputs and of the incoming output gradients with :func:`fill_rows_` (an
``index_fill_`` over the padded ``(t, b)`` rows only, which :func:`padded_rows` lists
once: far cheaper on CPU than a broadcast ``masked_fill_``).
"""
from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import Tensor

from ...cells.base import Params, linear

from .. import reference
from ..registry import Verdict
from ..specs import compiling, input_verdict, state_verdict
from ..step_masks import KernelMasks, has_masks, kernel_masks
from . import native

#: dtypes the kernels are written and tested for (float64 for gradcheck).
DTYPES = (torch.float32, torch.float64)


def grad_projection(DH: Tensor, M: Tensor, rows: Tensor | None) -> Tensor:
    r"""``dW_hr = \sum_t (m_t DH_t)^T M_t`` for ``y = W_hr M``: ``DH (T, B, R)`` the gradient
    wrt the projected states (ours: its padded ``rows`` are zeroed in place), ``M (T, B, H)``
    their inputs; padded steps carried the previous state, so they give ``W_hr`` nothing."""
    DH = fill_rows_(DH, rows, 0.0)
    return DH.reshape(-1, DH.shape[-1]).t() @ M.reshape(-1, M.shape[-1])


def padded_rows(mask: Tensor | None) -> Tensor | None:
    """The padded steps of ``mask (T, B, 1)`` (on CPU: the kernels' inputs) as flat row
    indices ``t * B + b`` into a ``(T * B, ...)`` view; None without a mask or when no
    step is padded."""
    rows = None if mask is None else reference.padded_rows(mask)
    return rows if rows is not None and rows.numel() else None


def fill_rows_(k: Tensor, rows: Tensor | None, value: float) -> Tensor:
    """``k (T, B, ...)`` (ours) with the padded ``rows`` (:func:`padded_rows`) set to
    ``value``, in place: a selection, so whatever they held (NaN, inf) is gone."""
    if rows is None:
        return k
    T, B = k.shape[:2]
    if k.stride(0) == k.stride(1) * B:  # time and batch merge into one dim: a view
        k.flatten(0, 1).index_fill_(0, rows, value)
    else:
        pad = torch.zeros(T * B, dtype=torch.bool, device=k.device).index_fill_(0, rows, True)
        k.masked_fill_(pad.view(T, B, *(1,) * (k.dim() - 2)), value)
    return k


def masked_copy(t: Tensor, rows: Tensor | None) -> Tensor:
    """``t (T, B, ...)`` with the padded ``rows`` 0: a new contiguous tensor, or ``t``
    itself when nothing is padded (outputs, and the gradients arriving at them)."""
    if rows is None:
        return t
    return fill_rows_(t.clone(memory_format=torch.contiguous_format), rows, 0.0)


def byte_mask(mask: Tensor | None) -> Tensor | None:
    """``mask (T, B, 1)`` bool -> contiguous ``(T, B)`` uint8, as the C indexes it."""
    return None if mask is None else mask.reshape(mask.shape[0], mask.shape[1]).to(torch.uint8).contiguous()


def ptr(t: Tensor | None) -> int | None:
    """A tensor's address for the C steps (None stays None: an absent argument)."""
    return None if t is None else t.data_ptr()


#: fewest gate values (B * 4H) per step worth running the pointwise step on more than
#: one thread (each step then forks and joins the OpenMP team torch's GEMMs use)
PARALLEL_MIN_GATES = 1 << 14


#: fewest batch rows per thread for the C loops to run blocks of rows in parallel
#: (ROWS: each thread its rows' whole time loop, no per-step fork or join)
ROWS_PER_THREAD = 4
#: the LSTM's and GRU's C sequences' flag for it (native/steps.c)
ROWS = 16


@functools.lru_cache(maxsize=None)
def l2_bytes() -> int:
    """One core's L2 cache in bytes, as Linux reports it (1 MiB where it does not)."""
    try:
        for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return 1 << 20


def row_blocks(batch: int, weight_bytes: int) -> int:
    """Threads for the C loops to run ``batch`` rows as blocks in parallel, each block's
    whole time loop on one thread: the caller's intra-op count when each gets
    :data:`ROWS_PER_THREAD` rows and the recurrent weights (``weight_bytes``) fit in half
    of one core's L2, else 1: the per-step GEMMs then split the weight's panels (each
    thread's half stays in its own cache) and the steps their rows. In blocks of rows
    every thread reads all of the weight at each step. T100 fwd+bwd, 2 threads, layer-norm
    LSTM against torch.nn.LSTM: B32 H128 1.10 -> 1.00, but with H512's 4 MiB W_hh (L2:
    2 MiB) B32 0.86 -> 0.89 and B8 0.86 -> 1.11 (2-core AVX-512 Xeon)."""
    threads = torch.get_num_threads()
    fits = weight_bytes <= l2_bytes() // 2
    return threads if threads > 1 and fits and batch >= ROWS_PER_THREAD * threads else 1


def pointwise_threads(batch: int, gates: int) -> int:
    """Threads for a C step over ``(batch, gates)`` values: the caller's intra-op count
    for large steps, else one."""
    return torch.get_num_threads() if batch * gates >= PARALLEL_MIN_GATES else 1


def match_cpu(cell, x: Tensor, p, state, mask) -> Verdict:
    """The input checks of every fused CPU kernel: CPU tensors of :data:`DTYPES`
    (:func:`~rnnkit.kernels.specs.input_verdict`; under ``torch.compile``/``torch.export``
    too, as custom ops, without step masks), states and mask as the C reads them."""
    if x.device.type != "cpu":
        return f"input on {x.device}: the C loops run on CPU"
    if compiling() and has_masks(p):
        return "recurrent dropout or zoneout under torch.compile: the custom ops have no step masks"
    verdict = input_verdict(x, p, DTYPES, graph=True)
    return state_verdict(cell, x, state, mask) if verdict is True else verdict


def available() -> Verdict:
    """Whether the C loops are built (or can be, now: the first ask compiles them)."""
    if native.library() is None:
        return "no native library (no C compiler, a failed build, or RNNKIT_NATIVE=0)"
    return True


# What torch.compiler.assume_constant_result sets: torch.compile calls it eagerly and keeps the
# answer (tracing the build would fail). Set by hand: that decorator imports dynamo, and with it
# triton, on `import rnnkit`.
available._dynamo_marked_constant = True  # type: ignore[attr-defined]


# --- inference: the input projection into a reused buffer ----------------------------------
#: this thread's buffer for :func:`inference_projection` (one per thread: two threads may run
#: layers at once; a thread runs one kernel call at a time)
_WORKSPACE = threading.local()
#: smaller projections get a fresh tensor: the allocator hands back recently freed memory
WORKSPACE_MIN_BYTES = 1 << 20


def inference_projection(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x (T, B, I) @ weight.T (+ bias)`` -> ``(T, B, G)`` for a forward that nothing will
    differentiate, written into this thread's reused buffer when large (the next call
    overwrites it: only the kernel reads it, before returning). A fresh ``(T*B, G)``
    tensor of many megabytes is mapped anew by the allocator every call, and faulting
    its pages in took ~15 ms of a 30 ms B256 T100 H128 LSTM forward. The buffer keeps the
    largest size asked of it for the thread's lifetime, as oneDNN's scratchpad does."""
    T, B, I = x.shape
    G = weight.shape[0]
    n = T * B * G
    if n * x.element_size() < WORKSPACE_MIN_BYTES:
        return linear(x, weight, bias)
    buf = getattr(_WORKSPACE, "buf", None)
    if buf is None or buf.numel() < n or buf.dtype != x.dtype:
        with torch.inference_mode(False):  # a plain tensor: later calls may run outside inference mode
            buf = _WORKSPACE.buf = torch.empty(n, dtype=x.dtype)
    out, x2 = buf[:n].view(T * B, G), x.reshape(T * B, I)
    if bias is None:
        torch.mm(x2, weight.t(), out=out)
    else:
        torch.addmm(bias, x2, weight.t(), out=out)
    return out.view(T, B, G)


#: the input projection's bytes per chunk in a forward no backward follows: a projection larger
#: than two chunks is made (and read by the loop) a chunk of steps at a time
CHUNK_BYTES = 8 << 20


def chunk_ranges(T: int, step_bytes: int, reverse: bool) -> list[tuple[int, int]]:
    """The ``(t0, t1)`` step ranges, in processing order, of a forward no backward follows
    whose input projection takes ``step_bytes`` per step: one range when the whole projection
    is at most two :data:`CHUNK_BYTES`, else chunks of that size. Each chunk's projection is
    made right before its steps run, so the loop reads it from cache: at B256 T100 H128 an
    LSTM's whole projection is 52 MB, written to memory and read back (a peephole LSTM's
    forward there 53 -> 45 ms with chunks of 16 steps); a chunk costs a call (~0.1 ms), so
    smaller projections stay whole."""
    steps = T if T * step_bytes <= 2 * CHUNK_BYTES else max(1, CHUNK_BYTES // step_bytes)
    starts = range(0, T, steps)
    return [(t0, min(t0 + steps, T)) for t0 in (reversed(starts) if reverse else starts)]


def projected_chunks(x: Tensor, weight: Tensor, bias: Tensor | None,
                     reverse: bool) -> Iterator[tuple[int, int, Tensor]]:
    """``(t0, t1, xp)`` for each of :func:`chunk_ranges`' ranges of ``x (T, B, I)``, in processing
    order: ``xp (t1 - t0, B, G)`` the chunk's input projection (:func:`inference_projection`:
    this thread's buffer, overwritten by the next chunk's)."""
    T, B, _ = x.shape
    for t0, t1 in chunk_ranges(T, B * weight.shape[0] * x.element_size(), reverse):
        yield t0, t1, inference_projection(x[t0:t1], weight, bias)


def backward_follows(*tensors: Tensor | None) -> bool:
    """Whether a backward can follow a kernel call on ``tensors`` (its inputs and what they
    are computed from; None for absent ones): then the forward keeps every step's buffers."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --- the custom ops' shared pieces (cpu/lstm.py, cpu/gru.py) -----------------------------
def no_masks(B: int, sizes: tuple[int, ...], device) -> KernelMasks:
    """No recurrent dropout, no zoneout (the custom ops have none)."""
    return kernel_masks(Params(), B, sizes, device)


def empty_output(like: Tensor) -> Tensor:
    """An absent output of a custom op (its schema has no optional outputs)."""
    return like.new_empty(0)


def present(t: Tensor) -> Optional[Tensor]:
    """An op's output back to None where it stands for an absent tensor."""
    return t if t.numel() else None


def eager_or_graph(eager, graph):
    """A kernel's ``run`` (the reference scan's signature) from its two forms: ``eager``
    (the autograd Function) in eager mode, ``graph`` (the custom ops) under
    ``torch.compile``/``torch.export``."""
    def run(cell, p, x: Tensor, state, mask: Tensor | None = None, reverse: bool = False):
        return (graph if compiling() else eager)(cell, p, x, state, mask, reverse)
    return run


def states_output(Y: Tensor, mask: Tensor | None) -> Tensor:
    """An op's output ``y`` from the states ``Y (T, B, ...)``: ``Y`` itself without a mask,
    else a copy with the padded steps zeroed (a copy even when nothing is padded: whether
    anything is cannot be known while tracing, and the op then also returns ``Y``, which
    its outputs must not alias)."""
    if mask is None:
        return Y
    y = masked_copy(Y, padded_rows(mask))
    return Y.clone() if y is Y else y
