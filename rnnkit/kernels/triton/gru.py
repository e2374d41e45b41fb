r"""Triton path for the GRU variants torch.nn lacks (:class:`rnnkit.cells.GRUCell`
``"reset_before"`` and ``"simplified"``). Imports ``triton``: imported lazily by
:mod:`rnnkit.kernels.triton`. Same structure as :mod:`rnnkit.kernels.cpu.gru`
(whole-sequence :class:`torch.autograd.Function`, input projection as one GEMM with
``b_hh`` folded in, hand-derived BPTT, weight gradients after the loop), with each
step's pointwise work in Triton kernels between torch's (cuBLAS) GEMMs.

The state ``h`` is kept twice when the input is bfloat16: ``HS`` in float32 (the
``lerp`` of the update accumulates into it, so it must not round every step) and
``Y`` in the input dtype (the output and the GEMMs' operand). In float32 they are
one buffer. ``m`` = the row's mask (1 without one); padded steps carry the state.

Simplified (gate order ``u, n``), one GEMM and one kernel per step each way::

    fwd  P = h W_hh^T;  u = s(xp_u + P_u);  n = tanh(xp_n + P_n);  h' = h + u (n - h)
    bwd  dH = m dy + dhg + carry;  dh' = m dH     (selections, not products, on padded rows)
         dA_u = dh' (n - h) u (1 - u);  dA_n = dh' u (1 - n^2);  carry = dH - dh' u
         dhg = dA W_hh

Reset-before (gate order ``r, z, n``): the candidate's GEMM needs ``r`` first, so a
step is GEMM, kernel, GEMM, kernel in both directions (two launches, not one)::

    fwd  P = h W_rz^T;  r, z = s(xp_rz + P);  RH = r h          (_gru_rb_gates)
         N = RH W_n^T;  n = tanh(xp_n + N);  h' = n + z (h - n)  (_gru_rb_update)
    bwd  dH = m dy + dhg + carry;  dh' = m dH     (selections, not products, on padded rows)
         dA_z = dh' (h - n) z (1 - z);  dA_n = dh' (1 - z)(1 - n^2)
         carry = dH - dh' (1 - z)                                (_gru_rb_backward_zn)
         d(rh) = dA_n W_n;  dA_r = d(rh) h r (1 - r);  carry += d(rh) r   (_gru_rb_backward_r)
         dhg = [dA_r, dA_z] W_rz

``dA`` is the gradient wrt the input projection; ``dW_hh`` is ``sum_t dA_t^T h_{t-1}``
(reset-before: ``[dA_r, dA_z]`` against ``h_{t-1}``, ``dA_n`` against ``RH``).

Recurrent dropout (``d (B, H)``): the products with ``W_hh`` see ``h d`` (``RH = r h d``),
the update mixes ``h`` itself; so the GEMM part of the state's gradient is multiplied by
``d``. Zoneout of ``h`` (``ZONE`` 1: a keep mask per step, 2: the rate):
``h_t = zone(h', h_{t-1})``; the cell sees ``dh' = zone_update(dh)`` and the rest of
``dH`` joins the carry (``carry = dH - dh' u``, resp. ``dH - dh' (1 - z)``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..grads import grad_weight_prev, step_order
from ..specs import GRUSpec
from ..higher_order import Rebuild
from ..step_masks import KernelMasks
from .common import (ACC, as_acc, launch_config, load_f32, on_real_rows, prev_of, store, tanh, zone,
                            zone_update)


@triton.jit
def _select_state(h_new, h_prev, m_ptr, b, MASK: tl.constexpr):
    """The state after the step: ``h_new``, or ``h_prev`` on a padded step (a select, so
    the carried state is bit-exact)."""
    return on_real_rows(h_new, h_prev, m_ptr, b, MASK)


@triton.jit
def _store_state(hs_ptr, y_ptr, row, h, valid, SPLIT: tl.constexpr):
    """Write the state: float32 ``HS`` and, when the input dtype differs, its copy ``Y``."""
    store(hs_ptr + row, h, valid)
    if SPLIT:
        store(y_ptr + row, h, valid)


@triton.jit
def _backward_in(dy_ptr, dhg_ptr, carry_ptr, m_ptr, b, row, valid, MASK: tl.constexpr):
    """``(dH, dh')``: the grad wrt the state after the step and its part the cell sees."""
    dy = load_f32(dy_ptr + row, valid)
    s = load_f32(dhg_ptr + row, valid) + load_f32(carry_ptr + row, valid)
    if MASK:  # y = m Y: the output's grad counts on real steps only (selected: dy may be anything there)
        dH = on_real_rows(dy + s, s, m_ptr, b, MASK)
        dh = on_real_rows(dH, 0.0, m_ptr, b, MASK)
    else:
        dH = dy + s
        dh = dH
    return dH, dh


# --- simplified -----------------------------------------------------------------------

@triton.jit
def _gru_simplified_forward_step(xp_ptr, p_ptr, hs_prev_ptr, m_ptr, act_ptr, hs_ptr, y_ptr, kh_ptr, H,
                                 MASK: tl.constexpr, SPLIT: tl.constexpr, ZONE: tl.constexpr,
                                 BLOCK_H: tl.constexpr):
    """Row ``b``: ``xp, p (B, 2H)``, ``hs_prev (B, H)`` float32 -> ``act (B, 2H)`` float32
    ``u, n``, ``hs (B, H)`` float32 and (``SPLIT``) ``y (B, H)``."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, BLOCK_H)
    valid = k < H
    gate = b * 2 * H + k
    row = b * H + k
    u = tl.sigmoid(load_f32(xp_ptr + gate, valid) + load_f32(p_ptr + gate, valid))
    n = tanh(load_f32(xp_ptr + gate + H, valid) + load_f32(p_ptr + gate + H, valid))
    h = load_f32(hs_prev_ptr + row, valid)
    h_new = h + u * (n - h)
    if ZONE:
        h_new = zone(h_new, h, load_f32(kh_ptr + row, valid), ZONE)
    h_new = _select_state(h_new, h, m_ptr, b, MASK)
    store(act_ptr + gate, u, valid)
    store(act_ptr + gate + H, n, valid)
    _store_state(hs_ptr, y_ptr, row, h_new, valid, SPLIT)


@triton.jit
def _gru_simplified_backward_step(dy_ptr, dhg_ptr, carry_ptr, m_ptr, act_ptr, hs_prev_ptr, da_ptr, kh_ptr, H,
                                  MASK: tl.constexpr, ZONE: tl.constexpr, BLOCK_H: tl.constexpr):
    """Row ``b``: ``dy, dhg (B, H)``, ``carry (B, H)`` float32 (in place), the forward's
    ``act (B, 2H)`` and ``hs_prev (B, H)`` -> ``da (B, 2H)``."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, BLOCK_H)
    valid = k < H
    gate = b * 2 * H + k
    row = b * H + k
    dH, dh = _backward_in(dy_ptr, dhg_ptr, carry_ptr, m_ptr, b, row, valid, MASK)
    if ZONE:
        dh = zone_update(dh, load_f32(kh_ptr + row, valid), ZONE)
    u = load_f32(act_ptr + gate, valid)
    n = load_f32(act_ptr + gate + H, valid)
    h = load_f32(hs_prev_ptr + row, valid)
    # padded rows: no gate saw the step, dH passes through (selected: their u, n may be anything)
    store(da_ptr + gate, on_real_rows(dh * (n - h) * u * (1.0 - u), 0.0, m_ptr, b, MASK), valid)
    store(da_ptr + gate + H, on_real_rows(dh * u * (1.0 - n * n), 0.0, m_ptr, b, MASK), valid)
    store(carry_ptr + row, on_real_rows(dH - dh * u, dH, m_ptr, b, MASK), valid)


# --- reset before ---------------------------------------------------------------------

@triton.jit
def _gru_rb_gates(xp_ptr, p_ptr, hs_prev_ptr, act_ptr, rh_ptr, drop_ptr, H, DROP: tl.constexpr,
                  BLOCK_H: tl.constexpr):
    """Row ``b``: ``xp (B, 3H)``, ``p (B, 2H)`` = ``h W_rz^T``, ``hs_prev (B, H)`` float32
    -> ``r, z`` into ``act (B, 3H)`` float32 and ``rh (B, H)`` = ``r h`` (the next GEMM's operand)."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, BLOCK_H)
    valid = k < H
    gate = b * 3 * H + k
    r = tl.sigmoid(load_f32(xp_ptr + gate, valid) + load_f32(p_ptr + b * 2 * H + k, valid))
    z = tl.sigmoid(load_f32(xp_ptr + gate + H, valid) + load_f32(p_ptr + b * 2 * H + k + H, valid))
    store(act_ptr + gate, r, valid)
    store(act_ptr + gate + H, z, valid)
    h = load_f32(hs_prev_ptr + b * H + k, valid)
    if DROP:  # recurrent dropout: W_n sees r h d
        h = h * load_f32(drop_ptr + b * H + k, valid)
    store(rh_ptr + b * H + k, r * h, valid)


@triton.jit
def _gru_rb_update(xp_ptr, pn_ptr, hs_prev_ptr, m_ptr, act_ptr, hs_ptr, y_ptr, kh_ptr, H,
                   MASK: tl.constexpr, SPLIT: tl.constexpr, ZONE: tl.constexpr, BLOCK_H: tl.constexpr):
    """Row ``b``: ``xp (B, 3H)``, ``pn (B, H)`` = ``RH W_n^T``, ``hs_prev (B, H)`` float32
    -> ``n`` into ``act`` (``z`` is read from it), ``hs (B, H)`` float32, (``SPLIT``) ``y``."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, BLOCK_H)
    valid = k < H
    gate = b * 3 * H + k
    row = b * H + k
    n = tanh(load_f32(xp_ptr + gate + 2 * H, valid) + load_f32(pn_ptr + row, valid))
    z = load_f32(act_ptr + gate + H, valid)
    h = load_f32(hs_prev_ptr + row, valid)
    h_new = n + z * (h - n)
    if ZONE:
        h_new = zone(h_new, h, load_f32(kh_ptr + row, valid), ZONE)
    h_new = _select_state(h_new, h, m_ptr, b, MASK)
    store(act_ptr + gate + 2 * H, n, valid)
    _store_state(hs_ptr, y_ptr, row, h_new, valid, SPLIT)


@triton.jit
def _gru_rb_backward_zn(dy_ptr, dhg_ptr, carry_ptr, m_ptr, act_ptr, hs_prev_ptr, da_ptr, kh_ptr, H,
                        MASK: tl.constexpr, ZONE: tl.constexpr, BLOCK_H: tl.constexpr):
    """Row ``b``, first half of a reset-before backward step: ``dA_z, dA_n`` into
    ``da (B, 3H)``; ``carry (B, H)`` float32 becomes ``dH - dh' (1 - z)`` (in place)."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, BLOCK_H)
    valid = k < H
    gate = b * 3 * H + k
    row = b * H + k
    dH, dh = _backward_in(dy_ptr, dhg_ptr, carry_ptr, m_ptr, b, row, valid, MASK)
    if ZONE:
        dh = zone_update(dh, load_f32(kh_ptr + row, valid), ZONE)
    z = load_f32(act_ptr + gate + H, valid)
    n = load_f32(act_ptr + gate + 2 * H, valid)
    h = load_f32(hs_prev_ptr + row, valid)
    # padded rows: no gate saw the step, dH passes through (selected: their z, n may be anything)
    store(da_ptr + gate + H, on_real_rows(dh * (h - n) * z * (1.0 - z), 0.0, m_ptr, b, MASK), valid)
    store(da_ptr + gate + 2 * H, on_real_rows(dh * (1.0 - z) * (1.0 - n * n), 0.0, m_ptr, b, MASK), valid)
    store(carry_ptr + row, on_real_rows(dH - dh * (1.0 - z), dH, m_ptr, b, MASK), valid)


@triton.jit
def _gru_rb_backward_r(drh_ptr, act_ptr, hs_prev_ptr, m_ptr, carry_ptr, da_ptr, drop_ptr, H,
                       MASK: tl.constexpr, DROP: tl.constexpr, BLOCK_H: tl.constexpr):
    """Row ``b``, second half: ``d(rh) (B, H)`` = ``dA_n W_n`` -> ``dA_r`` into ``da``;
    ``carry += d(rh) r`` (in place). Padded rows: ``dA_r = 0``, ``carry`` unchanged."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, BLOCK_H)
    valid = k < H
    gate = b * 3 * H + k
    row = b * H + k
    drh = load_f32(drh_ptr + row, valid)
    r = load_f32(act_ptr + gate, valid)
    carry = load_f32(carry_ptr + row, valid)
    h = load_f32(hs_prev_ptr + row, valid)
    dr = r
    if DROP:  # RH = r h d
        d = load_f32(drop_ptr + row, valid)
        h = h * d
        dr = r * d
    store(da_ptr + gate, on_real_rows(drh * h * r * (1.0 - r), 0.0, m_ptr, b, MASK), valid)
    store(carry_ptr + row, on_real_rows(carry + drh * dr, carry, m_ptr, b, MASK), valid)


# --- the loops --------------------------------------------------------------------------

def _state_buffers(xp: Tensor, H: int) -> tuple[Tensor, Tensor]:
    """``(HS, Y)``, both ``(T, B, H)``: float32 state and input-dtype state, one buffer
    when the input is float32."""
    T, B, _ = xp.shape
    Y = xp.new_empty(T, B, H)
    return (Y if xp.dtype == ACC else xp.new_empty(T, B, H, dtype=ACC)), Y


def _forward(spec: GRUSpec, xp: Tensor, h0: Tensor, mask: Tensor | None,
             w_hh: Tensor, km: KernelMasks) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The time loop: ``xp (T, B, G*H)`` (``b_hh`` folded in), ``h0 (B, H)``, ``mask (T, B, 1)``
    bool or None -> ``A (T, B, G*H)`` float32 activations, ``HS, Y (T, B, H)`` states
    (:func:`_state_buffers`) and, reset-before, ``RH (T, B, H)`` = ``r h_{t-1}``."""
    T, B, G = xp.shape
    H = w_hh.shape[1]
    A = xp.new_empty(T, B, G, dtype=ACC)
    HS, Y = _state_buffers(xp, H)
    split = HS is not Y
    m_ = mask.unbind(0) if mask is not None else (A,) * T  # A: never read without a mask
    xp_, a_, hs_, y_ = xp.unbind(0), A.unbind(0), HS.unbind(0), Y.unbind(0)
    launch = launch_config(H)
    flags = dict(MASK=mask is not None, SPLIT=split, ZONE=km.modes[0], **launch)
    h, hs = h0, as_acc(h0)  # h: the GEMM operand (input dtype), hs: the float32 state
    drop = km.drop_h
    dropped = torch.empty_like(h0) if drop is not None else None
    RH = None
    if spec.variant == "simplified":
        P, w_t = xp.new_empty(B, G), w_hh.t()
        for t in step_order(T, spec.reverse):
            torch.mm(h if drop is None else torch.mul(h, drop, out=dropped), w_t, out=P)
            _gru_simplified_forward_step[(B,)](xp_[t], P, hs, m_[t], a_[t], hs_[t], y_[t], km.at(0, t, A), H,
                                               **flags)
            h, hs = y_[t], hs_[t]
    else:
        RH = xp.new_empty(T, B, H)
        P, N = xp.new_empty(B, 2 * H), xp.new_empty(B, H)
        w_rz_t, w_n_t, rh_ = w_hh[:2 * H].t(), w_hh[2 * H:].t(), RH.unbind(0)
        for t in step_order(T, spec.reverse):
            torch.mm(h if drop is None else torch.mul(h, drop, out=dropped), w_rz_t, out=P)
            _gru_rb_gates[(B,)](xp_[t], P, hs, a_[t], rh_[t], A if drop is None else drop, H,
                                DROP=drop is not None, **launch)
            torch.mm(rh_[t], w_n_t, out=N)
            _gru_rb_update[(B,)](xp_[t], N, hs, m_[t], a_[t], hs_[t], y_[t], km.at(0, t, A), H, **flags)
            h, hs = y_[t], hs_[t]
    return A, HS, Y, RH


def _backward(spec: GRUSpec, A: Tensor, HS: Tensor, Y: Tensor, RH: Tensor | None, h0: Tensor,
              mask: Tensor | None, w_hh: Tensor, dy: Tensor, dh_n: Tensor,
              needs_w: bool, km: KernelMasks) -> tuple[Tensor, Tensor, Tensor | None]:
    """BPTT (module docstring). Returns ``dA (T, B, G*H)`` (input dtype), ``dh0 (B, H)``
    and ``dW_hh (G*H, H)`` (None unless ``needs_w``)."""
    T, B, G = A.shape
    H = w_hh.shape[1]
    dA = torch.empty_like(A, dtype=Y.dtype)
    # dh_n enters as the "GEMM part" of the grad wrt the last state; the carry starts at 0
    dhg = dh_n.to(memory_format=torch.contiguous_format, copy=True)
    carry, h0f = torch.zeros_like(dhg, dtype=ACC), as_acc(h0)
    m_ = mask.unbind(0) if mask is not None else (A,) * T
    dy_, a_, hs_, da_ = dy.unbind(0), A.unbind(0), HS.unbind(0), dA.unbind(0)
    launch = launch_config(H)
    flags = dict(MASK=mask is not None, **launch)
    order = reversed(step_order(T, spec.reverse))
    drop, zone_mode = km.drop_h, km.modes[0]
    Yd, h0d = (Y, h0) if drop is None else (Y * drop, h0 * drop)  # what W_hh saw
    if spec.variant == "simplified":
        for t in order:
            _gru_simplified_backward_step[(B,)](dy_[t], dhg, carry, m_[t], a_[t],
                                                prev_of(hs_, h0f, t, spec.reverse), da_[t], km.at(0, t, A), H,
                                                ZONE=zone_mode, **flags)
            torch.mm(da_[t], w_hh, out=dhg)
            if drop is not None:
                dhg.mul_(drop)
        dw = grad_weight_prev(dA, Yd, h0d, spec.reverse) if needs_w else None
    else:
        w_rz, w_n = w_hh[:2 * H], w_hh[2 * H:]
        drh = dhg.new_empty(B, H)
        for t in order:
            h_prev = prev_of(hs_, h0f, t, spec.reverse)
            _gru_rb_backward_zn[(B,)](dy_[t], dhg, carry, m_[t], a_[t], h_prev, da_[t], km.at(0, t, A), H,
                                      ZONE=zone_mode, **flags)
            torch.mm(da_[t][:, 2 * H:], w_n, out=drh)
            _gru_rb_backward_r[(B,)](drh, a_[t], h_prev, m_[t], carry, da_[t], A if drop is None else drop, H,
                                     DROP=drop is not None, **flags)
            torch.mm(da_[t][:, :2 * H], w_rz, out=dhg)
            if drop is not None:
                dhg.mul_(drop)
        dw = None
        if needs_w:
            dw = torch.cat([grad_weight_prev(dA[..., :2 * H], Yd, h0d, spec.reverse),
                            dA[..., 2 * H:].reshape(T * B, H).t() @ RH.reshape(T * B, H)])
    return dA, (carry + dhg).to(dhg.dtype), dw


class TritonGRUScan(torch.autograd.Function):
    """``(rebuild, spec, mask, km, xp (T, B, G*H), h0 (B, H), w_hh (G*H, H)) -> (y (T, B, H), h_n (B, H))``;
    ``km`` the recurrent dropout and zoneout (:class:`~rnnkit.kernels.step_masks.KernelMasks`);
    ``xp`` the input projection with ``b_hh`` folded in, ``w_hh`` the cell's own. ``rebuild``
    (:class:`~rnnkit.kernels.higher_order.Rebuild`) serves a backward that builds a graph
    (double backward): the reference's autograd instead of the Triton BPTT."""

    @staticmethod
    def forward(ctx, rebuild: Rebuild, spec: GRUSpec, mask: Tensor | None, km: KernelMasks, xp: Tensor,
                h0: Tensor, w_hh: Tensor):
        A, HS, Y, RH = _forward(spec, xp, h0, mask, w_hh, km)
        ctx.spec, ctx.rebuild, ctx.km = spec, rebuild, km
        ctx.save_for_backward(mask, h0, w_hh, A, HS if HS is not Y else None, Y, RH, *rebuild.take_tensors())
        last = 0 if spec.reverse else xp.shape[0] - 1
        y = Y if mask is None else torch.where(mask, Y, 0.0)  # padded steps output 0
        return y, Y[last].clone()

    @staticmethod
    def backward(ctx, dy: Tensor, dh_n: Tensor):
        mask, h0, w_hh, A, HS, Y, RH, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the reference instead
            grads = ctx.rebuild.grads(saved, (None, h0, w_hh), ctx.needs_input_grad[4:], mask, (dy, dh_n))
            return (None, None, None, None, *grads)
        dA, dh0, dw = _backward(ctx.spec, A, Y if HS is None else HS, Y, RH, h0, mask, w_hh,
                                dy.contiguous(), dh_n, ctx.needs_input_grad[6], ctx.km)
        return (None, None, None, None, dA if ctx.needs_input_grad[4] else None,
                dh0 if ctx.needs_input_grad[5] else None, None if dw is None else dw.to(w_hh.dtype))
