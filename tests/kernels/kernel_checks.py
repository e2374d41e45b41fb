"""Checks shared by the kernel test files (imported by name: tests/kernels/conftest.py
puts this folder on sys.path)."""
import torch

from rnnkit.kernels.triton import interpreting
from rnnkit.nn.scan import scan


def triton_interpreted() -> bool:
    """Whether Triton runs interpreted in this process (triton.language's own helpers
    included: they are decorated when ``triton`` is imported, so TRITON_INTERPRET must
    have been set before; see tests/kernels/triton/test_triton.py)."""
    if not interpreting():
        return False
    import triton.language.standard as standard
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(standard.sigmoid, InterpretedFunction)


def random_cell(factory, input_size, hidden_size, dtype, seed=0):
    """``factory(input_size, hidden_size, dtype=dtype)`` with random (not init) parameters,
    so every term, layer-norm gains included, matters."""
    torch.manual_seed(seed)
    cell = factory(input_size, hidden_size, dtype=dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.5)
    return cell


def outputs_and_grads(run, cell, x, state, mask, reverse):
    """Outputs, final states and grads of a fixed random projection of all of them
    wrt x, the initial state and every parameter (the projection in float32, or in
    float64 for float64 outputs)."""
    y, final = run(cell, cell.own_params(), x, state, mask, reverse=reverse)
    outs = (y, *final)
    gen = torch.Generator().manual_seed(123)
    loss = 0
    for o in outs:
        dtype = torch.promote_types(o.dtype, torch.float32)
        loss = loss + (o.to(dtype) * torch.randn(o.shape, generator=gen, dtype=dtype)).sum()
    return outs, torch.autograd.grad(loss, [x, *state, *cell.parameters()])


def assert_parameter_grads_and_inference_match_scan(kernel, cell, x, state):
    """With no gradient wanted wrt ``x`` or the state, the kernel still gives every
    parameter the reference scan's gradient; under no_grad it gives the same outputs."""
    y, final = kernel(cell, cell.own_params(), x, state)
    (y.sum() + final[-1].sum()).backward()
    got = [p.grad.clone() for p in cell.parameters()]
    cell.zero_grad()
    y_ref, final_ref = scan(cell, cell.own_params(), x, state)
    (y_ref.sum() + final_ref[-1].sum()).backward()
    for a, b in zip(got, (p.grad for p in cell.parameters())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # inference: no graph, same numbers
        y2, _ = kernel(cell, cell.own_params(), x, state)
    torch.testing.assert_close(y2, y_ref, atol=1e-5, rtol=1e-5)


def assert_layer_runs_kernel_and_matches_scan(factory, x, lengths):
    """A 2-layer bidirectional ``factory(**kw)`` layer takes the kernel path and gives the
    reference scan's outputs, final states and gradients (input and every parameter)
    on ragged ``lengths``, under a random weighting of all outputs."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=True)
    torch.manual_seed(0)
    fast, ref = factory(**kw), factory(backend="scan", **kw)
    with torch.no_grad():
        for p in fast.parameters():
            p.normal_(0, 0.5)
    ref.load_state_dict(fast.state_dict())
    assert fast.path == "kernel" and ref.path == "scan"
    results = []
    for layer in (fast, ref):
        xi = x.clone().requires_grad_()
        out, h = layer(xi, lengths=lengths)
        h = h if isinstance(h, tuple) else (h,)
        gen = torch.Generator().manual_seed(7)
        loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in (out, *h))
        loss.backward()
        results.append({"out": out, **{f"final state {k}": s for k, s in enumerate(h)}, "dx": xi.grad,
                        **{n: p.grad for n, p in layer.named_parameters()}})
    got, want = results
    assert got.keys() == want.keys()
    for name in got:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def assert_same_with_the_same_draws(fast, ref, x, lengths=None, rtol=1e-4, atol=5e-5, seed=5):
    """``fast`` and ``ref`` (same weights, regularised) run on ``x`` after the same seed, so
    they draw the same dropout/zoneout masks: outputs, final states and every gradient agree."""
    results = []
    for layer in (fast, ref):
        torch.manual_seed(seed)
        y, state = layer(x, lengths=lengths)
        states = state if isinstance(state, tuple) else (state,)
        (y.square().sum() + sum((k + 2) * s.sum() for k, s in enumerate(states))).backward()
        results.append([y, *states, x.grad.clone(), *(p.grad.clone() for p in layer.parameters())])
        x.grad = None
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
