r"""Fused CPU LSTM with a compiled pointwise step: peephole and/or layer norm, with or
without projection (:class:`rnnkit.cells.LSTMCell`, gate order ``i, f, g, o``).

Same structure as :mod:`rnnkit.kernels.cpu_lstm` (one :class:`torch.autograd.Function`
for the whole sequence, hoisted input GEMM, hand-derived BPTT, weight gradients as
big GEMMs after the loop), but each step's pointwise work, layer norms included, is
one call into C (:mod:`rnnkit.kernels.native`, equations in ``native/lstm_step.h``)
instead of ~10 torch ops, so per step there are two calls forward (GEMM, C) and two
backward (C, GEMM). The recurrent GEMMs of large weights use oneDNN with the weight
reordered once per call into its blocked layout (:class:`StepGemm`).

Used whenever :func:`rnnkit.kernels.native.library` could build the C; otherwise the
torch-ops kernel of :mod:`rnnkit.kernels.cpu_lstm` runs. Both are tested against the
reference step.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..cells.base import State
from ..cells.lstm import LSTMCell
from . import native
from .cpu_common import (StepGemm, float_mask, folded_projection, grad_projection, grad_weight_prev,
                         pointwise_threads, prev_index, ptr, step_order, step_ptrs, sum_prev_products, sum_tb)
from .cpu_lstm import _INPUTS, LSTMSpec, run_kernel

# the flags of native/steps.c
PEEPHOLE, LAYER_NORM, CARRY_H = 1, 2, 4


def step_flags(spec: LSTMSpec) -> int:
    """The C step's flags for ``spec``."""
    return PEEPHOLE * spec.peephole | LAYER_NORM * spec.layer_norm


def steps_fns(dtype: torch.dtype) -> SimpleNamespace:
    """The C forward/backward step and whole-sequence inference for ``dtype``, with
    their ctypes signatures."""
    return SimpleNamespace(forward=native.bind("lstm_forward", dtype, longs=4, reals=1, pointers=19),
                           backward=native.bind("lstm_backward", dtype, longs=4, pointers=25),
                           sequence=native.bind("lstm_sequence", dtype, longs=7, reals=1, pointers=15))


def _infer(fns, spec: LSTMSpec, xp: Tensor, h0: Tensor, c0: Tensor, mask: Tensor | None,
           w_hh: Tensor, peep, ln, w_hr) -> SimpleNamespace:
    """The recurrence with no backward to come: the whole time loop in one C call
    (``lstm_sequence``: per step GEMM, pointwise, projection), only ``Y (T, B, R)``
    and ``C (T, B, H)`` kept. Same numbers as :func:`_forward`."""
    T, B, G = xp.shape
    H, R = G // 4, w_hh.shape[1]
    f = SimpleNamespace(Y=xp.new_empty(T, B, R), C=xp.new_empty(T, B, H))
    m8 = None if mask is None else mask.reshape(T, B).to(torch.uint8)
    flags = step_flags(spec) | (CARRY_H if mask is not None and not spec.proj else 0)
    panels_hh = native.pack_panels(w_hh.contiguous())
    panels_hr = native.pack_panels(w_hr.contiguous()) if spec.proj else None
    work = xp.new_empty(B * (2 * G + 2 * H + 4))
    w_ci, w_cf, w_co = (ptr(w) for w in peep) if peep else (None,) * 3
    g_h, g_c, b_c = (ptr(w) for w in ln) if ln else (None,) * 3
    fns.sequence(T, B, H, R, flags, torch.get_num_threads(), int(spec.reverse), spec.eps, xp.data_ptr(),
                 panels_hh.data_ptr(), ptr(panels_hr), h0.data_ptr(), c0.data_ptr(), g_h, w_ci, w_cf, w_co,
                 g_c, b_c, ptr(m8), f.Y.data_ptr(), f.C.data_ptr(), work.data_ptr())
    return f


