r"""Fused CPU kernels for the GRU variants torch.nn lacks (:class:`rnnkit.cells.GRUCell`
``variant="reset_before"`` and ``"simplified"``).

Same design as :mod:`rnnkit.kernels.cpu_lstm`: one :class:`torch.autograd.Function`
over the whole sequence with hand-derived BPTT; ``b_hh`` folded into the input
projection's bias (additive in both variants: ``b_hn`` sits outside ``r`` here); the
candidate's ``tanh(a) = 2 sigmoid(2a) - 1`` (ATen's tanh costs ~3x its sigmoid), its
pre-activation doubled through ``W_in``, ``b_n`` and ``W_hn`` (gradients wrt the doubled
pre-activation are halved: :func:`gate_scale`); the backward's local Jacobians are
diagonal, so their coefficients are computed for all steps at once before the loop,
the mask folded in (padded steps: coefficients ``* m``, the ``h`` carry ``-> 1``).

Reset-before (gate order ``r, z, n``), ``h`` = previous state, ``dh`` = grad wrt the new one::

    r = s(a_r)  z = s(a_z)  n = tanh(a_n + W_n (r h))  h' = (1 - z) n + z h
    dA_z = dh * (h - n) z (1 - z)          dA_n = dh * (1 - z)(1 - n^2)
    d(rh) = dA_n W_n                       dA_r = d(rh) * h r (1 - r)
    dh_prev = dh * z + d(rh) * r + [dA_r, dA_z] W_rz
    dW_rz = sum_t [dA_r, dA_z]_t^T h_{t-1}     dW_n = sum_t dA_n^T (r h)_t

Simplified (gate order ``u, n``)::

    u = s(a_u)  n = tanh(a_n)  h' = u n + (1 - u) h
    dA_u = dh * (n - h) u (1 - u)          dA_n = dh * u (1 - n^2)
    dh_prev = dh * (1 - u) + dA W_hh       dW_hh = sum_t dA_t^T h_{t-1}

In both, the gradient wrt the input projection is ``dA`` itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor

from ..cells.base import State
from ..cells.gru import GRUCell
from .cpu_common import (ThreadSwitch, affine, fold_mask, fold_mask_carry, grad_weight_prev, inputs_ok,
                         masked_copy, padded_rows, sigmoid_backward, step_order, summed_bias, tanh_backward,
                         with_prev)
from .higher_order import Rebuild
from .reference import scan, zero_padding

#: the GRU variants with a kernel here ("reset_after" is torch.nn's own fused GRU).
VARIANTS = ("reset_before", "simplified")


@dataclass(frozen=True)
class GRUSpec:
    """Static configuration of one kernel call."""
    variant: str
    reverse: bool


def gate_scale(variant: str, hidden_size: int, like: Tensor) -> Tensor:
    """``(G*H,)``: 2 on the candidate ``n`` (last block), 1 elsewhere; see the module doc."""
    scale = like.new_ones(2 if variant == "simplified" else 3, hidden_size)
    scale[-1] = 2.0
    return scale.view(-1)


def _sub_from(prev: Tensor, x: Tensor, out: Tensor) -> Tensor:
    """``prev - x`` (for :func:`~rnnkit.kernels.cpu_common.with_prev`)."""
    return torch.sub(prev, x, out=out)


def _sub_prev(prev: Tensor, x: Tensor, out: Tensor) -> Tensor:
    """``x - prev`` (for :func:`~rnnkit.kernels.cpu_common.with_prev`)."""
    return torch.sub(x, prev, out=out)


def _sigmoid_bwd_prev(prev: Tensor, y: Tensor, out: Tensor) -> Tensor:
    """``prev * y (1 - y)`` (for :func:`~rnnkit.kernels.cpu_common.with_prev`)."""
    return sigmoid_backward.grad_input(prev, y, grad_input=out)


# --- reset before -------------------------------------------------------------------

def _forward_reset_before(spec: GRUSpec, xp: Tensor, h0: Tensor, mask: Tensor | None,
                          w_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``xp (T, B, 3H)`` (scaled) -> activations ``A (T, B, 3H)`` (r, z, n), reset
    states ``RH (T, B, H)`` and states ``Y (T, B, H)``."""
    T, B, G = xp.shape
    H = G // 3
    A, RH, Y = torch.empty_like(xp), xp.new_empty(T, B, H), xp.new_empty(T, B, H)
    w_rz_t = w_hh[:2 * H].t().contiguous()  # contiguous W^T: faster GEMMs than the view
    w_n_t = (2.0 * w_hh[2 * H:]).t().contiguous()
    minus_one = xp.new_tensor(-1.0)
    # per-step views made once, in C++ (unbind), not in the loop
    xrz_, xn_ = xp[..., :2 * H].unbind(0), xp[..., 2 * H:].unbind(0)
    rz_, n_ = A[..., :2 * H].unbind(0), A[..., 2 * H:].unbind(0)
    r_, z_ = A[..., :H].unbind(0), A[..., H:2 * H].unbind(0)
    rh_, y_ = RH.unbind(0), Y.unbind(0)
    mask_ = mask.unbind(0) if mask is not None else None
    h = h0
    with ThreadSwitch() as threads:  # caller's threads for GEMMs, one for the rest
        for t in step_order(T, spec.reverse):
            threads.gemm()
            rz = torch.addmm(xrz_[t], h, w_rz_t, out=rz_[t])
            threads.pointwise()
            rz.sigmoid_()
            rh = torch.mul(r_[t], h, out=rh_[t])
            threads.gemm()
            s = torch.addmm(xn_[t], rh, w_n_t, out=n_[t])
            threads.pointwise()
            n = torch.add(minus_one, s.sigmoid_(), alpha=2.0, out=s)  # tanh = 2 sigmoid(2a) - 1
            torch.lerp(n, h, z_[t], out=y_[t])  # (1 - z) n + z h
            if mask_ is not None:
                torch.where(mask_[t], y_[t], h, out=y_[t])
            h = y_[t]
    return A, RH, Y


