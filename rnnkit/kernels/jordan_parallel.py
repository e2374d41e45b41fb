r"""The teacher-forced pass of a Jordan (output-recurrence) network as one autograd
Function: every step's input is known, so all ``N = B*T`` steps are rows of one batch,

.. math::
    h = \phi(z W^\top + b),\qquad y = \psi(h W_{ho}^\top + b_{ho}),\qquad
    z = [x_t, y_{t-1}] \;(N, I + O)

(:class:`rnnkit.models.JordanRNN`'s ``forward(x, y_prev)``, which passes ``b = None`` and
``z = [x_t, y_{t-1}, 1]`` instead: the bias as a column of the GEMM). Autograd over the same ops
is the reference (:func:`reference`); this backward computes the same gradients with fewer
passes over the ``(N, H)`` activations: ``dL/dh`` goes into a buffer the caller keeps
between calls (:class:`Workspace`) and the activation derivative is applied to it in place
(autograd builds two fresh ``(N, H)`` tensors: at B32 T256 H256, 16 MB of new pages
faulted in every call, the single most expensive op of the pass), and nothing is kept but
``z``, ``h`` and (for a non-identity :math:`\psi`) ``y``. A backward that builds a graph
(double backward) differentiates the reference instead.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cells.jordan import _ACTIVATIONS

#: the activations in place, for fresh GEMM outputs (nothing else holds them)
_IN_PLACE = {"tanh": Tensor.tanh_, "relu": Tensor.relu_, "sigmoid": Tensor.sigmoid_, "identity": lambda v: v}


def _derivative_into(name: str, grad: Tensor, out: Tensor) -> Tensor:
    """``grad * act'(...)`` from the activation's output ``out``, written over ``grad``."""
    aten = torch.ops.aten
    if name == "tanh":
        aten.tanh_backward.grad_input(grad, out, grad_input=grad)
    elif name == "sigmoid":
        aten.sigmoid_backward.grad_input(grad, out, grad_input=grad)
    elif name == "relu":  # torch's relu backward: zero where the output is not positive
        aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad)
    return grad


def _affine(a: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``a @ weight.T (+ bias)``: one GEMM, the bias added inside it."""
    return torch.mm(a, weight.t()) if bias is None else torch.addmm(bias, a, weight.t())


def reference(z: Tensor, w: Tensor, b: Tensor | None, w_ho: Tensor, b_ho: Tensor | None,
              phi: str, psi: str) -> Tensor:
    """The pass as plain differentiable ops: ``z (N, K)``, ``w (H, K)``, ``w_ho (O, H)`` -> ``(N, O)``."""
    return _ACTIVATIONS[psi](_affine(_ACTIVATIONS[phi](_affine(z, w, b)), w_ho, b_ho))


def _in_place_pass(z: Tensor, w: Tensor, b: Tensor | None, w_ho: Tensor, b_ho: Tensor | None,
                   phi: str, psi: str) -> tuple[Tensor, Tensor]:
    """``(h, y)``, the activations applied in place on the fresh GEMM outputs."""
    h = _IN_PLACE[phi](_affine(z, w, b))
    return h, _IN_PLACE[psi](_affine(h, w_ho, b_ho))


class Workspace:
    """The backward's ``(N, H)`` scratch, kept from one call to the next (memory the
    allocator would otherwise hand back to the system and fault in again). One per model:
    not saved, not copied (a deep copy or an unpickled model starts empty); a buffer in
    use is taken out, so two backwards at once never share it."""

    def __init__(self) -> None:
        self._flat: Tensor | None = None

    def take(self, like: Tensor) -> Tensor:
        """A contiguous tensor of ``like``'s shape, dtype and device (contents undefined)."""
        flat, self._flat = self._flat, None
        if flat is None or flat.numel() < like.numel() or flat.dtype != like.dtype or flat.device != like.device:
            flat = like.new_empty(like.numel())
        return flat[:like.numel()].view(like.shape)

    def give(self, buffer: Tensor) -> None:
        base = buffer._base if buffer._base is not None else buffer
        if self._flat is None or base.numel() >= self._flat.numel():
            self._flat = base.view(-1)

    def clear(self) -> None:
        """Drop the kept buffer (made again at the next backward)."""
        self._flat = None

    def __deepcopy__(self, memo) -> Workspace:
        return Workspace()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._flat = None


