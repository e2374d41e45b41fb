"""The teacher-forced Jordan pass as one autograd Function equals autograd over the
plain ops (its reference), forward, backward and double backward."""
import pytest
import torch

from rnnkit.kernels.jordan_parallel import JordanTeacherForced, Workspace, reference, teacher_forced
from rnnkit.models.jordan import JordanConfig, JordanRNN

N, K, H, O = 11, 5, 7, 3
ACTS = [("tanh", "identity"), ("relu", "sigmoid"), ("sigmoid", "tanh"), ("identity", "relu")]


def _inputs(bias: bool, dtype=torch.float64, seed=0, rows=N):
    g = torch.Generator().manual_seed(seed)
    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)
    return [r(rows, K), r(H, K), r(H) if bias else None, r(O, H), r(O) if bias else None]


def _grads(fn, inputs, wanted, grad_y):
    leaves = [None if t is None else t.detach().clone().requires_grad_(w) for t, w in zip(inputs, wanted)]
    y = fn(*leaves)
    asked = [t for t in leaves if t is not None and t.requires_grad]
    return y, torch.autograd.grad(y, asked, grad_y)


@pytest.mark.parametrize("phi,psi", ACTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("wanted", [(True,) * 5, (False, True, True, True, True), (True, False, False, False, False),
                                    (False, False, False, True, False)])
def test_function_equals_reference_forward_and_backward(phi, psi, bias, wanted):
    inputs = _inputs(bias)
    grad_y = torch.randn(N, O, dtype=torch.float64)
    kept = grad_y.clone()
    y_ref, g_ref = _grads(lambda *a: reference(*a, phi, psi), inputs, wanted, grad_y)
    y_fused, g_fused = _grads(lambda *a: JordanTeacherForced.apply(*a, phi, psi), inputs, wanted, grad_y)
    torch.testing.assert_close(y_fused, y_ref, atol=1e-12, rtol=1e-12)
    assert len(g_fused) == len(g_ref) > 0
    for a, b in zip(g_fused, g_ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert torch.equal(grad_y, kept)  # the upstream gradient is read, never written


@pytest.mark.parametrize("phi,psi", ACTS)
def test_gradcheck_and_double_backward(phi, psi):
    inputs = [t.requires_grad_() for t in _inputs(True, seed=2)]
    def fn(*a):
        return JordanTeacherForced.apply(*a, phi, psi)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_a_second_backward_with_retain_graph_gives_the_same_gradients():
    inputs = [t.requires_grad_() for t in _inputs(True, seed=3)]
    y = JordanTeacherForced.apply(*inputs, "tanh", "sigmoid")
    first = torch.autograd.grad(y.sum(), inputs, retain_graph=True)
    second = torch.autograd.grad(y.sum(), inputs)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("phi,psi", ACTS)
def test_without_gradients_the_in_place_ops_give_the_same_values(phi, psi):
    inputs = _inputs(True, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(teacher_forced(*inputs, phi, psi), reference(*inputs, phi, psi),
                                   atol=1e-12, rtol=1e-12)


def test_the_model_trains_through_the_function():
    torch.manual_seed(0)
    model = JordanRNN(JordanConfig(4, 2, 6))
    x, targets = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    out = model(x, model.teacher_inputs(targets))
    nodes = {type(out.grad_fn).__name__, type(out.grad_fn.next_functions[0][0]).__name__}  # (a reshape, then it)
    assert "JordanTeacherForcedBackward" in nodes, nodes
    torch.nn.functional.mse_loss(out, targets).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_workspace_is_reused_across_calls_and_sizes_without_changing_gradients():
    ws = Workspace()
    for n in (11, 11, 4, 13, 6):  # same size, smaller (a view of the kept buffer), larger (a new one)
        inputs = _inputs(True, seed=n, rows=n)
        grad_y = torch.randn(n, O, dtype=torch.float64)
        wanted = (True,) * 5
        _, g_ref = _grads(lambda *a: reference(*a, "tanh", "sigmoid"), inputs, wanted, grad_y)
        _, g_ws = _grads(lambda *a: JordanTeacherForced.apply(*a, "tanh", "sigmoid", ws), inputs, wanted, grad_y)
        for a, b in zip(g_ws, g_ref):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
        assert ws._flat is not None and ws._flat.numel() >= n * H


def test_a_taken_buffer_is_never_handed_out_twice():
    ws, like = Workspace(), torch.empty(3, 4)
    first = ws.take(like)
    second = ws.take(like)  # while the first is in use
    assert first.data_ptr() != second.data_ptr()
    ws.give(first)
    assert ws.take(like).data_ptr() == first.data_ptr()


def test_copies_of_a_model_start_with_an_empty_workspace():
    import copy
    import pickle
    model = JordanRNN(JordanConfig(4, 2, 6))
    x, targets = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    model(x, model.teacher_inputs(targets)).sum().backward()
    assert model._workspace._flat is not None
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other._workspace._flat is None
        assert set(other.state_dict()) == set(model.state_dict())


def test_torch_func_transforms_take_the_reference_ops():
    """torch.func.grad and vmap over the teacher-forced pass (the Function's in-place
    backward is not theirs to transform): the same gradients as autograd."""
    torch.manual_seed(0)
    model = JordanRNN(JordanConfig(4, 2, 6)).double()
    x, targets = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, 2, dtype=torch.float64)
    y_prev = model.teacher_inputs(targets)
    params = dict(model.named_parameters())

    def loss(p, x_):
        return torch.func.functional_call(model, p, (x_, y_prev)).pow(2).sum()

    got = torch.func.grad(loss)(params, x)
    want = torch.autograd.grad(loss(params, x), list(params.values()))
    for name, w in zip(params, want):
        torch.testing.assert_close(got[name], w, rtol=1e-12, atol=1e-12)
    batched = torch.func.vmap(lambda x_, y_: model(x_[None], y_[None])[0])(x, y_prev)
    torch.testing.assert_close(batched, model(x, y_prev), rtol=1e-12, atol=1e-12)


def _trained_grads(model, x, y_prev, forward=None):
    model.zero_grad()
    out = (forward or model)(x, y_prev)
    out.pow(2).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def test_clear_workspace_frees_the_kept_scratch_and_the_model_still_trains():
    torch.manual_seed(0)
    model = JordanRNN(JordanConfig(4, 2, 6))
    x, y_prev = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    want = _trained_grads(model, x, y_prev)
    assert model._workspace._flat is not None
    model.clear_workspace()
    assert model._workspace._flat is None
    for got, w in zip(_trained_grads(model, x, y_prev), want):
        torch.testing.assert_close(got, w, atol=0, rtol=0)


@pytest.mark.parametrize("phi,psi", ACTS)
def test_non_reentrant_checkpointing_gives_the_same_gradients(phi, psi):
    """Checkpointing recomputes the pass and keeps the recomputed activations in its own
    store, past the recomputed node: nothing of them may be reused as scratch."""
    from torch.utils.checkpoint import checkpoint
    torch.manual_seed(0)
    model = JordanRNN(JordanConfig(4, 2, 6, nonlinearity=phi, output_activation=psi)).double()
    x, y_prev = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, 2, dtype=torch.float64)
    want = _trained_grads(model, x, y_prev)
    got = _trained_grads(model, x, y_prev, lambda *a: checkpoint(model, *a, use_reentrant=False))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-12)


