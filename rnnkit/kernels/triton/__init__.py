"""Triton GPU path for the custom cells torch.nn has no kernel for.

* :mod:`rnnkit.kernels.triton.lstm` (``"triton.lstm"``): :class:`~rnnkit.cells.LSTMCell` with peepholes
  and/or layer norm, without projection;
* :mod:`rnnkit.kernels.triton.gru` (``"triton.gru"``): :class:`~rnnkit.cells.GRUCell` ``"reset_before"``
  and ``"simplified"``.

Structure as the fused CPU kernels (:mod:`rnnkit.kernels.cpu`): the whole
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
``tanh`` is a float32 one accurate to ~2 ulp (:func:`rnnkit.kernels.triton.common.tanh`):
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
* ``proj_size > 0`` (LSTMP) and ``float16``/``float64``: the reference scan runs them;
* tuning: ``num_warps`` and the one-row-per-program layout are first guesses, and
  ``H > MAX_HIDDEN`` is left to the reference (one program holds a whole row).

GPU timing has NOT been measured, and the kernels have not run on a GPU: no GPU was
available on the machine this was written on. Correctness is tested on CPU through
the Triton interpreter (``TRITON_INTERPRET=1``: tests/kernels/triton/test_triton.py and
the registry-driven tests/kernels/test_kernel_parity.py), forward and backward, against the reference scan; a slow test compiles every kernel
variant (float32 and bfloat16) through Triton's NVIDIA pipeline to sm_80/sm_90 cubins.

Importing this module never imports ``triton``: the registry asks :func:`triton_available`
(once, cached) only for an input :func:`match` takes, and the kernel modules, which
import it, are imported on the first call of a kernel. These kernels run only on
request (:func:`rnnkit.nn.dispatch.triton_requested`).
"""
from __future__ import annotations

import functools
import importlib
import os

import torch
from torch import Tensor

from ...cells.base import Params, RecurrentCell, State
from ...cells.gru import GRUCell
from ...cells.lstm import LSTMCell
from ..higher_order import Rebuild
from ..reference import zero_padding
from ..registry import Kernel, Sample, Verdict, register
from ..specs import GRUSpec, LSTMSpec, gru_supported, input_verdict, lstm_supported, state_verdict, summed_bias
from ..step_masks import kernel_masks

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


def available() -> Verdict:
    """The registry's availability check: ``triton`` imports."""
    return triton_available() or "triton is not installed (or does not import)"


