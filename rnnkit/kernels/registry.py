"""The open registry of fused kernels: which kernel, if any, runs a cell on an input.

A :class:`Kernel` says which cells it computes (:attr:`Kernel.supports`), which inputs
it takes (:attr:`Kernel.match`), whether it can run in this process at all
(:attr:`Kernel.available`: a compiler, ``triton``), and how to run
(:attr:`Kernel.run`, the reference scan's signature). :func:`find` asks the registered
kernels in priority order and returns the first that takes the input, or None: then
the reference scan runs. A kernel never falls back on its own; refusing is its
``match``'s job, with a reason (:func:`explain` lists them).

This module imports nothing from rnnkit but the cell interface, so a kernel module
registers itself with ``from ..registry import Kernel, register`` without a cycle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor

from ..cells.base import Params, RecurrentCell, State

#: ``True``: the kernel takes it; ``False`` or a reason (a string): it does not
Verdict = Union[bool, str]


def _always() -> Verdict:
    return True


@dataclass(frozen=True)
class Sample:
    """A configuration a kernel's tests run it on: ``make(input_size, hidden_size,
    dtype=...)`` builds the cell; the parity tests compare the kernel with the
    reference scan on it in every dtype of ``dtypes`` (float64: by gradcheck), for
    each ``(reverse, masked)`` of ``cases``."""
    name: str
    make: Callable[..., RecurrentCell]
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    cases: tuple[tuple[bool, bool], ...] = ((False, False), (False, True), (True, False), (True, True))


@dataclass(frozen=True, eq=False)
class Kernel:
    """One fused path. ``run(cell, p, x (T, B, I), state, mask (T, B, 1) | None, reverse)
    -> (y (T, B, O), final_state)`` computes exactly what the reference scan computes.

    ``supports(cell)``: the cells it computes, whatever the input (a layer with
    ``backend="triton"`` is checked with it at construction); ``match(cell, x, p, state,
    mask)``: whether it takes this input (``state``/``mask`` None when not known yet:
    then a layer's own, well-formed ones); ``available()``: whether it can run in this
    process. Each returns True or a reason. Higher ``priority`` is asked first (ties:
    registration order). ``samples``: what the registry-driven tests run it on.
    """
    name: str
    backend: str
    run: Callable[..., tuple[Tensor, State]]
    supports: Callable[[RecurrentCell], Verdict]
    match: Callable[[RecurrentCell, Tensor, Params, State | None, Tensor | None], Verdict]
    priority: int = 0
    available: Callable[[], Verdict] = _always
    samples: tuple[Sample, ...] = ()

    def __call__(self, cell: RecurrentCell, p: Params, x: Tensor, state: State,
                 mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, State]:
        return self.run(cell, p, x, state, mask, reverse)

    def verdict(self, cell: RecurrentCell, x: Tensor, p: Params, state: State | None = None,
                mask: Tensor | None = None) -> Verdict:
        """True if this kernel runs ``cell`` on this input, else the first reason it does not
        (cell, then input, then availability: ``triton`` is only imported for an input it takes)."""
        for check in (lambda: self.supports(cell), lambda: self.match(cell, x, p, state, mask), self.available):
            verdict = check()
            if verdict is not True:
                return verdict or f"{self.name}: refused"
        return True


#: by name, in registration order (which breaks ties of priority)
_KERNELS: dict[str, Kernel] = {}


def register(kernel: Kernel) -> Kernel:
    """Add ``kernel`` (replacing one of the same name, which then counts as registered last);
    returns it."""
    _KERNELS.pop(kernel.name, None)
    _KERNELS[kernel.name] = kernel
    return kernel


def unregister(name: str) -> Kernel:
    """Remove the kernel called ``name``; returns it (so it can be registered again)."""
    try:
        return _KERNELS.pop(name)
    except KeyError:
        raise KeyError(f"no kernel {name!r} registered; registered: {sorted(_KERNELS)}") from None


def registered() -> tuple[Kernel, ...]:
    """Every registered kernel, in the order :func:`find` asks them."""
    return tuple(sorted(_KERNELS.values(), key=lambda k: -k.priority))


def find(cell: RecurrentCell, x: Tensor, p: Params, state: State | None = None,
         mask: Tensor | None = None) -> Kernel | None:
    """The kernel that runs ``cell`` on ``x (T, B, I)`` with parameters ``p`` (and
    ``state``, ``mask`` when known), or None for the reference scan."""
    for kernel in registered():
        if kernel.verdict(cell, x, p, state, mask) is True:
            return kernel
    return None


def explain(cell: RecurrentCell, x: Tensor, p: Params, state: State | None = None,
            mask: Tensor | None = None) -> list[tuple[str, Verdict]]:
    """Each kernel's answer for this input, in :func:`find`'s order (for debugging a path)."""
    return [(k.name, k.verdict(cell, x, p, state, mask)) for k in registered()]
