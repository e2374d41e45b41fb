"""torch.compile and torch.export of layers with custom cells (rnnkit/nn/scan.py:scan_layers)."""
import pytest
import torch

import rnnkit
from rnnkit.kernels import cpu_fused, find


def _count_kernel_calls(monkeypatch):
    """Counts the fused kernels that find() hands out and that then run."""
    calls = []

    def counting_find(cell, x, p):
        kernel = find(cell, x, p)
        if kernel is None:
            return None

        def run(*args, **kwargs):
            calls.append(kernel)
            return kernel(*args, **kwargs)
        return run

    monkeypatch.setattr(rnnkit.nn.scan.kernels, "find", counting_find)
    return calls


@pytest.mark.parametrize("factory", [lambda: rnnkit.LSTM(4, 8, peephole=True, num_layers=2),
                                     lambda: rnnkit.GRU(4, 8, variant="reset_before", bidirectional=True)],
                         ids=["lstm_peephole", "gru_reset_before"])
def test_compiled_layer_runs_the_fused_kernel_and_matches_eager(factory, monkeypatch):
    """Under torch.compile the stack leaves the graph (one break) so the fused kernels run,
    instead of the reference loop being unrolled step by step into the graph."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = factory()
    x = torch.randn(7, 3, 4, requires_grad=True)
    calls = _count_kernel_calls(monkeypatch)
    compiled = torch.compile(layer, backend="aot_eager")
    y, _ = compiled(x)
    assert calls, "the compiled forward did not run a fused kernel"
    y.square().sum().backward()
    got = [x.grad.clone(), *(p.grad.clone() for p in layer.parameters())]
    x.grad = None
    layer.zero_grad()
    y_eager, _ = layer(x)
    y_eager.square().sum().backward()
    torch.testing.assert_close(y, y_eager, atol=1e-6, rtol=1e-6)
    for a, b in zip(got, [x.grad, *(p.grad for p in layer.parameters())]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_export_traces_the_reference_loop():
    """torch.export needs one graph: it gets the reference steps, no opaque kernel."""
    layer = rnnkit.LSTM(4, 8, layer_norm=True)
    x = torch.randn(5, 2, 4)
    assert cpu_fused.match(layer.cells[0], x, layer._params(0, 0)) is not None
    program = torch.export.export(layer, (x,))
    assert "NativeLSTM" not in str(program.graph) and "LSTMScan" not in str(program.graph)
    torch.testing.assert_close(program.module()(x)[0], layer(x)[0], atol=1e-6, rtol=1e-6)
