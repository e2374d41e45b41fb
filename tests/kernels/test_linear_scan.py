"""The parallel scan of minGRU/minLSTM (rnnkit.kernels.linear_scan) against the sequential reference step:
outputs, final states and every gradient, over lengths, directions, layers, initial
states, both scan formulations, long sequences and saturated gates."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.cells import GRUCell
from rnnkit.cells.min_rnn import MinGRUCell, MinLSTMCell
from rnnkit.kernels import find
from rnnkit.kernels import linear_scan as ps
from rnnkit.nn.min_rnn import MinGRU, MinLSTM
from rnnkit.nn.scan import scan

f32, f64 = torch.float32, torch.float64
TOL = {f32: dict(atol=1e-5, rtol=1e-5), f64: dict(atol=1e-10, rtol=1e-10)}
LAYERS = {"mingru": MinGRU, "minlstm": MinLSTM}
CELLS = {"mingru": MinGRUCell, "minlstm": MinLSTMCell}
T, B, I, H = 9, 4, 3, 5
LENGTHS = torch.tensor([9, 3, 6, 1])


class _SubclassedMinGRU(MinGRUCell):
    """Not minGRU itself (a subclass may change the equations), so the kernel takes
    the general (a, b) scan over ``coefficients`` instead of the fused one."""


KERNEL_CELLS = CELLS | {"mingru_subclass": _SubclassedMinGRU}


def _perturb(module, std=0.5):
    """Random parameters (not the init), so the gates cover (0, 1) widely."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


def _mask(lengths, steps):
    return (torch.arange(steps)[:, None] < lengths[None]).unsqueeze(-1)


# --- dispatch ------------------------------------------------------------------------
def test_match_takes_min_cells_only():
    for cls in KERNEL_CELLS.values():
        cell = cls(I, H)
        assert find(cell, torch.empty(1, 1, I), cell.own_params()) is ps.KERNEL
        assert ps.KERNEL.run is ps.parallel_scan
    gru = GRUCell(I, H)
    assert ps.KERNEL.supports(gru) is not True
    assert find(gru, torch.empty(1, 1, I), gru.own_params()) is not ps.KERNEL


def test_method_by_device_and_sign():
    assert ps.choose_method(MinGRUCell(I, H), torch.device("cpu")) == "linear"
    assert ps.choose_method(MinGRUCell(I, H), torch.device("cuda")) == "log"
    assert ps.choose_method(MinGRUCell(I, H, positive=False), torch.device("cuda")) == "linear"
    cell = MinGRUCell(I, H)
    with pytest.raises(ValueError, match="method must be one of"):
        ps.parallel_scan(cell, cell.own_params(), torch.randn(2, 1, I), (torch.zeros(1, H),), method="fft")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_path_says_which_mode(name):
    assert LAYERS[name](I, H).path == "kernel"
    assert LAYERS[name](I, H, backend="scan").path == "scan"
    with pytest.raises(ValueError, match="backend='torch'"):
        LAYERS[name](I, H, backend="torch").path


# --- layer: parallel vs sequential, forward and backward ----------------------------
def _twins(cls, dtype, **kw):
    torch.manual_seed(0)
    par = cls(I, H, dtype=dtype, **kw)
    _perturb(par)
    seq = cls(I, H, dtype=dtype, backend="scan", **kw)
    seq.load_state_dict(par.state_dict())
    assert (par.path, seq.path) == ("kernel", "scan")
    return par, seq


def _run_with_grads(layer, x, h0, lengths, weights):
    x = x.detach().clone().requires_grad_()
    h0 = None if h0 is None else h0.detach().clone().requires_grad_()
    out, h_n = layer(x, h0, lengths=lengths)
    (out * weights[0]).sum().add((h_n * weights[1]).sum()).backward()
    grads = {n: p.grad for n, p in layer.named_parameters()} | {"x": x.grad}
    if h0 is not None:
        grads["h0"] = h0.grad
    return out, h_n, grads


