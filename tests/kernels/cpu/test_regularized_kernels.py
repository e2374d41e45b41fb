"""Recurrent dropout and zoneout inside the fused C LSTM loops (issue 16): the same draws
give the reference scan's outputs, final states and every gradient (float64: to 1e-10),
with lengths, both directions, stacked, training (masks) and evaluation (expectation)."""
import pytest
import torch

import rnnkit
from rnnkit.kernels.cpu import native
from kernel_checks import assert_same_with_the_same_draws

pytestmark = pytest.mark.skipif(not native.available(torch.float64), reason="no C compiler: no native kernels")

CELLS = [{}, {"peephole": True}, {"layer_norm": True}, {"peephole": True, "layer_norm": True}]
REGS = [{"recurrent_dropout": 0.3}, {"zoneout": {"c": 0.5, "h": 0.2}}, {"recurrent_dropout": 0.3, "zoneout": 0.3},
        {"zoneout": {"c": 0.4}}]


def _run(layer, x, lengths):
    torch.manual_seed(5)  # the same draws for both layers
    y, (h, c) = layer(x, lengths=lengths)
    (y.square().sum() + h.sum() + 2 * c.sum()).backward()
    out = [y, h, c, x.grad.clone(), *(p.grad.clone() for p in layer.parameters())]
    x.grad = None
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("lengths", [None, [7, 3, 5]])
def test_fused_c_lstm_equals_the_reference_with_the_same_masks(cell, reg, training, lengths):
    torch.manual_seed(1)
    kw = dict(num_layers=2, bidirectional=True, dtype=torch.float64, **cell, **reg)
    fast = rnnkit.LSTM(4, 6, **kw).train(training)
    ref = rnnkit.LSTM(4, 6, backend="scan", **kw).train(training)
    ref.load_state_dict(fast.state_dict())
    masked = fast.regularization.steps_masked(training)
    assert fast.path == ("kernel" if cell or masked else "torch") and ref.path == "scan"
    x = torch.randn(7, 3, 4, dtype=torch.float64, requires_grad=True)
    lengths = None if lengths is None else torch.tensor(lengths)
    for a, b in zip(_run(fast, x, lengths), _run(ref, x, lengths)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_float32_and_inference_agree_too():
    torch.manual_seed(0)
    kw = dict(layer_norm=True, peephole=True, recurrent_dropout=0.25, zoneout={"h": 0.1, "c": 0.3})
    fast, ref = rnnkit.LSTM(8, 16, **kw), rnnkit.LSTM(8, 16, backend="scan", **kw)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(20, 4, 8, requires_grad=True)
    for a, b in zip(_run(fast, x, None), _run(ref, x, None)):
        torch.testing.assert_close(a, b, rtol=5e-3, atol=2e-3)
    with torch.no_grad():  # the forward that keeps one step's buffers
        for layer in (fast, ref):
            layer.eval()
        torch.testing.assert_close(fast(x)[0], ref(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["reset_before", "simplified"])
@pytest.mark.parametrize("reg", [{"recurrent_dropout": 0.3}, {"zoneout": 0.3}, {"recurrent_dropout": 0.4, "zoneout": 0.2}])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("lengths", [None, [7, 3, 5]])
def test_fused_c_gru_equals_the_reference_with_the_same_masks(variant, reg, training, lengths):
    torch.manual_seed(1)
    kw = dict(num_layers=2, bidirectional=True, dtype=torch.float64, variant=variant, **reg)
    fast = rnnkit.GRU(4, 6, **kw).train(training)
    ref = rnnkit.GRU(4, 6, backend="scan", **kw).train(training)
    ref.load_state_dict(fast.state_dict())
    assert fast.path == "kernel" and ref.path == "scan"
    x = torch.randn(7, 3, 4, dtype=torch.float64, requires_grad=True)
    lengths = None if lengths is None else torch.tensor(lengths)
    assert_same_with_the_same_draws(fast, ref, x, lengths, rtol=1e-9, atol=1e-10)


def test_cells_without_a_regularised_kernel_run_the_reference():
    assert rnnkit.GRU(4, 5, zoneout=0.2).path == "scan"  # reset_after: PyTorch's kernel, no step masks
    projected = rnnkit.LSTM(4, 6, proj_size=3, recurrent_dropout=0.2)
    assert projected.path == "scan"
    assert projected.eval().path == "torch"  # evaluation: no step masks, PyTorch's kernel again
