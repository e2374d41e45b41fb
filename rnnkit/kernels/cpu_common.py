"""Shared pieces of the fused CPU kernels (:mod:`rnnkit.kernels.cpu_lstm`,
:mod:`rnnkit.kernels.cpu_gru`): time bookkeeping, masks and the post-loop GEMMs.

Conventions, time-major throughout:

* ``Y (T, B, S)`` holds the state *after* step ``t`` at index ``t`` in both
  directions, so the outputs are ``Y`` itself (no per-step copy) and the state
  *before* step ``t`` is ``Y[t - 1]`` (forward) or ``Y[t + 1]`` (reverse), or the
  initial state for the first processed step.
* Padded steps (``mask[t, b] == False``) carry the state: ``Y[t] = where(m, new, prev)``.
  The backward folds the mask into the per-step coefficients (see the kernels), so
  masking costs at most one extra elementwise op per step there.
* The mask is applied by selection, never as a product (``NaN * 0`` is NaN): the
  kernels zero the padded input steps before their projection
  (:func:`~rnnkit.kernels.reference.zero_padding`), and set the padded rows of the
  outputs, of the incoming output gradients and of the coefficients with
  :func:`fill_rows_` (an ``index_fill_`` over the padded ``(t, b)`` rows only, which
  :func:`padded_rows` lists once: far cheaper on CPU than a broadcast ``masked_fill_``).
"""
from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Callable

import torch
from torch import Tensor

from ..cells.base import layer_norm
from . import reference

#: epsilon of the cells' layer norm (kept in sync with :func:`rnnkit.cells.base.layer_norm`).
LN_EPS: float = inspect.signature(layer_norm).parameters["eps"].default

#: dtypes the kernels are written and tested for (float64 for gradcheck).
DTYPES = (torch.float32, torch.float64)

_aten = torch.ops.aten
#: ``grad * y * (1 - y)`` and ``grad * (1 - y**2)`` in one op each (y = sigmoid/tanh output).
sigmoid_backward = _aten.sigmoid_backward
tanh_backward = _aten.tanh_backward


def summed_bias(p: SimpleNamespace) -> Tensor | None:
    """``b_ih + b_hh`` (either may be None): the kernels fold ``b_hh`` into the input
    projection's bias, since it is additive in every variant they run (with layer
    norm it is the shift of LN_h, added after the norm)."""
    if p.bias_hh is None:
        return p.bias_ih
    return p.bias_hh if p.bias_ih is None else p.bias_ih + p.bias_hh


def folded_projection(cell, p: SimpleNamespace, x: Tensor) -> Tensor:
    """``cell.project_input`` with ``b_hh`` folded into its bias (:func:`summed_bias`),
    through the cell's own code so autograd differentiates it."""
    return cell.project_input(x, SimpleNamespace(**(vars(p) | {"bias_ih": summed_bias(p)})))


def grad_projection(DH: Tensor, M: Tensor, rows: Tensor | None) -> Tensor:
    r"""``dW_hr = \sum_t (m_t DH_t)^T M_t`` for ``y = W_hr M``: ``DH (T, B, R)`` the gradient
    wrt the projected states (ours: its padded ``rows`` are zeroed in place), ``M (T, B, H)``
    their inputs; padded steps carried the previous state, so they give ``W_hr`` nothing."""
    DH = fill_rows_(DH, rows, 0.0)
    return DH.reshape(-1, DH.shape[-1]).t() @ M.reshape(-1, M.shape[-1])


def step_order(T: int, reverse: bool) -> list[int]:
    """Time indices in processing order."""
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def prev_split(T: int, reverse: bool) -> tuple[slice, slice, int]:
    """``(cur, prev, first)``: the steps whose previous state is in ``Y``, where those
    states are in ``Y``, and the one step whose previous state is the initial one."""
    if reverse:
        return slice(0, T - 1), slice(1, T), T - 1
    return slice(1, T), slice(0, T - 1), 0


