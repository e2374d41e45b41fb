r"""Triton path for the custom LSTMs: peephole and/or layer norm, no projection
(:class:`rnnkit.cells.LSTMCell`, gate order ``i, f, g, o``). Imports ``triton``:
imported lazily by :mod:`rnnkit.kernels.triton`.

Same structure as :mod:`rnnkit.kernels.cpu.lstm` (one :class:`torch.autograd.Function`
over the whole sequence, hand-derived BPTT, input projection of every step as one
GEMM before the loop with ``b_hh`` folded into its bias), but each step's pointwise
work is one Triton kernel instead of ~10 ATen ops, so the per-step cost is one
cuBLAS GEMM plus one launch in each direction.

Forward, step ``t`` (``m`` = mask of the row, 1 without a mask)::

    P   = h_{t-1} W_hh^T                           torch.mm into a preallocated buffer
    a   = xp_t + P            (LN: xp_t + LN_h(P), one norm over the whole 4H row)
    i, f = s(a_i + w_ci c_{t-1}), s(a_f + w_cf c_{t-1});  g = tanh(a_g)
    c'  = f c_{t-1} + i g;  o = s(a_o + w_co c');  h' = o tanh(LN_c(c') or c')
    c_t, h_t = m ? (c', h') : (c_{t-1}, h_{t-1})   padded steps carry the state

all in :func:`_lstm_forward_step`, which stores the gate activations ``i, f, g, o``
(float32), the states (``c`` float32, ``h`` in the input dtype: it is the output
and the next GEMM's operand) and, with layer norm, the two norms' mean and rstd.

Backward, step ``t`` in reverse processing order, :func:`_lstm_backward_step`
(``u = tanh(\hat c)``, recomputed from ``c_t`` and the saved statistics)::

    dH   = m dy_t + dhg + carry         grad wrt the state h_t (dhg: last GEMM's output)
    dh'  = m dH;  dc' = m dC;  carry = (1 - m) dH   (selections, not products: see below)
    dA_o = dh' u o (1 - o);  d\hat c = dh' o (1 - u^2)
    dc*  = dc' + (LN_c^T(d\hat c) or d\hat c) + dA_o w_co
    dA_i, dA_f, dA_g = dc* g i (1 - i), dc* c_{t-1} f (1 - f), dc* i (1 - g^2)
    dC_{t-1} = dc* f + dA_i w_ci + dA_f w_cf + (1 - m) dC
    dS   = dA, or LN_h^T(dA) with layer norm

On a padded row (``m = 0``) every gradient the step writes is selected, not multiplied
by ``m``: ``dA = dS = d\hat c = 0``, ``carry = dH - m dy``, ``dC_{t-1} = dC``, whatever
``dy`` or the row's saved activations hold there (``NaN * 0`` is NaN).

then ``dhg = dS W_hh`` by torch.mm. ``dA`` is the gradient wrt ``xp``; the weight
gradients are GEMMs/reductions over all steps after the loop (:func:`_weight_grads`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..grads import grad_weight_prev, step_order, sum_prev_products, sum_tb
from ..specs import LSTMSpec
from ..higher_order import Rebuild
from ..step_masks import KernelMasks
from .common import (ACC, as_acc, launch_config, load_f32, load_mask, norm_input_grad, norm_stats,
                            on_real_rows, prev_of, store, tanh, zone, zone_kept, zone_update)


@triton.jit
def _load4(ptr, offs, H, valid):
    """The four gate blocks ``i, f, g, o`` at ``offs + j * H`` as float32 (0 past H)."""
    return (tl.load(ptr + offs, mask=valid, other=0.0).to(tl.float32),
            tl.load(ptr + offs + H, mask=valid, other=0.0).to(tl.float32),
            tl.load(ptr + offs + 2 * H, mask=valid, other=0.0).to(tl.float32),
            tl.load(ptr + offs + 3 * H, mask=valid, other=0.0).to(tl.float32))


@triton.jit
def _store4(ptr, offs, H, x0, x1, x2, x3, valid):
    """Store four gate blocks at ``offs + j * H`` in the pointer's dtype."""
    ty = ptr.dtype.element_ty
    tl.store(ptr + offs, x0.to(ty), mask=valid)
    tl.store(ptr + offs + H, x1.to(ty), mask=valid)
    tl.store(ptr + offs + 2 * H, x2.to(ty), mask=valid)
    tl.store(ptr + offs + 3 * H, x3.to(ty), mask=valid)


