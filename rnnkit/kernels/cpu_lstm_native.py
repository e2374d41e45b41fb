r"""Fused CPU LSTM in compiled C: peephole and/or layer norm, with or without
projection (:class:`rnnkit.cells.LSTMCell`, gate order ``i, f, g, o``).

Same structure as :mod:`rnnkit.kernels.cpu_lstm` (one :class:`torch.autograd.Function`
for the whole sequence, input projection for all steps as one GEMM by torch before
it, hand-derived BPTT, weight gradients as big GEMMs by torch after it), but the time
loop itself runs in C (:mod:`rnnkit.kernels.native`; equations in
``native/lstm_step.h``): one call runs every step's recurrent GEMM (rnnkit's packed
GEMM, ``native/gemm.h``) and pointwise work, layer norms included, forward; another
the whole BPTT. No Python, no torch dispatch per step. When no backward can follow
(no_grad, nothing requiring grad) the forward keeps one step's buffers, not ``T``.

Used whenever :func:`rnnkit.kernels.native.available`; otherwise the torch-ops kernel
of :mod:`rnnkit.kernels.cpu_lstm` runs. Both are tested against the reference step.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor

from ..cells.base import State
from ..cells.lstm import LSTMCell
from . import native
from .cpu_common import (sum_tb, byte_mask, folded_projection, grad_projection, grad_weight_prev, masked_copy,
                         padded_rows, peephole_grads, pointwise_threads, ptr)
from .cpu_lstm import _INPUTS, LSTMSpec, run_kernel
from .step_masks import SELECT, KernelMasks, kernel_masks

# the flags of native/steps.c
PEEPHOLE, LAYER_NORM, CARRY_H = 1, 2, 4


def step_flags(spec: LSTMSpec) -> int:
    """The C step's flags for ``spec``."""
    return PEEPHOLE * spec.peephole | LAYER_NORM * spec.layer_norm


def steps_fns(dtype: torch.dtype) -> SimpleNamespace:
    """The C forward and backward over a whole sequence for ``dtype``, with their
    ctypes signatures (native/lstm_step.h)."""
    return SimpleNamespace(
        forward=native.bind("lstm_sequence", dtype),
        backward=native.bind("lstm_backward_sequence", dtype))


def _forward(fns, spec: LSTMSpec, xp: Tensor, h0: Tensor, c0: Tensor, mask: Tensor | None,
             w_hh: Tensor, peep, ln, w_hr, km: KernelMasks) -> SimpleNamespace:
    """The recurrence over ``xp (T, B, 4H)`` (input projection plus all additive
    biases), the whole time loop in one C call. Returns ``Y (T, B, R)`` states and
    ``C (T, B, H)`` cells and, with ``spec.store`` (a backward will follow), what it
    needs: ``A (T, B, 4H)`` gate activations, ``U (T, B, H)`` ``tanh`` of the
    (normalised) cell, ``M`` (projection input; ``Y`` without projection), with layer
    norm ``HP (T, B, 4H)`` = ``W_hh h`` and both norms' statistics ``(4, T, B)``.
    Without ``store`` those buffers hold one step, reused. ``km``: recurrent dropout and
    zoneout (then ``CN`` keeps the cell's own ``c'`` before zoneout, for the backward)."""
    T, B, G = xp.shape
    H, R = G // 4, w_hh.shape[1]
    n = T if spec.store else 1
    f = SimpleNamespace(Y=xp.new_empty(T, B, R), C=xp.new_empty(T, B, H), A=xp.new_empty(n, B, G),
                        U=xp.new_empty(n, B, H), M=xp.new_empty(n, B, H) if spec.proj else None,
                        HP=xp.new_empty(T, B, G) if spec.layer_norm and spec.store else None,
                        stats=xp.new_empty(4, n, B),  # mean_h, rstd_h, mean_c, rstd_c
                        CN=xp.new_empty(n, B, H) if km.modes[1] else None)
    hd = xp.new_empty(B, R) if km.drop_h is not None else None  # one step's h * drop_h
    m8 = byte_mask(mask)
    flags = step_flags(spec) | (CARRY_H if mask is not None and not spec.proj else 0)
    choice = native.gemm_choice(xp.dtype, B, G, R)  # packed or vendor GEMM, by the main product's shape
    panels_hh = native.gemm_weight(w_hh, choice)
    panels_hr = native.gemm_weight(w_hr, choice) if spec.proj else None
    w_ci, w_cf, w_co = (ptr(w) for w in peep) if peep else (None,) * 3
    g_h, g_c, b_c = (ptr(w) for w in ln) if ln else (None,) * 3
    rec = xp.new_empty(B, G)  # one step's GEMM output (held here: the C only gets its address)
    fns.forward(T, B, H, R, flags, torch.get_num_threads(), pointwise_threads(B, G), int(spec.reverse),
                int(spec.store), spec.eps, native.vendor_arg(xp.dtype, choice), xp.data_ptr(), panels_hh.data_ptr(), ptr(panels_hr), h0.data_ptr(),
                c0.data_ptr(), g_h, w_ci, w_cf, w_co, g_c, b_c, ptr(m8), f.Y.data_ptr(), f.C.data_ptr(),
                f.A.data_ptr(), f.U.data_ptr(), ptr(f.M), ptr(f.HP), f.stats.data_ptr(), rec.data_ptr(),
                *_mask_args(km, ptr(hd)), ptr(f.CN))
    if not spec.proj:
        f.M = f.Y
    return f