def with_prev(op: Callable[..., Tensor], out: Tensor, Y: Tensor, s0: Tensor, *xs: Tensor,
              reverse: bool) -> Tensor:
    """``out[t] = op(prev_t, *(x[t] for x in xs), out=out[t])`` for every step, where
    ``prev_t`` is the state before step ``t`` (``Y (T, B, S)``, initial ``s0 (B, S)``):
    two calls instead of materialising the shifted states (one pass over memory less)."""
    cur, prev, first = prev_split(Y.shape[0], reverse)
    op(Y[prev], *(x[cur] for x in xs), out=out[cur])
    op(s0, *(x[first] for x in xs), out=out[first])
    return out


def grad_weight_prev(dA: Tensor, Y: Tensor, s0: Tensor, reverse: bool) -> Tensor:
    r"""``\sum_t dA_t^T s_{t-1}`` for a recurrent weight: ``dA (T, B, G)``, ``Y (T, B, S)``
    -> ``(G, S)``, as one big GEMM plus one for the initial state (no concatenation)."""
    G, S = dA.shape[-1], Y.shape[-1]
    cur, prev, first = prev_split(Y.shape[0], reverse)
    out = dA[first].t() @ s0
    if Y.shape[0] > 1:
        out.addmm_(dA[cur].reshape(-1, G).t(), Y[prev].reshape(-1, S))
    return out


def sum_prev_products(d: Tensor, Y: Tensor, s0: Tensor, reverse: bool) -> Tensor:
    r"""``\sum_{t,b} d_t \odot s_{t-1}`` for a diagonal (peephole) weight: ``d (T, B, *F)``
    with ``Y (T, B, *F')`` and ``s0 (B, *F')`` broadcasting against it -> ``F``."""
    cur, prev, first = prev_split(Y.shape[0], reverse)
    return sum_tb(d[cur] * Y[prev]) + (d[first] * s0).sum(0)