CONFIGS = {
    "plain": dict(),
    "lengths": dict(lengths=True),
    "h0": dict(h0=True),
    "bidirectional": dict(bidirectional=True, lengths=True, h0=True),
    "two_layers": dict(num_layers=2, lengths=True, h0=True),
    "two_layers_bidirectional": dict(num_layers=2, bidirectional=True, lengths=True, h0=True),
    "batch_first_no_bias": dict(batch_first=True, bias=False, lengths=True),
    "linear_candidate": dict(positive=False, num_layers=2, bidirectional=True, lengths=True, h0=True),
}


@pytest.mark.parametrize("dtype", [f32, f64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_parallel_equals_sequential(name, config, dtype):
    cfg = dict(CONFIGS[config])
    use_lengths, use_h0 = cfg.pop("lengths", False), cfg.pop("h0", False)
    par, seq = _twins(LAYERS[name], dtype, **cfg)
    L, D = cfg.get("num_layers", 1), 2 if cfg.get("bidirectional") else 1
    torch.manual_seed(1)
    x = torch.randn(B, T, I, dtype=dtype) if cfg.get("batch_first") else torch.randn(T, B, I, dtype=dtype)
    h0 = torch.randn(L * D, B, H, dtype=dtype) if use_h0 else None
    lengths = LENGTHS if use_lengths else None
    weights = (torch.randn(T, B, D * H, dtype=dtype), torch.randn(L * D, B, H, dtype=dtype))
    if cfg.get("batch_first"):
        weights = (weights[0].transpose(0, 1), weights[1])
    out_p, h_p, g_p = _run_with_grads(par, x, h0, lengths, weights)
    out_s, h_s, g_s = _run_with_grads(seq, x, h0, lengths, weights)
    torch.testing.assert_close(out_p, out_s, **TOL[dtype])
    torch.testing.assert_close(h_p, h_s, **TOL[dtype])
    assert g_p.keys() == g_s.keys()
    for key in g_s:
        torch.testing.assert_close(g_p[key], g_s[key], **TOL[dtype], msg=key)
    if lengths is not None:  # padded outputs are exactly zero
        for b, n in enumerate(lengths.tolist()):
            seq_out = out_p[b] if cfg.get("batch_first") else out_p[:, b]
            assert torch.count_nonzero(seq_out[n:]) == 0


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_packed_sequence(name):
    par, seq = _twins(LAYERS[name], f64, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=f64)
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    out_p, h_p = par(packed)
    out_s, h_s = seq(x, lengths=LENGTHS)
    torch.testing.assert_close(pad_packed_sequence(out_p, total_length=T)[0], out_s, **TOL[f64])
    torch.testing.assert_close(h_p, h_s, **TOL[f64])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_generation_step_by_step_equals_parallel(name):
    """O(1)-state generation: one step per call with the carried state."""
    par, _ = _twins(LAYERS[name], f64, num_layers=2, batch_first=True)
    x = torch.randn(B, T, I, dtype=f64)
    out, h_n = par(x)
    state, steps = None, []
    for t in range(T):
        y, state = par(x[:, t:t + 1], state)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), out, **TOL[f64])
    torch.testing.assert_close(state, h_n, **TOL[f64])


def test_unbatched_input():
    par, seq = _twins(MinGRU, f64)
    x = torch.randn(T, I, dtype=f64)
    torch.testing.assert_close(par(x)[0], seq(x)[0], **TOL[f64])


def test_bfloat16_runs_in_float32_inside():
    torch.manual_seed(2)
    layer = MinLSTM(I, H)
    x = torch.randn(T, B, I)
    ref, _ = layer(x)
    out, h = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == h.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