def _mask_args(km: KernelMasks, *scratch) -> tuple:
    """The C loops' recurrent-dropout and zoneout arguments: ``drop, *scratch, zh, zc, kh, kc,
    zh_rate, zc_rate`` (``kh, kc``: the training keep masks as bytes; the rates: evaluation's;
    ``scratch``: the forward's one-step ``h * drop`` buffer)."""
    keep = [ptr(k) if m == SELECT else None for k, m in zip(km.keep, km.modes)]
    return (ptr(km.drop_h), *scratch, km.modes[0], km.modes[1], *keep, *km.rates)


def _backward(fns, spec: LSTMSpec, f: SimpleNamespace, dy: Tensor, dh_n: Tensor, dc_n: Tensor,
              c0: Tensor, mask: Tensor | None, w_hh: Tensor, peep, ln, w_hr, km: KernelMasks) -> SimpleNamespace:
    """BPTT through the recurrence, the whole loop in one C call. Returns ``dA (T, B, 4H)``
    (grad wrt ``xp``), ``DH (T, B, R)`` (grad wrt each state ``Y[t]``), ``dHP (T, B, 4H)``
    (grad wrt ``W_hh h``, layer norm only), ``dh0, dc0`` and the norms' gain/shift grads."""
    T, B, G = f.A.shape
    H, R = G // 4, w_hh.shape[1]
    g = SimpleNamespace(dA=torch.empty_like(f.A), DH=f.A.new_empty(T, B, R), dc0=dc_n.contiguous().clone(),
                        dHP=torch.empty_like(f.A) if spec.layer_norm else None)
    threads = pointwise_threads(B, G)
    sums = f.A.new_zeros(threads, 3, G) if spec.layer_norm else None  # per thread, summed after
    m8 = byte_mask(mask)
    w_ci, w_cf, w_co = (ptr(w) for w in peep) if peep else (None,) * 3
    g_h, g_c = (ptr(ln[0]), ptr(ln[1])) if ln else (None, None)
    choice = native.gemm_choice(f.A.dtype, B, R, G)
    panels_hh_t = native.gemm_weight(w_hh.t(), choice)
    panels_hr_t = native.gemm_weight(w_hr.t(), choice) if spec.proj else None
    grad = dh_n.contiguous().clone()  # the C takes it from dh_T down to dh_0
    scratch, dm = f.A.new_empty(threads, 3 * H + G), f.A.new_empty(B, H)  # held: the C gets addresses
    hk = f.A.new_empty(B, H) if km.modes[0] else None  # zoned-out units' share of dh_{t-1}
    fns.backward(T, B, H, R, step_flags(spec), torch.get_num_threads(), threads, int(spec.reverse),
                 native.vendor_arg(f.A.dtype, choice), panels_hh_t.data_ptr(), ptr(panels_hr_t), dy.data_ptr(), ptr(m8), c0.data_ptr(),
                 f.A.data_ptr(), f.C.data_ptr(), f.U.data_ptr(), ptr(f.HP), f.stats.data_ptr(),
                 w_ci, w_cf, w_co, g_c, g_h, g.dA.data_ptr(), g.DH.data_ptr(), ptr(g.dHP), g.dc0.data_ptr(),
                 grad.data_ptr(), ptr(sums), scratch.data_ptr(), dm.data_ptr(), *_mask_args(km),
                 ptr(f.CN), ptr(hk))
    if mask is not None:  # the first step padded: h0 passed straight through it
        first = T - 1 if spec.reverse else 0
        grad.add_(torch.where(mask[first], 0.0, g.DH[first]))
    g.dh0 = grad
    g.d_ln = sums.sum(0) if spec.layer_norm else None
    return g


