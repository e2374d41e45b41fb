"""JordanRNN: the teacher-forced parallel pass is the step-by-step loop, the closed loop
feeds back its own outputs, and JordanCell is the reference step."""
import dataclasses

import pytest
import torch
from torch.overrides import TorchFunctionMode

from rnnkit.cells import JordanCell
from rnnkit.cells import jordan as jordan_cell_module
from rnnkit.errors import ConfigError
from rnnkit.models.jordan import ACTIVATIONS, JordanConfig, JordanRNN

B, T, I, H, O = 3, 7, 4, 6, 2
ACTS = [("tanh", "identity"), ("relu", "sigmoid"), ("sigmoid", "tanh"), ("identity", "relu")]


def _model(dtype=torch.float64, seed=0, **kw) -> JordanRNN:
    torch.manual_seed(seed)
    return JordanRNN(JordanConfig(I, O, H, **kw)).to(dtype)


def _data(dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, I, generator=g, dtype=dtype)
    targets = torch.randn(B, T, O, generator=g, dtype=dtype)
    y0 = torch.randn(B, O, generator=g, dtype=dtype)
    return x, targets, y0


def _step_loop(model: JordanRNN, x, y_prev):
    """The reference: one model.step per time step, fed y_prev[:, t]."""
    return torch.stack([model.step(x[:, t], y_prev[:, t])[0] for t in range(x.shape[1])], dim=1)


