r"""Fused CPU GRU with compiled pointwise steps: :class:`rnnkit.cells.GRUCell`
``variant="reset_before"`` (gates ``r, z, n``) and ``"simplified"`` (gates ``u, n``).

The structure of :mod:`rnnkit.kernels.cpu_lstm_native`, the equations in
``native/gru_step.h``. Reset-before needs the reset gate before its candidate's GEMM,
so each step is GEMM, C, GEMM, C forward (``W_rz h``, gates, ``W_n (r h)``, state) and
C, GEMM, C, GEMM backward; the simplified GRU one GEMM and one C call each way. The
C leaves ``P``, the part of ``dh_{t-1}`` that bypasses ``W_hh``, and the step's GEMM
adds ``dA W_hh`` to it. Padded steps (mask 0) keep the state: ``dA = 0``, ``P = dh``.

Used whenever the C could be built (:func:`rnnkit.kernels.native.available`);
otherwise :mod:`rnnkit.kernels.cpu_gru` computes the same in torch ops.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..cells.base import State
from ..cells.gru import GRUCell
from . import native
from .cpu_common import (StepGemm, float_mask, folded_projection, grad_weight_prev, pointwise_threads,
                         prev_index, step_order, step_ptrs, tensors_ok)


#: our name -> (C function, number of address arguments after the three sizes B, H, threads)
_STEPS = {"rb_gates": ("gru_rb_forward_gates", 5), "rb_state": ("gru_rb_forward_state", 6),
          "rb_back_gates": ("gru_rb_backward_gates", 7), "rb_back_reset": ("gru_rb_backward_reset", 6),
          "s_forward": ("gru_s_forward", 6), "s_backward": ("gru_s_backward", 7)}
#: gru_sequence: (T, B, H, reset_before, threads, reverse, then 7 addresses)
_SEQUENCE = ("gru_sequence", 6, 7)


def _fns(dtype: torch.dtype) -> SimpleNamespace:
    """The C steps for ``dtype`` with their ctypes signatures."""
    fns = {k: native.bind(c_name, dtype, longs=3, pointers=n) for k, (c_name, n) in _STEPS.items()}
    name, longs, pointers = _SEQUENCE
    return SimpleNamespace(**fns, sequence=native.bind(name, dtype, longs=longs, pointers=pointers))


def _infer(fns, variant: str, reverse: bool, xp: Tensor, h0: Tensor, mask: Tensor | None,
           w_hh: Tensor) -> Tensor:
    """The recurrence with no backward to come, the whole time loop in one C call
    (``gru_sequence``); returns the states ``Y (T, B, H)``."""
    T, B, GH = xp.shape
    H = w_hh.shape[1]
    Y = xp.new_empty(T, B, H)
    rb = variant == "reset_before"
    panels = ([native.pack_panels(w_hh[:2 * H].contiguous()), native.pack_panels(w_hh[2 * H:].contiguous())]
              if rb else [native.pack_panels(w_hh), None])
    m8 = None if mask is None else mask.reshape(T, B).to(torch.uint8)
    work = xp.new_empty(B * (2 * GH + H))
    fns.sequence(T, B, H, int(rb), torch.get_num_threads(), int(reverse), xp.data_ptr(), panels[0].data_ptr(),
                 None if panels[1] is None else panels[1].data_ptr(), h0.data_ptr(),
                 None if m8 is None else m8.data_ptr(), Y.data_ptr(), work.data_ptr())
    return Y


def _forward(fns, variant: str, reverse: bool, xp: Tensor, h0: Tensor, mask: Tensor | None,
             w_hh: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
    """The recurrence over ``xp (T, B, G*H)``, keeping what the backward needs:
    ``A (T, B, G*H)`` gate activations, ``RH (T, B, H)`` = ``r h`` (reset-before; else
    None) and the states ``Y (T, B, H)``."""
    T, B, GH = xp.shape
    H = w_hh.shape[1]
    A, Y = torch.empty_like(xp), xp.new_empty(T, B, H)
    RH = xp.new_empty(T, B, H) if variant == "reset_before" else None
    m8 = None if mask is None else mask.reshape(T, B).to(torch.uint8)
    p = SimpleNamespace(xp=step_ptrs(xp, T), A=step_ptrs(A, T), Y=step_ptrs(Y, T), RH=step_ptrs(RH, T),
                        mask=step_ptrs(m8, T))
    n, h = pointwise_threads(B, GH), h0
    if variant == "reset_before":
        gemm_rz, gemm_n, rh_ = StepGemm(w_hh[:2 * H]), StepGemm(w_hh[2 * H:]), RH.unbind(0)
        for t in step_order(T, reverse):
            rec = gemm_rz(h)
            fns.rb_gates(B, H, n, p.xp[t], rec.data_ptr(), h.data_ptr(), p.A[t], p.RH[t])
            nrec = gemm_n(rh_[t])
            fns.rb_state(B, H, n, p.xp[t], nrec.data_ptr(), h.data_ptr(), p.mask[t], p.A[t], p.Y[t])
            h = Y[t]
    else:
        gemm = StepGemm(w_hh)
        for t in step_order(T, reverse):
            rec = gemm(h)
            fns.s_forward(B, H, n, p.xp[t], rec.data_ptr(), h.data_ptr(), p.mask[t], p.A[t], p.Y[t])
            h = Y[t]
    return A, RH, Y


def _backward(fns, variant: str, reverse: bool, A: Tensor, RH: Tensor | None, Y: Tensor, h0: Tensor,
              mask: Tensor | None, dy: Tensor, dh_n: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
    """BPTT: ``dA (T, B, G*H)`` (the gradient wrt ``xp`` and, summed against the states,
    wrt ``W_hh``) and ``dh0 (B, H)``."""
    T, B, GH = A.shape
    H = w_hh.shape[1]
    dA = torch.empty_like(A)
    m8 = None if mask is None else mask.reshape(T, B).to(torch.uint8)
    p = SimpleNamespace(dA=step_ptrs(dA, T), A=step_ptrs(A, T), dy=step_ptrs(dy, T), mask=step_ptrs(m8, T))
    prev, n = prev_index(T, reverse), pointwise_threads(B, GH)
    h_prev = [h0.data_ptr() if k is None else Y[k].data_ptr() for k in prev]
    P, grad = A.new_empty(B, H), dh_n.contiguous()
    if variant == "reset_before":
        back_n, back_rz = StepGemm(w_hh[2 * H:].t()), StepGemm(w_hh[:2 * H].t())
        dA_n, dA_rz = dA[..., 2 * H:].unbind(0), dA[..., :2 * H].unbind(0)
        for t in step_order(T, reverse)[::-1]:
            fns.rb_back_gates(B, H, n, grad.data_ptr(), p.dy[t], p.A[t], h_prev[t], p.mask[t], p.dA[t],
                              P.data_ptr())
            drh = back_n(dA_n[t])
            fns.rb_back_reset(B, H, n, drh.data_ptr(), p.A[t], h_prev[t], p.mask[t], p.dA[t], P.data_ptr())
            grad = back_rz(dA_rz[t], add=P)
    else:
        back, dA_ = StepGemm(w_hh.t()), dA.unbind(0)
        for t in step_order(T, reverse)[::-1]:
            fns.s_backward(B, H, n, grad.data_ptr(), p.dy[t], p.A[t], h_prev[t], p.mask[t], p.dA[t],
                           P.data_ptr())
            grad = back(dA_[t], add=P)
    return dA, grad


def _weight_grad(variant: str, reverse: bool, dA: Tensor, RH: Tensor | None, Y: Tensor,
                 h0: Tensor) -> Tensor:
    """``dW_hh``: ``sum_t dA_t^T h_{t-1}``, for reset-before with ``r h`` in place of ``h``
    on the candidate rows."""
    if variant != "reset_before":
        return grad_weight_prev(dA, Y, h0, reverse)
    H = Y.shape[-1]
    d_rz = grad_weight_prev(dA[..., :2 * H], Y, h0, reverse)
    d_n = dA[..., 2 * H:].reshape(-1, H).t() @ RH.reshape(-1, H)
    return torch.cat([d_rz, d_n])


class NativeGRUScan(torch.autograd.Function):
    """``(variant, reverse, store, mask, xp (T, B, G*H), h0 (B, H), w_hh (G*H, H)) -> (y (T, B, H),
    h_n (B, H))``; ``xp`` is the input projection with both biases folded in, ``store``
    whether a backward may follow."""

    @staticmethod
    def forward(ctx, variant: str, reverse: bool, store: bool, mask: Tensor | None, xp: Tensor, h0: Tensor,
                w_hh: Tensor):
        h0, w_hh = h0.contiguous(), w_hh.contiguous()
        fns = _fns(xp.dtype)
        if store:
            A, RH, Y = _forward(fns, variant, reverse, xp, h0, mask, w_hh)
            ctx.save_for_backward(mask, h0, w_hh, A, RH, Y)
        else:
            Y = _infer(fns, variant, reverse, xp, h0, mask, w_hh)
        ctx.variant, ctx.reverse, ctx.store = variant, reverse, store
        mf = float_mask(mask, xp)
        return (Y if mf is None else Y * mf), Y[0 if reverse else -1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, dh_n: Tensor):
        assert ctx.store, "forward kept no buffers: it ran without any input requiring grad"
        mask, h0, w_hh, A, RH, Y = ctx.saved_tensors
        mf = float_mask(mask, A)
        dy = (dy if mf is None else dy * mf).contiguous()  # y = m * Y
        dA, dh0 = _backward(_fns(A.dtype), ctx.variant, ctx.reverse, A, RH, Y, h0, mask, dy, dh_n, w_hh)
        needs = ctx.needs_input_grad
        dw = _weight_grad(ctx.variant, ctx.reverse, dA, RH, Y, h0) if needs[6] else None
        return None, None, None, None, dA if needs[4] else None, dh0 if needs[5] else None, dw


def gru_scan(cell: GRUCell, p: SimpleNamespace, x: Tensor, state: State,
             mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """Drop-in for :func:`rnnkit.nn.scan.scan` on a reset-before or simplified
    :class:`GRUCell`: ``x (T, B, I)``, ``state = (h (B, H),)``, ``mask (T, B, 1)``
    -> ``(y (T, B, H), (h_n,))``."""
    (h0,) = state
    if not tensors_ok(x, (h0,)):
        from ..nn.scan import scan  # deferred: rnnkit.nn.scan imports the kernels
        return scan(cell, p, x, state, mask, reverse)
    xp = folded_projection(cell, p, x).contiguous()
    store = torch.is_grad_enabled() and any(t.requires_grad for t in (xp, h0, p.weight_hh))
    y, h = NativeGRUScan.apply(cell.variant, reverse, store, mask, xp, h0, p.weight_hh)
    return y, (h,)
