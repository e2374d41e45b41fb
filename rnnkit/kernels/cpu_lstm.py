r"""Fused CPU kernel for the custom LSTMs: peephole and/or layer norm, with or without
projection (:class:`rnnkit.cells.LSTMCell`, gate order ``i, f, g, o``).

One :class:`torch.autograd.Function` runs the whole sequence; its backward is
hand-derived backpropagation through time, so no per-step autograd graph is built.

Forward, per step: one recurrent GEMM into a preallocated ``(B, 4H)`` slice (the
input projection of every step is one GEMM done before, by ``cell.project_input``,
with ``b_hh`` folded into its bias: it is additive in every variant), then ~9
in-place elementwise ops, sigmoids only (see :func:`_forward`), that leave the gate
activations in the same buffer.

Backward, notation: ``dm`` = gradient wrt ``m_t = o \odot u_t``, ``u = tanh(\hat c)``,
``\hat c = LN_c(c')`` (or ``c'``) (``m = h`` without a projection), ``c'`` = new cell
state, ``c`` = previous one. Everything local to a step is linear in the incoming
adjoints ``(dm, dc)``, with coefficients that depend on forward values only, so they
are computed for all steps at once before the loop (:func:`_coefficients`)::

    dA_o    = dm * K_o                       K_o = u o (1 - o)
    d\hat c = dm * K_n                       K_n = o (1 - u^2)
    dc'     = dc + dm * K_c                  K_c = K_n + K_o w_co          (no LN_c)
            = dc + LN_c^T(dm * K_n) + dm * K_o w_co                         (LN_c)
    [dA_i, dA_f, dA_g] = dc' * K_ifg         K_ifg = [g i(1-i), c f(1-f), i (1-g^2)]
    dc      = dc' * K_cc                     K_cc = f + K_i w_ci + K_f w_cf
    dh_{t-1} = dy_{t-1} + dA W_hh            (LN_h: LN_h^T(dA) W_hh)

The loop works on pre-activations with the ``g`` block doubled (:func:`gate_scale`),
so its ``dA_g`` is the above halved (folded into ``K_ifg``) and ``W_hh``'s gradient
rows are scaled back after it. With a mask, padded steps pass the state through, so
every coefficient above is multiplied by ``m`` and ``K_cc`` becomes ``m K_cc + (1 - m)``;
only the ``h`` carry needs one extra op per step (``+ (1 - m) dh``). Weight gradients
are then a few large GEMMs/reductions over all steps (:func:`_weight_grads`); the
layer norms' gains get theirs from the per-step norm backward (in cache there).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor

from ..cells.base import State
from ..cells.lstm import LSTMCell
from .cpu_common import (LN_EPS, ThreadSwitch, affine, fold_mask, fold_mask_carry, grad_projection,
                         grad_weight_prev, inputs_ok, masked_copy, padded_rows, peephole_grads, sigmoid_backward,
                         step_order, summed_bias, tanh_backward, with_prev)
from .higher_order import Rebuild
from .reference import scan, zero_padding

#: the OpOverload, not the packet: ~3 us less per call, twice per step
_ln_backward = torch.ops.aten.native_layer_norm_backward.default


@dataclass(frozen=True)
class LSTMSpec:
    """Static configuration of one kernel call."""
    peephole: bool
    layer_norm: bool
    proj: bool
    reverse: bool
    eps: float = LN_EPS
    #: whether a backward may follow (grad enabled, some input requires grad): without
    #: one, the native kernel keeps no per-step buffers (the torch-ops one always does)
    store: bool = True


def gate_scale(hidden_size: int, like: Tensor) -> Tensor:
    """``(4H,)``: 1 on ``i, f, o``, 2 on ``g``, since ``tanh(a) = 2 sigmoid(2a) - 1``.

    The kernel works on pre-activations ``a' = scale * a`` (the scale is folded into
    the input projection's parameters and into ``W_hh`` / ``LN_h``'s gain, so it costs
    no pass over the data); every gradient wrt ``a'`` is then ``dA / scale``.
    """
    scale = like.new_ones(4, hidden_size)
    scale[2] = 2.0
    return scale.view(-1)


@dataclass
class _Forward:
    r"""What the forward keeps for the backward (time-major; index = time step), in
    the scaled form the loop computes in (see :func:`_forward`):

    ``A (T, B, 4H)`` holds ``i, f, s_g, o`` with ``g = 2 s_g - 1``; ``C (T, B, H)`` holds
    ``-2 c``; ``S (T, B, H)`` holds ``s`` with ``u = tanh(\hat c) = 1 - 2 s``; ``Y (T, B, R)``
    the hidden states (= outputs where unmasked); with layer norm ``HP (T, B, 4H)`` =
    ``W_hh h`` and the norms' statistics ``stats_h``, ``stats_c`` (mean, rstd, each
    ``(T, B, 1)``, of ``HP`` and of ``-2c``); with projection ``M (T, B, H)`` = ``o u``.
    """
    A: Tensor
    C: Tensor
    S: Tensor
    Y: Tensor
    HP: Tensor | None = None
    M: Tensor | None = None
    stats_h: tuple[Tensor, Tensor] | None = None
    stats_c: tuple[Tensor, Tensor] | None = None

    def tensors(self) -> tuple:
        return (self.A, self.C, self.S, self.Y, self.HP, self.M,
                *(self.stats_h or (None, None)), *(self.stats_c or (None, None)))

    @classmethod
    def from_tensors(cls, A, C, S, Y, HP, M, mh, rh, mc, rc) -> "_Forward":
        return cls(A, C, S, Y, HP, M, None if mh is None else (mh, rh), None if mc is None else (mc, rc))


def _loop_weights(spec: LSTMSpec, H: int, w_hh: Tensor, peep: tuple[Tensor, ...] | None,
                  ln: tuple[Tensor, ...] | None, w_hr: Tensor | None, scale: Tensor) -> SimpleNamespace:
    r"""The weights as the forward loop uses them, prepared once per call (all tiny):
    ``W^T`` contiguous (the per-step GEMM is faster than on the transposed view), the
    gate scale folded into ``W_hh`` or ``LN_h``'s gain, and the factors of ``\tilde c = -2c``
    folded into the peepholes (``w c = (-w / 2) \tilde c``) and ``LN_c`` (see :func:`_forward`)."""
    w = SimpleNamespace(hr_t=w_hr.t().contiguous() if spec.proj else None)
    if spec.layer_norm:
        w.hh_t, w.ln_h = w_hh.t().contiguous(), ln[0] * scale
        w.ln_c, w.ln_c_b, w.eps_c = 2.0 * ln[1], -2.0 * ln[2], 4.0 * spec.eps
    else:
        w.hh_t = (w_hh * scale.unsqueeze(1)).t().contiguous()
    if spec.peephole:
        w.i_f, w.o = torch.stack(peep[:2]).unsqueeze(0) * -0.5, peep[2] * -0.5
    return w


def _forward_views(spec: LSTMSpec, f: "_Forward", xp: Tensor, mask: Tensor | None) -> SimpleNamespace:
    """Per-step views of every buffer the loop touches, as tuples indexed by time,
    made once in C++ (``unbind``) instead of ~10 Python view calls per step."""
    T, B, G = f.A.shape
    H = G // 4
    A4 = f.A.view(T, B, 4, H)
    v = SimpleNamespace(xp=xp.unbind(0), a=f.A.unbind(0), i_f=A4[:, :, :2].unbind(0),
                        c=f.C.unbind(0), c1=f.C.unsqueeze(2).unbind(0), s=f.S.unbind(0), y=f.Y.unbind(0),
                        hp=f.HP.unbind(0) if spec.layer_norm else None,
                        m=f.M.unbind(0) if spec.proj else None,
                        mask=mask.unbind(0) if mask is not None else None)
    v.i, v.f, v.g, v.o = (A4[:, :, k].unbind(0) for k in range(4))
    # without peepholes o does not wait for c': one sigmoid over all four gates
    v.act = f.A[..., :3 * H].unbind(0) if spec.peephole else v.a
    return v


def _forward(spec: LSTMSpec, xp: Tensor, h0: Tensor, c0: Tensor, mask: Tensor | None,
             w_hh: Tensor, peep: tuple[Tensor, ...] | None, ln: tuple[Tensor, ...] | None,
             w_hr: Tensor | None) -> _Forward:
    r"""The recurrence over ``xp (T, B, 4H)``: the scaled input projection plus all
    additive biases (``a'`` of :func:`gate_scale` without the recurrent term).

    ``tanh`` costs ~3x ``sigmoid`` in ATen on CPU, so the loop uses sigmoids only:
    the doubled ``g`` pre-activations make one sigmoid cover ``i, f, g``, and the cell
    state is carried as ``\tilde c = -2c``, so ``tanh(c) = 1 - 2 sigmoid(\tilde c)`` and
    ``h = o - 2 o sigmoid(\tilde c)`` is one op (``LN(c) = -LN_{4 eps}(\tilde c)`` for the
    normalised cell). All scales are powers of two: no rounding beyond sigmoid's.
    Per step: the GEMM on the caller's threads, ~9 elementwise ops on one (see
    :class:`~rnnkit.kernels.cpu_common.ThreadSwitch`).
    """
    T, B, G = xp.shape
    H = G // 4
    f = _Forward(A=torch.empty_like(xp), C=xp.new_empty(T, B, H), S=xp.new_empty(T, B, H),
                 Y=xp.new_empty(T, B, w_hh.shape[1]),
                 HP=xp.new_empty(T, B, G) if spec.layer_norm else None,
                 M=xp.new_empty(T, B, H) if spec.proj else None)
    w, v = _loop_weights(spec, H, w_hh, peep, ln, w_hr, gate_scale(H, xp)), _forward_views(spec, f, xp, mask)
    stats_h, stats_c = [], []
    h, c = h0, c0 * -2.0
    c1 = c.unsqueeze(1)
    with ThreadSwitch() as threads:
        for t in step_order(T, spec.reverse):
            threads.gemm()
            if spec.layer_norm:
                hp = torch.mm(h, w.hh_t, out=v.hp[t])
                threads.pointwise()
                hn, mean, rstd = torch.native_layer_norm(hp, (G,), w.ln_h, None, spec.eps)
                torch.add(v.xp[t], hn, out=v.a[t])
                stats_h.append((mean, rstd))
            else:
                torch.addmm(v.xp[t], h, w.hh_t, out=v.a[t])
                threads.pointwise()
            if spec.peephole:
                v.i_f[t].addcmul_(w.i_f, c1)
            v.act[t].sigmoid_()
            i, o = v.i[t], v.o[t]
            # \tilde c' = f \tilde c - 2 i g = f \tilde c - 4 i s_g + 2 i
            c_new = torch.mul(v.f[t], c, out=v.c[t]).addcmul_(i, v.g[t], value=-4.0).add_(i, alpha=2.0)
            if spec.peephole:
                o.addcmul_(w.o, c_new).sigmoid_()
            if spec.layer_norm:  # sigmoid(-2 LN_c(c)) = sigmoid(2 g_c LN_{4eps}(\tilde c) - 2 b_c)
                z, mean, rstd = torch.native_layer_norm(c_new, (H,), w.ln_c, w.ln_c_b, w.eps_c)
                s = torch.sigmoid(z, out=v.s[t])
                stats_c.append((mean, rstd))
            else:
                s = torch.sigmoid(c_new, out=v.s[t])
            if spec.proj:
                m = torch.addcmul(o, o, s, value=-2.0, out=v.m[t])
                threads.gemm()
                torch.mm(m, w.hr_t, out=v.y[t])
                threads.pointwise()
            else:
                torch.addcmul(o, o, s, value=-2.0, out=v.y[t])  # o tanh(c) = o - 2 o s
            if v.mask is not None:  # padded steps keep the state (outputs are zeroed later, in bulk)
                torch.where(v.mask[t], v.y[t], h, out=v.y[t])
                torch.where(v.mask[t], c_new, c, out=c_new)
            h, c, c1 = v.y[t], c_new, v.c1[t]
    if spec.layer_norm:
        f.stats_h, f.stats_c = _stack_stats(stats_h, spec.reverse), _stack_stats(stats_c, spec.reverse)
    return f


def _stack_stats(stats: list[tuple[Tensor, Tensor]], reverse: bool) -> tuple[Tensor, Tensor]:
    """Per-step ``(mean, rstd)`` in processing order -> two ``(T, B, 1)`` in time order."""
    stats = stats[::-1] if reverse else stats
    return torch.stack([m for m, _ in stats]), torch.stack([r for _, r in stats])


def _coefficients(spec: LSTMSpec, f: _Forward, c0: Tensor, rows: Tensor | None,
                  peep: tuple[Tensor, ...] | None) -> SimpleNamespace:
    """The per-step Jacobian diagonals of the module docstring for all steps at once,
    mask folded in, ``K_ifg``'s ``g`` slot divided by the gate scale (the loop then
    yields gradients wrt the scaled pre-activations). Shapes ``(T, B, H)``, ``K_ifg
    (T, B, 3, H)``; also the true cell states ``c``."""
    T, B, G = f.A.shape
    H = G // 4
    i, fg, sg, o = f.A.view(T, B, 4, H).unbind(2)
    g, c, u = affine(sg, 2.0, -1.0), f.C * -0.5, affine(f.S, -2.0, 1.0)
    K = SimpleNamespace(o=sigmoid_backward(u, o), n=tanh_backward(o, u), c=None, ow=None, c_true=c)
    K.ifg = f.A.new_empty(T, B, 3, H)
    sigmoid_backward.grad_input(g, i, grad_input=K.ifg[:, :, 0])
    with_prev(lambda cp, fg_, out: sigmoid_backward.grad_input(cp, fg_, grad_input=out),
              K.ifg[:, :, 1], c, c0, fg, reverse=spec.reverse)
    tanh_backward.grad_input(i, g, grad_input=K.ifg[:, :, 2]).mul_(0.5)  # / gate scale
    if spec.peephole:
        w_ci, w_cf, w_co = peep
        K.cc = torch.addcmul(fg, K.ifg[:, :, 0], w_ci).addcmul_(K.ifg[:, :, 1], w_cf)
    else:
        K.cc = fg if rows is None else fg.clone()  # f itself unless the mask must be folded in
    fold_mask(K.o, rows)
    if spec.layer_norm:
        fold_mask(K.n, rows)
        K.ow = K.o * peep[2] if spec.peephole else None
    else:  # without LN_c, d\hat c feeds dc' directly: fold it into one coefficient
        K.c = fold_mask(K.n.addcmul_(K.o, peep[2]) if spec.peephole else K.n, rows)
    fold_mask(K.ifg, rows)
    fold_mask_carry(K.cc, rows)
    return K


def _backward_views(spec: LSTMSpec, f: _Forward, K: SimpleNamespace, dA: Tensor, DH: Tensor,
                    dy: Tensor, mask: Tensor | None) -> SimpleNamespace:
    r"""Per-step views (tuples indexed by time, made once in C++) of what the backward
    loop reads and writes; with layer norm, the norms' per-step statistics in the
    unscaled domain (``c = -\tilde c / 2``: mean times -1/2, rstd times 2)."""
    T, B, G = dA.shape
    dA4 = dA.view(T, B, 4, G // 4)
    v = SimpleNamespace(da=dA.unbind(0), da_o=dA4[:, :, 3].unbind(0), da_ifg=dA4[:, :, :3].unbind(0),
                        dh=DH.unbind(0), dy=dy.unbind(0), k_o=K.o.unbind(0), k_ifg=K.ifg.unbind(0),
                        k_cc=K.cc.unbind(0), k_c=K.c.unbind(0) if K.c is not None else None,
                        not_m=(~mask).to(dy.dtype).unbind(0) if mask is not None else None)
    if spec.layer_norm:
        v.k_n, v.c = K.n.unbind(0), K.c_true.unbind(0)
        v.k_ow = K.ow.unbind(0) if K.ow is not None else None
        v.hp, v.mu_h, v.rs_h = f.HP.unbind(0), f.stats_h[0].unbind(0), f.stats_h[1].unbind(0)
        v.mu_c, v.rs_c = (f.stats_c[0] * -0.5).unbind(0), (f.stats_c[1] * 2.0).unbind(0)
    return v


def _backward_loop(spec: LSTMSpec, f: _Forward, K: SimpleNamespace, dy: Tensor, dh_n: Tensor,
                   dc_n: Tensor, mask: Tensor | None, w_hh: Tensor, w_hr: Tensor | None,
                   ln: tuple[Tensor, ...] | None, needs: dict[str, bool]) -> SimpleNamespace:
    """BPTT through the recurrence, in the scaled pre-activations (``w_hh`` and ``ln``
    are the scaled ones the forward used). Returns ``dA (T, B, 4H)`` (= grad wrt ``xp``),
    ``dHP (T, B, 4H)`` (grad wrt ``W_hh h``; layer norm only), ``DH (T, B, R)`` (grad wrt
    each state ``Y[t]``), ``dh0, dc0`` and, with layer norm, the norms' gain/shift grads
    (from the per-step norm backward, where its inputs are in cache)."""
    T, B, G = f.A.shape
    H = G // 4
    dA, DH = torch.empty_like(f.A), torch.empty_like(f.Y)
    v = _backward_views(spec, f, K, dA, DH, dy, mask)
    if spec.layer_norm:
        mask_h, mask_c = [True, needs["ln_hh_w"], False], [True, needs["ln_c_w"], needs["ln_c_b"]]
    dhp_steps, d_ln = [None] * T, {"ln_hh_w": [], "ln_c_w": [], "ln_c_b": []}
    order = step_order(T, spec.reverse)[::-1]
    torch.add(v.dy[order[0]], dh_n, out=v.dh[order[0]])
    dc, dh0 = dc_n, None
    with ThreadSwitch() as threads:
        for k, t in enumerate(order):
            dh = v.dh[t]
            if spec.proj:
                threads.gemm()
                dm = torch.mm(dh, w_hr)
            else:
                dm = dh
            threads.pointwise()
            torch.mul(dm, v.k_o[t], out=v.da_o[t])
            if spec.layer_norm:
                dc_new, dgc, dbc = _ln_backward(dm * v.k_n[t], v.c[t], (H,), v.mu_c[t], v.rs_c[t],
                                                ln[1], ln[2], mask_c)
                dc_new.add_(dc)
                if v.k_ow is not None:
                    dc_new.addcmul_(dm, v.k_ow[t])
                d_ln["ln_c_w"].append(dgc)
                d_ln["ln_c_b"].append(dbc)
            else:
                dc_new = torch.addcmul(dc, dm, v.k_c[t])
            torch.mul(dc_new.unsqueeze(1), v.k_ifg[t], out=v.da_ifg[t])
            dc = dc_new.mul_(v.k_cc[t])
            src = v.da[t]
            if spec.layer_norm:  # a = xp + LN_h(W_hh h): back through the norm first
                src, dgh, _ = _ln_backward(src, v.hp[t], (G,), v.mu_h[t], v.rs_h[t], ln[0], None, mask_h)
                dhp_steps[t] = src
                d_ln["ln_hh_w"].append(dgh)
            threads.gemm()
            if k + 1 < T:
                dh_prev = torch.addmm(v.dy[order[k + 1]], src, w_hh, out=v.dh[order[k + 1]])
            else:
                dh_prev = dh0 = torch.mm(src, w_hh)
            if v.not_m is not None:  # padded step: its state was the previous one (dh: a finite gradient)
                dh_prev.addcmul_(dh, v.not_m[t])
    g = SimpleNamespace(dA=dA, DH=DH, dh0=dh0, dc0=dc, dHP=None, d_ln={})
    if spec.layer_norm:
        g.dHP = torch.stack(dhp_steps)
        g.d_ln = {name: torch.stack(grads).sum(0) for name, grads in d_ln.items() if grads[0] is not None}
    return g


def _weight_grads(spec: LSTMSpec, f: _Forward, K: SimpleNamespace, g: SimpleNamespace, h0: Tensor,
                  c0: Tensor, rows: Tensor | None, scale: Tensor,
                  needs: dict[str, bool]) -> dict[str, Tensor | None]:
    """Parameter gradients as a few big GEMMs/reductions over all steps:
    ``dW_hh = sum_t dHP_t^T h_{t-1}`` (``dA`` for ``dHP`` without LN_h), ``dw_ci = sum
    dA_i c_{t-1}``, ``dw_cf = sum dA_f c_{t-1}``, ``dw_co = sum dA_o c_t``,
    ``dW_hr = sum_t (m_t DH_t)^T M_t``; each gradient wrt a scaled weight times the scale."""
    T, B, G = f.A.shape
    out: dict[str, Tensor | None] = {}
    if needs["w_hh"]:
        dw = grad_weight_prev(g.dHP if spec.layer_norm else g.dA, f.Y, h0, spec.reverse)
        out["w_hh"] = dw if spec.layer_norm else dw.mul_(scale.unsqueeze(1))
    if spec.peephole:  # the i, f, o slots of dA are unscaled
        out |= peephole_grads(g.dA, K.c_true, c0, spec.reverse, needs)
    if spec.layer_norm:
        out |= g.d_ln
        if "ln_hh_w" in out:
            out["ln_hh_w"] = out["ln_hh_w"] * scale
    if spec.proj and needs["w_hr"]:
        out["w_hr"] = grad_projection(g.DH, f.M, rows)
    return out


_INPUTS = ("xp", "h0", "c0", "w_hh", "w_ci", "w_cf", "w_co", "ln_hh_w", "ln_c_w", "ln_c_b", "w_hr")


class LSTMScan(torch.autograd.Function):
    """``(rebuild, spec, mask, xp, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr)
    -> (y (T, B, R), h_n (B, R), c_n (B, H))``; ``xp`` is the *scaled* input projection
    (:func:`gate_scale`), the weights are the cell's own; absent parameters are None.
    ``rebuild`` (:class:`~rnnkit.kernels.higher_order.Rebuild`) serves a backward that
    builds a graph (double backward): the reference's autograd instead of the hand-written BPTT."""

    @staticmethod
    def forward(ctx, rebuild: Rebuild, spec: LSTMSpec, mask: Tensor | None, xp: Tensor, h0: Tensor, c0: Tensor,
                w_hh: Tensor, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr):
        peep = (w_ci, w_cf, w_co) if spec.peephole else None
        ln = (ln_hh_w, ln_c_w, ln_c_b) if spec.layer_norm else None
        f = _forward(spec, xp, h0, c0, mask, w_hh, peep, ln, w_hr)
        last = 0 if spec.reverse else xp.shape[0] - 1
        ctx.spec, ctx.rebuild = spec, rebuild
        ctx.save_for_backward(mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr,
                              *f.tensors(), *rebuild.take_tensors())
        return masked_copy(f.Y, padded_rows(mask)), f.Y[last].clone(), f.C[last] * -0.5

    @staticmethod
    def backward(ctx, dy: Tensor, dh_n: Tensor, dc_n: Tensor):
        spec: LSTMSpec = ctx.spec
        mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, *saved = ctx.saved_tensors
        needs = dict(zip(_INPUTS, ctx.needs_input_grad[3:]))
        if torch.is_grad_enabled():  # create_graph: differentiate the reference instead
            inputs = (None, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr)
            grads = ctx.rebuild.grads(saved[10:], inputs, list(needs.values()), mask, (dy, dh_n, dc_n))
            return (None, None, None, *grads)
        f = _Forward.from_tensors(*saved[:10])
        peep = (w_ci, w_cf, w_co) if spec.peephole else None
        scale = gate_scale(f.C.shape[-1], f.A)
        rows = padded_rows(mask)
        dy = masked_copy(dy, rows)  # y = m * Y: the padded outputs' gradients go nowhere
        K = _coefficients(spec, f, c0, rows, peep)
        if spec.layer_norm:  # W_hh unscaled, LN_h's gain scaled (as in the forward)
            w_fwd, ln = w_hh, (ln_hh_w * scale, ln_c_w, ln_c_b)
        else:
            w_fwd, ln = w_hh * scale.unsqueeze(1), None
        g = _backward_loop(spec, f, K, dy, dh_n, dc_n, mask, w_fwd, w_hr, ln, needs)
        w = _weight_grads(spec, f, K, g, h0, c0, rows, scale, needs)
        return (None, None, None, g.dA if needs["xp"] else None, g.dh0 if needs["h0"] else None,
                g.dc0 if needs["c0"] else None, *(w.get(n) for n in _INPUTS[3:]))


