"""Every cell: gradcheck in float64, and the custom cells against independent
float64 formulas written from their equations (not by calling the cell)."""
import pytest
import torch
from torch.autograd import gradcheck

from rnnkit.cells import ElmanCell, GRUCell, JordanCell, LSTMCell

B, I, H = 3, 4, 5
f64 = torch.float64

CELLS = {
    "elman_tanh": lambda: ElmanCell(I, H, dtype=f64),
    "elman_relu": lambda: ElmanCell(I, H, nonlinearity="relu", dtype=f64),
    "lstm": lambda: LSTMCell(I, H, dtype=f64),
    "lstm_proj": lambda: LSTMCell(I, H, proj_size=2, dtype=f64),
    "lstm_peephole": lambda: LSTMCell(I, H, peephole=True, dtype=f64),
    "lstm_layer_norm": lambda: LSTMCell(I, H, layer_norm=True, dtype=f64),
    "lstm_all": lambda: LSTMCell(I, H, proj_size=2, peephole=True, layer_norm=True, dtype=f64),
    "gru_reset_after": lambda: GRUCell(I, H, dtype=f64),
    "gru_reset_before": lambda: GRUCell(I, H, variant="reset_before", dtype=f64),
    "gru_simplified": lambda: GRUCell(I, H, variant="simplified", dtype=f64),
    "jordan": lambda: JordanCell(I, H, output_size=3, dtype=f64),
    "no_bias_lstm": lambda: LSTMCell(I, H, bias=False, peephole=True, dtype=f64),
}


def _perturb(cell):
    """Random parameters (not the init) so every term matters, incl. LN gains."""
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.5)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradcheck(name):
    torch.manual_seed(0)
    cell = CELLS[name]()
    _perturb(cell)
    names = [n for n, _ in cell.named_parameters()]
    x = torch.randn(B, I, dtype=f64, requires_grad=True)
    state = tuple(torch.randn(B, n, dtype=f64, requires_grad=True) for n in cell.state_sizes())

    def fn(x, *args):
        params = dict(zip(names, args[len(state):]))
        p = cell.own_params()
        for k, v in params.items():
            setattr(p, k, v)
        y, new = cell.step(x, tuple(args[:len(state)]), p)
        return (y, *new)

    assert gradcheck(fn, (x, *state, *[p.detach().clone().requires_grad_() for p in cell.parameters()]))


def _ln(v, g, b=None, eps=1e-5):
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    out = (v - mu) / torch.sqrt(var + eps) * g
    return out if b is None else out + b


def _sig(v):
    return 1.0 / (1.0 + torch.exp(-v))


def _setup(cell):
    torch.manual_seed(1)
    _perturb(cell)
    P = {n: p.detach() for n, p in cell.named_parameters()}
    x = torch.randn(B, I, dtype=f64)
    state = tuple(torch.randn(B, n, dtype=f64) for n in cell.state_sizes())
    return P, x, state


def test_peephole_lstm_matches_formula():
    cell = LSTMCell(I, H, peephole=True, dtype=f64)
    P, x, (h, c) = _setup(cell)
    Wi, Wf, Wg, Wo = P["weight_ih"].split(H)
    Ui, Uf, Ug, Uo = P["weight_hh"].split(H)
    b = P["bias_ih"] + P["bias_hh"]
    bi, bf, bg, bo = b.split(H)
    i = _sig(x @ Wi.T + h @ Ui.T + bi + P["weight_ci"] * c)
    f = _sig(x @ Wf.T + h @ Uf.T + bf + P["weight_cf"] * c)
    c_new = f * c + i * torch.tanh(x @ Wg.T + h @ Ug.T + bg)
    o = _sig(x @ Wo.T + h @ Uo.T + bo + P["weight_co"] * c_new)
    h_new = o * torch.tanh(c_new)
    y, (h_out, c_out) = cell.step(x, (h, c))
    torch.testing.assert_close(c_out, c_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_out, h_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, h_new, atol=1e-12, rtol=0)


def test_layer_norm_lstm_matches_formula():
    cell = LSTMCell(I, H, layer_norm=True, dtype=f64)
    P, x, (h, c) = _setup(cell)
    a = (_ln(x @ P["weight_ih"].T, P["ln_ih_weight"]) + _ln(h @ P["weight_hh"].T, P["ln_hh_weight"])
         + P["bias_ih"] + P["bias_hh"])
    ai, af, ag, ao = a.split(H, dim=-1)
    c_new = _sig(af) * c + _sig(ai) * torch.tanh(ag)
    h_new = _sig(ao) * torch.tanh(_ln(c_new, P["ln_c_weight"], P["ln_c_bias"]))
    _, (h_out, c_out) = cell.step(x, (h, c))
    torch.testing.assert_close(c_out, c_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_out, h_new, atol=1e-12, rtol=0)