@triton.jit
def _norm4_stats(x0, x1, x2, x3, valid, n, eps):
    """:func:`norm_stats` over the four gate blocks of one row together (LN_h normalises
    the whole ``4H`` row): ``(xhat0, xhat1, xhat2, xhat3, mean, rstd)``."""
    mean = (tl.sum(x0, axis=0) + tl.sum(x1, axis=0) + tl.sum(x2, axis=0) + tl.sum(x3, axis=0)) / n
    d0 = tl.where(valid, x0 - mean, 0.0)
    d1 = tl.where(valid, x1 - mean, 0.0)
    d2 = tl.where(valid, x2 - mean, 0.0)
    d3 = tl.where(valid, x3 - mean, 0.0)
    var = (tl.sum(d0 * d0, axis=0) + tl.sum(d1 * d1, axis=0) + tl.sum(d2 * d2, axis=0)
           + tl.sum(d3 * d3, axis=0)) / n
    rstd = 1.0 / tl.sqrt(var + eps)
    return d0 * rstd, d1 * rstd, d2 * rstd, d3 * rstd, mean, rstd


@triton.jit
def _norm4_input_grad(gw0, gw1, gw2, gw3, x0, x1, x2, x3, rstd, n):
    """:func:`norm_input_grad` over the four gate blocks of one row together."""
    mean_gw = (tl.sum(gw0, axis=0) + tl.sum(gw1, axis=0) + tl.sum(gw2, axis=0) + tl.sum(gw3, axis=0)) / n
    mean_gwx = (tl.sum(gw0 * x0, axis=0) + tl.sum(gw1 * x1, axis=0) + tl.sum(gw2 * x2, axis=0)
                + tl.sum(gw3 * x3, axis=0)) / n
    return (rstd * (gw0 - mean_gw - x0 * mean_gwx), rstd * (gw1 - mean_gw - x1 * mean_gwx),
            rstd * (gw2 - mean_gw - x2 * mean_gwx), rstd * (gw3 - mean_gw - x3 * mean_gwx))


