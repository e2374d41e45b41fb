r"""Fused CPU GRU in compiled C: :class:`rnnkit.cells.GRUCell` ``variant="reset_before"``
(gates ``r, z, n``) and ``"simplified"`` (gates ``u, n``), step masks included.

The structure of :mod:`rnnkit.kernels.cpu.lstm` (the time loop in C, one call
forward and one backward), the equations in ``native/gru_step.h``. Reset-before needs
the reset gate before its candidate's GEMM, so each step is GEMM, pointwise, GEMM,
pointwise both ways (``W_rz h``, gates, ``W_n (r h)``, state); the simplified GRU one
of each. The backward's pointwise step leaves ``P``, the part of ``dh_{t-1}`` that
bypasses ``W_hh``, and the step's GEMM adds ``dA W_hh`` to it. Padded steps (mask 0)
keep the state: ``dA = 0``, ``P = dh``. In a graph the loops run as the custom ops
``rnnkit::gru_scan`` and ``rnnkit::gru_scan_backward`` (:func:`gru_scan_graph`).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch
from torch import Tensor

from ...cells.base import Params, State
from ...cells.gru import GRUCell
from ..grads import grad_weight_prev
from ..higher_order import Rebuild
from ..reference import zero_padding
from ..registry import Kernel, Sample, register
from ..specs import folded_projection, gru_supported, summed_bias
from ..step_masks import SELECT, KernelMasks, kernel_masks
from . import native
from .common import (ROWS, available, backward_follows, byte_mask, eager_or_graph, empty_output, masked_copy,
                     match_cpu, no_masks, padded_rows, pointwise_threads, present, projected_chunks, ptr, row_blocks,
                     states_output)

#: the C sequences' flag for the reset-before variant (native/steps.c; and common.ROWS)
RESET_BEFORE = 1


def _fns(dtype: torch.dtype) -> SimpleNamespace:
    """The C forward and backward over a whole sequence for ``dtype`` (native/gru_step.h)."""
    return SimpleNamespace(forward=native.bind("gru_sequence", dtype),
                           backward=native.bind("gru_backward_sequence", dtype))


def _packed(w_hh: Tensor, reset_before: bool, transpose: bool, choice: str, batch: int) -> tuple[Tensor, Tensor | None]:
    """``W_hh``'s blocks as the C GEMM takes them (packed, or plain for the vendor BLAS:
    ``choice``): ``(W_rz, W_n)`` for reset-before (its reset gate must be known before
    ``W_n``'s product), ``(W_hh, None)`` otherwise; transposed for the backward's products."""
    H = w_hh.shape[1]
    blocks = (w_hh[:2 * H], w_hh[2 * H:]) if reset_before else (w_hh, None)
    return tuple(None if w is None else native.gemm_weight(w.t() if transpose else w, choice, batch) for w in blocks)


def pack_weights(w_hh: Tensor, reset_before: bool, B: int, T: int,
                 transpose: bool = False) -> tuple[str, Tensor, Tensor | None]:
    """``(choice, *blocks)``: ``W_hh`` as the per-step GEMMs take it (:func:`_packed`;
    ``transpose``: the backward's) for ``T`` steps of ``B`` rows, the GEMM by the main
    product's shape."""
    H = w_hh.shape[1]
    out, into = (H, 2 * H) if transpose else (2 * H, H)
    choice = native.gemm_choice(w_hh.dtype, B, out, into, steps=T)
    return (choice, *_packed(w_hh, reset_before, transpose, choice, B))


def _mask_args(km: KernelMasks, B: int, H: int, dtype, *extra) -> tuple:
    """The C loops' recurrent-dropout and zoneout arguments, and the scratch they need:
    ``drop, hd, *extra, zh, kh, zh_rate`` (``hd``: one step's ``h * drop``)."""
    hd = torch.empty(B, H, dtype=dtype) if km.drop_h is not None else None
    kh = km.keep[0] if km.modes[0] == SELECT else None
    return (ptr(km.drop_h), ptr(hd), *extra, km.modes[0], ptr(kh), km.rates[0]), hd


def _forward(fns, variant: str, reverse: bool, store: bool, xp: Tensor, h0: Tensor, mask: Tensor | None,
             w_hh: Tensor, km: KernelMasks, Y: Tensor | None = None, packed: tuple | None = None) -> SimpleNamespace:
    """The recurrence over ``xp (T, B, G*H)``, one C call. Returns the states
    ``Y (T, B, H)`` (into ``Y`` when given) and, with ``store`` (a backward will follow),
    ``A (T, B, G*H)`` gate activations and ``RH (T, B, H)`` = ``r h`` (reset-before);
    without, those hold one step. ``packed``: :func:`pack_weights`' result, when the caller
    runs several calls on the same weights."""
    T, B, GH = xp.shape
    H, n, rb = w_hh.shape[1], T if store else 1, variant == "reset_before"
    f = SimpleNamespace(Y=xp.new_empty(T, B, H) if Y is None else Y, A=xp.new_empty(n, B, GH),
                        RH=xp.new_empty(n, B, H) if rb else None)
    m8 = byte_mask(mask)
    choice, p_a, p_b = packed or pack_weights(w_hh, rb, B, T)
    rec = xp.new_empty(B, 2 * H)  # held: the C gets addresses only
    args, held = _mask_args(km, B, H, xp.dtype)
    fns.forward(T, B, 0, B, H, _flags(rb, B, w_hh), torch.get_num_threads(), pointwise_threads(B, GH), int(reverse), int(store),
                native.vendor_arg(xp.dtype, choice), xp.data_ptr(), p_a.data_ptr(), ptr(p_b), h0.data_ptr(), ptr(m8), f.Y.data_ptr(), f.A.data_ptr(),
                ptr(f.RH), rec.data_ptr(), *args)
    del held
    return f


def _flags(reset_before: bool, B: int, w_hh: Tensor) -> int:
    """The C sequences' flags (native/steps.c): RESET_BEFORE, and ROWS for blocks of the
    ``B`` rows in parallel (:func:`~rnnkit.kernels.cpu.common.row_blocks`)."""
    weight_bytes = w_hh.numel() * w_hh.element_size()
    return RESET_BEFORE * reset_before | ROWS * (row_blocks(B, weight_bytes) > 1)


def _backward(fns, variant: str, reverse: bool, A: Tensor, Y: Tensor, h0: Tensor, mask: Tensor | None,
              dy: Tensor, dh_n: Tensor, w_hh: Tensor, km: KernelMasks) -> tuple[Tensor, Tensor]:
    """BPTT, one C call: ``dA (T, B, G*H)`` (the gradient wrt ``xp`` and, against the
    states, wrt ``W_hh``) and ``dh0 (B, H)``."""
    T, B, GH = A.shape
    H, rb = w_hh.shape[1], variant == "reset_before"
    dA, grad = torch.empty_like(A), dh_n.contiguous().clone()  # grad: dh_T down to dh_0, in place
    m8 = byte_mask(mask)
    choice, p_a, p_b = pack_weights(w_hh, rb, B, T, transpose=True)
    P, drh, Q = A.new_empty(B, H), A.new_empty(B, H), A.new_empty(B, H)  # held: the C gets addresses only
    args, held = _mask_args(km, B, H, A.dtype, Q.data_ptr())
    fns.backward(T, B, 0, B, H, _flags(rb, B, w_hh), torch.get_num_threads(), pointwise_threads(B, GH), int(reverse),
                 native.vendor_arg(A.dtype, choice), p_a.data_ptr(), ptr(p_b), dy.data_ptr(), ptr(m8), h0.data_ptr(), A.data_ptr(), Y.data_ptr(),
                 dA.data_ptr(), grad.data_ptr(), P.data_ptr(), drh.data_ptr(), *args)
    del held
    return dA, grad


def _weight_grad(variant: str, reverse: bool, dA: Tensor, RH: Tensor | None, Y: Tensor,
                 h0: Tensor, drop: Tensor | None = None) -> Tensor:
    """``dW_hh``: ``sum_t dA_t^T h_{t-1}``, for reset-before with ``r h`` in place of ``h``
    on the candidate rows; with recurrent dropout ``h drop`` (what ``W_hh`` saw)."""
    if drop is not None:
        Y, h0 = Y * drop, h0 * drop
    if variant != "reset_before":
        return grad_weight_prev(dA, Y, h0, reverse)
    H = Y.shape[-1]
    d_rz = grad_weight_prev(dA[..., :2 * H], Y, h0, reverse)
    d_n = dA[..., 2 * H:].reshape(-1, H).t() @ RH.reshape(-1, H)
    return torch.cat([d_rz, d_n])


class NativeGRUScan(torch.autograd.Function):
    """``(rebuild, variant, reverse, mask, xp (T, B, G*H), h0 (B, H), w_hh (G*H, H))
    -> (y (T, B, H), h_n (B, H))``; ``xp`` is the input projection with both biases folded
    in. Applied only when a backward can follow (else :func:`_forward_in_chunks` runs). ``rebuild``
    (:class:`~rnnkit.kernels.higher_order.Rebuild`) serves a backward that builds a graph
    (double backward): the reference's autograd instead of the C BPTT."""

    @staticmethod
    def forward(ctx, rebuild, variant: str, reverse: bool, mask: Tensor | None, km: KernelMasks,
                xp: Tensor, h0: Tensor, w_hh: Tensor):
        f = _forward(_fns(xp.dtype), variant, reverse, True, xp, h0.contiguous(), mask, w_hh.contiguous(), km)
        # the inputs themselves (not contiguous copies): the rebuild differentiates them
        ctx.save_for_backward(mask, h0, w_hh, f.A, f.RH, f.Y, *rebuild.take_tensors())
        ctx.variant, ctx.reverse, ctx.rebuild, ctx.km = variant, reverse, rebuild, km
        Y = f.Y
        return masked_copy(Y, padded_rows(mask)), Y[0 if reverse else -1].clone()

    @staticmethod
    def backward(ctx, dy: Tensor, dh_n: Tensor):
        mask, h0, w_hh, A, RH, Y, *saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: differentiate the reference instead
            grads = ctx.rebuild.grads(saved, (None, h0, w_hh), needs[5:], mask, (dy, dh_n))
            return (None, None, None, None, None, *grads)
        h0, w_hh = h0.contiguous(), w_hh.contiguous()
        dy = masked_copy(dy, padded_rows(mask)).contiguous()  # y = m * Y: padded outputs' gradients go nowhere
        dA, dh0 = _backward(_fns(A.dtype), ctx.variant, ctx.reverse, A, Y, h0, mask, dy, dh_n, w_hh, ctx.km)
        dw = _weight_grad(ctx.variant, ctx.reverse, dA, RH, Y, h0, ctx.km.drop_h) if needs[7] else None
        return None, None, None, None, None, dA if needs[5] else None, dh0 if needs[6] else None, dw


def gru_scan(cell: GRUCell, p: Params, x: Tensor, state: State,
             mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """The kernel's ``run``, :func:`rnnkit.nn.scan.scan`'s signature, on an input :func:`match`
    took: ``x (T, B, I)``, ``state = (h (B, H),)``, ``mask (T, B, 1)`` -> ``(y (T, B, H), (h_n,))``."""
    (h0,) = state
    x = zero_padding(x, mask)  # before the projection: nothing a padded step holds gets in
    km = kernel_masks(p, x.shape[1], cell.state_sizes(), x.device)
    if not backward_follows(x, p.weight_ih, p.bias_ih, p.bias_hh, h0, p.weight_hh):
        y, h = _forward_in_chunks(cell.variant, p, x, h0.contiguous(), mask, reverse, km)
        return y, (h,)
    xp = folded_projection(cell, p, x).contiguous()
    rebuild = Rebuild(cell, p, x, folded_projection, ("weight_hh",), reverse)
    y, h = NativeGRUScan.apply(rebuild, cell.variant, reverse, mask, km, xp, h0, p.weight_hh)
    return y, (h,)


def _forward_in_chunks(variant: str, p: Params, x: Tensor, h0: Tensor, mask: Tensor | None, reverse: bool,
                       km: KernelMasks) -> tuple[Tensor, Tensor]:
    """The forward when no backward can follow: ``x (T, B, I)`` -> ``(y (T, B, H), h_n)``, the
    input projection (the cell's own, ``b_hh`` folded in) a chunk of steps at a time when large
    (:func:`projected_chunks`)."""
    T, B, _ = x.shape
    fns, bias, w_hh = _fns(x.dtype), summed_bias(p), p.weight_hh.contiguous()
    Y = x.new_empty(T, B, w_hh.shape[1])
    h = h0
    packed = pack_weights(w_hh, variant == "reset_before", B, T)  # once for every chunk
    for t0, t1, xp in projected_chunks(x, p.weight_ih, bias, reverse):
        _forward(fns, variant, reverse, False, xp, h, None if mask is None else mask[t0:t1], w_hh,
                 km.steps(t0, t1), Y=Y[t0:t1], packed=packed)
        h = Y[t0 if reverse else t1 - 1]  # the chunk's last step
    return masked_copy(Y, padded_rows(mask)), h.clone()


def match(cell: GRUCell, x: Tensor, p: Params, state: State | None, mask: Tensor | None):
    """CPU float32/float64 in eager mode (step masks included: they are in the C loop)."""
    return match_cpu(cell, x, p, state, mask)


SAMPLES = tuple(Sample(f"gru_{variant}{suffix}", lambda i, h, variant=variant, bias=bias, **kw:
                       GRUCell(i, h, bias=bias, variant=variant, **kw))
                for variant in ("reset_before", "simplified") for suffix, bias in (("", True), ("_no_bias", False)))

# --- in a graph: the same C loops as torch.library custom ops --------------------------------
# torch.compile/torch.export cannot trace the Function above (it hands addresses to C); these
# ops can stay in their graphs. Tensors and flags only: absent parameters are None inputs, absent
# outputs empty (0,) tensors (a schema has no optional outputs). The forward always keeps the
# backward's buffers (a graph cannot know whether one follows); no step masks (a layer with them
# traces the reference under compile); no double backward (eager mode has it).
@torch.library.custom_op("rnnkit::gru_scan", mutates_args=())
def gru_scan_op(xp: Tensor, h0: Tensor, mask: Optional[Tensor], w_hh: Tensor, reset_before: bool,
                reverse: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``xp (T, B, G*H)`` (input projection, biases folded in; G = 3 reset-before, 2 simplified) -> ``(y (T, B, H), h_n (B, H),
    A, RH, Y)``: the outputs, then the backward's buffers (``RH`` empty unless
    reset-before; ``Y``, the states, empty without a mask)."""
    variant = "reset_before" if reset_before else "simplified"
    km = no_masks(xp.shape[1], (w_hh.shape[1],), xp.device)
    f = _forward(_fns(xp.dtype), variant, reverse, True, xp.contiguous(), h0.contiguous(), mask,
                 w_hh.contiguous(), km)
    y = states_output(f.Y, mask)
    h_n = f.Y[0 if reverse else -1].clone()
    return (y, h_n, f.A, f.RH if reset_before else empty_output(xp), empty_output(xp) if mask is None else f.Y)


@gru_scan_op.register_fake
def _(xp, h0, mask, w_hh, reset_before, reverse):
    T, B, G = xp.shape
    H = w_hh.shape[1]
    return (xp.new_empty(T, B, H), xp.new_empty(B, H), xp.new_empty(T, B, G),
            xp.new_empty(T, B, H) if reset_before else xp.new_empty(0),
            xp.new_empty(T, B, H) if mask is not None else xp.new_empty(0))


@torch.library.custom_op("rnnkit::gru_scan_backward", mutates_args=())
def gru_scan_backward_op(dy: Tensor, dh_n: Tensor, mask: Optional[Tensor], h0: Tensor, w_hh: Tensor, y: Tensor,
                         A: Tensor, RH: Tensor, Y: Tensor, reset_before: bool,
                         reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The C BPTT: gradients wrt ``(xp, h0, w_hh)``."""
    variant = "reset_before" if reset_before else "simplified"
    Y = Y if Y.numel() else y
    km = no_masks(A.shape[1], (w_hh.shape[1],), A.device)
    h0, w_hh = h0.contiguous(), w_hh.contiguous()
    dy = masked_copy(dy, padded_rows(mask)).contiguous()
    dA, dh0 = _backward(_fns(A.dtype), variant, reverse, A, Y, h0, mask, dy, dh_n, w_hh, km)
    return dA, dh0, _weight_grad(variant, reverse, dA, present(RH), Y, h0)


@gru_scan_backward_op.register_fake
def _(dy, dh_n, mask, h0, w_hh, y, A, RH, Y, reset_before, reverse):
    return torch.empty_like(A), torch.empty_like(h0), torch.empty_like(w_hh)


def _gru_setup(ctx, inputs, output) -> None:
    xp, h0, mask, w_hh, reset_before, reverse = inputs
    ctx.flags = (reset_before, reverse)
    ctx.save_for_backward(mask, h0, w_hh, output[0], *output[2:])


def _gru_backward(ctx, dy, dh_n, *_buffers):
    mask, h0, w_hh, y, A, RH, Y = ctx.saved_tensors
    dy = torch.zeros_like(y) if dy is None else dy
    dh_n = torch.zeros_like(h0) if dh_n is None else dh_n
    dxp, dh0, dw = gru_scan_backward_op(dy, dh_n, mask, h0, w_hh, y, A, RH, Y, *ctx.flags)
    return dxp, dh0, None, dw, None, None


gru_scan_op.register_autograd(_gru_backward, setup_context=_gru_setup)


def gru_scan_graph(cell: GRUCell, p: Params, x: Tensor, state: State, mask: Tensor | None = None,
                   reverse: bool = False) -> tuple[Tensor, State]:
    """:func:`rnnkit.kernels.cpu.gru.gru_scan` through the custom op (same signature and
    result): ``x (T, B, I)``, ``state = (h (B, H),)`` -> ``(y (T, B, H), (h_n,))``."""
    (h0,) = state
    x = zero_padding(x, mask)
    xp = folded_projection(cell, p, x)
    y, h, *_ = gru_scan_op(xp, h0, mask, p.weight_hh, cell.variant == "reset_before", reverse)
    return y, (h,)


#: the kernel: gru_scan (the autograd Function) in eager mode, the custom op in a graph
run = eager_or_graph(gru_scan, gru_scan_graph)


KERNEL = register(Kernel("cpu.gru", "cpu", run, gru_supported, match, priority=0, available=available,
                         samples=SAMPLES))
