r"""The teacher-forced pass of a Jordan (output-recurrence) network as one autograd
Function: every step's input is known, so all ``N = B*T`` steps are rows of one batch,

.. math::
    h = \phi(z W^\top + b),\qquad y = \psi(h W_{ho}^\top + b_{ho}),\qquad
    z = [x_t, y_{t-1}] \;(N, I + O)

(:class:`rnnkit.models.JordanRNN`'s ``forward(x, y_prev)``). Autograd over the same ops
is the reference (:func:`reference`); this backward computes the same gradients with fewer
passes over the ``(N, H)`` activations: ``dL/dh`` goes into a buffer the caller keeps
between calls (:class:`Workspace`) and the activation derivative is applied to it in place
(autograd builds two fresh ``(N, H)`` tensors: at B32 T256 H256, 16 MB of new pages
faulted in every call, the single most expensive op of the pass), and nothing is kept but
``z``, ``h`` and (for a non-identity :math:`\psi`) ``y``. A backward that builds a graph
(double backward) differentiates the reference instead.
"""
from __future__ import annotations

import math
import threading

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
                   phi: str, psi: str, h_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(h, y)``, the activations applied in place on the fresh GEMM outputs; ``h`` written
    into ``h_out`` when given (a :class:`Workspace` buffer)."""
    if h_out is None:
        pre = _affine(z, w, b)
    elif b is None:
        pre = torch.mm(z, w.t(), out=h_out)
    else:
        pre = torch.addmm(b, z, w.t(), out=h_out)
    h = _IN_PLACE[phi](pre)
    return h, _IN_PLACE[psi](_affine(h, w_ho, b_ho))


class Workspace:
    """The pass's ``(N, H)`` buffers (the hidden activations, and the backward's
    ``dL/dh``), kept from one call to the next: memory the allocator would otherwise hand
    back to the system and fault in again (2048 page faults per 8 MB, ~1 ms; at B32
    T256 H256 the most expensive op of the pass when it happens). One per model, holding
    at most :attr:`KEEP` idle buffers; :meth:`clear` drops them. Not saved, not copied
    (a deep copy or an unpickled model starts empty). A buffer in use is taken out, so
    it is never handed out twice."""

    KEEP = 2

    def __init__(self) -> None:
        self._idle: list[tuple[int, torch.dtype, torch.device, Tensor]] = []  # (numel, dtype, device, flat)
        self._returned: list[Tensor] = []  # loans' buffers, back from a finaliser (see _Loan)
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A contiguous tensor of ``shape`` with ``like``'s dtype and device (contents
        undefined)."""
        n, dtype, device = math.prod(shape), like.dtype, like.device
        with self._lock:
            self._drain_returned()
            fits = [i for i, (size, dt, dev, _) in enumerate(self._idle) if size >= n and dt == dtype and dev == device]
            flat = self._idle.pop(fits[-1])[3] if fits else None  # the smallest that fits
        if flat is None:
            flat = like.new_empty(n)
        return flat[:n].view(shape)

    def give(self, buffer: Tensor) -> None:
        """Back into the pool (the caller keeps no reference); the smallest idle buffers
        are dropped beyond :attr:`KEEP`."""
        with self._lock:
            self._drain_returned()
            self._keep(buffer)

    def idle_sizes(self) -> list[int]:
        """The idle buffers' sizes (elements), largest first."""
        with self._lock:
            self._drain_returned()
            return [entry[0] for entry in self._idle]

    def _keep(self, buffer: Tensor) -> None:
        base = buffer._base if buffer._base is not None else buffer
        flat = base.view(-1)
        self._idle.append((flat.shape[0], flat.dtype, flat.device, flat))
        self._idle.sort(key=lambda entry: entry[0], reverse=True)  # largest first
        del self._idle[self.KEEP:]

    def _drain_returned(self) -> None:
        while self._returned:
            self._keep(self._returned.pop())

    def lend(self, shape: tuple[int, ...], like: Tensor) -> tuple[Tensor, _Loan]:
        """:meth:`take`, and a loan that gives the buffer back when it is garbage (held by
        an autograd node: back when the graph is freed, never while a backward could
        still read it)."""
        buffer = self.take(shape, like)
        return buffer, _Loan(self, buffer)

    def clear(self) -> None:
        """Drop the idle buffers (buffers in use come back later as usual)."""
        with self._lock:
            self._returned.clear()
            self._idle.clear()

    def __deepcopy__(self, memo) -> Workspace:
        return Workspace()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


class _Loan:
    """A :class:`Workspace` buffer in use; given back when this object is collected.

    The finaliser only appends to the workspace's ``_returned`` (atomic under the GIL,
    no lock): the garbage collector can run it inside any allocation, also one in
    :meth:`Workspace.take` with the lock held; the next take or give files it."""

    __slots__ = ("workspace", "buffer")

    def __init__(self, workspace: Workspace, buffer: Tensor) -> None:
        self.workspace, self.buffer = workspace, buffer

    def __del__(self) -> None:
        self.workspace._returned.append(self.buffer)


class JordanTeacherForced(torch.autograd.Function):
    """``(z (N, K), w (H, K), b (H,) | None, w_ho (O, H), b_ho (O,) | None, phi, psi, workspace)
    -> y (N, O)``, :func:`reference`'s value and gradients; ``workspace``: a
    :class:`Workspace` or None (a fresh buffer each backward)."""

    @staticmethod
    def forward(ctx, z: Tensor, w: Tensor, b: Tensor | None, w_ho: Tensor, b_ho: Tensor | None,
                phi: str, psi: str, workspace: Workspace | None = None) -> Tensor:
        h_out = None
        if workspace is not None:  # h lives as long as this node: the loan ends with it
            h_out, ctx.h_loan = workspace.lend((z.shape[0], w.shape[0]), z)
        h, y = _in_place_pass(z, w, b, w_ho, b_ho, phi, psi, h_out)
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
            gh = torch.empty_like(h) if ws is None else ws.take(h.shape, h)
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
    (grad, vmap, jacrev: the Function's in-place backward is not theirs to transform) the
    reference ops."""
    if _functorch_active():
        return reference(z, w, b, w_ho, b_ho, phi, psi)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (z, w, b, w_ho, b_ho)):
        return JordanTeacherForced.apply(z, w, b, w_ho, b_ho, phi, psi, workspace)
    if workspace is None:
        return _in_place_pass(z, w, b, w_ho, b_ho, phi, psi)[1]
    h_out = workspace.take((z.shape[0], w.shape[0]), z)
    y = _in_place_pass(z, w, b, w_ho, b_ho, phi, psi, h_out)[1]
    workspace.give(h_out)  # y is a fresh tensor, not a view of it
    return y