@triton.jit
def _lstm_forward_step(xp_ptr, hp_ptr, c_prev_ptr, h_prev_ptr, m_ptr,
                       w_ci_ptr, w_cf_ptr, w_co_ptr, g_h_ptr, g_c_ptr, b_c_ptr,
                       act_ptr, c_ptr, h_ptr, stats_ptr, kh_ptr, kc_ptr, cn_ptr, H, eps,
                       PEEP: tl.constexpr, LN: tl.constexpr, MASK: tl.constexpr,
                       ZONE_H: tl.constexpr, ZONE_C: tl.constexpr, BLOCK_H: tl.constexpr):
    """One forward step of batch row ``b = program_id(0)`` (module docstring).

    Reads ``xp, hp (B, 4H)``, ``c_prev (B, H)`` float32, ``h_prev (B, H)``, ``m (B, 1)``
    bool, the peepholes ``(H,)`` and norm gains ``g_h (4H,)``, ``g_c, b_c (H,)``. Writes
    ``act (B, 4H)`` float32 ``i, f, g, o``, ``c (B, H)`` float32, ``h (B, H)`` and, with
    LN, ``stats (B, 4)`` float32 ``mean_h, rstd_h, mean_c, rstd_c``.
    """
    b = tl.program_id(0).to(tl.int64)  # row offsets past 2**31 elements stay right
    k = tl.arange(0, BLOCK_H)
    valid = k < H
    gate = b * 4 * H + k  # gate j of row b at gate + j * H
    row = b * H + k
    p_i, p_f, p_g, p_o = _load4(hp_ptr, gate, H, valid)
    if LN:  # a = xp + LN_h(W_hh h): the norm's shift is b_hh, folded into xp
        p_i, p_f, p_g, p_o, mean_h, rstd_h = _norm4_stats(p_i, p_f, p_g, p_o, valid, 4 * H, eps)
        g_i, g_f, g_g, g_o = _load4(g_h_ptr, k, H, valid)
        p_i, p_f, p_g, p_o = p_i * g_i, p_f * g_f, p_g * g_g, p_o * g_o
        tl.store(stats_ptr + b * 4, mean_h)
        tl.store(stats_ptr + b * 4 + 1, rstd_h)
    x_i, x_f, x_g, x_o = _load4(xp_ptr, gate, H, valid)
    a_i, a_f, a_o = x_i + p_i, x_f + p_f, x_o + p_o
    c_prev = load_f32(c_prev_ptr + row, valid)
    if PEEP:
        a_i += load_f32(w_ci_ptr + k, valid) * c_prev
        a_f += load_f32(w_cf_ptr + k, valid) * c_prev
    i = tl.sigmoid(a_i)
    f = tl.sigmoid(a_f)
    g = tanh(x_g + p_g)
    c = f * c_prev + i * g
    if PEEP:
        a_o += load_f32(w_co_ptr + k, valid) * c
    o = tl.sigmoid(a_o)
    if LN:
        xc, mean_c, rstd_c = norm_stats(tl.where(valid, c, 0.0), valid, H, eps)
        h = o * tanh(xc * load_f32(g_c_ptr + k, valid) + load_f32(b_c_ptr + k, valid))
        tl.store(stats_ptr + b * 4 + 2, mean_c)
        tl.store(stats_ptr + b * 4 + 3, rstd_c)
    else:
        h = o * tanh(c)
    if ZONE_C:  # zoneout: the backward needs the cell's own c' (kept in cn)
        store(cn_ptr + row, c, valid)
        c = zone(c, c_prev, load_f32(kc_ptr + row, valid), ZONE_C)
    if ZONE_H:
        h = zone(h, load_f32(h_prev_ptr + row, valid), load_f32(kh_ptr + row, valid), ZONE_H)
    if MASK:  # padded step: the state passes through (exactly: select, not blend)
        keep = load_mask(m_ptr, b) != 0.0
        c = tl.where(keep, c, c_prev)
        h = tl.where(keep, h, load_f32(h_prev_ptr + row, valid))
    _store4(act_ptr, gate, H, i, f, g, o, valid)
    store(c_ptr + row, c, valid)
    store(h_ptr + row, h, valid)


