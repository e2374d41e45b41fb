"""torch.compile(fullgraph=True) and torch.export of layers with custom cells: the fused
CPU kernels stay in the graph as the custom ops of rnnkit/kernels/cpu/{lstm,gru}.py, and the
results (outputs, final states, gradients) equal eager mode's; torch.nn configurations with
lengths compile whole too."""
import pytest
import torch
from torch._dynamo.testing import EagerAndRecordGraphs

import rnnkit
from rnnkit.kernels import find

LAYERS = {
    "lstm_peephole_2layers": lambda: rnnkit.LSTM(4, 8, peephole=True, num_layers=2),
    "lstm_layer_norm_proj": lambda: rnnkit.LSTM(4, 8, layer_norm=True, proj_size=3),
    "lstm_peephole_layer_norm_bidir": lambda: rnnkit.LSTM(4, 8, peephole=True, layer_norm=True, bidirectional=True),
    "gru_reset_before_bidir": lambda: rnnkit.GRU(4, 8, variant="reset_before", bidirectional=True),
    "gru_simplified": lambda: rnnkit.GRU(4, 8, variant="simplified", bias=False),
    "min_gru": lambda: rnnkit.MinGRU(4, 8),
    "min_lstm": lambda: rnnkit.MinLSTM(4, 8),
}
# the op each layer's kernel appears as in a graph (the minimal RNNs' scan is torch ops)
OPS = {"lstm": "torch.ops.rnnkit.lstm_scan", "gru_": "torch.ops.rnnkit.gru_scan"}


def _needs_kernel(layer, x):
    if find(layer.cells[0], x, layer._params(0, 0)) is None:
        pytest.skip("no fused kernel here (no C compiler): the reference steps run")


def _grads(layer, x, y, h):
    loss = y.square().sum() + sum(s.square().sum() for s in (h if isinstance(h, tuple) else (h,)))
    return torch.autograd.grad(loss, [x, *layer.parameters()])


