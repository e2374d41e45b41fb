r"""Higher-order gradients of the fused kernels.

Each fused kernel is one ``torch.autograd.Function`` with a hand-derived, first-order
backward (no graph of its own). When a graph of the gradient is wanted
(``create_graph=True``: double backward, gradient penalties, Hessian-vector products;
inside ``backward`` that is ``torch.is_grad_enabled()``), the Function instead
rebuilds its forward from its saved inputs with the differentiable reference
(:func:`rnnkit.kernels.reference.scan_projected`, autograd through the cell's own
``recur``) and returns ``torch.autograd.grad(outputs, inputs, grad_outputs,
create_graph=True)`` of that: exact higher-order gradients on every path, at the
reference's speed, and no cost at all to the usual first-order backward.

:class:`Rebuild` is what a kernel hands its Function for that. The Function gets
the *projected* input ``xp`` (one GEMM for all steps, done before it); keeping ``xp``
alive until the backward just in case would grow every kernel's saved memory by
``T x B x G`` (a third to two thirds more), so the Function keeps the input ``x``
instead (which the projection's own backward keeps anyway) and the rebuild runs the
kernel's projection again.

Paths that cannot give a correct higher-order gradient raise
:class:`DoubleBackwardError` (see :func:`first_order_only`), never a wrong number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..cells.base import Params, RecurrentCell
from ..errors import RnnkitError
from .reference import scan_projected


class DoubleBackwardError(RnnkitError, RuntimeError):
    """A second derivative was asked of a path that cannot compute it correctly."""


@dataclass(eq=False)
class Rebuild:
    """How a fused LSTM/GRU kernel's Function rebuilds its forward with autograd.

    ``xp = projection(cell, p, x)`` is exactly the Function's ``xp`` input, as a
    function of ``x`` (padding already zeroed) and the parameters in ``p``: the
    reference's projection with ``b_hh`` folded in.
    ``recurrent`` names the cell parameters the Function takes after ``xp`` and the
    states, in its argument order; the rebuild uses the Function's own (saved)
    tensors for those, so the gradients are wrt exactly its inputs.

    The Function's forward hands :meth:`take_tensors` to ``save_for_backward`` and
    keeps this object (then tensor-free) on ``ctx``.
    """

    cell: RecurrentCell
    p: Params
    x: Tensor | None
    projection: Callable[[RecurrentCell, Params, Tensor], Tensor]
    recurrent: Sequence[str]
    reverse: bool
    #: ``finish(cell, q, xp)``: what the cell's ``recur`` takes, when the Function's ``xp``
    #: is not it yet (the CPU LSTM normalises a layer-norm cell's input inside its loop);
    #: ``q`` maps ``recurrent`` to the Function's own inputs
    finish: Callable[[RecurrentCell, Params, Tensor], Tensor] | None = None
    _names: list[str] = field(default_factory=list, init=False, repr=False)  # p's tensors, as taken

    def take_tensors(self) -> list[Tensor]:
        """``x`` and every tensor in ``p``, for ``save_for_backward`` (version-checked,
        and freed with the graph's buffers), dropping this object's own references:
        ``ctx`` outlives the backward, and would keep ``x`` alive with it."""
        names = [n for n, t in vars(self.p).items() if isinstance(t, Tensor)]
        tensors = [self.x, *(getattr(self.p, n) for n in names)]
        self.x, self.p = None, Params(**{**vars(self.p), **dict.fromkeys(names)})
        self._names = names
        return tensors

    def grads(self, saved: Sequence[Tensor], inputs: Sequence[Tensor | None], needs: Sequence[bool],
              mask: Tensor | None, grad_outputs: Sequence[Tensor]) -> list[Tensor | None]:
        """The Function's gradients as a graph, for a backward with ``create_graph=True``.

        ``saved``: :meth:`take_tensors`' back from ``ctx.saved_tensors``; ``inputs``: the
        Function's tensor inputs ``(xp, *states, *recurrent parameters)`` (``xp`` may be
        None: it is rebuilt) and ``needs`` whether each wants a gradient;
        ``grad_outputs`` those of ``(y, *final_states)``. Returns one entry per input.
        """
        n_states = len(self.cell.state_sizes())
        states, params = list(inputs[1:1 + n_states]), list(inputs[1 + n_states:])
        with torch.enable_grad():
            x, p = self._restore(saved)
            xp = self.projection(self.cell, p, x)
            q = Params(**{**vars(p), "bias_hh": None, **dict(zip(self.recurrent, params))})
            xq = xp if self.finish is None else self.finish(self.cell, q, xp)
            y, final = scan_projected(self.cell, q, xq, tuple(states), mask, self.reverse)
            return differentiate((y, *final), [xp, *states, *params], needs, grad_outputs)

    def projected(self, saved: Sequence[Tensor]) -> Tensor:
        """The Function's ``xp`` again, from :meth:`take_tensors`' tensors, without a graph
        (for a kernel whose backward consumed its own buffers and must run its forward again)."""
        with torch.no_grad():
            x, p = self._restore(saved)
            return self.projection(self.cell, p, x)

    def _restore(self, saved: Sequence[Tensor]) -> tuple[Tensor, Params]:
        """``(x, p)`` from :meth:`take_tensors`' tensors."""
        x, *rest = saved
        return x, Params(**{**vars(self.p), **dict(zip(self._names, rest))})


def differentiate(outputs: Sequence[Tensor], inputs: Sequence[Tensor | None], needs: Sequence[bool],
                  grad_outputs: Sequence[Tensor]) -> list[Tensor | None]:
    """``torch.autograd.grad(outputs, inputs, grad_outputs, create_graph=True)`` for the
    inputs in ``needs`` (None for the others, and for inputs the outputs do not use)."""
    wanted = [k for k, (t, need) in enumerate(zip(inputs, needs)) if need and t is not None and t.requires_grad]
    grads: list[Tensor | None] = [None] * len(inputs)
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if wanted and pairs:
        got = torch.autograd.grad([o for o, _ in pairs], [inputs[k] for k in wanted], [g for _, g in pairs],
                                  create_graph=True, allow_unused=True)
        for k, g in zip(wanted, got):
            grads[k] = g
    return grads


class _Tagged(torch.autograd.Function):
    """Identity on its tensors that remembers an error message for its backward."""

    @staticmethod
    def forward(ctx, error: str, *tensors: Tensor):
        ctx.error = error
        return tuple(t.view_as(t) for t in tensors)


class _FirstOrderOnly(_Tagged):
    """Its backward, when building a graph, marks the gradients it passes on so that
    differentiating them raises ``error``."""

    @staticmethod
    def backward(ctx, *grads: Tensor):
        if torch.is_grad_enabled():
            grads = _Refuse.apply(ctx.error, *grads)
        return (None, *grads)


class _Refuse(_Tagged):
    """Its backward (the second backward) raises :class:`DoubleBackwardError`."""

    @staticmethod
    def backward(ctx, *grads: Tensor):
        raise DoubleBackwardError(ctx.error)


def first_order_only(error: str, *tensors: Tensor) -> tuple[Tensor, ...]:
    """``tensors`` unchanged, except that a higher-order gradient through what is
    computed from them raises :class:`DoubleBackwardError` with ``error`` (and the
    first-order one is untouched). Put it on the inputs of a block whose autograd
    second derivative is wrong: every gradient leaving the block passes through it."""
    if not any(t.requires_grad for t in tensors):
        return tensors
    return _FirstOrderOnly.apply(error, *tensors)