@triton.jit
def _lstm_backward_step(dy_ptr, dhg_ptr, carry_ptr, dc_ptr, m_ptr,
                        act_ptr, c_prev_ptr, c_ptr, hp_ptr, stats_ptr,
                        w_ci_ptr, w_cf_ptr, w_co_ptr, g_h_ptr, g_c_ptr, b_c_ptr,
                        da_ptr, dhp_ptr, dch_ptr, kh_ptr, kc_ptr, H,
                        PEEP: tl.constexpr, LN: tl.constexpr, MASK: tl.constexpr,
                        ZONE_H: tl.constexpr, ZONE_C: tl.constexpr, BLOCK_H: tl.constexpr):
    r"""One backward step of batch row ``b = program_id(0)`` (module docstring).

    Reads ``dy, dhg (B, H)``, ``carry, dc (B, H)`` float32 (updated in place: they
    become step ``t - 1``'s), the forward's ``act (B, 4H)``, ``c_prev, c (B, H)``,
    ``hp (B, 4H)`` and ``stats (B, 4)``, and the weights. Writes ``da (B, 4H)``, with
    LN ``dhp (B, 4H)`` (= LN_h^T(da), the GEMM's operand) and ``dch (B, H)`` float32
    (``d\hat c``, for LN_c's gain and shift gradients after the loop).
    """
    b = tl.program_id(0).to(tl.int64)  # row offsets past 2**31 elements stay right
    k = tl.arange(0, BLOCK_H)
    valid = k < H
    gate = b * 4 * H + k
    row = b * H + k
    dy = load_f32(dy_ptr + row, valid)
    dc = load_f32(dc_ptr + row, valid)
    if MASK or ZONE_H:  # the cell sees the grads on real rows; padded rows hand them to the previous state
        s = load_f32(dhg_ptr + row, valid) + load_f32(carry_ptr + row, valid)
        dh = on_real_rows(dy + s, 0.0, m_ptr, b, MASK)
        kept = tl.zeros_like(s)
        if ZONE_H:  # zoned-out units hand their gradient straight to h_{t-1}
            kept = zone_kept(dh, load_f32(kh_ptr + row, valid), ZONE_H)
            dh = zone_update(dh, load_f32(kh_ptr + row, valid), ZONE_H)
        store(carry_ptr + row, on_real_rows(kept, s, m_ptr, b, MASK), valid)
        dc_cell = on_real_rows(dc, 0.0, m_ptr, b, MASK)
    else:
        dh = dy + load_f32(dhg_ptr + row, valid)
        dc_cell = dc
    dc_kept = tl.zeros_like(dc_cell)
    if ZONE_C:
        dc_kept = zone_kept(dc_cell, load_f32(kc_ptr + row, valid), ZONE_C)
        dc_cell = zone_update(dc_cell, load_f32(kc_ptr + row, valid), ZONE_C)
    i, f, g, o = _load4(act_ptr, gate, H, valid)
    c_prev = load_f32(c_prev_ptr + row, valid)
    c = load_f32(c_ptr + row, valid)
    if LN:  # recompute \hat c = LN_c(c) from the saved statistics
        g_c = load_f32(g_c_ptr + k, valid)
        rstd_c = tl.load(stats_ptr + b * 4 + 3)
        xc = tl.where(valid, (c - tl.load(stats_ptr + b * 4 + 2)) * rstd_c, 0.0)
        u = tanh(xc * g_c + load_f32(b_c_ptr + k, valid))
    else:
        u = tanh(c)
    da_o = dh * u * o * (1.0 - o)
    dch = dh * o * (1.0 - u * u)
    if LN:
        dc_cell += norm_input_grad(dch * g_c, xc, rstd_c, H)
        store(dch_ptr + row, on_real_rows(dch, 0.0, m_ptr, b, MASK), valid)
    else:
        dc_cell += dch
    if PEEP:
        dc_cell += da_o * load_f32(w_co_ptr + k, valid)
    da_i = dc_cell * g * i * (1.0 - i)
    da_f = dc_cell * c_prev * f * (1.0 - f)
    da_g = dc_cell * i * (1.0 - g * g)
    dc_prev = dc_cell * f
    if PEEP:
        dc_prev += da_i * load_f32(w_ci_ptr + k, valid) + da_f * load_f32(w_cf_ptr + k, valid)
    if ZONE_C:
        dc_prev += dc_kept
    if MASK:  # padded rows: dC passes through, no gate saw the step
        dc_prev = on_real_rows(dc_prev, dc, m_ptr, b, MASK)
        da_i = on_real_rows(da_i, 0.0, m_ptr, b, MASK)
        da_f = on_real_rows(da_f, 0.0, m_ptr, b, MASK)
        da_g = on_real_rows(da_g, 0.0, m_ptr, b, MASK)
        da_o = on_real_rows(da_o, 0.0, m_ptr, b, MASK)
    store(dc_ptr + row, dc_prev, valid)
    _store4(da_ptr, gate, H, da_i, da_f, da_g, da_o, valid)
    if LN:  # back through a = xp + LN_h(hp) to hp, with xhat_h recomputed from hp
        mean_h = tl.load(stats_ptr + b * 4)
        rstd_h = tl.load(stats_ptr + b * 4 + 1)
        x_i, x_f, x_g, x_o = _load4(hp_ptr, gate, H, valid)
        x_i = tl.where(valid, (x_i - mean_h) * rstd_h, 0.0)
        x_f = tl.where(valid, (x_f - mean_h) * rstd_h, 0.0)
        x_g = tl.where(valid, (x_g - mean_h) * rstd_h, 0.0)
        x_o = tl.where(valid, (x_o - mean_h) * rstd_h, 0.0)
        g_i, g_f, g_g, g_o = _load4(g_h_ptr, k, H, valid)
        d_i, d_f, d_g, d_o = _norm4_input_grad(da_i * g_i, da_f * g_f, da_g * g_g, da_o * g_o,
                                               x_i, x_f, x_g, x_o, rstd_h, 4 * H)
        if MASK:  # padded rows: da is 0 there, and so is its norm's input grad, exactly
            d_i = on_real_rows(d_i, 0.0, m_ptr, b, MASK)
            d_f = on_real_rows(d_f, 0.0, m_ptr, b, MASK)
            d_g = on_real_rows(d_g, 0.0, m_ptr, b, MASK)
            d_o = on_real_rows(d_o, 0.0, m_ptr, b, MASK)
        _store4(dhp_ptr, gate, H, d_i, d_f, d_g, d_o, valid)


