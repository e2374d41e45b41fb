"""Triton GPU path for the custom cells torch.nn has no kernel for.

* :mod:`rnnkit.kernels.triton_lstm`: :class:`~rnnkit.cells.LSTMCell` with peepholes
  and/or layer norm, without projection;
* :mod:`rnnkit.kernels.triton_gru`: :class:`~rnnkit.cells.GRUCell` ``"reset_before"``
  and ``"simplified"``.

Structure as the fused CPU kernels (:mod:`rnnkit.kernels.cpu_fused`): the whole
sequence is one ``torch.autograd.Function`` with hand-derived BPTT; the input
projection of every step is one GEMM before the loop (``cell.project_input``, with
``b_hh`` folded into its bias). What is fused, per step:

* forward: the recurrent GEMM by torch (cuBLAS) into a preallocated buffer, then ONE
  Triton kernel doing every gate nonlinearity, the peepholes, both layer norms (LN_h
  over the whole ``4H`` row, LN_c over ``H``), the mask (padded steps carry the state)
  and the state update, storing the gate activations, the float32 cell state and the
  norms' statistics for the backward;
* backward: ONE Triton kernel producing the pre-activation adjoints, the ``dc`` carry,
  the LN_h input grad (the GEMM's operand) and the pointwise part of the ``dh`` carry,
  then one GEMM for ``dh``; the weight gradients are a few large GEMMs/reductions
  after the loop.

Exception: GRU ``"reset_before"`` needs the reset gate before the candidate's GEMM,
so its step is GEMM, kernel, GEMM, kernel in both directions (two launches).

Dtypes: float32 and bfloat16. With bfloat16 inputs, the GEMMs run in bfloat16
(fp32 accumulation in cuBLAS) and everything in the kernels in float32; the cell
state ``c`` (LSTM) and the GRU's ``h`` are carried in float32 between steps, and so are
the backward's ``dc`` carry and the pointwise part of its ``dh`` carry (the GEMM part,
``dS W_hh``, comes out of cuBLAS in bfloat16); the gate activations are saved in float32.
``tanh`` is a float32 one accurate to ~2 ulp (:func:`rnnkit.kernels.triton_common.tanh`):
``2 sigmoid(2x) - 1`` cost 4x the reference's error in the layer-norm gradients.

Not done yet:

* CUDA-graph capture of the time loop (per step the loop is 2 to 4 launches from
  Python; at small batch the launch overhead dominates, and a captured graph of the
  whole loop would remove it);
* a persistent kernel for small batches (``W_hh`` resident in shared memory/registers,
  the whole time loop in one launch, no per-step GEMM or launch);
* a recompute-vs-store switch (the forward stores the gate activations in float32,
  ``T x B x 4H``; they could be recomputed from the pre-activations, or stored in
  bfloat16, to trade time for memory);
* ``proj_size > 0`` (LSTMP) and ``float16``/``float64``: the reference scan (or the
  CPU kernel) runs them;
* tuning: ``num_warps`` and the one-row-per-program layout are first guesses, and
  ``H > MAX_HIDDEN`` is left to the reference (one program holds a whole row).

GPU timing has NOT been measured, and the kernels have not run on a GPU: no GPU was
available on the machine this was written on. Correctness is tested on CPU through
the Triton interpreter (``TRITON_INTERPRET=1``, tests/kernels/test_triton_cells.py),
forward and backward, against the reference scan; a slow test compiles every kernel
variant (float32 and bfloat16) through Triton's NVIDIA pipeline to sm_80/sm_90 cubins.

Importing this module never imports ``triton``: :func:`match` checks for it (once,
cached) only for a tensor the kernels could run on, and the kernel modules, which
import it, are imported on the first call of a kernel.
"""
from __future__ import annotations

import functools
import importlib
import os
from types import SimpleNamespace

import torch
from torch import Tensor

from ..cells.base import RecurrentCell, State
from ..cells.gru import GRUCell
from ..cells.lstm import LSTMCell
from . import cpu_gru, cpu_lstm
from .cpu_common import inputs_ok, summed_bias, tensors_ok, tracing
from .higher_order import Rebuild
from .reference import scan, zero_padding
from .step_masks import kernel_masks, parameter_tensors

#: dtypes the Triton kernels are written and tested for
DTYPES = (torch.float32, torch.bfloat16)

#: one program holds a whole row (LSTM: ``4 x next_pow2(H)`` float32 per gate tensor);
#: past this the registers spill badly (unmeasured guess), so the reference runs
MAX_HIDDEN = 8192


@functools.cache
def triton_available() -> bool:
    """Whether ``triton`` imports (checked once; a broken install counts as missing)."""
    try:
        importlib.import_module("triton")
    except Exception:  # ImportError, or a driver/ABI error raised at import
        return False
    return True