def _grads(model, x, out, weight):
    loss = (out * weight).sum()
    return torch.autograd.grad(loss, [x, *model.parameters()])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("act,out_act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_parallel_teacher_forcing_equals_step_loop(dtype, tol, act, out_act, bias):
    model = _model(dtype, nonlinearity=act, output_activation=out_act, bias=bias)
    x, targets, y0 = _data(dtype)
    x.requires_grad_(True)
    y_prev = model.teacher_inputs(targets, y0)
    par = model(x, y_prev)
    seq = _step_loop(model, x, y_prev)
    assert par.shape == (B, T, O)
    torch.testing.assert_close(par, seq, atol=tol, rtol=tol)
    w = torch.randn_like(par)  # a generic upstream gradient
    for g_par, g_seq in zip(_grads(model, x, par, w), _grads(model, x, seq, w)):
        torch.testing.assert_close(g_par, g_seq, atol=tol, rtol=tol)


def test_mse_training_gradients_match_step_loop_float32():
    """The benchmark's loss: MSE against the targets the model was fed (shifted)."""
    model = _model(torch.float32, seed=3)
    x, targets, y0 = _data(torch.float32, seed=4)
    y_prev = model.teacher_inputs(targets, y0)
    grads = []
    for out in (model(x, y_prev), _step_loop(model, x, y_prev)):
        loss = torch.nn.functional.mse_loss(out, targets)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_teacher_inputs_shift_targets_right():
    model = _model()
    _, targets, y0 = _data(torch.float64)
    fed = model.teacher_inputs(targets, y0)
    torch.testing.assert_close(fed[:, 0], y0, atol=0, rtol=0)
    torch.testing.assert_close(fed[:, 1:], targets[:, :-1], atol=0, rtol=0)
    assert torch.count_nonzero(model.teacher_inputs(targets)[:, 0]) == 0  # zeros by default


@pytest.mark.parametrize("with_y0", [False, True])
def test_closed_loop_feeds_back_its_own_outputs(with_y0):
    model = _model(output_activation="tanh")
    x, _, y0 = _data(torch.float64)
    start = y0 if with_y0 else torch.zeros(B, O, dtype=torch.float64)
    out = model(x, y0=y0 if with_y0 else None)
    y, outs = start, []
    for t in range(T):
        y, state = model.step(x[:, t], y)
        assert state is y  # a Jordan net's state is its output
        outs.append(y)
    torch.testing.assert_close(out, torch.stack(outs, dim=1), atol=1e-12, rtol=0)
    if not with_y0:  # step(x_t, None) starts from zeros, as forward does
        torch.testing.assert_close(model.step(x[:, 0])[0], out[:, 0], atol=1e-12, rtol=0)
    # teacher-forcing with its own outputs as targets is the same computation
    torch.testing.assert_close(model(x, model.teacher_inputs(out, start)), out, atol=1e-12, rtol=0)


def test_closed_loop_gradients_reach_y0_and_parameters():
    model = _model()
    x, _, y0 = _data(torch.float64)
    y0.requires_grad_(True)
    model(x, y0=y0).square().sum().backward()
    assert y0.grad is not None and y0.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("act,out_act", ACTS)
def test_equals_jordan_cell_stepped_manually(act, out_act):
    torch.manual_seed(5)
    cell = JordanCell(I, H, output_size=O, nonlinearity=act, output_activation=out_act, dtype=torch.float64)
    model = JordanRNN.from_cell(cell)
    x, targets, y0 = _data(torch.float64)
    # free running: the cell's forward returns the new state, which is y_t
    y, ref = y0, []
    for t in range(T):
        y = cell(x[:, t], y)
        ref.append(y)
    torch.testing.assert_close(model(x, y0=y0), torch.stack(ref, dim=1), atol=1e-12, rtol=0)
    # teacher forcing: the cell fed the previous targets
    y_prev = model.teacher_inputs(targets, y0)
    ref = torch.stack([cell(x[:, t], y_prev[:, t]) for t in range(T)], dim=1)
    torch.testing.assert_close(model(x, y_prev), ref, atol=1e-12, rtol=0)


def test_matches_the_equations():
    model = _model(nonlinearity="tanh", output_activation="sigmoid")
    c = model.cell
    x, targets, y0 = _data(torch.float64)
    y_prev = model.teacher_inputs(targets, y0)
    h = torch.tanh(x @ c.weight_ih.T + c.bias_ih + y_prev @ c.weight_oh.T)
    expected = torch.sigmoid(h @ c.weight_ho.T + c.bias_ho)
    torch.testing.assert_close(model(x, y_prev), expected, atol=1e-12, rtol=0)


def test_parameters_are_the_cells_and_a_cell_state_dict_loads():
    model = _model()
    assert {n for n, _ in model.named_parameters()} == {
        "cell.weight_ih", "cell.bias_ih", "cell.weight_oh", "cell.weight_ho", "cell.bias_ho"}
    cell = JordanCell(I, H, output_size=O, dtype=torch.float64)
    model.cell.load_state_dict(cell.state_dict())
    x = torch.randn(B, I, dtype=torch.float64)
    y = torch.randn(B, O, dtype=torch.float64)
    torch.testing.assert_close(model.step(x, y)[0], cell(x, y), atol=0, rtol=0)
    assert {n for n, _ in _model(bias=False).named_parameters()} == {
        "cell.weight_ih", "cell.weight_oh", "cell.weight_ho"}


class _CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _graph_size(fn) -> int:
    seen, todo = set(), [fn]
    while todo:
        f = todo.pop()
        if f is not None and f not in seen:
            seen.add(f)
            todo += [g for g, _ in f.next_functions]
    return len(seen)


def test_parallel_pass_has_no_loop_over_time():
    """As many torch calls, and as many autograd nodes, for 50 steps as for 2: no loop over
    t forward or backward, and the cell's step is never called."""
    model = _model()
    model.cell.recur = model.cell.step = None  # would raise if called
    counts = []
    for steps in (2, 50):
        x = torch.randn(B, steps, I, dtype=torch.float64, requires_grad=True)
        y_prev = torch.randn(B, steps, O, dtype=torch.float64)
        with _CountCalls() as mode:
            out = model(x, y_prev)
        counts.append((mode.calls, _graph_size(out.grad_fn)))
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("init", ["torch", "orthogonal", "identity", "xavier"])
def test_inits(init):
    model = _model(init=init)
    x, _, _ = _data(torch.float64)
    assert torch.isfinite(model(x)).all()
    if init == "identity":
        torch.testing.assert_close(model.cell.weight_oh, torch.eye(H, O, dtype=torch.float64))


def test_empty_sequence():
    model = _model()
    x = torch.zeros(B, 0, I, dtype=torch.float64)
    assert model(x).shape == (B, 0, O)
    assert model(x, model.teacher_inputs(torch.zeros(B, 0, O, dtype=torch.float64))).shape == (B, 0, O)


def test_config_to_dict_round_trips():
    c = JordanConfig(I, O, H, nonlinearity="relu", output_activation="sigmoid", bias=False, init="xavier")
    assert JordanConfig(**c.to_dict()) == c
    assert dataclasses.fields(c)[0].name == "input_size"


def test_config_activations_are_what_the_cell_takes():
    assert set(ACTIVATIONS) == set(jordan_cell_module._ACTIVATIONS)


@pytest.mark.parametrize("kw,pattern", [
    ({"input_size": 0}, "input_size must be an int > 0"),
    ({"output_size": -1}, "output_size must be an int > 0"),
    ({"hidden_size": 0}, "hidden_size must be an int > 0"),
    ({"hidden_size": 2.5}, "hidden_size must be an int > 0"),
    ({"hidden_size": True}, "hidden_size must be an int > 0"),
    ({"nonlinearity": "softmax"}, "nonlinearity must be one of"),
    ({"output_activation": "gelu"}, "output_activation must be one of"),
    ({"bias": "yes"}, "bias must be true or false"),
    ({"init": "kaiming"}, "init must be one of"),
])
def test_config_validation(kw, pattern):
    args = {"input_size": I, "output_size": O, "hidden_size": H} | kw
    with pytest.raises(ConfigError, match=pattern):
        JordanConfig(**args)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        JordanConfig(I, O).hidden_size = 3  # type: ignore[misc]


def test_refuses_bad_shapes_with_clear_errors():
    model = _model()
    x, targets, y0 = _data(torch.float64)
    y_prev = model.teacher_inputs(targets)
    cases = [
        (lambda: model(x[0]), r"x must be 3-D.*unbatched input is not supported"),
        (lambda: model(x[..., :3]), r"x has 3 features, expected 4"),
        (lambda: model(x, y_prev[0]), r"y_prev must be 3-D.*unbatched"),
        (lambda: model(x, y_prev[:, :-1]), r"y_prev has shape \(3, 6, 2\).*match x's \(3, 7\)"),
        (lambda: model(x, y_prev[:1]), r"never broadcast"),
        (lambda: model(x, y_prev[..., :1]), r"y_prev has 1 features, expected 2"),
        (lambda: model(x, y_prev, y0), r"pass y_prev or y0, not both"),
        (lambda: model(x, y0=y0[0]), r"y0 must be 2-D"),
        (lambda: model(x, y0=y0[:1]), r"y0 has shape \(1, 2\).*\(3,\)"),
        (lambda: model.step(x[0, 0], y0[0]), r"x_t must be 2-D.*unbatched"),
        (lambda: model.step(x[:, 0], y0[:2]), r"y_prev_t has shape"),
        (lambda: model.step(x[:, 0], y0[:, :1]), r"y_prev_t has 1 features"),
        (lambda: model.teacher_inputs(targets[0]), r"targets must be 3-D"),
        (lambda: model.teacher_inputs(targets, y0[:2]), r"y0 has shape"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()


def test_refuses_bad_types_and_dtypes():
    model = _model()
    x, _, _ = _data(torch.float64)
    with pytest.raises(TypeError, match="x must be a Tensor"):
        model(x.tolist())
    with pytest.raises(TypeError, match="floating point"):
        model(x.long())
    with pytest.raises(TypeError, match="dtype torch.float32 does not match"):
        model(x.float())
    with pytest.raises(TypeError, match="expected a JordanCell"):
        JordanRNN.from_cell(torch.nn.RNNCell(I, H))


@pytest.mark.parametrize("act,out_act", ACTS)
def test_gradcheck_and_double_backward(act, out_act):
    """The in-place activations of the parallel pass keep first and second derivatives exact."""
    model = _model(nonlinearity=act, output_activation=out_act)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, I, dtype=torch.float64, generator=g, requires_grad=True)
    y_prev = torch.randn(2, 3, O, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x, y_prev))
    assert torch.autograd.gradgradcheck(model, (x, y_prev))
    assert torch.autograd.gradcheck(lambda x_: model(x_), (x,))