@dataclass
class _Forward:
    """What the forward keeps for the backward, time-major (index = time step):
    ``A (T, B, 4H)`` float32 gate activations ``i, f, g, o``; ``C (T, B, H)`` float32 and
    ``Y (T, B, H)`` (input dtype) the states after each step; with layer norm ``HP (T, B,
    4H)`` = ``W_hh h_{t-1}`` and ``stats (T, B, 4)`` float32 (mean, rstd of LN_h and LN_c)."""
    A: Tensor
    C: Tensor
    Y: Tensor
    HP: Tensor | None = None
    stats: Tensor | None = None
    CN: Tensor | None = None  # with zoneout on c: the cell's own c' before the zoneout

    def tensors(self) -> tuple:
        return self.A, self.C, self.Y, self.HP, self.stats, self.CN


def _kernel_weights(spec: LSTMSpec, peep, ln, dummy: Tensor) -> tuple[Tensor, ...]:
    """The six weight pointers of the step kernels ``(w_ci, w_cf, w_co, g_h, g_c, b_c)``;
    absent ones are ``dummy`` (never read: the constexpr flags compile their loads out)."""
    return (*(peep if spec.peephole else (dummy,) * 3), *(ln if spec.layer_norm else (dummy,) * 3))


def _forward(spec: LSTMSpec, xp: Tensor, h0: Tensor, c0: Tensor, mask: Tensor | None,
             w_hh: Tensor, peep, ln, km: KernelMasks) -> _Forward:
    """The time loop: ``xp (T, B, 4H)`` (``b_hh`` folded in), ``h0, c0 (B, H)``,
    ``mask (T, B, 1)`` bool or None, ``km`` the recurrent dropout and zoneout -> :class:`_Forward`."""
    T, B, G = xp.shape
    H = G // 4
    f = _Forward(A=xp.new_empty(T, B, G, dtype=ACC), C=xp.new_empty(T, B, H, dtype=ACC),
                 Y=xp.new_empty(T, B, H), HP=xp.new_empty(T, B, G) if spec.layer_norm else None,
                 stats=xp.new_empty(T, B, 4, dtype=ACC) if spec.layer_norm else None,
                 CN=xp.new_empty(T, B, H, dtype=ACC) if km.modes[1] else None)
    dummy = f.A
    # the GEMM writes straight into the saved HP with layer norm, else into one scratch row block
    hp_ = f.HP.unbind(0) if spec.layer_norm else (xp.new_empty(B, G),) * T
    st_ = f.stats.unbind(0) if spec.layer_norm else (dummy,) * T
    m_ = mask.unbind(0) if mask is not None else (dummy,) * T
    xp_, a_, c_, y_ = xp.unbind(0), f.A.unbind(0), f.C.unbind(0), f.Y.unbind(0)
    cn_ = f.CN.unbind(0) if f.CN is not None else (dummy,) * T
    weights = _kernel_weights(spec, peep, ln, dummy)
    launch = launch_config(H)
    w_t = w_hh.t()
    h, c = h0, as_acc(c0)
    dropped = torch.empty_like(h0) if km.drop_h is not None else None
    for t in step_order(T, spec.reverse):
        operand = h if dropped is None else torch.mul(h, km.drop_h, out=dropped)  # recurrent dropout
        hp = torch.mm(operand, w_t, out=hp_[t])
        _lstm_forward_step[(B,)](xp_[t], hp, c, h, m_[t], *weights, a_[t], c_[t], y_[t], st_[t],
                                 km.at(0, t, dummy), km.at(1, t, dummy), cn_[t], H, spec.eps,
                                 PEEP=spec.peephole, LN=spec.layer_norm, MASK=mask is not None,
                                 ZONE_H=km.modes[0], ZONE_C=km.modes[1], **launch)
        h, c = y_[t], c_[t]
    return f


