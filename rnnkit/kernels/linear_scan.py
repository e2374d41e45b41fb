r"""Parallel scans for recurrences linear in the state (minGRU, minLSTM).

Such a cell's step is :math:`h_t = a_t \odot h_{t-1} + b_t` where :math:`a_t, b_t`
depend on ``x_t`` only (:class:`~rnnkit.cells.min_rnn.MinRNNCell`), so all
:math:`h_t` can be computed at once instead of one step after another. Two
formulations, both exact reorderings of the same sums:

``"log"`` — :func:`log_space_scan` (Heinsen 2023), for ``b > 0`` (the cells'
    ``positive=True``, the paper's log-space version):

    .. math::
        \log h_t = a^*_t + \operatorname{logcumsumexp}_{k \le t}(\log b_k - a^*_k),
        \qquad a^*_t = \sum_{k \le t} \log a_k

    Two cumulative native ops; the GPU path. The initial state enters by linearity,
    :math:`h_t \mathrel{+}= e^{a^*_t} h_0`, instead of as a first term
    :math:`\log h_0`: so ``h0`` may be zero (the default state, whose log would make
    the gradient NaN) or negative (a state handed over from elsewhere).

``"linear"`` — a two-level chunked scan in linear space (scan-then-propagate, the
    CPU form of Blelloch's scan): every chunk of ``C ~ sqrt(T)`` steps is scanned
    from zero, all chunks at once; a short loop over the ``T/C`` chunks carries the
    state across them; a second pass over the chunks writes :math:`h_t`. Depth
    :math:`O(\sqrt T)` Python-level steps instead of ``T``, work :math:`O(T)`, and
    only products of :math:`a \in (0, 1)` and sums — no logs, no divisions, no
    ``cumprod`` whose inverse could overflow — so it is numerically safe for any sign
    of ``b`` (``positive=False``), with rounding errors of the sequential step's size.
    The backward is the same scan run the other way (the adjoint of a linear
    recurrence is a linear recurrence), written out in an ``autograd.Function``:
    :class:`_MinScan` for minGRU/minLSTM (the gates fused in, computed block by
    block over time so they stay in cache), :func:`linear_scan` for any ``(a, b)``.

:func:`choose_method` takes ``"log"`` on accelerators for positive cells and
``"linear"`` otherwise. On CPU, ``logcumsumexp`` (and its backward, three more of
them) costs several times the rest of the layer, and the log form is slower than
even the sequential step there; the chunked loop's couple of hundred small ops are
cheap (see ``benchmarks/min_rnn.py``). Both forms are tested against the sequential
step (on CPU; on a GPU the same torch ops run).

Padding: the padded input steps are zeroed before the projection
(:func:`~rnnkit.kernels.reference.zero_padding`) and the mask is applied by selection
(``a = 1, b = 0`` at padded steps, padded outputs exactly 0), never as a product.

Higher-order gradients: the linear form's backward is written out (first order);
when a graph of the gradient is wanted (``create_graph=True``) it differentiates
the sequential recurrence instead (see :mod:`rnnkit.kernels.higher_order`), so
double backward is exact. The log form is plain autograd, and autograd's second
derivative of ``logcumsumexp`` is wrong wherever the gradient reaching it is exactly
0 (NaN wrt that gradient: padded steps, the chunks' padding, any unused output),
so a double backward through it raises
:class:`~rnnkit.kernels.higher_order.DoubleBackwardError` instead of returning a
wrong number.

Precision: the log form computes :math:`a^*_t` and cancels it again, so its
relative error grows with :math:`|a^*_t|` (the float32 spacing at ``|a*|``).
Scanning in chunks of :data:`LOG_CHUNK` steps, with the carries between chunks in
linear space, bounds :math:`|a^*|` by the chunk rather than the sequence.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
import torch.nn.functional as F

from ..cells.base import Params, RecurrentCell, State
from ..cells.min_rnn import MinGRUCell, MinLSTMCell, MinRNNCell
from .higher_order import differentiate, first_order_only
from .reference import padded_rows, zero_padding
from .registry import Kernel, Sample, Verdict, register
from .specs import compiling

METHODS = ("log", "linear")
#: steps per chunk of the log-space scan (bounds |a*|, hence its float32 error).
LOG_CHUNK = 256
#: below this many steps the linear scan just loops (chunking would not pay).
_MIN_CHUNKED = 16


def supports(cell: RecurrentCell) -> Verdict:
    """Any cell linear in its state: a :class:`~rnnkit.cells.min_rnn.MinRNNCell` (its
    ``coefficients``/``log_coefficients`` give ``a_t, b_t``; minGRU/minLSTM themselves get
    the fused form)."""
    return isinstance(cell, MinRNNCell) or "not linear in its state (no MinRNNCell coefficients)"


def match(cell: MinRNNCell, x: Tensor, p: Params, state: State | None, mask: Tensor | None) -> Verdict:
    """Every input: torch ops on any device and dtype (half precision scans in float32),
    traced as well (the scan's depth is ``O(sqrt T)`` ops, not ``T`` steps)."""
    return True


def choose_method(cell: MinRNNCell, device: torch.device) -> str:
    """``"log"`` for positive cells off the CPU, else ``"linear"`` (see module doc)."""
    return "log" if cell.positive and device.type != "cpu" else "linear"


def parallel_scan(cell: MinRNNCell, p: Params, x: Tensor, state: State,
                  mask: Tensor | None = None, reverse: bool = False,
                  method: str | None = None) -> tuple[Tensor, State]:
    """Kernel with :func:`rnnkit.nn.scan.scan`'s signature: ``x (T, B, I)``,
    ``state = (h0 (B, H),)``, ``mask (T, B, 1)`` bool or None.

    Returns ``(y (T, B, H), (h_n (B, H),))``; ``y`` is zero at padded steps, where
    the state is carried unchanged (whatever ``x`` holds there). ``method`` overrides
    :func:`choose_method`.
    """
    method = method or choose_method(cell, x.device)
    if method not in METHODS:
        raise ValueError(f"parallel_scan: method must be one of {METHODS}, got {method!r}")
    xp = cell.project_input(zero_padding(x, mask), p)  # every gate of every step: one GEMM
    h0, dtype = state[0], xp.dtype
    # half precision would lose the scan (and the logs) entirely: work in float32
    work = torch.float32 if xp.dtype in (torch.float16, torch.bfloat16) else xp.dtype
    xp, h0 = xp.to(work), h0.to(work)
    if method == "log":
        log_a, log_b, h0 = first_order_only(_log_space_refusal(cell), *cell.log_coefficients(xp), h0)
        h = log_space_scan(log_a, log_b, h0, mask, reverse)
    else:
        h = _linear(cell, xp, h0, mask, reverse)
    h = h.to(dtype)
    final = h[0] if reverse else h[-1]  # the last step in scan order
    return zero_padding(h, mask), (final,)


def _log_space_refusal(cell: MinRNNCell) -> str:
    """The error a double backward through the log-space scan raises."""
    layer = type(cell).__name__.removesuffix("Cell")
    return (f"{layer}: double backward (a gradient of a gradient, create_graph=True) through the log-space "
            "parallel scan is not supported: torch.logcumsumexp's second derivative is wrong (NaN) wherever "
            "the gradient reaching it is 0, e.g. at padded steps or unused outputs. Use backend='scan' for "
            "this layer (the same function, one step at a time, differentiable to any order), or the "
            "linear-space scan (rnnkit.kernels.linear_scan.parallel_scan(..., method='linear')).")


def _linear(cell: MinRNNCell, xp: Tensor, h0: Tensor, mask: Tensor | None, reverse: bool) -> Tensor:
    """The linear-space scan: fused for minGRU/minLSTM themselves (a subclass may
    change the equations), the general form from ``cell.coefficients`` otherwise, and
    under ``torch.compile``/``torch.export``, which cannot trace the fused Function's
    ``out=`` buffers (the general form is the same scan in plain torch ops)."""
    if type(cell) not in _FUSED or compiling():
        return linear_scan(*cell.coefficients(xp), h0, mask, reverse)
    return _MinScan.apply(xp, h0.expand(xp.shape[1], cell.hidden_size), cell, reverse, mask)


# --- log space (Heinsen 2023) ---------------------------------------------------------
def log_space_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, mask: Tensor | None = None,
                   reverse: bool = False, chunk: int | None = None) -> Tensor:
    r""":math:`h_t = a_t h_{t-1} + b_t` for all ``t`` from ``log_a, log_b (T, *S)``
    and ``h0 (*S)`` (any sign), in chunks of ``chunk`` (default :data:`LOG_CHUNK`)
    steps. ``mask (T, *S')`` (broadcastable, bool): at False steps ``a = 1, b = 0``.
    Returns ``h (T, *S)``. Differentiable by autograd (``h0`` included)."""
    if reverse:
        def flip(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.flip(0)
        return log_space_scan(flip(log_a), flip(log_b), h0, flip(mask), False, chunk).flip(0)
    # b = 0 as a finite floor, not -inf: an all-padded prefix would otherwise make
    # logcumsumexp's result -inf and its backward (which subtracts it) NaN
    floor = torch.finfo(log_b.dtype).min / 4
    if mask is not None:
        log_a = log_a.masked_fill(~mask, 0.0)
        log_b = log_b.masked_fill(~mask, floor)
    T, rest = log_a.shape[0], log_a.shape[1:]
    n = -(-T // (chunk or LOG_CHUNK))
    C = -(-T // n)  # balanced chunks: at most n - 1 padded (identity) steps
    pad = n * C - T
    if pad:
        log_a = F.pad(log_a, (0, 0) * len(rest) + (0, pad), value=0.0)
        log_b = F.pad(log_b, (0, 0) * len(rest) + (0, pad), value=floor)
    a_star = log_a.view(n, C, *rest).cumsum(1)  # within each chunk
    local = torch.exp(a_star + torch.logcumsumexp(log_b.view(n, C, *rest) - a_star, 1))
    decay = torch.exp(a_star)  # prod of a since the chunk's start
    h_in = _carry(local[:, -1], decay[:, -1], h0)  # state entering each chunk
    h = torch.addcmul(local, decay, h_in.unsqueeze(1))
    return h.view(n * C, *rest)[:T]


def _carry(end: Tensor, decay: Tensor, h0: Tensor) -> Tensor:
    """States entering each of ``n`` chunks, ``(n, *S)``: chunk ``k`` maps a state
    ``s`` to ``decay[k] * s + end[k]``. A loop, but over chunks, not steps."""
    states = [h0]
    for k in range(end.shape[0] - 1):
        states.append(torch.addcmul(end[k], decay[k], states[-1]))
    return torch.stack(states)


# --- linear space, chunked --------------------------------------------------------------
#
# Both cells are convex mixes, h_t = (1 - w_t) h_{t-1} + w_t g_t (w the candidate's
# weight: z for minGRU, i' for minLSTM; g the candidate), so a_t = 1 - w_t. The scans
# below take (w, beta) and compute s_t = (1 - w_t) s_{t-1} + beta_t, with beta = w g
# folded into one torch.lerp for the forward pass ("lerp") and beta given for the
# adjoint and for general coefficients.

def linear_scan(a: Tensor, b: Tensor, h0: Tensor, mask: Tensor | None = None,
                reverse: bool = False) -> Tensor:
    r""":math:`h_t = a_t h_{t-1} + b_t` (``reverse``: :math:`h_t = a_t h_{t+1} + b_t`)
    for all ``t`` from ``a, b (T, *S)`` and ``h0 (*S)``; ``mask`` as in
    :func:`log_space_scan`. Returns ``h (T, *S)``. Differentiable (first order).

    The general form, for cells that only provide ``coefficients``; minGRU and
    minLSTM take the fused :class:`_MinScan`."""
    w = torch.rsub(a, 1.0)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
        b = b.masked_fill(~mask, 0.0)
    w, b = torch.broadcast_tensors(w, b)
    return _LinearScan.apply(w, b, h0.expand(b.shape[1:]), reverse)


class _LinearScan(torch.autograd.Function):
    r"""``s_t = (1 - w_t) s_{t-1} + b_t`` over ``w, b (T, *S)`` from ``h0``.

    Backward: with :math:`\delta_t = \partial L/\partial h_t` (total) and :math:`\bar h_t`
    the incoming gradient, the adjoint is the same recurrence run the other way,
    :math:`\delta_t = \bar h_t + (1 - w_{t+1}) \delta_{t+1}`;
    then :math:`\partial L/\partial b_t = \delta_t`, :math:`\partial L/\partial w_t = -\delta_t h_{t-1}`,
    :math:`\partial L/\partial h_0 = (1 - w_0) \delta_0`. When building a graph
    (double backward): autograd through the sequential recurrence (:func:`_sequential`).
    """

    @staticmethod
    def forward(ctx, w: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
        h = torch.empty_like(b, memory_format=torch.contiguous_format)
        _scan_into(h, w.contiguous(), b.contiguous(), h0.contiguous(), reverse, lerp=False)
        ctx.save_for_backward(w, b, h, h0)  # the inputs themselves: a double backward differentiates them
        ctx.reverse = reverse
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        w, b, h, h0 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the sequential recurrence
            with torch.enable_grad():
                h_ref = _sequential(lambda t: (torch.rsub(w[t], 1.0), b[t]), h0, w.shape[0], ctx.reverse)
                return (*differentiate([h_ref], [w, b, h0], ctx.needs_input_grad[:3], [grad]), None)
        w, h0 = w.contiguous(), h0.contiguous()
        delta = _adjoint(grad.contiguous(), w, ctx.reverse)
        grad_w = None
        if ctx.needs_input_grad[0]:
            grad_w = _previous(h, h0, slice(None), ctx.reverse).mul_(delta).neg_()
        return grad_w, delta, _initial_grad(delta, w, ctx.reverse), None


def _sequential(coefficients, h0: Tensor, steps: int, reverse: bool, mask: Tensor | None = None) -> Tensor:
    r""":math:`h_t = a_t h_{t-1} + b_t` one step after another, ``(a_t, b_t) =
    coefficients(t)``, the state carried where ``mask[t]`` is False: the reference the
    scans are exact reorderings of, differentiable to any order by autograd. ``(T, *S)``."""
    out: list[Tensor] = [None] * steps  # type: ignore[list-item]
    h = h0
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        a, b = coefficients(t)
        new = torch.addcmul(b, a, h)
        h = new if mask is None else torch.where(mask[t], new, h)
        out[t] = h
    return torch.stack(out)


class _MinScan(torch.autograd.Function):
    """minGRU/minLSTM from the projected input: ``xp (T, B, G*H)``, ``h0 (B, H)`` ->
    ``h (T, B, H)``, the gates and the scan in one node.

    Why fused: on CPU the step is memory-bound. Autograd through the gate ops makes
    some twenty passes over ``(T, B, H)`` tensors; here the gate math runs block by
    block over time (:func:`_blocks`, blocks that stay in cache), forward and
    backward, and the scan reads the gates once more. The backward is written out
    (:func:`_MinGRUGates.backward` and co.) and tested against autograd through the
    sequential step; when it must build a graph (double backward) it is autograd
    through the cell's own step, :func:`_sequential` over ``cell.coefficients``.
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, cell: MinRNNCell, reverse: bool, mask: Tensor | None) -> Tensor:
        gates = _FUSED[type(cell)]
        xp_c, h0_c = xp.contiguous(), h0.contiguous()
        w = xp.new_empty(xp.shape[0], *h0.shape)
        g = torch.empty_like(w)
        for blk in _blocks(xp_c):
            gates.forward(xp_c[blk], w[blk], g[blk], cell.positive)
        if mask is not None:  # w = 0: a = 1, b = 0, the state is carried; the gradients follow
            _zero_padded_(w, mask)
        h = torch.empty_like(w)
        _scan_into(h, w, g, h0_c, reverse, lerp=True)
        # the inputs themselves (not contiguous copies): a double backward differentiates them
        ctx.save_for_backward(xp, h0, w, g, h, mask)
        ctx.cell, ctx.reverse = cell, reverse
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        xp, h0, w, g, h, mask = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the sequential recurrence
            with torch.enable_grad():
                h_ref = _sequential(lambda t: ctx.cell.coefficients(xp[t]), h0, xp.shape[0], ctx.reverse, mask)
                return (*differentiate([h_ref], [xp, h0], ctx.needs_input_grad[:2], [grad]), None, None, None)
        xp, h0 = xp.contiguous(), h0.contiguous()
        gates = _FUSED[type(ctx.cell)]
        delta = _adjoint(grad.contiguous(), w, ctx.reverse)
        grad_xp = torch.empty_like(xp)
        for blk in _blocks(xp):
            h_prev = _previous(h, h0, blk, ctx.reverse)
            gates.backward(xp[blk], w[blk], g[blk], h_prev, delta[blk], grad_xp[blk], ctx.cell.positive)
        return grad_xp, _initial_grad(delta, w, ctx.reverse), None, None, None


def _zero_padded_(w: Tensor, mask: Tensor) -> None:
    """``w (T, B, H)`` (contiguous, ours) 0 at the padded steps, in place, by selection
    (an ``index_fill_`` of the padded rows on CPU: see :func:`~rnnkit.kernels.reference.zero_padding`)."""
    rows = padded_rows(mask)
    if rows is None:
        w.masked_fill_(~mask, 0.0)
    elif rows.numel():
        w.flatten(0, 1).index_fill_(0, rows, 0.0)


def _adjoint(grad: Tensor, w: Tensor, reverse: bool) -> Tensor:
    r""":math:`\delta_t = \bar h_t + (1 - w_{t'}) \delta_{t'}` (:math:`\bar h` = ``grad``),
    :math:`t'` the step after ``t`` in scan order: the scan in the other direction, on
    coefficients shifted by one step (views, no copy)."""
    delta = torch.empty_like(grad)
    if reverse:  # scan order T-1..0: the step after t is t-1
        delta[0] = grad[0]
        _scan_into(delta[1:], w[:-1], grad[1:], delta[0], False, lerp=False)
    else:
        delta[-1] = grad[-1]
        _scan_into(delta[:-1], w[1:], grad[:-1], delta[-1], True, lerp=False)
    return delta


def _initial_grad(delta: Tensor, w: Tensor, reverse: bool) -> Tensor:
    r""":math:`\partial L/\partial h_0 = (1 - w) \delta` at the first step in scan order."""
    first = -1 if reverse else 0
    return torch.addcmul(delta[first], w[first], delta[first], value=-1.0)


def _previous(h: Tensor, h0: Tensor, blk: slice, reverse: bool) -> Tensor:
    """``h_{t-1}`` (the state before step ``t`` in scan order) for ``t`` in ``blk``, a copy."""
    start, stop, _ = blk.indices(h.shape[0])
    prev = torch.empty_like(h[start:stop])
    if reverse:  # before t comes t+1, and h0 before T-1
        inner = min(stop, h.shape[0] - 1)
        prev[:inner - start] = h[start + 1:inner + 1]
        if stop == h.shape[0]:
            prev[-1] = h0
    else:
        prev[1:] = h[start:stop - 1]
        prev[0] = h0 if start == 0 else h[start - 1]
    return prev


#: elements of ``xp`` per block of the fused gate math on CPU (~512 KiB in float32,
#: so a block's handful of temporaries stays in L2).
BLOCK_ELEMENTS = 1 << 17


def _blocks(xp: Tensor) -> list[slice]:
    """Time slices for the gate math: cache-sized on CPU, everything at once elsewhere."""
    T = xp.shape[0]
    if xp.device.type != "cpu":
        return [slice(0, T)]
    step = max(1, BLOCK_ELEMENTS // max(1, xp[0].numel()))
    return [slice(lo, min(lo + step, T)) for lo in range(0, T, step)]


def _candidate_into(xh: Tensor, out: Tensor, positive: bool) -> None:
    """``out = g(xh)`` as ``max(sigmoid(xh), xh + 0.5)`` — equal to the paper's
    piecewise form (sigmoid lies above its tangent 0.5 + x/4 for x < 0 and below
    x + 0.5 for x > 0) without a mask — or ``xh`` for the linear candidate."""
    if not positive:
        out.copy_(xh)
        return
    torch.sigmoid(xh, out=out)
    torch.maximum(out, xh + 0.5, out=out)


def _candidate_grad_(grad: Tensor, g: Tensor, positive: bool) -> None:
    """``grad *= g'(xh)`` from ``g = g(xh)``: 1 where ``xh > 0`` (``g > 0.5``), else
    ``sigmoid' = g (1 - g)``, which is below 1/4; so ``g' = max(g (1 - g), step)``.
    (At the kink ``xh = 0`` this takes the left derivative, the reference the right.)"""
    if not positive:
        return
    # a float step instead of a bool mask: masked_fill/where cost ~20x a multiply on CPU
    step = torch.sign(g - 0.5).clamp_(min=0.0)
    slope = torch.addcmul(g, g, g, value=-1.0)
    grad.mul_(torch.maximum(slope, step, out=slope))


def _mix_grad(grad_s: Tensor, w: Tensor, g: Tensor, h_prev: Tensor, delta: Tensor) -> None:
    r"""``grad_s = dL/ds`` for ``w = sigmoid(s)``: :math:`\delta (g - h_{t-1}) w (1 - w)`."""
    torch.sub(g, h_prev, out=grad_s)
    grad_s.mul_(delta).mul_(w)
    grad_s.addcmul_(grad_s, w, value=-1.0)  # * (1 - w)


class _MinGRUGates:
    """minGRU's gates for a block of steps: ``w = z = sigmoid(xz)``, ``g = g(xh)``."""

    @staticmethod
    def forward(xp: Tensor, w: Tensor, g: Tensor, positive: bool) -> None:
        xz, xh = xp.chunk(2, dim=-1)
        torch.sigmoid(xz, out=w)
        _candidate_into(xh, g, positive)

    @staticmethod
    def backward(xp: Tensor, w: Tensor, g: Tensor, h_prev: Tensor, delta: Tensor,
                 grad_xp: Tensor, positive: bool) -> None:
        grad_z, grad_h = grad_xp.chunk(2, dim=-1)
        _mix_grad(grad_z, w, g, h_prev, delta)
        torch.mul(delta, w, out=grad_h)
        _candidate_grad_(grad_h, g, positive)


class _MinLSTMGates:
    """minLSTM's gates for a block of steps: ``w = i' = sigmoid(d)`` with
    ``d = logsigmoid(xi) - logsigmoid(xf)`` (so ``1 - w = f'``), ``g = g(xh)``."""

    @staticmethod
    def forward(xp: Tensor, w: Tensor, g: Tensor, positive: bool) -> None:
        xf, xi, xh = xp.chunk(3, dim=-1)
        torch.sigmoid(F.logsigmoid(xi) - F.logsigmoid(xf), out=w)
        _candidate_into(xh, g, positive)

    @staticmethod
    def backward(xp: Tensor, w: Tensor, g: Tensor, h_prev: Tensor, delta: Tensor,
                 grad_xp: Tensor, positive: bool) -> None:
        xf, xi, _ = xp.chunk(3, dim=-1)
        grad_f, grad_i, grad_h = grad_xp.chunk(3, dim=-1)
        grad_d = torch.empty_like(w)
        _mix_grad(grad_d, w, g, h_prev, delta)
        # d logsigmoid(x) / dx = sigmoid(-x)
        torch.mul(grad_d, torch.sigmoid(-xi), out=grad_i)
        torch.mul(grad_d, torch.sigmoid(-xf), out=grad_f).neg_()
        torch.mul(delta, w, out=grad_h)
        _candidate_grad_(grad_h, g, positive)


_FUSED: dict[type, type] = {MinGRUCell: _MinGRUGates, MinLSTMCell: _MinLSTMGates}


# --- the scan itself (no autograd) ------------------------------------------------------
def chunk_size(T: int) -> int:
    """Steps per chunk: about ``sqrt(2T/3)``, which balances the three passes over
    chunk positions against the one loop over chunks."""
    return max(1, round(math.sqrt(2 * T / 3)))


@torch.no_grad()
def _scan_into(out: Tensor, w: Tensor, beta: Tensor, h0: Tensor, reverse: bool, lerp: bool,
               chunk: int | None = None) -> None:
    """Write ``s_t = (1 - w_t) s_{t-1} + c_t`` into ``out (T, *S)`` from ``h0 (*S)``,
    where ``c = w * beta`` with ``lerp`` (``beta`` is the candidate) else ``c = beta``.
    ``w, beta`` contiguous ``(T, *S)``.

    Scan order is ``t = 0..T-1``, or ``T-1..0`` with ``reverse``. The first ``n*C``
    steps in scan order are scanned in ``n`` chunks of ``C``, all chunks at once, the
    remaining ``r < C`` one by one.
    """
    T = w.shape[0]
    C = chunk or chunk_size(T)
    n = T // C
    if T < _MIN_CHUNKED or n < 2:
        _loop_into(out, w, beta, h0, range(T - 1, -1, -1) if reverse else range(T), lerp)
        return
    r = T - n * C
    lo = r if reverse else 0  # the chunked block is out[lo:lo + n*C]
    W, Bc, O = (t[lo:lo + n * C].view(n, C, *t.shape[1:]) for t in (w, beta, out))
    steps = list(range(C - 1, -1, -1) if reverse else range(C))
    chunks = range(n - 1, -1, -1) if reverse else range(n)

    # 1. every chunk from a zero state, all chunks at once: its end value and decay
    first = steps[0]
    end = W[:, first] * Bc[:, first] if lerp else Bc[:, first].clone()
    decay = torch.rsub(W[:, first], 1.0)
    for j in steps[1:]:
        _step(end, W[:, j], Bc[:, j], end, lerp)
        decay.addcmul_(decay, W[:, j], value=-1.0)  # *= 1 - w
    # 2. carry the true state across chunks (n small steps)
    h_in = torch.empty_like(end)
    s = h0
    for k in chunks:
        h_in[k] = s
        s = torch.addcmul(end[k], decay[k], s)
    # 3. rerun every chunk from its true entering state, writing out
    s = h_in
    for j in steps:
        s = _step(s, W[:, j], Bc[:, j], O[:, j], lerp)
    # 4. the r leftover steps, from the state after the last chunk
    last = O[0, steps[-1]] if reverse else O[n - 1, steps[-1]]
    _loop_into(out, w, beta, last, range(r - 1, -1, -1) if reverse else range(n * C, T), lerp)


def _step(s: Tensor, w: Tensor, beta: Tensor, out: Tensor, lerp: bool) -> Tensor:
    """``out = (1 - w) s + (w * beta if lerp else beta)``; ``out`` may be ``s``."""
    if lerp:
        return torch.lerp(s, beta, w, out=out)
    torch.addcmul(s, w, s, value=-1.0, out=out)
    return out.add_(beta)


def _loop_into(out: Tensor, w: Tensor, beta: Tensor, s: Tensor, times, lerp: bool) -> None:
    """The plain sequential scan over ``times`` (in that order) from state ``s``."""
    for t in times:
        s = _step(s, w[t], beta[t], out[t], lerp)


class _SubclassedMinGRU(MinGRUCell):
    """A sample that is not minGRU itself: the general ``(a, b)`` scan over ``coefficients``."""


SAMPLES = tuple(Sample(f"{name}{'' if positive else '_linear_candidate'}",
                       lambda i, h, cls=cls, positive=positive, **kw: cls(i, h, positive=positive, **kw))
                for name, cls in (("mingru", MinGRUCell), ("minlstm", MinLSTMCell),
                                  ("mingru_subclass", _SubclassedMinGRU))
                for positive in (True, False))

# asked first: it takes every input of its cells, on every device
KERNEL = register(Kernel("linear_scan", "any", parallel_scan, supports, match, priority=20, samples=SAMPLES))
