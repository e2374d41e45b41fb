"""The fused CPU kernels as torch.library custom ops (rnnkit/kernels/cpu/lstm.py, gru.py):
torch's own op checks (schema, fake/meta shapes, autograd registration, AOT dispatch),
and the ops' results against the eager kernels they wrap, forward and backward."""
import pytest
import torch

import rnnkit
from rnnkit.kernels.cpu import gru as cpu_gru
from rnnkit.kernels.cpu import lstm as cpu_lstm
from rnnkit.kernels.cpu.common import available

pytestmark = pytest.mark.skipif(available() is not True, reason="no native library (no C compiler)")

T, B, I, H = 5, 3, 4, 6


MASKS = {False: None, True: [5, 3, 1], "full": [5, 5, 5]}  # "full": a mask with nothing padded


def _mask(kind):
    lengths = MASKS[kind]
    return None if lengths is None else (torch.arange(T).unsqueeze(1) < torch.tensor(lengths)).unsqueeze(-1)


def _lstm_args(peephole, layer_norm, proj, mask, reverse):
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H, peephole=peephole, layer_norm=layer_norm, proj_size=3 if proj else 0).double()
    p = layer._params(0, 0)
    R = 3 if proj else H
    xp = torch.randn(T, B, 4 * H, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, R, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    m = _mask(mask)
    weights = [getattr(p, n, None) for n in ("weight_hh", "weight_ci", "weight_cf", "weight_co", "ln_hh_weight",
                                             "ln_c_weight", "ln_c_bias", "weight_hr")]
    # with layer norm, the input norm's gain and shift (xp is then the raw W_ih x)
    norm = [None if w is None else w.detach().requires_grad_() for w in cpu_lstm.input_norm(layer.cells[0], p)]
    return (xp, h0, c0, m, *weights, *norm, peephole, layer_norm, reverse, 1e-5)


LSTM_CASES = [(True, False, False, False, False), (False, True, False, True, False), (True, True, True, True, True),
              (True, False, True, False, True), (True, True, False, "full", False)]


@pytest.mark.parametrize("case", LSTM_CASES, ids=lambda c: "".join("PLpMr"[i] if v else "-" for i, v in enumerate(c)))
def test_lstm_op_passes_torch_opcheck(case):
    torch.library.opcheck(torch.ops.rnnkit.lstm_scan.default, _lstm_args(*case))


@pytest.mark.parametrize("case", LSTM_CASES, ids=lambda c: "".join("PLpMr"[i] if v else "-" for i, v in enumerate(c)))
def test_lstm_backward_op_passes_torch_opcheck(case):
    """The backward op too (what a compiled backward graph calls): schema, fake shapes,
    no aliasing among its outputs (the peephole and layer-norm gradients)."""
    args = _lstm_args(*case)
    outs = cpu_lstm.lstm_scan_op(*args)
    y, h, c, A, C, U, M, HP, stats, Y = (t.detach() for t in outs)
    mask, weights, flags = args[3], [None if w is None else w.detach() for w in args[4:14]], args[14:]
    xp = args[0].detach() if args[15] else torch.empty(0, dtype=y.dtype)  # read with layer norm only
    backward_args = (torch.randn_like(y), torch.randn_like(h), torch.randn_like(c), mask, args[1].detach(),
                     args[2].detach(), *weights, xp, y, A, C, U, M, HP, stats, Y, *flags)
    torch.library.opcheck(torch.ops.rnnkit.lstm_scan_backward.default, backward_args)


@pytest.mark.parametrize("case", LSTM_CASES, ids=lambda c: "".join("PLpMr"[i] if v else "-" for i, v in enumerate(c)))
def test_lstm_op_gradients_pass_gradcheck(case):
    args = _lstm_args(*case)

    def f(xp, h0, c0, *weights):
        y, h, c, *_ = cpu_lstm.lstm_scan_op(xp, h0, c0, args[3], *weights, *args[14:])
        return y, h, c
    inputs = [args[0], args[1], args[2], *(w for w in args[4:14])]
    present = [t for t in inputs if t is not None]
    assert torch.autograd.gradcheck(lambda *t: f(*_fill(inputs, t)), present, atol=1e-6)


def _fill(template, present):
    it = iter(present)
    return [None if t is None else next(it) for t in template]


def _gru_args(reset_before, mask, reverse):
    torch.manual_seed(0)
    gates = 3 if reset_before else 2  # the simplified GRU has no reset gate
    w_hh = torch.randn(gates * H, H, dtype=torch.float64, requires_grad=True)
    xp = torch.randn(T, B, gates * H, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    return xp, h0, _mask(mask), w_hh, reset_before, reverse


GRU_CASES = [(True, False, False), (False, True, False), (True, True, True), (False, "full", True)]


@pytest.mark.parametrize("case", GRU_CASES)
def test_gru_op_passes_torch_opcheck_and_gradcheck(case):
    args = _gru_args(*case)
    torch.library.opcheck(torch.ops.rnnkit.gru_scan.default, args)
    y, h, A, RH, Y = (t.detach() for t in cpu_gru.gru_scan_op(*args))
    xp, h0, m, w_hh, rb, rev = args
    torch.library.opcheck(torch.ops.rnnkit.gru_scan_backward.default,
                          (torch.randn_like(y), torch.randn_like(h), m, h0.detach(), w_hh.detach(), y, A, RH, Y, rb, rev))
    assert torch.autograd.gradcheck(lambda a, b, c: cpu_gru.gru_scan_op(a, b, m, c, rb, rev)[:2], (xp, h0, w_hh),
                                    atol=1e-6)


@pytest.mark.parametrize("make", [lambda: rnnkit.LSTM(I, H, peephole=True, layer_norm=True, proj_size=3),
                                  lambda: rnnkit.GRU(I, H, variant="simplified")], ids=["lstm", "gru"])
def test_graph_entry_equals_the_eager_kernel(make):
    """lstm_scan_graph / gru_scan_graph (what a compiled layer runs) against the eager
    kernel (the autograd.Function) on the same input, mask and reverse direction."""
    torch.manual_seed(0)
    layer = make().double()
    cell, p = layer.cells[0], layer._params(0, 0)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    state = cell.init_state(B, dtype=torch.float64)
    mask = (torch.arange(T).unsqueeze(1) < torch.tensor([5, 2, 4])).unsqueeze(-1)
    graph = cpu_lstm.lstm_scan_graph if "LSTM" in type(layer).__name__ else cpu_gru.gru_scan_graph
    from rnnkit.kernels import find
    eager = find(cell, x, p, state, mask)
    assert eager is not None
    for reverse in (False, True):
        y1, s1 = graph(cell, p, x, state, mask, reverse)
        y2, s2 = eager(cell, p, x, state, mask, reverse)
        torch.testing.assert_close(y1, y2, atol=1e-12, rtol=0)
        torch.testing.assert_close(s1, s2, atol=1e-12, rtol=0)
        g1 = torch.autograd.grad(y1.sum() + s1[0].sum(), [x, *layer.parameters()])
        g2 = torch.autograd.grad(y2.sum() + s2[0].sum(), [x, *layer.parameters()])
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
