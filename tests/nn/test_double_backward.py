"""Double backward (issue 11) on every path a custom layer can take: the fused CPU
kernels (native C) and the minGRU/minLSTM parallel scans (fused linear,
general linear, log space), against the reference scan (``backend="scan"``, plain
autograd: double-differentiable already, and the oracle here).

The kernels' hand-written backward is first-order; with ``create_graph=True`` they
rebuild the forward with the differentiable reference and differentiate that, so:

* ``gradgradcheck`` passes (float64, tiny shapes, masked and reversed);
* the gradients taken with ``create_graph=True`` are the fused kernel's own ones;
* second derivatives through a layer (a gradient penalty) equal the reference
  scan's (``backend="scan"``): never a silently wrong number.

The log-space parallel scan (minGRU/minLSTM's GPU path) cannot: autograd's second
derivative of ``logcumsumexp`` is wrong wherever the gradient reaching it is 0. It
raises :class:`~rnnkit.kernels.higher_order.DoubleBackwardError`, naming the
workaround, and keeps its first-order gradients.

The Triton kernels get the same checks in tests/kernels/triton/test_triton.py.
"""
import pytest
import torch
from torch.autograd import gradgradcheck

import rnnkit
from rnnkit.cells import GRUCell, LSTMCell
from rnnkit.cells.min_rnn import MinGRUCell, MinLSTMCell
from rnnkit.kernels import find
from rnnkit.kernels import linear_scan as ps
from rnnkit.kernels.cpu import native
from rnnkit.kernels.higher_order import DoubleBackwardError

f64 = torch.float64


class _SubclassedMinGRU(MinGRUCell):
    """Not minGRU itself: the parallel scan takes the general ``coefficients`` form."""


CELLS = {
    "lstm_peephole": lambda i, h, **kw: LSTMCell(i, h, peephole=True, **kw),
    "lstm_layer_norm": lambda i, h, **kw: LSTMCell(i, h, layer_norm=True, **kw),
    "lstm_all_proj": lambda i, h, **kw: LSTMCell(i, h, peephole=True, layer_norm=True, proj_size=1, **kw),
    "gru_reset_before": lambda i, h, **kw: GRUCell(i, h, variant="reset_before", **kw),
    "gru_simplified": lambda i, h, **kw: GRUCell(i, h, variant="simplified", **kw),
    "mingru": lambda i, h, **kw: MinGRUCell(i, h, **kw),
    "minlstm": lambda i, h, **kw: MinLSTMCell(i, h, **kw),
    "mingru_linear_candidate": lambda i, h, **kw: MinGRUCell(i, h, positive=False, **kw),
    "mingru_subclass": lambda i, h, **kw: _SubclassedMinGRU(i, h, **kw),
}
FUSED_CPU = ("lstm_peephole", "lstm_layer_norm", "lstm_all_proj", "gru_reset_before", "gru_simplified")
CASES = ([(n, "native") for n in FUSED_CPU]
         + [(n, "linear") for n in ("mingru", "minlstm", "mingru_subclass", "mingru_linear_candidate")])
#: paths that refuse a double backward (DoubleBackwardError)
REFUSING = [(n, "log") for n in ("mingru", "minlstm", "mingru_subclass")]


def _kernel(name, path, monkeypatch):
    """The kernel function ``path`` runs for cell ``name`` (skips native without a compiler)."""
    if path in ("linear", "log"):
        return lambda *args: ps.parallel_scan(*args, method=path)
    if native.library() is None:
        pytest.skip("no C compiler: the native kernels cannot be built")
    cell = CELLS[name](2, 2, dtype=f64)
    kernel = find(cell, torch.empty(1, 1, 2, dtype=f64), cell.own_params())
    assert kernel is not None and kernel.backend == "cpu"
    return kernel


def _cell(name, seed=0):
    torch.manual_seed(seed)
    cell = CELLS[name](2, 2, dtype=f64)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.5)
    return cell


def _function(kernel, cell, mask, reverse, n_states):
    """``(x, *state, *params) -> (y, *final_state)`` through ``kernel``."""
    names = [n for n, _ in cell.named_parameters()]

    def fn(x, *args):
        p = cell.own_params()
        for n, v in zip(names, args[n_states:]):
            setattr(p, n, v)
        y, final = kernel(cell, p, x, tuple(args[:n_states]), mask, reverse)
        return (y, *final)
    return fn


def _inputs(cell, T=3, B=2, lengths=(3, 1)):
    x = torch.randn(T, B, cell.input_size, dtype=f64, requires_grad=True)
    state = [torch.randn(B, n, dtype=f64, requires_grad=True) for n in cell.state_sizes()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    mask = (torch.arange(T)[:, None] < torch.tensor(lengths)[None]).unsqueeze(-1)
    return x, state, params, mask


#: full (not fast-mode) gradgradcheck on these; the others check random projections
FULL = {("gru_reset_before", "native"), ("minlstm", "linear")}


@pytest.mark.parametrize("name,path", CASES)
def test_gradgradcheck(name, path, monkeypatch):
    """gradgradcheck through the kernel (masked, reverse); and the gradients taken with
    ``create_graph=True`` (from the rebuilt reference) are the fused backward's own."""
    kernel = _kernel(name, path, monkeypatch)
    cell = _cell(name)
    x, state, params, mask = _inputs(cell)
    fn = _function(kernel, cell, mask, True, len(state))
    inputs = [x, *state, *params]
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=(name, path) not in FULL)
    outs = fn(*inputs)
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)
    plain = torch.autograd.grad(loss, inputs, retain_graph=True)
    graph = torch.autograd.grad(loss, inputs, create_graph=True)
    for k, (a, b) in enumerate(zip(graph, plain)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9, msg=lambda m: f"input {k}: {m}")