def interpreting() -> bool:
    """``TRITON_INTERPRET`` set as Triton reads it (then the kernels may run on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on", "y")


def device_ok(x: Tensor) -> bool:
    """CUDA (or ROCm) tensors; CPU tensors only under the Triton interpreter."""
    return x.device.type == "cuda" or (x.device.type == "cpu" and interpreting())


def lstm_supported(cell: RecurrentCell) -> bool:
    """The LSTM configurations the Triton kernel computes (the CPU kernel's, less projection)."""
    return isinstance(cell, LSTMCell) and cpu_lstm.supports(cell) and cell.proj_size == 0


def gru_supported(cell: RecurrentCell) -> bool:
    """The GRU variants the Triton kernels compute (the CPU kernels' own)."""
    return isinstance(cell, GRUCell) and cpu_gru.supports(cell)


def match(cell: RecurrentCell, x: Tensor, p: SimpleNamespace):
    """The Triton kernel for ``cell`` on ``x (T, B, I)`` with parameters ``p``, or None."""
    if tracing() or x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0 or x.dtype not in DTYPES:
        return None
    if not device_ok(x) or torch.is_autocast_enabled(x.device.type):
        return None  # under autocast the reference's matmuls change precision; ours would not
    if cell.hidden_size > MAX_HIDDEN or not tensors_ok(x, parameter_tensors(p)):
        return None
    kernel = lstm_scan if lstm_supported(cell) else gru_scan if gru_supported(cell) else None
    return kernel if kernel is not None and triton_available() else None


def _folded(p: SimpleNamespace) -> SimpleNamespace:
    """``p`` with ``b_hh`` folded into ``b_ih`` (see :func:`~rnnkit.kernels.cpu_common.summed_bias`)."""
    return SimpleNamespace(**{**vars(p), "bias_ih": summed_bias(p), "bias_hh": None})


def _projection(cell: RecurrentCell, p: SimpleNamespace, x: Tensor) -> Tensor:
    """The kernels' input projection: the cell's own, ``b_hh`` folded in."""
    return cell.project_input(x, _folded(p))


def lstm_scan(cell: LSTMCell, p: SimpleNamespace, x: Tensor, state: State,
              mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """Drop-in for :func:`rnnkit.nn.scan.scan` on a supported :class:`LSTMCell`:
    ``x (T, B, I)``, ``state = (h (B, H), c (B, H))``, ``mask (T, B, 1)`` bool
    -> ``(y (T, B, H), (h_n, c_n))``."""
    h0, c0 = state
    if not inputs_ok(cell, x, state, mask):
        return scan(cell, p, x, state, mask, reverse)
    impl = importlib.import_module(".triton_lstm", __package__)
    spec = cpu_lstm.LSTMSpec(peephole=cell.peephole, layer_norm=cell.layer_norm, proj=False, reverse=reverse)
    x = zero_padding(x, mask)  # before the projection: nothing a padded step holds gets in
    xp = _projection(cell, p, x).contiguous()
    opt = (lambda name: getattr(p, name, None))
    rebuild = Rebuild(cell, p, x, _projection, _LSTM_PARAMETERS, reverse)
    km = kernel_masks(p, x.shape[1], cell.state_sizes(), x.device)
    y, h, c = impl.TritonLSTMScan.apply(
        rebuild, spec, None if mask is None else mask.contiguous(), km, xp, h0.contiguous(), c0,
        *(opt(name) for name in _LSTM_PARAMETERS))
    return y, (h, c)


#: the LSTM parameters the Triton kernel takes, in its argument order (absent ones -> None)
_LSTM_PARAMETERS = ("weight_hh", "weight_ci", "weight_cf", "weight_co", "ln_hh_weight", "ln_c_weight", "ln_c_bias")


def gru_scan(cell: GRUCell, p: SimpleNamespace, x: Tensor, state: State,
             mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """Drop-in for :func:`rnnkit.nn.scan.scan` on a supported :class:`GRUCell`:
    ``x (T, B, I)``, ``state = (h (B, H),)``, ``mask (T, B, 1)`` bool -> ``(y (T, B, H), (h_n,))``."""
    (h0,) = state
    if not inputs_ok(cell, x, state, mask):
        return scan(cell, p, x, state, mask, reverse)
    impl = importlib.import_module(".triton_gru", __package__)
    x = zero_padding(x, mask)  # before the projection: nothing a padded step holds gets in
    xp = _projection(cell, p, x).contiguous()
    rebuild = Rebuild(cell, p, x, _projection, ("weight_hh",), reverse)
    km = kernel_masks(p, x.shape[1], cell.state_sizes(), x.device)
    y, h = impl.TritonGRUScan.apply(rebuild, cpu_gru.GRUSpec(cell.variant, reverse),
                                    None if mask is None else mask.contiguous(), km, xp, h0.contiguous(),
                                    p.weight_hh)
    return y, (h,)