def peephole_grads(dA: Tensor, C: Tensor, c0: Tensor, reverse: bool,
                   needs: dict[str, bool]) -> dict[str, Tensor | None]:
    r"""The LSTM peepholes' gradients from ``dA (T, B, 4H)`` (wrt the unscaled ``i, f, o``
    pre-activations) and the cell states ``C (T, B, H)``, initial ``c0 (B, H)``:
    ``dw_ci = \sum dA_i c_{t-1}``, ``dw_cf = \sum dA_f c_{t-1}``, ``dw_co = \sum dA_o c_t``."""
    T, B, G = dA.shape
    dA4, out = dA.view(T, B, 4, G // 4), {}
    if needs["w_ci"] or needs["w_cf"]:
        out["w_ci"], out["w_cf"] = sum_prev_products(dA4[:, :, :2], C.unsqueeze(2), c0.unsqueeze(1),
                                                     reverse).unbind(0)
    out["w_co"] = sum_tb(dA4[:, :, 3] * C) if needs["w_co"] else None
    return out


def affine(x: Tensor, a: float, b: float) -> Tensor:
    """``a x + b`` in one pass (``torch.add`` of a 0-dim constant: no extra op)."""
    return torch.add(x.new_tensor(b), x, alpha=a)


def sum_tb(x: Tensor) -> Tensor:
    """Sum over time and batch: ``(T, B, *F) -> (*F)``."""
    return x.sum(dim=(0, 1))


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


def fold_mask(k: Tensor, rows: Tensor | None) -> Tensor:
    """A coefficient that only acts on real steps: 0 at padded ones (in place, ``k`` is ours)."""
    return fill_rows_(k, rows, 0.0)


def fold_mask_carry(k: Tensor, rows: Tensor | None) -> Tensor:
    """A carry coefficient ``d s_{t-1} / d s_t``: ``k`` on real steps, 1 on padded
    ones (the state passes through) (in place)."""
    return fill_rows_(k, rows, 1.0)


def tensors_ok(x: Tensor, tensors) -> bool:
    """All present tensors on ``x``'s device with ``x``'s dtype (the kernels never promote)."""
    return all(t is None or (t.device == x.device and t.dtype == x.dtype) for t in tensors)


def inputs_ok(cell, x: Tensor, state, mask: Tensor | None) -> bool:
    """What the fused kernels take, exactly: the state ``(B, S)`` per entry of
    ``cell.state_sizes()`` on ``x``'s device and dtype (the reference would broadcast a
    ``(1, S)`` state; the kernels read ``B`` rows), and a bool ``mask (T, B, 1)`` on that
    device. Anything else goes to the reference scan, which also raises the errors."""
    T, B = x.shape[:2]
    if len(state) != len(cell.state_sizes()) or not tensors_ok(x, state):
        return False
    if any(tuple(s.shape) != (B, n) for s, n in zip(state, cell.state_sizes())):
        return False
    return mask is None or (mask.dtype == torch.bool and tuple(mask.shape) == (T, B, 1)
                            and mask.device == x.device)


def byte_mask(mask: Tensor | None) -> Tensor | None:
    """``mask (T, B, 1)`` bool -> contiguous ``(T, B)`` uint8, as the C indexes it."""
    return None if mask is None else mask.reshape(mask.shape[0], mask.shape[1]).to(torch.uint8).contiguous()


def tracing() -> bool:
    """Under TorchScript, tracing or torch.compile the reference loop must run: the
    kernels' autograd.Function and out= buffers are eager-mode machinery."""
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    return torch.jit.is_scripting() or torch.jit.is_tracing() or compiling


def eager_cpu_ok(x: Tensor) -> bool:
    """Whether a fused CPU kernel may run on ``x (T, B, I)`` at all."""
    if tracing() or x.device.type != "cpu" or x.dtype not in DTYPES:
        return False
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        return False  # let the reference raise its own errors on odd inputs
    # under autocast the reference's matmuls run in lower precision; ours would not
    return not torch.is_autocast_enabled("cpu")


class ThreadSwitch:
    """Intra-op threads inside the time loops: the caller's count for the GEMMs (as
    torch.nn.LSTM's kernel uses), one for the small per-step elementwise ops and norms.

    Why: ATen runs an elementwise op in parallel once it has more than 32768 elements,
    and layer norm at any size (one row per task). On ``(B, 4H)`` slices that saves a
    few microseconds on an idle machine, but every parallel region is a fork/join, and
    on a busy one a descheduled worker stalls the join for a whole scheduler slice
    (~12 ms measured on a loaded 2-core box: a 10 us layer norm took 12 ms), per op and
    per step. Switching costs ~0.2 us (thread-local OpenMP/MKL settings). Restores the
    caller's count on exit.
    """

    def __init__(self) -> None:
        self.threads = torch.get_num_threads()

    def gemm(self) -> None:
        if self.threads > 1:
            torch.set_num_threads(self.threads)

    def pointwise(self) -> None:
        if self.threads > 1:
            torch.set_num_threads(1)

    def __enter__(self) -> "ThreadSwitch":
        return self

    def __exit__(self, *exc) -> None:
        self.gemm()


# --- for the kernels with a compiled pointwise step (rnnkit.kernels.native) ---------

def ptr(t: Tensor | None) -> int | None:
    """A tensor's address for the C steps (None stays None: an absent argument)."""
    return None if t is None else t.data_ptr()


#: fewest gate values (B * 4H) per step worth running the pointwise step on more than
#: one thread (each step then forks and joins the OpenMP team torch's GEMMs use)
PARALLEL_MIN_GATES = 1 << 14


def pointwise_threads(batch: int, gates: int) -> int:
    """Threads for a C step over ``(batch, gates)`` values: the caller's intra-op count
    for large steps, else one."""
    return torch.get_num_threads() if batch * gates >= PARALLEL_MIN_GATES else 1