def test_projected_lstm_matches_formula():
    cell = LSTMCell(I, H, proj_size=2, dtype=f64)
    P, x, (h, c) = _setup(cell)
    a = x @ P["weight_ih"].T + h @ P["weight_hh"].T + P["bias_ih"] + P["bias_hh"]
    ai, af, ag, ao = a.split(H, dim=-1)
    c_new = _sig(af) * c + _sig(ai) * torch.tanh(ag)
    h_new = (_sig(ao) * torch.tanh(c_new)) @ P["weight_hr"].T
    _, (h_out, c_out) = cell.step(x, (h, c))
    assert h_out.shape == (B, 2)
    torch.testing.assert_close(h_out, h_new, atol=1e-12, rtol=0)


def test_reset_before_gru_matches_formula():
    cell = GRUCell(I, H, variant="reset_before", dtype=f64)
    P, x, (h,) = _setup(cell)
    Wr, Wz, Wn = P["weight_ih"].split(H)
    Ur, Uz, Un = P["weight_hh"].split(H)
    bir, biz, bin_ = P["bias_ih"].split(H)
    bhr, bhz, bhn = P["bias_hh"].split(H)
    r = _sig(x @ Wr.T + bir + h @ Ur.T + bhr)
    z = _sig(x @ Wz.T + biz + h @ Uz.T + bhz)
    n = torch.tanh(x @ Wn.T + bin_ + (r * h) @ Un.T + bhn)
    expected = (1 - z) * n + z * h
    _, (h_out,) = cell.step(x, (h,))
    torch.testing.assert_close(h_out, expected, atol=1e-12, rtol=0)
    # and it differs from the reset-after form on the same weights
    after = GRUCell(I, H, dtype=f64)
    after.load_state_dict(cell.state_dict())
    assert not torch.allclose(after.step(x, (h,))[0], expected)


def test_simplified_gru_matches_formula():
    cell = GRUCell(I, H, variant="simplified", dtype=f64)
    P, x, (h,) = _setup(cell)
    Wu, Wn = P["weight_ih"].split(H)
    Uu, Un = P["weight_hh"].split(H)
    bu = P["bias_ih"][:H] + P["bias_hh"][:H]
    bn = P["bias_ih"][H:] + P["bias_hh"][H:]
    u = _sig(x @ Wu.T + h @ Uu.T + bu)
    n = torch.tanh(x @ Wn.T + h @ Un.T + bn)
    expected = u * n + (1 - u) * h
    _, (h_out,) = cell.step(x, (h,))
    torch.testing.assert_close(h_out, expected, atol=1e-12, rtol=0)


def test_jordan_matches_formula():
    cell = JordanCell(I, H, output_size=3, dtype=f64)
    P, x, (y,) = _setup(cell)
    h = torch.tanh(x @ P["weight_ih"].T + P["bias_ih"] + y @ P["weight_oh"].T)
    expected = h @ P["weight_ho"].T + P["bias_ho"]
    out, (y_new,) = cell.step(x, (y,))
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(y_new, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("ours,theirs,kw", [
    (LSTMCell, torch.nn.LSTMCell, {}), (GRUCell, torch.nn.GRUCell, {}),
    (ElmanCell, torch.nn.RNNCell, {"nonlinearity": "relu"}),
])
def test_standalone_cell_matches_torch_cell(ours, theirs, kw):
    torch.manual_seed(2)
    ref = theirs(I, H, **kw)
    cell = ours(I, H, **kw)
    cell.load_state_dict(ref.state_dict())
    x = torch.randn(B, I)
    torch.testing.assert_close(cell(x), ref(x))


def test_cell_rejects_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        GRUCell(I, H, variant="minimal")
    with pytest.raises(ValueError, match="proj_size"):
        LSTMCell(I, H, proj_size=H)
    with pytest.raises(ValueError, match="hidden_size"):
        ElmanCell(I, -1)  # hidden_size=0 is allowed, as in torch.nn.RNNCell
    with pytest.raises(ValueError, match=r"expected \(batch, input_size\)"):
        LSTMCell(I, H)(torch.randn(B, I + 1))