def _backward_loop(spec: LSTMSpec, f: _Forward, c0: Tensor, mask: Tensor | None, w_hh: Tensor,
                   peep, ln, dy: Tensor, dh_n: Tensor, dc_n: Tensor, km: KernelMasks) -> dict[str, Tensor | None]:
    """BPTT through the recurrence (module docstring). Returns ``dA (T, B, 4H)`` (= grad
    wrt ``xp``, input dtype), ``dS`` (the GEMM operand: ``dA`` or, with LN, LN_h^T(dA)),
    ``dCH (T, B, H)`` float32 (``d\\hat c``; LN only), ``dh0``, ``dc0`` (float32) and
    ``c0f`` (``c0`` in float32, for the peepholes' gradients)."""
    T, B, G = f.A.shape
    H = G // 4
    dA = torch.empty_like(f.A, dtype=f.Y.dtype)
    dHP = torch.empty_like(dA) if spec.layer_norm else None
    dCH = torch.empty_like(f.C) if spec.layer_norm else None
    dummy = f.A
    # dh_n enters as the "GEMM part" of the grad wrt the last state; the carry starts at 0
    dhg = dh_n.to(memory_format=torch.contiguous_format, copy=True)
    carry, dc, c0f = torch.zeros_like(dhg, dtype=ACC), as_acc(dc_n), as_acc(c0)
    c_ = f.C.unbind(0)
    own_c_ = f.CN.unbind(0) if f.CN is not None else c_  # the cell's own c' (before zoneout)
    src_ = (dHP if spec.layer_norm else dA).unbind(0)
    hp_ = f.HP.unbind(0) if spec.layer_norm else (dummy,) * T
    st_ = f.stats.unbind(0) if spec.layer_norm else (dummy,) * T
    dhp_ = dHP.unbind(0) if spec.layer_norm else (dummy,) * T
    dch_ = dCH.unbind(0) if spec.layer_norm else (dummy,) * T
    m_ = mask.unbind(0) if mask is not None else (dummy,) * T
    dy_, a_, da_ = dy.unbind(0), f.A.unbind(0), dA.unbind(0)
    weights = _kernel_weights(spec, peep, ln, dummy)
    launch = launch_config(H)
    for t in reversed(step_order(T, spec.reverse)):
        _lstm_backward_step[(B,)](dy_[t], dhg, carry, dc, m_[t], a_[t], prev_of(c_, c0f, t, spec.reverse),
                                  own_c_[t], hp_[t], st_[t], *weights, da_[t], dhp_[t], dch_[t],
                                  km.at(0, t, dummy), km.at(1, t, dummy), H,
                                  PEEP=spec.peephole, LN=spec.layer_norm, MASK=mask is not None,
                                  ZONE_H=km.modes[0], ZONE_C=km.modes[1], **launch)
        torch.mm(src_[t], w_hh, out=dhg)
        if km.drop_h is not None:  # back through h * drop_h
            dhg.mul_(km.drop_h)
    return {"dA": dA, "dS": dHP if spec.layer_norm else dA, "dCH": dCH,
            "dh0": (carry + dhg).to(dhg.dtype), "dc0": dc, "c0f": c0f}


