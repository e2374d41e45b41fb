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
    for n in (11, 11, 4, 13, 6):  # same size, smaller (a view of a kept buffer), larger (a new one)
        inputs = _inputs(True, seed=n, rows=n)
        grad_y = torch.randn(n, O, dtype=torch.float64)
        wanted = (True,) * 5
        _, g_ref = _grads(lambda *a: reference(*a, "tanh", "sigmoid"), inputs, wanted, grad_y)
        _, g_ws = _grads(lambda *a: JordanTeacherForced.apply(*a, "tanh", "sigmoid", ws), inputs, wanted, grad_y)
        for a, b in zip(g_ws, g_ref):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
        sizes = ws.idle_sizes()
        assert 0 < len(sizes) <= Workspace.KEEP and sizes[0] >= n * H


def test_a_taken_buffer_is_never_handed_out_twice():
    ws, like = Workspace(), torch.empty(0)
    first = ws.take((3, 4), like)
    second = ws.take((3, 4), like)  # while the first is in use
    assert first.data_ptr() != second.data_ptr() and first.shape == (3, 4)
    ws.give(first)
    assert ws.take((2, 5), like).data_ptr() == first.data_ptr()  # (a smaller shape: a view of it)


def test_the_pool_keeps_at_most_keep_buffers_the_largest():
    ws, like = Workspace(), torch.empty(0)
    taken = [ws.take((n,), like) for n in (5, 9, 7)]
    for t in taken:
        ws.give(t)
    assert ws.idle_sizes() == [9, 7]
    ws.clear()
    assert ws.idle_sizes() == []


def test_the_hidden_activations_stay_on_loan_while_a_graph_can_read_them():
    """h lives in a pool buffer that comes back only when its graph is freed: a second
    backward (retain_graph) after another pass through the same pool reads its own h."""
    ws = Workspace()
    inputs = [t.requires_grad_() for t in _inputs(True, seed=5)]
    other = [t.detach().clone().mul_(2).requires_grad_() for t in inputs]
    y = JordanTeacherForced.apply(*inputs, "tanh", "sigmoid", ws)
    first = torch.autograd.grad(y.sum(), inputs, retain_graph=True)
    for _ in range(3):  # other passes take buffers from the pool and give them back
        torch.autograd.grad(JordanTeacherForced.apply(*other, "tanh", "sigmoid", ws).sum(), other)
        teacher_forced(*[t.detach() for t in other], "tanh", "sigmoid", ws)
    second = torch.autograd.grad(y.sum(), inputs)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    idle = len(ws.idle_sizes())
    del y
    assert len(ws.idle_sizes()) == min(idle + 1, Workspace.KEEP)  # its h came back with the graph


def test_a_loan_returned_while_the_pool_is_locked_does_not_deadlock():
    """The garbage collector may free a graph (and run its loan's finaliser) inside any
    allocation, also one the pool makes under its own lock."""
    import threading
    ws = Workspace()
    buffer, loan = ws.lend((3, 4), torch.empty(0))
    del buffer

    def free_while_locked():
        nonlocal loan
        with ws._lock:
            del loan
    worker = threading.Thread(target=free_while_locked, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the loan's finaliser blocked on the pool's lock"
    assert ws.idle_sizes() == [12]


def test_copies_of_a_model_start_with_an_empty_workspace():
    import copy
    import pickle
    model = JordanRNN(JordanConfig(4, 2, 6))
    x, targets = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    model(x, model.teacher_inputs(targets)).sum().backward()
    assert model._workspace.idle_sizes()
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other._workspace.idle_sizes() == []
        assert set(other.state_dict()) == set(model.state_dict())
        other(x, other.teacher_inputs(targets)).sum().backward()  # and a working one


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


def test_clear_workspace_frees_the_idle_buffers_and_the_model_still_trains():
    model = JordanRNN(JordanConfig(4, 2, 6))
    x, targets = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    model(x, model.teacher_inputs(targets)).sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.clear_workspace()
    assert model._workspace.idle_sizes() == []
    model.zero_grad()
    model(x, model.teacher_inputs(targets)).sum().backward()
    for p, g in zip(model.parameters(), want):
        torch.testing.assert_close(p.grad, g, atol=0, rtol=0)