def test_training_after_an_inference_mode_call():
    """Validation under torch.inference_mode, then training: nothing the first made
    (inference tensors) is written in place by the second."""
    torch.manual_seed(0)
    model = JordanRNN(JordanConfig(4, 2, 6))
    x, y_prev = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    want = _trained_grads(model, x, y_prev)
    with torch.inference_mode():
        model(x, y_prev)
    with torch.no_grad():
        model(x, y_prev)
    for got, w in zip(_trained_grads(model, x, y_prev), want):
        torch.testing.assert_close(got, w, atol=0, rtol=0)


def test_autocast_trains_through_the_reference_ops():
    """Under CPU autocast (bfloat16) the pass is the reference's ops, each cast by
    autocast and back by autograd: the same output and gradients as those ops."""
    torch.manual_seed(0)
    model = JordanRNN(JordanConfig(4, 2, 6, output_activation="sigmoid"))
    x, y_prev = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    c = model.cell

    def plain(x_, y_):
        z = torch.cat([x_, y_], -1).reshape(15, 6)
        w = torch.cat([c.weight_ih, c.weight_oh], 1)
        return reference(z, w, c.bias_ih, c.weight_ho, c.bias_ho, "tanh", "sigmoid").reshape(3, 5, 2)

    results = []
    for forward in (model, plain):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(x, y_prev)
        out.float().pow(2).sum().backward()
        results.append((out, [p.grad for p in model.parameters()]))
    (out, grads), (want, want_grads) = results
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, want, atol=1e-2, rtol=1e-2)
    for g, w in zip(grads, want_grads):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, atol=1e-2, rtol=1e-2)  # (bfloat16 products)