# --- the kernel directly: both formulations, masks, reverse, h0 -----------------------
@pytest.mark.parametrize("steps", [1, 2, 15, 16, 17, 40, 101])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("method,positive", [("linear", True), ("linear", False), ("log", True)])
@pytest.mark.parametrize("name", sorted(KERNEL_CELLS))
def test_kernel_equals_scan(name, method, positive, reverse, steps, monkeypatch):
    monkeypatch.setattr(ps, "LOG_CHUNK", 8)  # several log-space chunks and their carries
    monkeypatch.setattr(ps, "BLOCK_ELEMENTS", 100)  # gate math in blocks of 1-2 steps
    torch.manual_seed(3)
    cell = KERNEL_CELLS[name](I, H, positive=positive, dtype=f64)
    _perturb(cell, 1.0)
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    x = torch.randn(steps, B, I, dtype=f64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=f64, requires_grad=True)
    lengths = torch.tensor([steps, max(1, steps // 2), 1, max(1, steps - 3)])
    mask = _mask(lengths, steps)
    w = torch.randn(steps, B, H, dtype=f64)

    def run(fn):
        p = cell.own_params()
        for n, v in zip([n for n, _ in cell.named_parameters()], params):
            setattr(p, n, v)
        y, (h_n,) = fn(cell, p, x, (h0,), mask, reverse)
        grads = torch.autograd.grad((y * w).sum() + h_n.sum(), [x, h0, *params])
        return y, h_n, grads

    y_s, h_s, g_s = run(scan)
    y_p, h_p, g_p = run(lambda *a: ps.parallel_scan(*a, method=method))
    torch.testing.assert_close(y_p, y_s, **TOL[f64])
    torch.testing.assert_close(h_p, h_s, **TOL[f64])
    for gp, gs in zip(g_p, g_s):
        torch.testing.assert_close(gp, gs, **TOL[f64])


def _coefficients(steps, reverse=False, seed=4):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(steps, 2, 3, dtype=f64, generator=gen) * 0.98 + 0.01
    b = torch.randn(steps, 2, 3, dtype=f64, generator=gen)
    h0 = torch.randn(2, 3, dtype=f64, generator=gen)
    return a, b, h0


def _loop(a, b, h0, reverse=False):
    h, out = h0, [None] * a.shape[0]
    for t in (range(a.shape[0] - 1, -1, -1) if reverse else range(a.shape[0])):
        h = out[t] = a[t] * h + b[t]
    return torch.stack(out)


@pytest.mark.parametrize("steps", [40, 43])  # chunked, with and without leftover steps
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_linear_scan_gradcheck(steps, reverse):
    a, b, h0 = (t.requires_grad_() for t in _coefficients(steps))
    mask = _mask(torch.tensor([steps, steps - 7]), steps)
    assert gradcheck(lambda a, b, h0: ps.linear_scan(a, b, h0, mask, reverse), (a, b, h0))


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_log_space_scan_gradcheck_with_padded_prefix(reverse):
    """Padding first in scan order (reverse + lengths) must give finite gradients."""
    a, b, h0 = _coefficients(13)
    log_a, log_b = a.log().requires_grad_(), b.abs().log().requires_grad_()
    h0.requires_grad_()
    mask = _mask(torch.tensor([13, 5]), 13)

    def fn(log_a, log_b, h0):
        return ps.log_space_scan(log_a, log_b, h0, mask, reverse, chunk=4)

    assert gradcheck(fn, (log_a, log_b, h0))
    h = fn(log_a, log_b, h0)
    torch.testing.assert_close(h, ps.linear_scan(a, b.abs(), h0, mask, reverse), **TOL[f64])


@settings(max_examples=60, deadline=None)
@given(steps=st.integers(1, 90), chunk=st.integers(1, 25), reverse=st.booleans(), lerp=st.booleans())
def test_chunked_scan_equals_loop(steps, chunk, reverse, lerp):
    a, b, h0 = _coefficients(steps)
    w = 1 - a
    out = torch.empty_like(b)
    ps._scan_into(out, w, b, h0, reverse, lerp, chunk)
    torch.testing.assert_close(out, _loop(a, w * b if lerp else b, h0, reverse), **TOL[f64])


def test_zero_initial_state_has_finite_gradient_in_log_space():
    """h0 = 0 (the default state) enters by linearity, never through log(h0)."""
    a, b, _ = _coefficients(20)
    h0 = torch.zeros(2, 3, dtype=f64, requires_grad=True)
    ps.log_space_scan(a.log(), b.abs().log(), h0).sum().backward()
    assert torch.isfinite(h0.grad).all() and (h0.grad != 0).all()


# --- long sequences and saturated gates -----------------------------------------------
def _reference_f64(cell, params, x, h0):
    """The sequential step in float64, the ground truth for float32 runs."""
    p = cell.own_params()
    for n, v in params.items():
        setattr(p, n, v.double())
    with torch.no_grad():
        y, _ = scan(cell, p, x.double(), (h0.double(),))
    return y


@pytest.mark.parametrize("std", [0.3, 3.0], ids=["moderate_gates", "saturated_gates"])
@pytest.mark.parametrize("method,positive", [("linear", True), ("linear", False), ("log", True)])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_long_sequence_stays_finite_and_accurate(name, method, positive, std):
    torch.manual_seed(5)
    steps, batch, hidden = 2048, 2, 16
    cell = CELLS[name](I, hidden, positive=positive)
    _perturb(cell, std)
    p = cell.own_params()
    x = torch.randn(steps, batch, I)
    h0 = torch.randn(batch, hidden)
    with torch.no_grad():
        y_par, (h_par,) = ps.parallel_scan(cell, p, x, (h0,), method=method)
        y_seq, _ = scan(cell, p, x, (h0,))
    y_ref = _reference_f64(cell, dict(cell.named_parameters()), x, h0)
    assert torch.isfinite(y_par).all()
    scale = y_ref.abs().max().clamp(min=1.0)  # the linear candidate is unbounded
    torch.testing.assert_close(y_par.double() / scale, y_ref / scale, atol=1e-4, rtol=0)
    torch.testing.assert_close(y_par / scale, y_seq / scale, atol=1e-4, rtol=0)
    torch.testing.assert_close(h_par, y_par[-1], atol=0, rtol=0)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_long_sequence_gradients_are_finite(name):
    torch.manual_seed(6)
    layer = LAYERS[name](I, 16, num_layers=2, bidirectional=True)
    x = torch.randn(2048, 2, I, requires_grad=True)
    out, h = layer(x, lengths=torch.tensor([2048, 1500]))
    (out.sum() + h.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert torch.isfinite(x.grad).all()


# --- initialisation of the layers ---------------------------------------------------
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_init_schemes(name):
    G = CELLS[name].num_gates
    for init in ("torch", "orthogonal", "xavier", "identity"):
        layer = LAYERS[name](I, 8, num_layers=2, init=init)
        assert {n for n, _ in layer.named_parameters()} == {"weight_ih_l0", "bias_ih_l0",
                                                            "weight_ih_l1", "bias_ih_l1"}
        assert layer.weight_ih_l0.shape == (G * 8, I)
        if init == "torch":
            assert all(p.abs().max() <= 8 ** -0.5 for p in layer.parameters())
        else:
            assert all(torch.count_nonzero(getattr(layer, f"bias_ih_l{k}")) == 0 for k in range(2))
        if init in ("orthogonal", "xavier"):  # Xavier per gate block of (8, I)
            assert layer.weight_ih_l0.abs().max() <= (6 / (I + 8)) ** 0.5


def test_minlstm_forget_bias():
    layer = MinLSTM(I, 6, num_layers=2, forget_bias=1.0)
    for k in range(2):
        torch.testing.assert_close(getattr(layer, f"bias_ih_l{k}")[:6], torch.ones(6))