def interpreting() -> bool:
    """``TRITON_INTERPRET`` set as Triton reads it (then the kernels may run on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on", "y")


def device_ok(x: Tensor) -> bool:
    """CUDA (or ROCm) tensors; CPU tensors only under the Triton interpreter."""
    return x.device.type == "cuda" or (x.device.type == "cpu" and interpreting())


def lstm_cells(cell: RecurrentCell) -> Verdict:
    """The LSTM configurations the Triton kernel computes (the CPU kernel's, less projection)."""
    verdict = lstm_supported(cell)
    if verdict is True and cell.proj_size:
        return "proj_size > 0: no Triton kernel for the projection"
    return verdict


def match(cell: RecurrentCell, x: Tensor, p: Params, state: State | None, mask: Tensor | None) -> Verdict:
    """CUDA tensors (CPU ones under the interpreter), float32 or bfloat16, ``H <=`` :data:`MAX_HIDDEN`."""
    if not device_ok(x):
        return f"input on {x.device}: Triton runs on CUDA (on CPU only with TRITON_INTERPRET=1)"
    verdict = input_verdict(x, p, DTYPES)
    if verdict is not True:
        return verdict
    if cell.hidden_size > MAX_HIDDEN:
        return f"hidden_size {cell.hidden_size} > {MAX_HIDDEN}: one program holds a whole row"
    return state_verdict(cell, x, state, mask)


def _folded(p: Params) -> Params:
    """``p`` with ``b_hh`` folded into ``b_ih`` (see :func:`~rnnkit.kernels.specs.summed_bias`)."""
    return Params(**{**vars(p), "bias_ih": summed_bias(p), "bias_hh": None})


def _projection(cell: RecurrentCell, p: Params, x: Tensor) -> Tensor:
    """The kernels' input projection: the cell's own, ``b_hh`` folded in."""
    return cell.project_input(x, _folded(p))


def lstm_scan(cell: LSTMCell, p: Params, x: Tensor, state: State,
              mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """The ``"triton.lstm"`` kernel's ``run`` on an input :func:`match` took:
    ``x (T, B, I)``, ``state = (h (B, H), c (B, H))``, ``mask (T, B, 1)`` bool
    -> ``(y (T, B, H), (h_n, c_n))``."""
    h0, c0 = state
    impl = importlib.import_module(".lstm", __name__)
    spec = LSTMSpec(peephole=cell.peephole, layer_norm=cell.layer_norm, proj=False, reverse=reverse)
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


def gru_scan(cell: GRUCell, p: Params, x: Tensor, state: State,
             mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
    """The ``"triton.gru"`` kernel's ``run`` on an input :func:`match` took:
    ``x (T, B, I)``, ``state = (h (B, H),)``, ``mask (T, B, 1)`` bool -> ``(y (T, B, H), (h_n,))``."""
    (h0,) = state
    impl = importlib.import_module(".gru", __name__)
    x = zero_padding(x, mask)  # before the projection: nothing a padded step holds gets in
    xp = _projection(cell, p, x).contiguous()
    rebuild = Rebuild(cell, p, x, _projection, ("weight_hh",), reverse)
    km = kernel_masks(p, x.shape[1], cell.state_sizes(), x.device)
    y, h = impl.TritonGRUScan.apply(rebuild, GRUSpec(cell.variant, reverse),
                                    None if mask is None else mask.contiguous(), km, xp, h0.contiguous(),
                                    p.weight_hh)
    return y, (h,)


def _sample(name: str, make, cases: tuple = Sample.cases) -> Sample:
    return Sample(name, make, dtypes=(torch.float32,), cases=cases)  # bfloat16: tests/kernels/triton


_ONCE = ((True, True),)  # the bias is folded before the loop: one case is enough
LSTM_SAMPLES = (
    _sample("lstm_peephole_layer_norm", lambda i, h, **kw: LSTMCell(i, h, peephole=True, layer_norm=True, **kw)),
    _sample("lstm_peephole", lambda i, h, **kw: LSTMCell(i, h, peephole=True, **kw)),
    _sample("lstm_layer_norm", lambda i, h, **kw: LSTMCell(i, h, layer_norm=True, **kw)),
    _sample("lstm_peephole_no_bias", lambda i, h, **kw: LSTMCell(i, h, bias=False, peephole=True, **kw), _ONCE),
    _sample("lstm_layer_norm_no_bias", lambda i, h, **kw: LSTMCell(i, h, bias=False, layer_norm=True, **kw), _ONCE),
)
GRU_SAMPLES = (
    _sample("gru_reset_before", lambda i, h, **kw: GRUCell(i, h, variant="reset_before", **kw)),
    _sample("gru_simplified", lambda i, h, **kw: GRUCell(i, h, variant="simplified", **kw)),
    _sample("gru_reset_before_no_bias", lambda i, h, **kw: GRUCell(i, h, bias=False, variant="reset_before", **kw),
            _ONCE),
    _sample("gru_simplified_no_bias", lambda i, h, **kw: GRUCell(i, h, bias=False, variant="simplified", **kw),
            _ONCE),
)

# asked before the CPU kernels: on CUDA tensors (or under the interpreter) nothing else takes these cells
LSTM_KERNEL = register(Kernel("triton.lstm", "triton", lstm_scan, lstm_cells, match, priority=10,
                              available=available, samples=LSTM_SAMPLES))
GRU_KERNEL = register(Kernel("triton.gru", "triton", gru_scan, gru_supported, match, priority=10,
                             available=available, samples=GRU_SAMPLES))