def _forward(fns, spec: LSTMSpec, xp: Tensor, h0: Tensor, c0: Tensor, mask: Tensor | None,
             w_hh: Tensor, peep, ln, w_hr) -> SimpleNamespace:
    """The recurrence over ``xp (T, B, 4H)`` (input projection plus all additive
    biases). Returns the buffers the backward needs: ``A (T, B, 4H)`` gate activations,
    ``C``, ``U`` ``(T, B, H)`` cell states and ``tanh`` of the (normalised) cell,
    ``Y (T, B, R)`` states, ``M`` (projection input, ``Y`` without projection), with
    layer norm the per-step ``W_hh h`` and both norms' statistics ``(T, B)``."""
    T, B, G = xp.shape
    H, R = G // 4, w_hh.shape[1]
    f = SimpleNamespace(A=torch.empty_like(xp), C=xp.new_empty(T, B, H), U=xp.new_empty(T, B, H),
                        Y=xp.new_empty(T, B, R), HP=[None] * T, stats=None)
    f.M = xp.new_empty(T, B, H) if spec.proj else f.Y
    if spec.layer_norm:
        f.stats = xp.new_empty(4, T, B)  # mean_h, rstd_h, mean_c, rstd_c
    stats = [step_ptrs(s, T) for s in (f.stats if f.stats is not None else [None] * 4)]
    m8 = None if mask is None else mask.reshape(T, B).to(torch.uint8)
    p = SimpleNamespace(xp=step_ptrs(xp, T), A=step_ptrs(f.A, T), C=step_ptrs(f.C, T),
                        U=step_ptrs(f.U, T), M=step_ptrs(f.M, T), mask=step_ptrs(m8, T))
    M = f.M.unbind(0)
    w_ci, w_cf, w_co = (ptr(w) for w in peep) if peep else (None,) * 3
    g_h, g_c, b_c = (ptr(w) for w in ln) if ln else (None,) * 3
    flags = step_flags(spec) | (CARRY_H if mask is not None and not spec.proj else 0)
    gemm, proj = StepGemm(w_hh), StepGemm(w_hr) if spec.proj else None
    threads = pointwise_threads(B, G)
    h, c = h0, c0
    for t in step_order(T, spec.reverse):
        rec = gemm(h)
        f.HP[t] = rec if spec.layer_norm else None
        fns.forward(B, H, flags, threads, spec.eps, p.xp[t], rec.data_ptr(), g_h, stats[0][t], stats[1][t],
                    c.data_ptr(), w_ci, w_cf, w_co, g_c, b_c, stats[2][t], stats[3][t],
                    p.mask[t], h.data_ptr(), p.A[t], p.C[t], p.U[t], p.M[t])
        if spec.proj:
            proj(M[t], out=f.Y[t])
            if mask is not None:  # padded steps keep the state
                torch.where(mask[t], f.Y[t], h, out=f.Y[t])
        h, c = f.Y[t], f.C[t]
    return f


def _backward(fns, spec: LSTMSpec, f: SimpleNamespace, dy: Tensor, dh_n: Tensor, dc_n: Tensor,
              c0: Tensor, mask: Tensor | None, w_hh: Tensor, peep, ln, w_hr) -> SimpleNamespace:
    """BPTT through the recurrence. Returns ``dA (T, B, 4H)`` (grad wrt ``xp``),
    ``DH (T, B, R)`` (grad wrt each state ``Y[t]``), ``dHP (T, B, 4H)`` (grad wrt
    ``W_hh h``, layer norm only), ``dh0, dc0`` and the norms' gain/shift grads."""
    T, B, G = f.A.shape
    H, R = G // 4, w_hh.shape[1]
    g = SimpleNamespace(dA=torch.empty_like(f.A), DH=f.A.new_empty(T, B, R), dc0=dc_n.contiguous().clone(),
                        dHP=f.A.new_empty(T, B, G) if spec.layer_norm else None,
                        d_ln=None)
    threads = pointwise_threads(B, G)
    sums = f.A.new_zeros(threads, 3, G) if spec.layer_norm else None  # per thread, summed after
    m8 = None if mask is None else mask.reshape(T, B).to(torch.uint8)
    p = SimpleNamespace(dA=step_ptrs(g.dA, T), DH=step_ptrs(g.DH, T), dy=step_ptrs(dy, T), A=step_ptrs(f.A, T),
                        C=step_ptrs(f.C, T), U=step_ptrs(f.U, T), mask=step_ptrs(m8, T),
                        dHP=step_ptrs(g.dHP, T))
    stats = [step_ptrs(s, T) for s in (f.stats if f.stats is not None else [None] * 4)]
    w_ci, w_cf, w_co = (ptr(w) for w in peep) if peep else (None,) * 3
    g_h, g_c = (ptr(ln[0]), ptr(ln[1])) if ln else (None, None)
    work = f.A.new_empty(threads, 2 * H + G)
    not_m = None if mask is None else (~mask).to(dy.dtype)
    prev, c0p = prev_index(T, spec.reverse), c0.contiguous().data_ptr()
    back, proj = StepGemm(w_hh.t()), StepGemm(w_hr.t()) if spec.proj else None
    grad, later = dh_n.contiguous(), None
    for t in step_order(T, spec.reverse)[::-1]:
        carry = mask is not None and later is not None
        if spec.proj:  # DH_t = grad + dy_t (+ the later padded step's DH), then through W_hr
            dh = torch.add(grad, dy[t], out=g.DH[t])
            if carry:
                dh.addcmul_(g.DH[later], not_m[later])
            dm = proj(dh)  # held until the C has read it
            dm_in, dy_t, carry_p, carry_m, dm_out = dm.data_ptr(), None, None, None, None
        else:  # the C adds those up and stores DH_t
            dm_in, dy_t, dm_out = grad.data_ptr(), p.dy[t], p.DH[t]
            carry_p, carry_m = (p.DH[later], p.mask[later]) if carry else (None, None)
        c_prev = c0p if prev[t] is None else p.C[prev[t]]
        hp = f.HP[t].data_ptr() if spec.layer_norm else None
        fns.backward(B, H, step_flags(spec), threads, dm_in, dy_t, carry_p, carry_m, dm_out, p.A[t], p.C[t],
                     c_prev, p.U[t], w_ci, w_cf, w_co, g_c, stats[2][t], stats[3][t],
                     hp, g_h, stats[0][t], stats[1][t], p.dHP[t], ptr(sums),
                     p.mask[t], g.dc0.data_ptr(), p.dA[t], work.data_ptr())
        grad = back(g.dHP[t] if spec.layer_norm else g.dA[t])
        later = t
    if mask is not None:  # the first step padded: h0 passed straight through it
        grad = grad.addcmul(g.DH[later], not_m[later])
    g.dh0 = grad
    g.d_ln = sums.sum(0) if spec.layer_norm else None
    return g


