"""The regularisation a fused kernel applies inside its time loop, in kernel form.

The layer draws the masks (:func:`rnnkit.nn.regularization.step_masks`) and hands them to
whichever loop runs, in the parameter namespace ``p``: ``p.drop_h (B, R)`` (recurrent
dropout: multiplies the state where it enters ``W_hh``) and ``p.zone`` (zoneout: per state
None, a bool ``(T, B, S)`` keep mask in training, or the rate in evaluation). A kernel
reads them through :class:`KernelMasks`: the keep masks as bytes 0/1 ``(T, B, S)`` (mode
1: a select), or the rate (mode 2: the expectation, ``torch.lerp(new, old, z)``), which
the Triton kernels read from a ``(B, S)`` tensor holding it. Device-neutral: used by
every back end.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from ..cells.base import Params

NONE, SELECT, MIX = 0, 1, 2


@dataclass
class KernelMasks:
    drop_h: Tensor | None                 # (B, R) in the input dtype, or None
    keep: tuple[Tensor | None, ...]       # per state: (T, B, S) uint8 0/1, (B, S) float32 rate, or None
    modes: tuple[int, ...]                # per state: NONE, SELECT or MIX
    rates: tuple[float, ...]              # per state: the rate of MIX, else 0

    @property
    def zoned(self) -> bool:
        return any(self.modes)

    def steps(self, t0: int, t1: int) -> "KernelMasks":
        """These masks for steps ``t0:t1`` only (the per-step keep masks sliced; the rest is
        per sequence), for a loop run over a chunk of the sequence."""
        keep = tuple(k[t0:t1] if m == SELECT else k for k, m in zip(self.keep, self.modes))
        return KernelMasks(self.drop_h, keep, self.modes, self.rates)

    def at(self, i: int, t: int, dummy: Tensor) -> Tensor:
        """State ``i``'s keep values for step ``t`` (``dummy`` when not zoned: never read)."""
        mode, k = self.modes[i], self.keep[i]
        return dummy if mode == NONE else (k[t] if mode == SELECT else k)


def kernel_masks(p: Params, B: int, sizes: tuple[int, ...], device) -> KernelMasks:
    """``p``'s masks (None when the layer set none) in :class:`KernelMasks` form."""
    zone = getattr(p, "zone", None) or (None,) * len(sizes)
    keep, modes, rates = [], [], []
    for z, n in zip(zone, sizes):
        if z is None:
            keep.append(None)
            modes.append(NONE)
            rates.append(0.0)
        elif isinstance(z, Tensor):  # bool: one byte per unit, read as such
            keep.append(z.to(device).contiguous().view(torch.uint8))
            modes.append(SELECT)
            rates.append(0.0)
        else:
            keep.append(torch.full((B, n), float(z), device=device, dtype=torch.float32))
            modes.append(MIX)
            rates.append(float(z))
    drop = getattr(p, "drop_h", None)
    return KernelMasks(None if drop is None else drop.contiguous(), tuple(keep), tuple(modes), tuple(rates))


def has_masks(p: Params) -> bool:
    """Whether the layer put step masks in ``p`` (recurrent dropout or zoneout)."""
    return getattr(p, "drop_h", None) is not None or getattr(p, "zone", None) is not None


def parameter_tensors(p: Params) -> list[Tensor | None]:
    """The parameters in ``p``, without the masks (which are not parameters: other dtypes)."""
    return [v for k, v in vars(p).items() if k not in ("drop_h", "zone")]
