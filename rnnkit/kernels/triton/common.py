"""Shared pieces of the Triton kernels (:mod:`rnnkit.kernels.triton.lstm`,
:mod:`rnnkit.kernels.triton.gru`): jitted helpers for the step kernels and the
Python-side bookkeeping of the time loops.

This module imports ``triton`` at the top, so it is imported only when a Triton
kernel actually runs (:mod:`rnnkit.kernels.triton` imports it lazily).
Whether the ``@triton.jit`` functions here and in the kernel modules are compiled
or interpreted is decided when they are decorated, i.e. when these modules are
first imported (Triton 3.x reads ``TRITON_INTERPRET`` through ``triton.knobs`` at
decoration time).

Conventions of the step kernels: one program per batch row (``grid = (B,)``), the
row's ``H`` features in one block of ``BLOCK_H = next_power_of_2(H)`` lanes (lanes
``>= H`` are masked off and must stay 0 wherever they enter a row reduction); all
arithmetic in float32 whatever the storage dtype; rows are contiguous with the
row strides the Python side guarantees (``(B, G*H)`` gate rows, ``(B, H)`` state rows).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

#: the accumulation / state dtype of every kernel (bf16 storage, float32 arithmetic)
ACC = torch.float32


@triton.jit
def load_f32(ptr, valid):
    """Masked load of a row block as float32 (0 on lanes past H)."""
    return tl.load(ptr, mask=valid, other=0.0).to(tl.float32)


@triton.jit
def store(ptr, value, valid):
    """Masked store of a float32 block in the pointer's own dtype."""
    tl.store(ptr, value.to(ptr.dtype.element_ty), mask=valid)


@triton.jit
def tanh(x):
    """float32 tanh within ~2 ulp (3 with the GPU's approximate ``exp``), from ``tl.exp``.

    Why not simpler: ``tl`` has no portable tanh (libdevice's is per backend and the
    interpreter has none), and ``2 sigmoid(2x) - 1`` is only accurate to ~1e-7
    *absolute*: for small ``|x|`` its relative error is huge, and through the layer
    norms' backward that grew to 5e-5 in the gradients (4x the reference's error vs
    float64, on H=8). So: for ``|x| < 0.625`` an odd polynomial, ``x p(x^2)`` (a
    degree-5 Chebyshev fit of ``tanh(x)/x`` in ``x^2``, 1.7 ulp max in float32), and
    beyond ``1 - 2 / (exp(2|x|) + 1)`` (no cancellation there; ``exp`` overflowing to
    inf gives exactly 1; NaN stays NaN).
    """
    s = x * x
    p = -0.00566066475585103 * s + 0.0205805916339159
    p = p * s - 0.0537126250565052
    p = p * s + 0.13330909609794617
    p = p * s - 0.3333324193954468
    p = p * s + 1.0
    ax = tl.abs(x)
    big = 1.0 - 2.0 / (tl.exp(2.0 * ax) + 1.0)
    return tl.where(ax < 0.625, x * p, tl.where(x < 0.0, -big, big))


@triton.jit
def load_mask(m_ptr, b):
    """Row ``b`` of a bool step mask ``(B, 1)`` as float32 0/1."""
    return (tl.load(m_ptr + b) != 0).to(tl.float32)


@triton.jit
def on_real_rows(x, other, m_ptr, b, MASK: tl.constexpr):
    """``x`` on a real row, ``other`` on a padded one (``MASK``: row ``b`` of the step mask
    ``m_ptr``). A select, never a product with the mask: whatever ``x`` holds on a
    padded row (NaN, inf) does not get through."""
    if MASK:
        x = tl.where(load_mask(m_ptr, b) != 0.0, x, other)
    return x


@triton.jit
def zone(new, old, k, MODE: tl.constexpr):
    """Zoneout of one state: ``MODE`` 1 (training) keeps ``old`` where the mask ``k`` is 1
    (a select); 2 (evaluation) is ``torch.lerp(new, old, k)`` with the rate ``k``."""
    if MODE == 1:
        return tl.where(k != 0.0, old, new)
    return tl.where(k < 0.5, new + k * (old - new), old - (old - new) * (1.0 - k))


@triton.jit
def zone_kept(d, k, MODE: tl.constexpr):
    """The part of a zoned state's gradient ``d`` that goes straight to the previous state."""
    if MODE == 1:
        return tl.where(k != 0.0, d, 0.0)
    return k * d


@triton.jit
def zone_update(d, k, MODE: tl.constexpr):
    """The part of a zoned state's gradient ``d`` that goes into the step's own new value."""
    if MODE == 1:
        return tl.where(k != 0.0, 0.0, d)
    return (1.0 - k) * d


@triton.jit
def norm_stats(x, valid, n, eps):
    """``(xhat, mean, rstd)`` of a row block ``x`` (0 on invalid lanes), biased variance
    as :func:`torch.nn.functional.layer_norm`; ``xhat`` is 0 on invalid lanes."""
    mean = tl.sum(x, axis=0) / n
    d = tl.where(valid, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / n + eps)
    return d * rstd, mean, rstd


@triton.jit
def norm_input_grad(gw, xhat, rstd, n):
    r"""Layer norm backward wrt its input, for one row: ``gw`` = upstream grad times the
    gain (0 on invalid lanes) -> ``rstd (gw - mean(gw) - xhat mean(gw xhat))``."""
    return rstd * (gw - tl.sum(gw, axis=0) / n - xhat * (tl.sum(gw * xhat, axis=0) / n))


def launch_config(hidden_size: int) -> dict:
    """Launch arguments of a row kernel over ``hidden_size`` features: ``BLOCK_H`` (the
    next power of two), one warp per 128 lanes (4 fp32 per thread per block), 1 to 8
    warps (not tuned: no GPU was available when this was written), and FMA contraction
    asked for explicitly (Triton 3.9 warns that its default changes in 3.10)."""
    block = triton.next_power_of_2(hidden_size)
    return {"BLOCK_H": block, "num_warps": max(1, min(8, block // 128)), "enable_fp_fusion": True}


def prev_index(t: int, T: int, reverse: bool) -> int | None:
    """Time index of the state before step ``t`` (None: the initial state)."""
    if reverse:
        return t + 1 if t + 1 < T else None
    return t - 1 if t > 0 else None


def prev_of(seq: tuple[Tensor, ...], first: Tensor, t: int, reverse: bool) -> Tensor:
    """The state before step ``t``: ``seq[prev]`` (per-step views) or ``first``."""
    k = prev_index(t, len(seq), reverse)
    return first if k is None else seq[k]


def as_acc(x: Tensor) -> Tensor:
    """A contiguous float32 copy of ``x`` the kernels may write into (never an alias)."""
    return x.to(ACC, memory_format=torch.contiguous_format, copy=True)