def supports(cell: LSTMCell) -> bool:
    """The LSTM configurations this kernel computes (plain LSTM is torch.nn's job)."""
    return type(cell) is LSTMCell and (cell.peephole or cell.layer_norm)


def scaled_projection(cell: LSTMCell, p: SimpleNamespace, x: Tensor) -> Tensor:
    """``cell.project_input`` with ``b_hh`` folded into ``b_ih`` and the ``g`` rows scaled
    (:func:`gate_scale`), through the cell's own code so autograd differentiates it:
    the scale goes on ``W_ih`` (or on the input norm's gain, after which nothing is
    scale-invariant) and on the bias; both are ``(4H, *)``-sized ops, not passes over
    ``(T, B, 4H)``."""
    scale = gate_scale(cell.hidden_size, x)
    q = SimpleNamespace(**vars(p))
    if cell.layer_norm:
        q.ln_ih_weight = p.ln_ih_weight * scale
    else:
        q.weight_ih = p.weight_ih * scale.unsqueeze(1)
    bias = summed_bias(p)
    q.bias_ih = None if bias is None else bias * scale
    return cell.project_input(x, q)


#: the cell's parameters in the kernels' argument order (absent ones -> None)
PARAMETERS = ("weight_hh", "weight_ci", "weight_cf", "weight_co", "ln_hh_weight", "ln_c_weight", "ln_c_bias",
              "weight_hr")