def _carried(k: int, order: list[int], dy_, dh_, dh: Tensor, k_h: Tensor) -> Tensor:
    """``dh_{t-1}`` before its GEMM term, for the ``k``-th step processed: the part of
    ``dh`` carried past the gates (``dh * k_h``) plus the previous step's ``dy``, written
    into that step's ``DH`` slot; for the last step, the gradient wrt ``h0``."""
    if k + 1 < len(order):
        return torch.addcmul(dy_[order[k + 1]], dh, k_h, out=dh_[order[k + 1]])
    return dh * k_h


def _backward_reset_before(spec: GRUSpec, A: Tensor, RH: Tensor, Y: Tensor, h0: Tensor,
                           rows: Tensor | None, dy: Tensor, dh_n: Tensor, w_hh: Tensor,
                           needs_w: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """BPTT (module docstring) wrt the scaled pre-activations. Returns ``dA (T, B, 3H)``,
    ``dh0 (B, H)``, ``dW_hh (3H, H)``."""
    T, B, G = A.shape
    H = G // 3
    r, z, n = A.view(T, B, 3, H).unbind(2)
    K_zn = A.new_empty(T, B, 2, H)  # [dA_z, dA_n] = dh * K_zn in one op
    kz = with_prev(_sub_from, K_zn[:, :, 0], Y, h0, n, reverse=spec.reverse)  # h_prev - n
    sigmoid_backward.grad_input(kz, z, grad_input=kz)
    tanh_backward.grad_input(affine(z, -0.5, 0.5), n, grad_input=K_zn[:, :, 1])  # (1 - z)(1 - n^2) / 2
    fold_mask(K_zn, rows)
    K_r = with_prev(_sigmoid_bwd_prev, torch.empty_like(r), Y, h0, r, reverse=spec.reverse)
    K_h = z if rows is None else fold_mask_carry(z.clone(), rows)  # d(rh) is 0 on padded steps already
    w_rz, w_n = w_hh[:2 * H], 2.0 * w_hh[2 * H:]
    dA, DH = torch.empty_like(A), torch.empty_like(Y)
    darz_, dar_, dan_ = dA[..., :2 * H].unbind(0), dA[..., :H].unbind(0), dA[..., 2 * H:].unbind(0)
    dazn_, dh_, dy_ = dA.view(T, B, 3, H)[:, :, 1:].unbind(0), DH.unbind(0), dy.unbind(0)
    kzn_, kr_, kh_, r_ = K_zn.unbind(0), K_r.unbind(0), K_h.unbind(0), r.unbind(0)
    order = step_order(T, spec.reverse)[::-1]
    torch.add(dy_[order[0]], dh_n, out=dh_[order[0]])
    with ThreadSwitch() as threads:  # caller's threads for GEMMs, one for the rest
        for k, t in enumerate(order):
            dh = dh_[t]
            threads.pointwise()
            torch.mul(dh.unsqueeze(1), kzn_[t], out=dazn_[t])
            threads.gemm()
            d_rh = torch.mm(dan_[t], w_n)
            threads.pointwise()
            torch.mul(d_rh, kr_[t], out=dar_[t])
            dh_prev = _carried(k, order, dy_, dh_, dh, kh_[t])
            dh_prev.addcmul_(d_rh, r_[t])
            threads.gemm()
            dh_prev.addmm_(darz_[t], w_rz)
    dh0 = dh_prev  # the last step processed: its "previous state" is h0
    dw = None
    if needs_w:
        dw = torch.cat([grad_weight_prev(dA[..., :2 * H], Y, h0, spec.reverse),
                        2.0 * (dA[..., 2 * H:].reshape(T * B, H).t() @ RH.reshape(T * B, H))])
    return dA, dh0, dw


# --- simplified ---------------------------------------------------------------------

def _forward_simplified(spec: GRUSpec, xp: Tensor, h0: Tensor, mask: Tensor | None,
                        w_hh: Tensor) -> tuple[Tensor, Tensor]:
    """``xp (T, B, 2H)`` (scaled) -> activations ``A (T, B, 2H)`` (u, n) and states ``Y (T, B, H)``."""
    T, B, G = xp.shape
    H = G // 2
    A, Y = torch.empty_like(xp), xp.new_empty(T, B, H)
    w_t = (w_hh * gate_scale("simplified", H, xp).unsqueeze(1)).t().contiguous()
    minus_one = xp.new_tensor(-1.0)
    xp_, a_, u_, n_, y_ = xp.unbind(0), A.unbind(0), A[..., :H].unbind(0), A[..., H:].unbind(0), Y.unbind(0)
    mask_ = mask.unbind(0) if mask is not None else None
    h = h0
    with ThreadSwitch() as threads:  # caller's threads for GEMMs, one for the rest
        for t in step_order(T, spec.reverse):
            threads.gemm()
            a = torch.addmm(xp_[t], h, w_t, out=a_[t])
            threads.pointwise()
            a.sigmoid_()  # both gates in one op
            n = torch.add(minus_one, n_[t], alpha=2.0, out=n_[t])  # tanh = 2 sigmoid(2a) - 1
            torch.lerp(h, n, u_[t], out=y_[t])  # u n + (1 - u) h
            if mask_ is not None:
                torch.where(mask_[t], y_[t], h, out=y_[t])
            h = y_[t]
    return A, Y


def _backward_simplified(spec: GRUSpec, A: Tensor, Y: Tensor, h0: Tensor, rows: Tensor | None,
                         dy: Tensor, dh_n: Tensor, w_hh: Tensor,
                         needs_w: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """BPTT (module docstring) wrt the scaled pre-activations. Returns ``dA (T, B, 2H)``,
    ``dh0 (B, H)``, ``dW_hh (2H, H)``."""
    T, B, G = A.shape
    H = G // 2
    u, n = A.view(T, B, 2, H).unbind(2)
    K = A.new_empty(T, B, 2, H)  # dA = dh * K in one op
    ku = with_prev(_sub_prev, K[:, :, 0], Y, h0, n, reverse=spec.reverse)  # n - h_prev
    sigmoid_backward.grad_input(ku, u, grad_input=ku)
    tanh_backward.grad_input(u * 0.5, n, grad_input=K[:, :, 1])  # u (1 - n^2) / 2
    fold_mask(K, rows)
    K_h = fold_mask_carry(affine(u, -1.0, 1.0), rows)
    scale = gate_scale("simplified", H, A)
    w = w_hh * scale.unsqueeze(1)
    dA, DH = torch.empty_like(A), torch.empty_like(Y)
    da_, da2_, dh_, dy_ = dA.unbind(0), dA.view(T, B, 2, H).unbind(0), DH.unbind(0), dy.unbind(0)
    k_, kh_ = K.unbind(0), K_h.unbind(0)
    order = step_order(T, spec.reverse)[::-1]
    torch.add(dy_[order[0]], dh_n, out=dh_[order[0]])
    with ThreadSwitch() as threads:  # caller's threads for GEMMs, one for the rest
        for k, t in enumerate(order):
            dh = dh_[t]
            threads.pointwise()
            torch.mul(dh.unsqueeze(1), k_[t], out=da2_[t])
            dh_prev = _carried(k, order, dy_, dh_, dh, kh_[t])
            threads.gemm()
            dh_prev.addmm_(da_[t], w)
    dh0 = dh_prev  # the last step processed: its "previous state" is h0
    dw = grad_weight_prev(dA, Y, h0, spec.reverse).mul_(scale.unsqueeze(1)) if needs_w else None
    return dA, dh0, dw


# --- the autograd Function and the kernel -------------------------------------------

class GRUScan(torch.autograd.Function):
    """``(rebuild, spec, mask, xp (T, B, G*H), h0 (B, H), w_hh (G*H, H)) -> (y (T, B, H), h_n (B, H))``;
    ``xp`` is the scaled input projection (:func:`gate_scale`), ``w_hh`` the cell's own.
    ``rebuild`` (:class:`~rnnkit.kernels.higher_order.Rebuild`) serves a backward that
    builds a graph (double backward): the reference's autograd instead of the hand-written BPTT."""

    @staticmethod
    def forward(ctx, rebuild: Rebuild, spec: GRUSpec, mask: Tensor | None, xp: Tensor, h0: Tensor, w_hh: Tensor):
        if spec.variant == "reset_before":
            A, RH, Y = _forward_reset_before(spec, xp, h0, mask, w_hh)
        else:
            (A, Y), RH = _forward_simplified(spec, xp, h0, mask, w_hh), None
        ctx.spec, ctx.rebuild = spec, rebuild
        ctx.save_for_backward(mask, h0, w_hh, A, RH, Y, *rebuild.take_tensors())
        last = 0 if spec.reverse else xp.shape[0] - 1
        return masked_copy(Y, padded_rows(mask)), Y[last].clone()

    @staticmethod
    def backward(ctx, dy: Tensor, dh_n: Tensor):
        spec: GRUSpec = ctx.spec
        mask, h0, w_hh, A, RH, Y, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the reference instead
            grads = ctx.rebuild.grads(saved, (None, h0, w_hh), ctx.needs_input_grad[3:], mask, (dy, dh_n))
            return (None, None, None, *grads)
        rows = padded_rows(mask)
        dy = masked_copy(dy, rows)  # y = m * Y: the padded outputs' gradients go nowhere
        needs_w = ctx.needs_input_grad[5]
        if spec.variant == "reset_before":
            dA, dh0, dw = _backward_reset_before(spec, A, RH, Y, h0, rows, dy, dh_n, w_hh, needs_w)
        else:
            dA, dh0, dw = _backward_simplified(spec, A, Y, h0, rows, dy, dh_n, w_hh, needs_w)
        return (None, None, None, dA if ctx.needs_input_grad[3] else None,
                dh0 if ctx.needs_input_grad[4] else None, dw)


def supports(cell: GRUCell) -> bool:
    """The GRU variants this kernel computes."""
    return type(cell) is GRUCell and cell.variant in VARIANTS


def scaled_projection(cell: GRUCell, p: SimpleNamespace, x: Tensor) -> Tensor:
    """``cell.project_input`` with ``b_hh`` folded into ``b_ih`` and the candidate rows
    doubled (on ``W_ih`` and the bias: ``(G*H, *)``-sized ops, under autograd)."""
    scale = gate_scale(cell.variant, cell.hidden_size, x)
    bias = summed_bias(p)
    q = SimpleNamespace(**vars(p))
    q.weight_ih = p.weight_ih * scale.unsqueeze(1)
    q.bias_ih = None if bias is None else bias * scale
    return cell.project_input(x, q)


def gru_scan(cell: GRUCell, p: SimpleNamespace, x: Tensor, state: State,
             mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """Drop-in for :func:`rnnkit.nn.scan.scan` on a supported :class:`GRUCell`:
    ``x (T, B, I)``, ``state = (h (B, H),)``, ``mask (T, B, 1)`` -> ``(y (T, B, H), (h_n,))``."""
    (h0,) = state
    if not inputs_ok(cell, x, state, mask):
        return scan(cell, p, x, state, mask, reverse)
    x = zero_padding(x, mask)  # before the projection: nothing a padded step holds gets in
    xp = scaled_projection(cell, p, x).contiguous()
    rebuild = Rebuild(cell, p, x, scaled_projection, ("weight_hh",), reverse,
                      gate_scale(cell.variant, cell.hidden_size, x))
    y, h = GRUScan.apply(rebuild, GRUSpec(cell.variant, reverse), mask, xp, h0, p.weight_hh)
    return y, (h,)