def _weight_grads(spec: LSTMSpec, f: _Forward, g: dict, h0: Tensor,
                  needs: dict[str, bool], km: KernelMasks) -> dict[str, Tensor | None]:
    """Parameter gradients as GEMMs/reductions over all steps, in float32 where the
    operands are: ``dW_hh = sum_t dS_t^T h_{t-1}``; ``dw_ci, dw_cf = sum dA_{i,f} c_{t-1}``;
    ``dw_co = sum dA_o c_t``; LN gains ``sum dA xhat_h``, ``sum d\\hat c xhat_c``, ``sum d\\hat c``.
    (Padded steps have ``dA = d\\hat c = 0``, so their saved states do not matter.)"""
    T, B, G = f.A.shape
    H = G // 4
    out: dict[str, Tensor | None] = {}
    own_c = f.C if f.CN is None else f.CN  # the cell's own c' (before zoneout)
    if needs["w_hh"]:
        d = km.drop_h
        out["w_hh"] = grad_weight_prev(g["dS"], f.Y if d is None else f.Y * d, h0 if d is None else h0 * d,
                                       spec.reverse)
    if spec.peephole:
        dA4 = g["dA"].view(T, B, 4, H).to(ACC)
        if needs["w_ci"] or needs["w_cf"]:
            d_if = sum_prev_products(dA4[:, :, :2], f.C.unsqueeze(2), g["c0f"].unsqueeze(1), spec.reverse)
            out["w_ci"], out["w_cf"] = d_if.unbind(0)
        out["w_co"] = sum_tb(dA4[:, :, 3] * own_c) if needs["w_co"] else None
    if spec.layer_norm:
        mean_h, rstd_h, mean_c, rstd_c = f.stats.unsqueeze(-1).unbind(-2)  # each (T, B, 1)
        if needs["ln_hh_w"]:
            out["ln_hh_w"] = sum_tb(g["dA"].to(ACC) * (f.HP.to(ACC) - mean_h) * rstd_h)
        if needs["ln_c_w"]:
            out["ln_c_w"] = sum_tb(g["dCH"] * (own_c - mean_c) * rstd_c)
        if needs["ln_c_b"]:
            out["ln_c_b"] = sum_tb(g["dCH"])
    return out


_INPUTS = ("xp", "h0", "c0", "w_hh", "w_ci", "w_cf", "w_co", "ln_hh_w", "ln_c_w", "ln_c_b")


class TritonLSTMScan(torch.autograd.Function):
    """``(rebuild, spec, mask, km, xp, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b)
    -> (y (T, B, H), h_n (B, H), c_n (B, H))``; ``km`` the recurrent dropout and zoneout
    (:class:`~rnnkit.kernels.step_masks.KernelMasks`); ``xp (T, B, 4H)`` the input projection
    with ``b_hh`` folded in, the weights the cell's own, absent ones None. ``rebuild``
    (:class:`~rnnkit.kernels.higher_order.Rebuild`) serves a backward that builds a graph
    (double backward): the reference's autograd instead of the Triton BPTT."""

    @staticmethod
    def forward(ctx, rebuild: Rebuild, spec: LSTMSpec, mask: Tensor | None, km: KernelMasks, xp: Tensor,
                h0: Tensor, c0: Tensor, w_hh: Tensor, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b):
        f = _forward(spec, xp, h0, c0, mask, w_hh, (w_ci, w_cf, w_co), (ln_hh_w, ln_c_w, ln_c_b), km)
        ctx.spec, ctx.rebuild, ctx.km = spec, rebuild, km
        ctx.save_for_backward(mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, *f.tensors(),
                              *rebuild.take_tensors())
        last = 0 if spec.reverse else xp.shape[0] - 1
        y = f.Y if mask is None else torch.where(mask, f.Y, 0.0)  # padded steps output 0
        return y, f.Y[last].clone(), f.C[last].to(xp.dtype, copy=True)

    @staticmethod
    def backward(ctx, dy: Tensor, dh_n: Tensor, dc_n: Tensor):
        spec: LSTMSpec = ctx.spec
        mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, *saved = ctx.saved_tensors
        needs = dict(zip(_INPUTS, ctx.needs_input_grad[4:]))
        if torch.is_grad_enabled():  # create_graph: differentiate the reference instead
            inputs = (None, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b)
            grads = ctx.rebuild.grads(saved[6:], inputs, list(needs.values()), mask, (dy, dh_n, dc_n))
            return (None, None, None, None, *grads)
        f = _Forward(*saved[:6])
        peep, ln = (w_ci, w_cf, w_co), (ln_hh_w, ln_c_w, ln_c_b)
        g = _backward_loop(spec, f, c0, mask, w_hh, peep, ln, dy.contiguous(), dh_n, dc_n, ctx.km)
        w = _weight_grads(spec, f, g, h0, needs, ctx.km)
        params = dict(zip(_INPUTS[3:], (w_hh, *peep, *ln)))
        grads = [None if w.get(n) is None else w[n].to(params[n].dtype) for n in _INPUTS[3:]]
        return (None, None, None, None, g["dA"] if needs["xp"] else None, g["dh0"] if needs["h0"] else None,
                g["dc0"].to(c0.dtype) if needs["c0"] else None, *grads)