class JordanTeacherForced(torch.autograd.Function):
    """``(z (N, K), w (H, K), b (H,) | None, w_ho (O, H), b_ho (O,) | None, phi, psi, workspace)
    -> y (N, O)``, :func:`reference`'s value and gradients; ``workspace``: a
    :class:`Workspace` or None (a fresh buffer each backward)."""

    @staticmethod
    def forward(ctx, z: Tensor, w: Tensor, b: Tensor | None, w_ho: Tensor, b_ho: Tensor | None,
                phi: str, psi: str, workspace: Workspace | None = None) -> Tensor:
        h, y = _in_place_pass(z, w, b, w_ho, b_ho, phi, psi)
        ctx.phi, ctx.psi, ctx.workspace = phi, psi, workspace
        ctx.save_for_backward(z, w, b, w_ho, b_ho, h, None if psi == "identity" else y)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        z, w, b, w_ho, b_ho, h, y = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        if torch.is_grad_enabled():  # create_graph: a graph of the reference's gradients
            return (*_reference_grads(ctx, grad_y, (z, w, b, w_ho, b_ho), needs), None, None, None)
        # d(pre-activation of y); out of place: grad_y may be someone else's tensor
        g = grad_y.contiguous() if y is None else _derivative_into(ctx.psi, grad_y.clone(), y)
        grad_w_ho = g.t() @ h if needs[3] else None
        grad_b_ho = g.sum(0) if needs[4] else None
        grad_z = grad_w = grad_b = None
        if any(needs[:3]):
            ws = ctx.workspace
            gh = torch.empty_like(h) if ws is None else ws.take(h)
            _derivative_into(ctx.phi, torch.mm(g, w_ho, out=gh), h)  # (N, H): d(pre-activation of h)
            grad_z = gh @ w if needs[0] else None
            grad_w = (z.t() @ gh).t() if needs[1] else None  # (MKL: 15% faster than gh.t() @ z at K = N = 8192)
            grad_b = gh.sum(0) if needs[2] else None
            if ws is not None:  # nothing returned is a view of it
                ws.give(gh)
        return grad_z, grad_w, grad_b, grad_w_ho, grad_b_ho, None, None, None


def _reference_grads(ctx, grad_y: Tensor, inputs: tuple, needs: tuple) -> list[Tensor | None]:
    """The inputs' gradients through :func:`reference`, as a graph (double backward)."""
    wanted = [t for t, n in zip(inputs, needs) if n]
    y = reference(*inputs, ctx.phi, ctx.psi)
    found = iter(torch.autograd.grad(y, wanted, grad_y, create_graph=True))
    return [next(found) if n else None for n in needs]


def _functorch_active() -> bool:
    active = getattr(torch._C, "_are_functorch_transforms_active", None)  # (private in torch 2.x)
    return bool(active and active())


def teacher_forced(z: Tensor, w: Tensor, b: Tensor | None, w_ho: Tensor, b_ho: Tensor | None,
                   phi: str, psi: str, workspace: Workspace | None = None) -> Tensor:
    """``y (N, O)`` for ``z (N, K)``: through :class:`JordanTeacherForced` when a gradient
    can be asked, else the same ops in place with no graph; under torch.func's transforms
    (grad, vmap, jacrev: the Function's in-place backward is not theirs to transform) and
    under autocast (its backward would mix the autocast and parameter dtypes) the
    reference ops."""
    if _functorch_active() or torch.is_autocast_enabled(z.device.type):
        # (autocast: each op of the reference casts for itself, and autograd casts back)
        return reference(z, w, b, w_ho, b_ho, phi, psi)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (z, w, b, w_ho, b_ho)):
        return JordanTeacherForced.apply(z, w, b, w_ho, b_ho, phi, psi, workspace)
    return _in_place_pass(z, w, b, w_ho, b_ho, phi, psi)[1]