def run_kernel(function, projection, cell: LSTMCell, p: SimpleNamespace, x: Tensor, state: State,
               mask: Tensor | None, reverse: bool, scale: Tensor | None = None,
               extra: tuple = ()) -> tuple[Tensor, State]:
    """Shared body of the LSTM kernels' ``lstm_scan``: the reference scan for tensors the
    kernel does not take, else ``function.apply(rebuild, spec, mask, *extra, projection(cell, p, x),
    h0, c0, *parameters)`` with the padded steps of ``x`` zeroed first; ``scale``: the
    projection's (:class:`~rnnkit.kernels.higher_order.Rebuild`)."""
    h0, c0 = state
    if not inputs_ok(cell, x, state, mask):
        return scan(cell, p, x, state, mask, reverse)
    x = zero_padding(x, mask)  # before the projection: nothing a padded step holds gets in
    params = [getattr(p, name, None) for name in PARAMETERS]
    params = [None if w is None else w.contiguous() for w in params]
    xp = projection(cell, p, x).contiguous()
    store = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (xp, h0, c0, *params))
    spec = LSTMSpec(peephole=cell.peephole, layer_norm=cell.layer_norm, proj=cell.proj_size > 0,
                    reverse=reverse, store=store)
    rebuild = Rebuild(cell, p, x, projection, PARAMETERS, reverse, scale)
    y, h, c = function.apply(rebuild, spec, mask, *extra, xp, h0, c0, *params)
    return y, (h, c)


def lstm_scan(cell: LSTMCell, p: SimpleNamespace, x: Tensor, state: State,
              mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """Drop-in for :func:`rnnkit.nn.scan.scan` on a supported :class:`LSTMCell`:
    ``x (T, B, I)``, ``state = (h (B, R), c (B, H))``, ``mask (T, B, 1)``
    -> ``(y (T, B, R), (h_n, c_n))``."""
    return run_kernel(LSTMScan, scaled_projection, cell, p, x, state, mask, reverse,
                      scale=gate_scale(cell.hidden_size, x))