LENGTHS = {"no_lengths": None, "padded": [7, 5, 2], "unpadded": [7, 7, 7]}  # unpadded: a mask, nothing padded


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("lengths", LENGTHS)
def test_compiled_fullgraph_keeps_the_kernel_and_matches_eager(name, lengths):
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = LAYERS[name]()
    x = torch.randn(7, 3, 4, requires_grad=True)
    _needs_kernel(layer, x)
    kwargs = {} if LENGTHS[lengths] is None else {"lengths": torch.tensor(LENGTHS[lengths])}
    graphs = EagerAndRecordGraphs()
    compiled = torch.compile(layer, fullgraph=True, backend=graphs)   # fullgraph: any break raises
    y, h = compiled(x, **kwargs)
    code = "\n".join(str(g.graph) for g in graphs.graphs)
    op = next((o for prefix, o in OPS.items() if name.startswith(prefix)), None)
    if op is not None:
        assert op in code, code
    assert layer.path == "kernel"                                   # the same path as eager
    got = _grads(layer, x, y, h)
    y_eager, h_eager = layer(x, **kwargs)
    torch.testing.assert_close(y, y_eager, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h, h_eager, atol=1e-6, rtol=1e-6)
    for a, b in zip(got, _grads(layer, x, y_eager, h_eager)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


TORCH_PATH_LAYERS = {
    "lstm": lambda: rnnkit.LSTM(4, 8),
    "gru_2layers_bidir": lambda: rnnkit.GRU(4, 8, num_layers=2, bidirectional=True),
    "rnn_relu_batch_first": lambda: rnnkit.RNN(4, 8, nonlinearity="relu", batch_first=True),
    "lstm_weight_drop_between_layers": lambda: rnnkit.LSTM(4, 8, num_layers=2, weight_drop=0.3,
                                                           hidden_dropout=0.2).eval(),
}


@pytest.mark.parametrize("name", TORCH_PATH_LAYERS)
def test_torch_path_with_lengths_compiles_fullgraph_and_matches_eager(name):
    """torch.nn's kernel takes lengths as a packed batch, which dynamo cannot trace (so
    torch.nn.LSTM itself breaks the graph there); rnnkit's layers mask in the scan instead,
    with the eager (packed) results and gradients."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = TORCH_PATH_LAYERS[name]()
    assert layer.path == "torch"
    x = torch.randn(3, 7, 4) if layer.batch_first else torch.randn(7, 3, 4)
    x.requires_grad_()
    lengths = torch.tensor([7, 5, 2])
    y, h = torch.compile(layer, fullgraph=True, backend="eager")(x, lengths=lengths)
    got = _grads(layer, x, y, h)
    y_eager, h_eager = layer(x, lengths=lengths)
    torch.testing.assert_close(y, y_eager, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h, h_eager, atol=1e-6, rtol=1e-6)
    for a, b in zip(got, _grads(layer, x, y_eager, h_eager)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_aot_autograd_backward_runs_the_backward_op():
    """Compiled with AOTAutograd the backward graph holds the C BPTT op, and gradients match."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = rnnkit.LSTM(4, 8, peephole=True)
    x = torch.randn(6, 2, 4, requires_grad=True)
    _needs_kernel(layer, x)
    seen = []

    def record(gm, example_inputs):
        seen.append(str(gm.graph))
        return gm
    from torch._dynamo.backends.common import aot_autograd
    compiled = torch.compile(layer, fullgraph=True, backend=aot_autograd(fw_compiler=record, bw_compiler=record))
    y, _ = compiled(x)
    g = torch.autograd.grad(y.sum(), [x, layer.weight_hh_l0])
    assert any("rnnkit.lstm_scan.default" in s for s in seen)
    assert any("rnnkit.lstm_scan_backward.default" in s for s in seen)
    ref = torch.autograd.grad(layer(x)[0].sum(), [x, layer.weight_hh_l0])
    for a, b in zip(g, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["lstm_peephole_2layers", "gru_reset_before_bidir"])
def test_export_keeps_the_custom_op(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()
    x = torch.randn(5, 2, 4)
    _needs_kernel(layer, x)
    program = torch.export.export(layer, (x,))
    op = "lstm_scan" if name.startswith("lstm") else "gru_scan"
    assert f"rnnkit.{op}.default" in str(program.graph)
    torch.testing.assert_close(program.module()(x)[0], layer(x)[0], atol=1e-6, rtol=1e-6)


def test_recurrent_dropout_under_compile_traces_the_reference_and_matches():
    """Step masks have no custom op: the reference steps are traced, with the same masks
    as eager for the same seed."""
    torch._dynamo.reset()
    layer = rnnkit.LSTM(4, 8, peephole=True, recurrent_dropout=0.3).train()
    x = torch.randn(5, 2, 4)
    torch.manual_seed(1)
    y_eager, _ = layer(x)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    torch.manual_seed(1)
    y, _ = compiled(x)
    torch.testing.assert_close(y, y_eager, atol=1e-6, rtol=1e-6)


def test_inductor_with_lengths_and_new_sequence_lengths_without_recompiling_per_length():
    """The default backend (inductor) compiles the graph with the op (its fake shapes are
    checked against the real ones), unpadded and padded lengths, and a new sequence length
    reuses the dynamic graph instead of compiling once per length."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    layer = rnnkit.LSTM(4, 8, peephole=True)
    x = torch.randn(9, 3, 4)
    _needs_kernel(layer, x)
    compiled = torch.compile(layer, fullgraph=True)
    frames = []
    for T, lengths in ((5, [5, 5, 5]), (7, [7, 2, 4]), (9, [9, 9, 1]), (6, [6, 6, 6])):
        xs, lens = x[:T], torch.tensor(lengths)
        y, (h, c) = compiled(xs, lengths=lens)
        y_eager, (h_eager, c_eager) = layer(xs, lengths=lens)
        torch.testing.assert_close(y, y_eager, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(c, c_eager, atol=1e-6, rtol=1e-6)
        frames.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert frames[-1] <= 2, f"compiled graphs per call: {frames} (one per sequence length?)"