def _weight_grads(spec: LSTMSpec, f, g, h0: Tensor, c0: Tensor, mf: Tensor | None,
                  needs: dict[str, bool]) -> dict[str, Tensor | None]:
    """Parameter gradients as a few big GEMMs/reductions over all steps (see
    :func:`rnnkit.kernels.cpu_lstm._weight_grads`, here without the gate scale)."""
    T, B, G = f.A.shape
    out: dict[str, Tensor | None] = {}
    if needs["w_hh"]:
        out["w_hh"] = grad_weight_prev(g.dHP if spec.layer_norm else g.dA, f.Y, h0, spec.reverse)
    if spec.peephole:
        dA4 = g.dA.view(T, B, 4, G // 4)
        if needs["w_ci"] or needs["w_cf"]:
            d_if = sum_prev_products(dA4[:, :, :2], f.C.unsqueeze(2), c0.unsqueeze(1), spec.reverse)
            out["w_ci"], out["w_cf"] = d_if.unbind(0)
        out["w_co"] = sum_tb(dA4[:, :, 3] * f.C) if needs["w_co"] else None
    if spec.layer_norm:
        H = G // 4
        out |= {"ln_hh_w": g.d_ln[0], "ln_c_w": g.d_ln[1, :H], "ln_c_b": g.d_ln[2, :H]}
    if spec.proj and needs["w_hr"]:
        out["w_hr"] = grad_projection(g.DH, f.M, mf)
    return out


class NativeLSTMScan(torch.autograd.Function):
    """``(spec, mask, xp, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr)
    -> (y (T, B, R), h_n (B, R), c_n (B, H))``; ``xp`` is the input projection with every
    additive bias folded in, absent parameters are None."""

    @staticmethod
    def forward(ctx, spec: LSTMSpec, mask: Tensor | None, xp: Tensor, h0: Tensor, c0: Tensor,
                w_hh: Tensor, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr):
        fns = steps_fns(xp.dtype)
        peep = (w_ci, w_cf, w_co) if spec.peephole else None
        ln = (ln_hh_w, ln_c_w, ln_c_b) if spec.layer_norm else None
        h0, c0 = h0.contiguous(), c0.contiguous()
        ctx.spec = spec
        if spec.store:
            f = _forward(fns, spec, xp, h0, c0, mask, w_hh, peep, ln, w_hr)
            ctx.hp = f.HP
            ctx.save_for_backward(mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr,
                                  f.A, f.C, f.U, f.Y, f.M if spec.proj else None, f.stats)
        else:
            f = _infer(fns, spec, xp, h0, c0, mask, w_hh, peep, ln, w_hr)
        mf = float_mask(mask, xp)
        last = 0 if spec.reverse else xp.shape[0] - 1
        return (f.Y if mf is None else f.Y * mf), f.Y[last].clone(), f.C[last].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, dh_n: Tensor, dc_n: Tensor):
        spec: LSTMSpec = ctx.spec
        assert spec.store, "forward kept no buffers: it ran without any input requiring grad"
        (mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr,
         A, C, U, Y, M, stats) = ctx.saved_tensors
        f = SimpleNamespace(A=A, C=C, U=U, Y=Y, M=M if spec.proj else Y, stats=stats, HP=ctx.hp)
        needs = dict(zip(_INPUTS, ctx.needs_input_grad[2:]))
        peep = (w_ci, w_cf, w_co) if spec.peephole else None
        ln = (ln_hh_w, ln_c_w, ln_c_b) if spec.layer_norm else None
        mf = float_mask(mask, A)
        dy = (dy if mf is None else dy * mf).contiguous()  # y = m * Y
        g = _backward(steps_fns(A.dtype), spec, f, dy, dh_n, dc_n, c0, mask, w_hh, peep, ln, w_hr)
        w = _weight_grads(spec, f, g, h0, c0, mf, needs)
        return (None, None, g.dA if needs["xp"] else None, g.dh0 if needs["h0"] else None,
                g.dc0 if needs["c0"] else None, *(w.get(n) for n in _INPUTS[3:]))


def lstm_scan(cell: LSTMCell, p: SimpleNamespace, x: Tensor, state: State,
              mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """Drop-in for :func:`rnnkit.nn.scan.scan` on a supported :class:`LSTMCell`:
    ``x (T, B, I)``, ``state = (h (B, R), c (B, H))``, ``mask (T, B, 1)``
    -> ``(y (T, B, R), (h_n, c_n))``."""
    return run_kernel(NativeLSTMScan, folded_projection, cell, p, x, state, mask, reverse)