LAYERS = {
    "lstm_peephole": lambda **kw: rnnkit.LSTM(2, 3, peephole=True, **kw),
    "lstm_all_proj": lambda **kw: rnnkit.LSTM(2, 3, peephole=True, layer_norm=True, proj_size=2, **kw),
    "gru_reset_before": lambda **kw: rnnkit.GRU(2, 3, variant="reset_before", **kw),
    "gru_simplified": lambda **kw: rnnkit.GRU(2, 3, variant="simplified", **kw),
    "mingru": lambda **kw: rnnkit.MinGRU(2, 3, **kw),
    "minlstm": lambda **kw: rnnkit.MinLSTM(2, 3, **kw),
}
LAYER_CASES = ([(n, p) for n in ("lstm_peephole", "lstm_all_proj", "gru_reset_before", "gru_simplified")
                for p in ("native",)] + [(n, "linear") for n in ("mingru", "minlstm")])


def _select_path(path, monkeypatch):
    if path in ("linear", "log"):
        monkeypatch.setattr(ps, "choose_method", lambda cell, device: path)
    elif native.library() is None:
        pytest.skip("no C compiler: the native kernels cannot be built")


def _twin_layers(name):
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, dtype=f64)
    torch.manual_seed(0)
    fast, ref = LAYERS[name](**kw), LAYERS[name](backend="scan", **kw)
    with torch.no_grad():
        for p in fast.parameters():
            p.normal_(0, 0.5)
    ref.load_state_dict(fast.state_dict())
    assert (fast.path, ref.path) == ("kernel", "scan")
    return fast, ref


def _penalty_grads(layer, x0, lengths):
    """First-order gradients (as a graph) of a random weighting of the outputs, then the
    gradients of a random weighting of those (a gradient penalty's)."""
    x = x0.clone().requires_grad_()
    out, h = layer(x, lengths=lengths)
    h = h if isinstance(h, tuple) else (h,)
    gen = torch.Generator().manual_seed(5)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=f64)).sum() for t in (out, *h))
    params = list(layer.parameters())
    first = torch.autograd.grad(loss, [x, *params], create_graph=True)
    penalty = sum((g * torch.randn(g.shape, generator=gen, dtype=f64)).sum() for g in first)
    second = torch.autograd.grad(penalty, [x, *params], allow_unused=True, materialize_grads=True)
    return first, second


@pytest.mark.parametrize("name,path", LAYER_CASES)
def test_gradient_penalty_equals_reference_scan(name, path, monkeypatch):
    """A layer's second derivatives (the gradient of a gradient penalty) on the kernel
    path equal the reference scan's: two layers, bidirectional, ragged lengths."""
    _select_path(path, monkeypatch)
    fast, ref = _twin_layers(name)
    x0 = torch.randn(3, 4, 2, dtype=f64)
    lengths = torch.tensor([4, 1, 3])
    results = [_penalty_grads(layer, x0, lengths) for layer in (fast, ref)]
    names = ["x", *(n for n, _ in fast.named_parameters())]
    for order, got, want in zip(("first", "second"), results[0], results[1]):
        for n, a, b in zip(names, got, want):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7, msg=lambda m: f"{order}-order d{n}: {m}")


@pytest.mark.parametrize("name,path", REFUSING)
def test_refusing_path_raises_the_clear_error(name, path, monkeypatch):
    """The log-space scan: first-order gradients as before, also with create_graph=True;
    differentiating them raises DoubleBackwardError (a RuntimeError) naming the layer and
    the workaround, never a wrong number."""
    kernel = _kernel(name, path, monkeypatch)
    cell = _cell(name)
    x, state, params, mask = _inputs(cell)
    fn = _function(kernel, cell, mask, True, len(state))
    layer_name = type(cell).__mro__[0].__name__.removesuffix("Cell")
    with pytest.raises(DoubleBackwardError, match=f"{layer_name}: double backward.*backend='scan'") as info:
        gradgradcheck(fn, (x, *state, *params), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)
    assert isinstance(info.value, RuntimeError)
    outs = fn(x, *state, *params)
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)
    plain = torch.autograd.grad(loss, [x, *state, *params], retain_graph=True)
    graph = torch.autograd.grad(loss, [x, *state, *params], create_graph=True)
    for a, b in zip(graph, plain):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_layer_on_log_space_scan_refuses_gradient_penalty(name, monkeypatch):
    _select_path("log", monkeypatch)
    fast, _ = _twin_layers(name)
    with pytest.raises(DoubleBackwardError, match=f"{LAYERS[name]().__class__.__name__}: double backward"):
        _penalty_grads(fast, torch.randn(3, 4, 2, dtype=f64), torch.tensor([4, 1, 3]))
