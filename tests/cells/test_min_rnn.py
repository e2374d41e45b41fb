"""minGRU and minLSTM cells: gradcheck in float64, the step against independent
float64 formulas written from the paper's equations (not by calling the cell), and
the log-space coefficients against the linear ones."""
import math

import pytest
import torch
from torch.autograd import gradcheck

from rnnkit.cells.min_rnn import MinGRUCell, MinLSTMCell, g, log_g

B, I, H = 3, 4, 5
f64 = torch.float64

CELLS = {
    "mingru": lambda **kw: MinGRUCell(I, H, dtype=f64, **kw),
    "mingru_linear": lambda **kw: MinGRUCell(I, H, positive=False, dtype=f64, **kw),
    "mingru_no_bias": lambda **kw: MinGRUCell(I, H, bias=False, dtype=f64, **kw),
    "minlstm": lambda **kw: MinLSTMCell(I, H, dtype=f64, **kw),
    "minlstm_linear": lambda **kw: MinLSTMCell(I, H, positive=False, dtype=f64, **kw),
    "minlstm_no_bias": lambda **kw: MinLSTMCell(I, H, bias=False, dtype=f64, **kw),
}


def _perturb(cell, std=0.5):
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, std)


def _sig(v):
    return 1.0 / (1.0 + torch.exp(-v))


def _g(v):
    """The paper's g, elementwise from its definition."""
    return torch.where(v >= 0, v + 0.5, _sig(v))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradcheck(name):
    torch.manual_seed(0)
    cell = CELLS[name]()
    _perturb(cell)
    names = [n for n, _ in cell.named_parameters()]
    x = torch.randn(B, I, dtype=f64, requires_grad=True)
    h = torch.randn(B, H, dtype=f64, requires_grad=True)

    def fn(x, h, *params):
        p = cell.own_params()
        for k, v in zip(names, params):
            setattr(p, k, v)
        y, (h_new,) = cell.step(x, (h,), p)
        return y, h_new

    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    assert gradcheck(fn, (x, h, *params))


def _setup(cell):
    torch.manual_seed(1)
    _perturb(cell)
    P = {n: p.detach() for n, p in cell.named_parameters()}
    return P, torch.randn(B, I, dtype=f64), torch.randn(B, H, dtype=f64)


def _affine(P, x, G):
    out = x @ P["weight_ih"].T
    if "bias_ih" in P:
        out = out + P["bias_ih"]
    return out.split(H, dim=-1)[:G]


@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_mingru_matches_formula(positive, bias):
    cell = MinGRUCell(I, H, bias=bias, positive=positive, dtype=f64)
    P, x, h = _setup(cell)
    kz, kh = _affine(P, x, 2)
    z = _sig(kz)
    h_tilde = _g(kh) if positive else kh
    h_new = (1 - z) * h + z * h_tilde
    y, (h_out,) = cell.step(x, (h,))
    torch.testing.assert_close(h_out, h_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, h_new, atol=1e-12, rtol=0)


@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_minlstm_matches_formula(positive, bias):
    cell = MinLSTMCell(I, H, bias=bias, positive=positive, dtype=f64)
    P, x, h = _setup(cell)
    kf, ki, kh = _affine(P, x, 3)
    f, i = _sig(kf), _sig(ki)
    f_n, i_n = f / (f + i), i / (f + i)
    h_tilde = _g(kh) if positive else kh
    h_new = f_n * h + i_n * h_tilde
    y, (h_out,) = cell.step(x, (h,))
    torch.testing.assert_close(h_out, h_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, h_new, atol=1e-12, rtol=0)


def test_parameter_shapes_and_names():
    assert MinGRUCell(I, H).parameter_shapes() == {"weight_ih": (2 * H, I), "bias_ih": (2 * H,)}
    assert MinLSTMCell(I, H).parameter_shapes() == {"weight_ih": (3 * H, I), "bias_ih": (3 * H,)}
    assert MinLSTMCell(I, H, bias=False).parameter_shapes() == {"weight_ih": (3 * H, I)}
    assert MinGRUCell(I, H).state_names == ("h",) and MinLSTMCell(I, H).state_names == ("h",)
    assert MinLSTMCell(I, H).forget_gate == 0 and MinGRUCell(I, H).forget_gate is None
    assert list(MinGRUCell(I, H, own_parameters=False).parameters()) == []


def test_standalone_forward_like_torch_cells():
    torch.manual_seed(2)
    cell = MinLSTMCell(I, H)
    x = torch.randn(B, I)
    h1 = cell(x)  # zero state
    h2 = cell(x, h1)
    assert h1.shape == h2.shape == (B, H)
    torch.testing.assert_close(h1, cell.step(x, cell.init_state(B))[1][0])
    assert "positive=False" in repr(MinGRUCell(I, H, positive=False))


def test_g_is_positive_continuous_and_the_max_of_its_branches():
    x = torch.linspace(-60, 60, 20001, dtype=f64)
    assert (g(x) > 0).all()
    torch.testing.assert_close(g(torch.zeros(1, dtype=f64)), torch.full((1,), 0.5, dtype=f64))
    torch.testing.assert_close(g(x), torch.maximum(x + 0.5, torch.sigmoid(x)), atol=0, rtol=0)
    torch.testing.assert_close(log_g(x), torch.log(g(x)), atol=1e-12, rtol=1e-12)
    assert math.isfinite(log_g(torch.tensor(-1e4, dtype=f64)).item())  # log sigmoid, no underflow


@pytest.mark.parametrize("cls", [MinGRUCell, MinLSTMCell])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_log_coefficients_are_logs_of_coefficients(cls, scale):
    torch.manual_seed(3)
    cell = cls(I, H, dtype=f64)
    xp = scale * torch.randn(7, B, cls.num_gates * H, dtype=f64)
    a, b = cell.coefficients(xp)
    log_a, log_b = cell.log_coefficients(xp)
    assert ((a > 0) & (a <= 1)).all() and (b > 0).all()  # a rounds to 1 when z_t < 1e-16
    torch.testing.assert_close(log_a.exp(), a, atol=1e-300, rtol=1e-12)
    torch.testing.assert_close(log_b.exp(), b, atol=1e-300, rtol=1e-12)


def test_log_coefficients_stay_finite_where_the_gates_underflow():
    # pre-activations of +-1000: sigmoid is exactly 0 or 1 in float64, its log is not
    xp = torch.tensor([[-1000.0, 1000.0, -1000.0], [1000.0, -1000.0, 3.0]], dtype=f64)
    xp = xp.repeat_interleave(H, dim=1)
    log_a, log_b = MinLSTMCell(I, H, dtype=f64).log_coefficients(xp)
    assert torch.isfinite(log_a).all() and torch.isfinite(log_b).all()
    a, b = MinLSTMCell(I, H, dtype=f64).coefficients(xp)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


def test_minlstm_normalisation_survives_both_gates_underflowing():
    # f and i both underflow to 0 in float32; f/(f+i) would be 0/0, the cell's sigma(-d) is not
    xp = torch.full((1, 3 * H), -200.0)
    xp[0, H:2 * H] = -201.0  # i slightly smaller than f: f' = sigma(1)
    a, b = MinLSTMCell(I, H).coefficients(xp)
    torch.testing.assert_close(a, torch.full_like(a, 1 / (1 + math.exp(-1))))
    assert torch.isfinite(b).all()


def test_log_coefficients_need_positive_candidate():
    with pytest.raises(ValueError, match="positive=True"):
        MinGRUCell(I, H, positive=False).log_coefficients(torch.zeros(1, 2 * H))