def _weight_grads(spec: LSTMSpec, f, g, h0: Tensor, c0: Tensor, rows: Tensor | None,
                  needs: dict[str, bool], km: KernelMasks) -> dict[str, Tensor | None]:
    """Parameter gradients as a few big GEMMs/reductions over all steps (see
    :func:`rnnkit.kernels.cpu_lstm._weight_grads`, here without the gate scale)."""
    T, B, G = f.A.shape
    out: dict[str, Tensor | None] = {}
    if needs["w_hh"]:
        d = km.drop_h  # W_hh saw h * drop_h
        out["w_hh"] = grad_weight_prev(g.dHP if spec.layer_norm else g.dA, f.Y if d is None else f.Y * d,
                                       h0 if d is None else h0 * d, spec.reverse)
    if spec.peephole:
        out |= peephole_grads(g.dA, f.C, c0, spec.reverse, needs)
        if f.CN is not None and needs["w_co"]:  # w_co saw the cell's own c', not the zoned c
            out["w_co"] = sum_tb(g.dA[..., 3 * (G // 4):] * f.CN)
    if spec.layer_norm:
        H = G // 4
        out |= {"ln_hh_w": g.d_ln[0], "ln_c_w": g.d_ln[1, :H], "ln_c_b": g.d_ln[2, :H]}
    if spec.proj and needs["w_hr"]:
        out["w_hr"] = grad_projection(g.DH, f.M, rows)
    return out


class NativeLSTMScan(torch.autograd.Function):
    """``(rebuild, spec, mask, xp, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr)
    -> (y (T, B, R), h_n (B, R), c_n (B, H))``; ``xp`` is the input projection with every
    additive bias folded in, absent parameters are None. ``rebuild``
    (:class:`~rnnkit.kernels.higher_order.Rebuild`) serves a backward that builds a graph
    (double backward): the reference's autograd instead of the C BPTT."""

    @staticmethod
    def forward(ctx, rebuild, spec: LSTMSpec, mask: Tensor | None, km: KernelMasks, xp: Tensor, h0: Tensor,
                c0: Tensor, w_hh: Tensor, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr):
        fns = steps_fns(xp.dtype)
        peep = (w_ci, w_cf, w_co) if spec.peephole else None
        ln = (ln_hh_w, ln_c_w, ln_c_b) if spec.layer_norm else None
        f = _forward(fns, spec, xp, h0.contiguous(), c0.contiguous(), mask, w_hh, peep, ln, w_hr, km)
        ctx.spec, ctx.rebuild, ctx.km = spec, rebuild, km
        if spec.store:  # the inputs themselves (not contiguous copies): the rebuild differentiates them
            ctx.save_for_backward(mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr,
                                  f.A, f.C, f.U, f.Y, f.M if spec.proj else None, f.HP, f.stats, f.CN,
                                  *rebuild.take_tensors())
        last = 0 if spec.reverse else xp.shape[0] - 1
        return masked_copy(f.Y, padded_rows(mask)), f.Y[last].clone(), f.C[last].clone()

    @staticmethod
    def backward(ctx, dy: Tensor, dh_n: Tensor, dc_n: Tensor):
        spec: LSTMSpec = ctx.spec
        assert spec.store, "forward kept no buffers: it ran without any input requiring grad"
        (mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr,
         A, C, U, Y, M, HP, stats, CN, *saved) = ctx.saved_tensors
        needs = dict(zip(_INPUTS, ctx.needs_input_grad[4:]))
        if torch.is_grad_enabled():  # create_graph: differentiate the reference instead
            inputs = (None, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr)
            grads = ctx.rebuild.grads(saved, inputs, list(needs.values()), mask, (dy, dh_n, dc_n))
            return (None, None, None, None, *grads)
        h0, c0 = h0.contiguous(), c0.contiguous()
        f = SimpleNamespace(A=A, C=C, U=U, Y=Y, M=M if spec.proj else Y, HP=HP, stats=stats, CN=CN)
        peep = (w_ci, w_cf, w_co) if spec.peephole else None
        ln = (ln_hh_w, ln_c_w, ln_c_b) if spec.layer_norm else None
        rows = padded_rows(mask)
        dy = masked_copy(dy, rows).contiguous()  # y = m * Y: the padded outputs' gradients go nowhere
        g = _backward(steps_fns(A.dtype), spec, f, dy, dh_n, dc_n, c0, mask, w_hh, peep, ln, w_hr, ctx.km)
        w = _weight_grads(spec, f, g, h0, c0, rows, needs, ctx.km)
        return (None, None, None, None, g.dA if needs["xp"] else None, g.dh0 if needs["h0"] else None,
                g.dc0 if needs["c0"] else None, *(w.get(n) for n in _INPUTS[3:]))


def lstm_scan(cell: LSTMCell, p: SimpleNamespace, x: Tensor, state: State,
              mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """Drop-in for :func:`rnnkit.nn.scan.scan` on a supported :class:`LSTMCell`:
    ``x (T, B, I)``, ``state = (h (B, R), c (B, H))``, ``mask (T, B, 1)``
    -> ``(y (T, B, R), (h_n, c_n))``."""
    km = kernel_masks(p, x.shape[1], cell.state_sizes(), x.device)
    return run_kernel(NativeLSTMScan, folded_projection, cell, p, x, state, mask, reverse, extra=(km,))
