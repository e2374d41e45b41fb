r"""Fused CPU LSTM in compiled C: peephole and/or layer norm, with or without
projection (:class:`rnnkit.cells.LSTMCell`, gate order ``i, f, g, o``), and any
``LSTMCell`` without projection with recurrent dropout or zoneout in its time loop.

One :class:`torch.autograd.Function` runs the whole sequence: the input projection for
all steps as one GEMM by torch before it (without bias: the loop adds the biases, and a
layer-norm cell's input norm runs there too, row by row, forward and backward), then the time loop in C
(:mod:`rnnkit.kernels.cpu.native`; equations in ``native/lstm_step.h``): one call runs
every step's recurrent GEMM (rnnkit's packed GEMM, ``native/gemm.h``, or the vendor
BLAS) and pointwise work, layer norms included, forward; another the whole hand-derived
BPTT. No Python, no torch dispatch per step. The weight gradients are a few big GEMMs
by torch after it (:mod:`rnnkit.kernels.grads`). The backward writes its gate gradients over
the forward's gate buffers, and without layer norm the forward its gates over the projection.
When no backward can follow (no_grad, nothing requiring grad) the forward runs outside the
Function, keeps one step's buffers, not ``T``, and makes a large projection a chunk of steps
at a time.

In a graph (``torch.compile``, ``torch.export``) the same C loops run as the custom ops
``rnnkit::lstm_scan`` and ``rnnkit::lstm_scan_backward`` (:func:`lstm_scan_graph`);
``run`` picks the form.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch
from torch import Tensor

from ...cells.base import Params, RecurrentCell, State, layer_norm, linear
from ...cells.lstm import LSTMCell
from ..grads import grad_weight_prev
from ..higher_order import Rebuild
from ..reference import zero_padding
from ..registry import Kernel, Sample, Verdict, register
from ..specs import LN_EPS, LSTM_PARAMETERS, LSTMSpec, lstm_supported, summed_bias
from ..step_masks import SELECT, KernelMasks, has_masks, kernel_masks
from . import native
from .common import (available, backward_follows, byte_mask, eager_or_graph, empty_output, grad_projection,
                     masked_copy, match_cpu, no_masks, padded_rows, pointwise_threads, present, projected_chunks, ptr,
                     ROWS, row_blocks, states_output)

#: the Function's tensor inputs, in its argument order after the masks: ``xp`` is the raw
#: input projection ``W_ih x`` and ``shift`` the summed biases ``b_ih + b_hh``, which the C
#: loop adds as it reads each row (with layer norm after normalising it with gain ``ln_x_w``)
_LSTM_PARAMS = ("w_hh", "w_ci", "w_cf", "w_co", "ln_hh_w", "ln_c_w", "ln_c_b", "w_hr", "ln_x_w", "shift")  # the ops'
_INPUTS = ("xp", "h0", "c0", *_LSTM_PARAMS)
#: the cell's names for the inputs after the states, as the rebuild (double backward) maps them
_REBUILD_NAMES = (*LSTM_PARAMETERS, "ln_ih_weight", "input_shift")

# the flags of native/steps.c
PEEPHOLE, LAYER_NORM, CARRY_H, RECOMPUTE = 1, 2, 4, 8  # and common.ROWS


def _work(H: int) -> int:
    """The C backward's scratch values per pointwise thread (lstm_step.h's WORK)."""
    return 4 * H + 3 * 4 * H


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
             w_hh: Tensor, peep, ln, w_hr, km: KernelMasks, shift: Tensor | None,
             Y: Tensor | None = None, in_place: bool = False, packed: tuple | None = None) -> SimpleNamespace:
    """The recurrence over ``xp (T, B, 4H)`` (the raw input projection ``W_ih x``; the loop
    adds ``shift``, the summed biases, and with layer norm first normalises it with gain
    ``ln[3]``), the whole time loop in one C call. Returns ``Y (T, B, R)`` states and
    ``C (T, B, H)`` cells and, with ``spec.store`` (a backward will follow), what it
    needs: ``A (T, B, 4H)`` gate activations, ``U (T, B, H)`` ``tanh`` of the
    (normalised) cell, ``M`` (projection input; ``Y`` without projection), with layer
    norm ``HP (T, B, 4H)`` = ``W_hh h`` and the three norms' statistics ``(6, T, B)``.
    Without ``store`` those buffers hold one step, reused, and ``C`` two (step ``t`` at
    ``t % 2``). ``km``: recurrent dropout and
    zoneout (then ``CN`` keeps the cell's own ``c'`` before zoneout, for the backward). ``Y``:
    where to write the states (contiguous ``(T, B, R)``), else a new tensor. ``in_place``
    (``xp`` is the caller's own, read by nothing else): without layer norm a stored ``A`` is
    written over ``xp``, each row just after it is read (B32 T100 H128 peephole forward and
    backward 0.93-0.95x -> 0.87-0.90x torch.nn.LSTM, B256 0.95-0.97x -> 0.83-0.84x); with layer
    norm ``A`` and ``U`` hold one step and the backward recomputes them from ``xp`` and ``HP``
    (``f.recompute``: it then writes its gradient over ``xp``). ``packed``:
    :func:`pack_weights`' result, when the caller runs several calls on the same weights."""
    T, B, G = xp.shape
    H, R = G // 4, w_hh.shape[1]
    n = T if spec.store else 1
    # C: every step's cell when stored, else the last two (the C alternates: step t at t & 1)
    over_xp = in_place and spec.store and not spec.layer_norm  # A written over xp (layer norm reads xp later)
    # layer norm keeps xp and W_hh h for its norms' backward, and the gates follow from them:
    # recomputing them there beat keeping a third (T, B, 4H) array (and U)
    recompute = in_place and spec.store and spec.layer_norm
    kept = 1 if recompute else n
    f = SimpleNamespace(Y=xp.new_empty(T, B, R) if Y is None else Y, C=xp.new_empty(T if spec.store else 2, B, H),
                        A=xp if over_xp else xp.new_empty(kept, B, G), recompute=recompute,
                        U=xp.new_empty(kept, B, H), M=xp.new_empty(n, B, H) if spec.proj else None,
                        HP=xp.new_empty(T, B, G) if spec.layer_norm and spec.store else None,
                        stats=xp.new_empty(6, n, B),  # mean, rstd of h, c, x
                        CN=xp.new_empty(n, B, H) if km.modes[1] else None)
    hd = xp.new_empty(B, R) if km.drop_h is not None else None  # one step's h * drop_h
    m8 = byte_mask(mask)
    flags = (step_flags(spec) | (CARRY_H if mask is not None and not spec.proj else 0) | RECOMPUTE * recompute
             | ROWS * (row_blocks(B, _weight_bytes(w_hh, w_hr)) > 1))
    choice, panels_hh, panels_hr = packed or pack_weights(w_hh, w_hr, B, T)
    w_ci, w_cf, w_co = (ptr(w) for w in peep) if peep else (None,) * 3
    g_h, g_c, b_c, g_x = (ptr(w) for w in ln) if ln else (None,) * 4
    shift = shift if shift is not None else xp.new_zeros(G)  # held: the C gets its address
    rec = xp.new_empty(B, G)  # one step's GEMM output (held here: the C only gets its address)
    fns.forward(T, B, 0, B, H, R, flags, torch.get_num_threads(), pointwise_threads(B, G), int(spec.reverse),
                int(spec.store), spec.eps, native.vendor_arg(xp.dtype, choice), xp.data_ptr(), panels_hh.data_ptr(), ptr(panels_hr), h0.data_ptr(),
                c0.data_ptr(), g_x, shift.data_ptr(), g_h, w_ci, w_cf, w_co, g_c, b_c, ptr(m8), f.Y.data_ptr(), f.C.data_ptr(),
                f.A.data_ptr(), f.U.data_ptr(), ptr(f.M), ptr(f.HP), f.stats.data_ptr(), rec.data_ptr(),
                *_mask_args(km, ptr(hd)), ptr(f.CN))
    if not spec.proj:
        f.M = f.Y
    return f


def _weight_bytes(*weights: Tensor | None) -> int:
    """What the per-step GEMMs read at every step: the recurrent weights' bytes."""
    return sum(w.numel() * w.element_size() for w in weights if w is not None)


def pack_weights(w_hh: Tensor, w_hr: Tensor | None, B: int, T: int) -> tuple[str, Tensor, Tensor | None]:
    """``(choice, W_hh, W_hr)`` as the per-step GEMMs take them (``native.gemm_weight``), for
    ``T`` steps of ``B`` rows: the GEMM by the main product's shape (the backward passes the
    transposes)."""
    choice = native.gemm_choice(w_hh.dtype, B, w_hh.shape[0], w_hh.shape[1], steps=T)
    return (choice, native.gemm_weight(w_hh, choice, B),
            None if w_hr is None else native.gemm_weight(w_hr, choice, B))


def _mask_args(km: KernelMasks, *scratch) -> tuple:
    """The C loops' recurrent-dropout and zoneout arguments: ``drop, *scratch, zh, zc, kh, kc,
    zh_rate, zc_rate`` (``kh, kc``: the training keep masks as bytes; the rates: evaluation's;
    ``scratch``: the forward's one-step ``h * drop`` buffer)."""
    keep = [ptr(k) if m == SELECT else None for k, m in zip(km.keep, km.modes)]
    return (ptr(km.drop_h), *scratch, km.modes[0], km.modes[1], *keep, *km.rates)


def _backward(fns, spec: LSTMSpec, f: SimpleNamespace, dy: Tensor, dh_n: Tensor, dc_n: Tensor,
              c0: Tensor, xp: Tensor | None, mask: Tensor | None, w_hh: Tensor, peep, ln, w_hr,
              km: KernelMasks, shift: Tensor | None = None, in_place: bool = False) -> SimpleNamespace:
    """BPTT through the recurrence, the whole loop in one C call. Returns ``dA (T, B, 4H)``
    (grad wrt ``xp``; with layer norm the raw projection, which it then reads), ``DH (T, B,
    R)`` (grad wrt each state ``Y[t]``; None without projection or mask: nothing reads it), ``dHP (T, B, 4H)`` (grad wrt ``W_hh h``, layer norm
    only), ``dh0, dc0`` and ``sums`` (5, 4H): the layer norms', peepholes' and shift's
    gradients (lstm_step.h's layout). ``in_place``: ``dA`` and ``dHP`` are written over
    ``f.A`` (``xp`` with ``f.recompute``) and ``f.HP`` (each row of a step is read just before
    its gradient is written), which then hold gradients, not the forward's values. ``shift``:
    the summed biases, which recomputing the gates reads."""
    T, B, H = f.C.shape
    G, R = 4 * H, w_hh.shape[1]
    recompute = getattr(f, "recompute", False)
    dA = (xp if recompute else f.A) if in_place else f.A.new_empty(T, B, G)
    # DH: read only for the projection's gradient and padded steps' carries (else one row's in C)
    g = SimpleNamespace(dA=dA, DH=f.A.new_empty(T, B, R) if spec.proj or mask is not None else None,
                        dc0=dc_n.contiguous().clone(),
                        dHP=(f.HP if in_place else torch.empty_like(f.A)) if spec.layer_norm else None)
    blocks = row_blocks(B, _weight_bytes(w_hh, w_hr))
    threads = blocks if blocks > 1 else pointwise_threads(B, G)
    # per thread the layer norms', peepholes' and shift's gradients (lstm_step.h), summed after
    sums = f.A.new_zeros(threads, 5, G)
    m8 = byte_mask(mask)
    w_ci, w_cf, w_co = (ptr(w) for w in peep) if peep else (None,) * 3
    g_h, g_c, b_c, g_x = (ptr(w) for w in ln) if ln else (None,) * 4
    if recompute and shift is None:
        shift = f.A.new_zeros(G)  # held: the C gets its address
    choice, panels_hh_t, panels_hr_t = pack_weights(w_hh.t(), w_hr.t() if spec.proj else None, B, T)
    grad = dh_n.contiguous().clone()  # the C takes it from dh_T down to dh_0
    scratch, dm = f.A.new_empty(threads, _work(H)), f.A.new_empty(B, H)  # held: the C gets addresses
    hk = f.A.new_empty(B, H) if km.modes[0] else None  # zoned-out units' share of dh_{t-1}
    fns.backward(T, B, 0, B, H, R, step_flags(spec) | RECOMPUTE * recompute | ROWS * (blocks > 1), torch.get_num_threads(), threads,
                 int(spec.reverse), native.vendor_arg(f.A.dtype, choice), panels_hh_t.data_ptr(), ptr(panels_hr_t),
                 dy.data_ptr(), ptr(m8), c0.data_ptr(), ptr(xp), g_x, ptr(shift), b_c, f.A.data_ptr(), f.C.data_ptr(), f.U.data_ptr(), ptr(f.HP), f.stats.data_ptr(),
                 w_ci, w_cf, w_co, g_c, g_h, g.dA.data_ptr(), ptr(g.DH), ptr(g.dHP), g.dc0.data_ptr(),
                 grad.data_ptr(), ptr(sums), scratch.data_ptr(), dm.data_ptr(), *_mask_args(km),
                 ptr(f.CN), ptr(hk))
    if mask is not None:  # the first step padded: h0 passed straight through it
        first = T - 1 if spec.reverse else 0
        grad.add_(torch.where(mask[first], 0.0, g.DH[first]))
    g.dh0 = grad
    g.sums = sums.sum(0)
    return g


def _weight_grads(spec: LSTMSpec, f, g, h0: Tensor, rows: Tensor | None,
                  needs: dict[str, bool], km: KernelMasks) -> dict[str, Tensor | None]:
    """Parameter gradients as a few big GEMMs/reductions over all steps
    (:mod:`rnnkit.kernels.grads`); the layer norms' and peepholes' from the sums the C
    backward kept."""
    G = g.dA.shape[2]
    out: dict[str, Tensor | None] = {}
    if needs["w_hh"]:
        d = km.drop_h  # W_hh saw h * drop_h
        out["w_hh"] = grad_weight_prev(g.dHP if spec.layer_norm else g.dA, f.Y if d is None else f.Y * d,
                                       h0 if d is None else h0 * d, spec.reverse)
    H = G // 4
    if spec.peephole:  # summed by the C backward (lstm_step.h)
        out |= {name: g.sums[1, k * H:(k + 1) * H] if needs[name] else None
                for k, name in enumerate(("w_ci", "w_cf", "w_co"), 1)}
    if spec.layer_norm:
        out |= {"ln_hh_w": g.sums[0], "ln_c_w": g.sums[1, :H], "ln_c_b": g.sums[2, :H], "ln_x_w": g.sums[3]}
    out["shift"] = g.sums[4] if needs["shift"] else None
    if spec.proj and needs["w_hr"]:
        out["w_hr"] = grad_projection(g.DH, f.M, rows)
    return out


class NativeLSTMScan(torch.autograd.Function):
    """``(rebuild, spec, mask, xp, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr,
    ln_x_w, shift) -> (y (T, B, R), h_n (B, R), c_n (B, H))``; ``xp`` is the raw input projection
    ``W_ih x`` (:func:`kernel_projection`), ``shift`` the summed biases the loop adds to it;
    absent parameters are None. Applied only when a backward can follow (``spec.store``; else
    :func:`_forward_in_chunks` runs). ``rebuild``
    (:class:`~rnnkit.kernels.higher_order.Rebuild`) serves a backward that builds a graph
    (double backward): the reference's autograd instead of the C BPTT."""

    @staticmethod
    def forward(ctx, rebuild, spec: LSTMSpec, mask: Tensor | None, km: KernelMasks, xp: Tensor, h0: Tensor,
                c0: Tensor, w_hh: Tensor, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift):
        fns = steps_fns(xp.dtype)
        peep = (w_ci, w_cf, w_co) if spec.peephole else None
        ln = (ln_hh_w, ln_c_w, ln_c_b, ln_x_w) if spec.layer_norm else None
        # xp is the projection lstm_scan made for this call alone: A may be written over it
        f = _forward(fns, spec, xp, h0.contiguous(), c0.contiguous(), mask, w_hh, peep, ln, w_hr, km, shift,
                     in_place=True)
        ctx.spec, ctx.rebuild, ctx.km, ctx.recompute = spec, rebuild, km, f.recompute
        ctx.consumed = False  # whether a backward has written its gradients over A and HP
        # the inputs themselves (not contiguous copies): the rebuild differentiates them
        ctx.save_for_backward(mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w,
                              shift, xp if spec.layer_norm else None,  # the input norm's backward reads it
                              f.A, f.C, f.U, f.Y, f.M if spec.proj else None, f.HP, f.stats, f.CN,
                              *rebuild.take_tensors())
        last = 0 if spec.reverse else xp.shape[0] - 1
        return masked_copy(f.Y, padded_rows(mask)), f.Y[last].clone(), f.C[last].clone()

    @staticmethod
    def backward(ctx, dy: Tensor, dh_n: Tensor, dc_n: Tensor):
        spec: LSTMSpec = ctx.spec
        (mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift, xp,
         A, C, U, Y, M, HP, stats, CN, *saved) = ctx.saved_tensors
        needs = dict(zip(_INPUTS, ctx.needs_input_grad[4:]))
        if torch.is_grad_enabled():  # create_graph: differentiate the reference instead
            inputs = (None, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift)
            grads = ctx.rebuild.grads(saved, inputs, list(needs.values()), mask, (dy, dh_n, dc_n))
            return (None, None, None, None, *grads)
        h0, c0 = h0.contiguous(), c0.contiguous()
        peep = (w_ci, w_cf, w_co) if spec.peephole else None
        ln = (ln_hh_w, ln_c_w, ln_c_b, ln_x_w) if spec.layer_norm else None
        fns = steps_fns(A.dtype)
        if ctx.consumed:  # a second backward (retain_graph): the first wrote over A (or xp) and HP: again
            xp = ctx.rebuild.projected(saved)
            f = _forward(fns, spec, xp, h0, c0, mask, w_hh, peep, ln, w_hr, ctx.km, shift, in_place=True)
        else:
            f = SimpleNamespace(A=A, C=C, U=U, Y=Y, M=M if spec.proj else Y, HP=HP, stats=stats, CN=CN,
                                recompute=ctx.recompute)
        # the gradients over the forward's gate buffers: a fresh (T, B, 4H) tensor each was most of
        # a layer-norm LSTM's gap to torch.nn.LSTM at H128 (B32 T100: 1.19x -> 1.04x; a new stream
        # of stores per tensor, and its pages faulted in each call)
        ctx.consumed = True
        rows = padded_rows(mask)
        dy = masked_copy(dy, rows).contiguous()  # y = m * Y: the padded outputs' gradients go nowhere
        g = _backward(fns, spec, f, dy, dh_n, dc_n, c0, xp, mask, w_hh, peep, ln, w_hr, ctx.km, shift, in_place=True)
        w = _weight_grads(spec, f, g, h0, rows, needs, ctx.km)
        return (None, None, None, None, g.dA if needs["xp"] else None, g.dh0 if needs["h0"] else None,
                g.dc0 if needs["c0"] else None, *(w.get(n) for n in _INPUTS[3:]))


def lstm_scan(cell: LSTMCell, p: Params, x: Tensor, state: State,
              mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """The kernel's ``run``, :func:`rnnkit.nn.scan.scan`'s signature, on an input :func:`match`
    took: ``x (T, B, I)``, ``state = (h (B, R), c (B, H))``, ``mask (T, B, 1)``
    -> ``(y (T, B, R), (h_n, c_n))``."""
    h0, c0 = state
    km = kernel_masks(p, x.shape[1], cell.state_sizes(), x.device)
    x = zero_padding(x, mask)  # before the projection: nothing a padded step holds gets in
    params = [getattr(p, name, None) for name in LSTM_PARAMETERS] + input_norm(cell, p)
    params = [None if w is None else w.contiguous() for w in params]
    store = backward_follows(x, p.weight_ih, p.bias_ih, p.bias_hh, h0, c0, *params)
    spec = LSTMSpec(peephole=cell.peephole, layer_norm=cell.layer_norm, proj=cell.proj_size > 0,
                    reverse=reverse, store=store)
    if not store:
        y, h, c = _forward_in_chunks(spec, x, p.weight_ih, h0.contiguous(), c0.contiguous(), mask, params, km)
        return y, (h, c)
    xp = kernel_projection(cell, p, x)
    rebuild = Rebuild(cell, p, x, kernel_projection, _REBUILD_NAMES, reverse, finish=normalise_input)
    y, h, c = NativeLSTMScan.apply(rebuild, spec, mask, km, xp, h0, c0, *params)
    return y, (h, c)


def _forward_in_chunks(spec: LSTMSpec, x: Tensor, w_ih: Tensor, h0: Tensor, c0: Tensor, mask: Tensor | None,
                       params: list[Tensor | None], km: KernelMasks) -> tuple[Tensor, Tensor, Tensor]:
    """The forward when no backward can follow: ``x (T, B, I)`` -> ``(y (T, B, R), h_n, c_n)``,
    the input projection into this thread's reused buffer (:func:`inference_projection`), a
    large one a chunk of steps at a time (:func:`projected_chunks`)."""
    T, B, _ = x.shape
    w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift = params
    peep = (w_ci, w_cf, w_co) if spec.peephole else None
    ln = (ln_hh_w, ln_c_w, ln_c_b, ln_x_w) if spec.layer_norm else None
    fns = steps_fns(x.dtype)
    Y = x.new_empty(T, B, w_hh.shape[1])
    h, c = h0, c0
    packed = pack_weights(w_hh, w_hr if spec.proj else None, B, T)  # once for every chunk
    for t0, t1, xp in projected_chunks(x, w_ih, None, spec.reverse):
        f = _forward(fns, spec, xp, h, c, None if mask is None else mask[t0:t1], w_hh, peep, ln, w_hr,
                     km.steps(t0, t1), shift, Y=Y[t0:t1], packed=packed)
        last = 0 if spec.reverse else t1 - t0 - 1  # the chunk's last step, in its own time
        h, c = Y[t0 + last], f.C[last % 2]
    return masked_copy(Y, padded_rows(mask)), h.clone(), c.clone()


def kernel_projection(cell: LSTMCell, p: Params, x: Tensor) -> Tensor:
    """What the kernel takes as ``xp``: the raw input projection ``W_ih x``, no bias. The C
    loop adds the summed biases (:func:`input_norm`'s shift) as it reads each row and sums
    their gradient there: a bias inside the GEMM costs a ``(T, B, 4H)`` copy forward (addmm
    starts from it) and a reduction over it backward. With layer norm it normalises the row
    first, forward and backward, where the rows are in cache."""
    return linear(x, p.weight_ih)


def input_norm(cell: LSTMCell, p: Params) -> list[Tensor | None]:
    """``[gain, shift]`` the kernel applies to :func:`kernel_projection`'s rows: the input
    norm's gain (None without layer norm) and ``b_ih + b_hh`` (None without biases)."""
    return [p.ln_ih_weight if cell.layer_norm else None, summed_bias(p)]


def normalise_input(cell: LSTMCell, q: Params, xp: Tensor) -> Tensor:
    """:func:`kernel_projection`'s ``xp`` as the cell's ``recur`` takes it (for the rebuild:
    ``q`` maps ``ln_ih_weight``, ``input_shift`` to the Function's own inputs)."""
    if cell.layer_norm:
        return layer_norm(xp, q.ln_ih_weight, q.input_shift)
    return xp if q.input_shift is None else xp + q.input_shift


def supports(cell: RecurrentCell) -> Verdict:
    """Any :class:`LSTMCell` itself (the plain one only with step masks: see :func:`match`)."""
    return type(cell) is LSTMCell or "not an LSTMCell (subclasses may change the step)"


def match(cell: LSTMCell, x: Tensor, p: Params, state: State | None, mask: Tensor | None) -> Verdict:
    """CPU float32/float64 in eager mode; peephole and/or layer norm, or step masks
    (recurrent dropout, zoneout: in the C loop, without projection only)."""
    if has_masks(p):
        if cell.proj_size:
            return "recurrent dropout or zoneout with proj_size: the C loop has no masks for the projection"
    else:
        verdict = lstm_supported(cell)
        if verdict is not True:
            return verdict
    return match_cpu(cell, x, p, state, mask)


def _lstm(proj: bool = False, **options):
    """A sample's factory: ``LSTMCell(i, h, **options)``, with ``proj_size = h // 2`` if ``proj``."""
    return lambda i, h, **kw: LSTMCell(i, h, proj_size=h // 2 if proj else 0, **options, **kw)


SAMPLES = tuple(Sample(name, _lstm(**options)) for name, options in {
    "lstm_peephole_layer_norm": dict(peephole=True, layer_norm=True),
    "lstm_peephole": dict(peephole=True),
    "lstm_layer_norm": dict(layer_norm=True),
    "lstm_peephole_proj": dict(peephole=True, proj=True),
    "lstm_all_proj": dict(peephole=True, layer_norm=True, proj=True),
    "lstm_peephole_no_bias": dict(bias=False, peephole=True),
    "lstm_layer_norm_no_bias": dict(bias=False, layer_norm=True),
}.items())

# --- in a graph: the same C loops as torch.library custom ops --------------------------------
# torch.compile/torch.export cannot trace the Function above (it hands addresses to C); these
# ops can stay in their graphs. Tensors and flags only: absent parameters are None inputs, absent
# outputs empty (0,) tensors (a schema has no optional outputs). The forward always keeps the
# backward's buffers (a graph cannot know whether one follows); no step masks (a layer with them
# traces the reference under compile); no double backward (eager mode has it).
@torch.library.custom_op("rnnkit::lstm_scan", mutates_args=())
def lstm_scan_op(xp: Tensor, h0: Tensor, c0: Tensor, mask: Optional[Tensor], w_hh: Tensor,
                 w_ci: Optional[Tensor], w_cf: Optional[Tensor], w_co: Optional[Tensor],
                 ln_hh_w: Optional[Tensor], ln_c_w: Optional[Tensor], ln_c_b: Optional[Tensor],
                 w_hr: Optional[Tensor], ln_x_w: Optional[Tensor], shift: Optional[Tensor], peephole: bool,
                 layer_norm: bool, reverse: bool,
                 eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``xp (T, B, 4H)`` (:func:`kernel_projection`) -> ``(y (T, B, R), h_n (B, R),
    c_n (B, H), A, C, U, M, HP, stats, Y)``: the outputs, then the buffers the backward
    reads (``M``, ``HP``, ``stats``: empty without projection / layer norm; ``Y``, the states with
    the padded steps', empty without a mask, when it is ``y``)."""
    spec = LSTMSpec(peephole=peephole, layer_norm=layer_norm, proj=w_hr is not None, reverse=reverse, eps=eps)
    km = no_masks(xp.shape[1], (w_hh.shape[1], xp.shape[2] // 4), xp.device)
    params = [None if w is None else w.contiguous()
              for w in (w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift)]
    peep = tuple(params[:3]) if peephole else None
    ln = (*params[3:6], params[7]) if layer_norm else None
    f = _forward(steps_fns(xp.dtype), spec, xp.contiguous(), h0.contiguous(),
                 c0.contiguous(), mask, w_hh.contiguous(), peep, ln, params[6], km, params[8])
    last = 0 if reverse else xp.shape[0] - 1
    y = states_output(f.Y, mask)
    return (y, f.Y[last].clone(), f.C[last].clone(), f.A, f.C, f.U, f.M if spec.proj else empty_output(xp),
            f.HP if layer_norm else empty_output(xp), f.stats if layer_norm else empty_output(xp), empty_output(xp) if mask is None else f.Y)


@lstm_scan_op.register_fake
def _(xp, h0, c0, mask, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift, peephole, layer_norm,
      reverse, eps):
    T, B, G = xp.shape
    H, R = G // 4, w_hh.shape[1]
    return (xp.new_empty(T, B, R), xp.new_empty(B, R), xp.new_empty(B, H), xp.new_empty(T, B, G),
            xp.new_empty(T, B, H), xp.new_empty(T, B, H), xp.new_empty(T, B, H) if w_hr is not None else xp.new_empty(0),
            xp.new_empty(T, B, G) if layer_norm else xp.new_empty(0), xp.new_empty(6, T, B) if layer_norm else xp.new_empty(0),
            xp.new_empty(T, B, R) if mask is not None else xp.new_empty(0))


@torch.library.custom_op("rnnkit::lstm_scan_backward", mutates_args=())
def lstm_scan_backward_op(dy: Tensor, dh_n: Tensor, dc_n: Tensor, mask: Optional[Tensor], h0: Tensor, c0: Tensor,
                          w_hh: Tensor, w_ci: Optional[Tensor], w_cf: Optional[Tensor], w_co: Optional[Tensor],
                          ln_hh_w: Optional[Tensor], ln_c_w: Optional[Tensor], ln_c_b: Optional[Tensor],
                          w_hr: Optional[Tensor], ln_x_w: Optional[Tensor], shift: Optional[Tensor], xp: Tensor,
                          y: Tensor, A: Tensor, C: Tensor, U: Tensor, M: Tensor, HP: Tensor,
                          stats: Tensor, Y: Tensor, peephole: bool, layer_norm: bool, reverse: bool, eps: float) -> list[Tensor]:
    """The C BPTT: gradients wrt ``(xp, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w,
    ln_c_b, w_hr, ln_x_w, shift)``, empty for absent parameters; ``xp`` (the forward's,
    read with layer norm only) may be empty without."""
    T, B, G = A.shape
    spec = LSTMSpec(peephole=peephole, layer_norm=layer_norm, proj=w_hr is not None, reverse=reverse, eps=eps)
    km = no_masks(B, (w_hh.shape[1], G // 4), A.device)
    Y = Y if Y.numel() else y
    stats = stats if layer_norm else A.new_empty(6, T, B)  # read only with layer norm
    f = Params(A=A, C=C, U=U, Y=Y, M=M if spec.proj else Y, HP=present(HP), stats=stats, CN=None)
    params = [None if w is None else w.contiguous()
              for w in (w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift)]
    peep = tuple(params[1:4]) if peephole else None
    ln = (*params[4:7], params[8]) if layer_norm else None
    rows = padded_rows(mask)
    dy = masked_copy(dy, rows).contiguous()
    h0, c0 = h0.contiguous(), c0.contiguous()
    g = _backward(steps_fns(A.dtype), spec, f, dy, dh_n, dc_n, c0, xp.contiguous() if layer_norm else None, mask,
                  params[0], peep, ln, params[7], km)
    needs = {name: w is not None for name, w in zip(_LSTM_PARAMS, params)}
    w = _weight_grads(spec, f, g, h0, rows, needs, km)
    # the peephole and layer-norm gradients are views of shared buffers (unbind, rows of one
    # sum): copies, since an op's outputs must not alias (views cannot be told apart under
    # a dispatch mode, so every one is copied; they are vectors)
    small = ("w_ci", "w_cf", "w_co", "ln_hh_w", "ln_c_w", "ln_c_b", "ln_x_w", "shift")
    weights = [(w[n].clone() if n in small else w[n]) if needs[n] else empty_output(A) for n in _LSTM_PARAMS]
    return [g.dA, g.dh0, g.dc0, *weights]


@lstm_scan_backward_op.register_fake
def _(dy, dh_n, dc_n, mask, h0, c0, w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift, xp, y, A,
      C, U, M, HP, stats, Y, peephole, layer_norm, reverse, eps):
    grads = [torch.empty_like(A), torch.empty_like(h0), torch.empty_like(c0)]
    return grads + [A.new_empty(0) if w is None else torch.empty_like(w)
                    for w in (w_hh, w_ci, w_cf, w_co, ln_hh_w, ln_c_w, ln_c_b, w_hr, ln_x_w, shift)]


def _lstm_setup(ctx, inputs, output) -> None:
    xp, h0, c0, mask, *weights = inputs[:14]
    ctx.flags = inputs[14:]
    layer_norm = ctx.flags[1]  # the input norm's backward reads the raw projection
    ctx.save_for_backward(mask, h0, c0, *weights, xp if layer_norm else empty_output(xp), output[0], *output[3:])


def _lstm_backward(ctx, dy, dh_n, dc_n, *_buffers):
    mask, h0, c0, *rest = ctx.saved_tensors
    weights, (xp, y, A, C, U, M, HP, stats, Y) = rest[:10], rest[10:]
    dy, dh_n, dc_n = (torch.zeros_like(t) if d is None else d for d, t in ((dy, y), (dh_n, h0), (dc_n, c0)))
    grads = lstm_scan_backward_op(dy, dh_n, dc_n, mask, h0, c0, *weights, xp, y, A, C, U, M, HP, stats, Y,
                                  *ctx.flags)
    dxp, dh0, dc0, *dw = grads
    return (dxp, dh0, dc0, None, *(None if w is None else d for w, d in zip(weights, dw)), None, None, None, None)


lstm_scan_op.register_autograd(_lstm_backward, setup_context=_lstm_setup)


def lstm_scan_graph(cell: LSTMCell, p: Params, x: Tensor, state: State, mask: Tensor | None = None,
                    reverse: bool = False) -> tuple[Tensor, State]:
    """:func:`rnnkit.kernels.cpu.lstm.lstm_scan` through the custom op (same signature and
    result): ``x (T, B, I)``, ``state = (h (B, R), c (B, H))`` -> ``(y (T, B, R), (h_n, c_n))``."""
    h0, c0 = state
    x = zero_padding(x, mask)
    xp = kernel_projection(cell, p, x)
    weights = [getattr(p, name, None) for name in LSTM_PARAMETERS] + input_norm(cell, p)
    y, h, c, *_ = lstm_scan_op(xp, h0, c0, mask, *weights, cell.peephole, cell.layer_norm, reverse, LN_EPS)
    return y, (h, c)


#: the kernel: lstm_scan (the autograd Function) in eager mode, the custom op in a graph
run = eager_or_graph(lstm_scan, lstm_scan_graph)


KERNEL = register(Kernel("cpu.lstm", "cpu", run, supports, match, priority=0, available=available,
                         samples=SAMPLES))
