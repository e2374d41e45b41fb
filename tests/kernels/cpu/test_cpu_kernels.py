"""The fused CPU kernels (rnnkit.kernels.cpu: C time loops) beyond the registry-driven
parity checks of tests/kernels/test_kernel_parity.py: which cells and inputs they take,
the layer path, threads, the C GEMM, odd shapes, non-finite values, tiny activations,
buffers kept without a backward, real sizes against float64."""
import itertools

import pytest
import torch

import rnnkit
from rnnkit.cells import GRUCell, LSTMCell
from rnnkit.kernels import explain, find
from rnnkit.kernels.cpu import common as cpu_common, gru as cpu_gru, lstm as cpu_lstm, native
from rnnkit.nn.scan import scan
from kernel_checks import assert_layer_runs_kernel_and_matches_scan, outputs_and_grads, random_cell

CONFIGS = {s.name: s.make for s in (*cpu_lstm.SAMPLES, *cpu_gru.SAMPLES)}

needs_native = pytest.mark.skipif(native.library() is None, reason="no C compiler: the native kernels cannot be built")
KERNELS = (cpu_lstm.KERNEL, cpu_gru.KERNEL)


def _taken(cell, x, state=None, mask=None):
    """Whether a CPU kernel's cell and input checks take this (whether or not C is built here)."""
    p = cell.own_params()
    return any(k.supports(cell) is True and k.match(cell, x, p, state, mask) is True for k in KERNELS)


def _cell(name, input_size, hidden_size, dtype, seed=0):
    return random_cell(CONFIGS[name], input_size, hidden_size, dtype, seed)


def _inputs(cell, T, B, dtype, masked, lengths):
    x = torch.randn(T, B, cell.input_size, dtype=dtype, requires_grad=True)
    state = tuple(torch.randn(B, n, dtype=dtype, requires_grad=True) for n in cell.state_sizes())
    mask = None
    if masked:
        mask = (torch.arange(T).unsqueeze(1) < torch.tensor(lengths).unsqueeze(0)).unsqueeze(-1)
    return x, state, mask


def _kernel(cell, x):
    """The CPU kernel the registry picks for ``cell`` on ``x`` (asserted to be one)."""
    kernel = find(cell, x, cell.own_params())
    assert kernel is not None and kernel.backend == "cpu", kernel
    return kernel


def _float32_matches_reference_scan(name, reverse, masked):
    cell = _cell(name, 4, 6, torch.float32)
    x, state, mask = _inputs(cell, 7, 3, torch.float32, masked, [7, 2, 5])
    kernel = _kernel(cell, x)
    ref_outs, ref_grads = outputs_and_grads(scan, cell, x, state, mask, reverse)
    outs, grads = outputs_and_grads(kernel, cell, x, state, mask, reverse)
    for a, b in zip([*outs, *grads], [*ref_outs, *ref_grads]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_match_covers_exactly_the_custom_cells():
    x = torch.randn(3, 2, 4)
    covered = [LSTMCell(4, 6, peephole=True), LSTMCell(4, 6, layer_norm=True, proj_size=3),
               GRUCell(4, 6, variant="reset_before"), GRUCell(4, 6, variant="simplified")]
    for cell in covered:
        assert _taken(cell, x)
        assert _taken(cell.double(), x.double())
    # torch.nn's own kernels run these
    for cell in (LSTMCell(4, 6), LSTMCell(4, 6, proj_size=2), GRUCell(4, 6)):
        assert not _taken(cell, x)
    cell = LSTMCell(4, 6, peephole=True)
    assert not _taken(cell, x.half())  # dtype not covered
    assert not _taken(cell, x.double())  # dtypes differ

    class Custom(LSTMCell):  # a subclass may change recur(): the reference must run
        pass

    sub = Custom(4, 6, peephole=True)
    assert not _taken(sub, x)


def test_no_kernel_under_tracing(monkeypatch):
    cell = LSTMCell(4, 6, layer_norm=True)
    x = torch.randn(3, 2, 4)
    assert _taken(cell, x)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert not _taken(cell, x)


LAYERS = {
    "lstm_layer_norm": lambda **kw: rnnkit.LSTM(3, 5, layer_norm=True, **kw),
    "lstm_peephole_proj": lambda **kw: rnnkit.LSTM(3, 5, peephole=True, proj_size=2, **kw),
    "gru_reset_before": lambda **kw: rnnkit.GRU(3, 5, variant="reset_before", **kw),
    "gru_simplified": lambda **kw: rnnkit.GRU(3, 5, variant="simplified", **kw),
}


@needs_native
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_runs_kernel_and_matches_scan(name):
    assert_layer_runs_kernel_and_matches_scan(LAYERS[name], torch.randn(4, 6, 3), torch.tensor([6, 2, 5, 1]))


@needs_native
def test_threads_restored_after_forward_and_backward():
    """The loops run their small per-step ops on one thread and must hand back the caller's count."""
    torch.set_num_threads(2)  # the autouse fixture restores the session's count afterwards
    for cell in (_cell("lstm_all_proj", 3, 4, torch.float32), _cell("gru_reset_before", 3, 4, torch.float32)):
        x = torch.randn(4, 2, 3, requires_grad=True)
        y, final = _kernel(cell, x)(cell, cell.own_params(), x, cell.init_state(2))
        assert torch.get_num_threads() == 2
        (y.sum() + sum(s.sum() for s in final)).backward()
        assert torch.get_num_threads() == 2
        ref_y, _ = scan(cell, cell.own_params(), x, cell.init_state(2))
        torch.testing.assert_close(y, ref_y, atol=1e-5, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_row_blocks_on_two_threads_match_the_reference(name, monkeypatch):
    """With two threads and enough rows the C loops run blocks of rows in parallel, each
    block's whole time loop on its own thread (flag ROWS): uneven blocks (9 rows: 4 + 5),
    padded steps, both directions, gradients and a forward without a backward, as the
    reference scan."""
    torch.set_num_threads(2)  # the autouse fixture restores the session's count afterwards
    taken = []
    for module in (cpu_lstm, cpu_gru):
        monkeypatch.setattr(module, "row_blocks", lambda *a: taken.append(cpu_common.row_blocks(*a)) or taken[-1])
    cell = _cell(name, 4, 6, torch.float32)
    lengths = [7, 2, 5, 7, 1, 6, 7, 3, 4]
    for masked, reverse in itertools.product((False, True), (False, True)):
        x, state, mask = _inputs(cell, 7, len(lengths), torch.float32, masked, lengths)
        kernel = _kernel(cell, x)
        outs, grads = outputs_and_grads(kernel, cell, x, state, mask, reverse)
        ref_outs, ref_grads = outputs_and_grads(scan, cell, x, state, mask, reverse)
        for a, b in zip([*outs, *grads], [*ref_outs, *ref_grads]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            y, _ = kernel(cell, cell.own_params(), x, state, mask, reverse=reverse)
        torch.testing.assert_close(y, ref_outs[0], atol=1e-5, rtol=1e-5)
    assert taken and set(taken) == {2}


def test_row_blocks_need_rows_and_weights_in_cache(monkeypatch):
    """Blocks of rows in parallel only with several threads, four rows each, and recurrent
    weights within half of one core's L2 (else every thread would stream all of them)."""
    assert cpu_common.l2_bytes() > 0  # Linux's figure, or the 1 MiB default
    monkeypatch.setattr(cpu_common, "l2_bytes", lambda: 2 << 20)
    torch.set_num_threads(2)
    assert cpu_common.row_blocks(8, 1 << 20) == 2
    assert cpu_common.row_blocks(7, 1 << 20) == 1 and cpu_common.row_blocks(8, (1 << 20) + 1) == 1
    torch.set_num_threads(1)
    assert cpu_common.row_blocks(64, 1 << 10) == 1


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_gemm_matches_matmul(dtype):
    """The compiled per-step GEMM: every row-tile remainder (B 1-13), widths that end
    mid-panel, strided rows, the added term, one and two threads, K over a panel block
    (the sums of later blocks added onto the first's)."""
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for B, N, K in [(1, 16, 1), (2, 5, 3), (3, 33, 17), (7, 40, 64), (8, 512, 128), (13, 100, 9), (15, 40, 600)]:
            weight = torch.randn(N, K, dtype=dtype) / K ** 0.5  # outputs ~1 at any K: one tolerance
            panels = native.pack_panels(weight)

            def gemm(x, **kw):
                return native.gemm(x, panels, N, **kw)

            wide = torch.randn(B, 2 * K + 1, dtype=dtype)
            x = wide[:, 1:K + 1]  # rows 2K+1 apart
            add = torch.randn(B, N, dtype=dtype)
            torch.testing.assert_close(gemm(x), x @ weight.t(), **tol)
            torch.testing.assert_close(gemm(x, add=add), add + x @ weight.t(), **tol)
            out = torch.empty(B, N, dtype=dtype)
            assert gemm(x.contiguous(), out=out) is out
            torch.testing.assert_close(out, x @ weight.t(), **tol)
    with pytest.raises(ValueError, match="do not pack"):
        native.gemm(torch.randn(2, 5, dtype=dtype), panels, N)  # K differs
    with pytest.raises(ValueError, match="add must be"):
        native.gemm(x, panels, N, add=torch.randn(N, dtype=dtype))  # a bias: would be read past its end


@needs_native
@pytest.mark.parametrize("name", ["lstm_peephole_layer_norm", "lstm_all_proj", "gru_reset_before",
                                  "gru_simplified"])
def test_native_pointwise_on_several_threads_matches_reference(name, monkeypatch):
    """Rows split over OpenMP threads (per-thread layer-norm sums added after) change nothing."""
    monkeypatch.setattr(cpu_common, "PARALLEL_MIN_GATES", 0)
    torch.set_num_threads(2)  # the autouse fixture restores the count
    assert cpu_common.pointwise_threads(3, 24) == 2
    for reverse, masked in itertools.product([False, True], [False, True]):
        _float32_matches_reference_scan(name, reverse, masked)


@needs_native
@pytest.mark.parametrize("factory", [lambda: rnnkit.LSTM(3, 520, layer_norm=True, peephole=True),
                                     lambda: rnnkit.GRU(3, 260, variant="reset_before")],
                         ids=["lstm_520", "gru_260"])
def test_native_at_real_sizes_is_as_close_to_float64_as_the_reference(factory):
    """Widths that are no multiple of the vector length, several threads and oneDNN's
    reordered weights (from 4H x H >= 2^20, T >= 8): the float32 kernel stays within the
    float32 reference's own distance of a float64 run."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    fast = factory()
    ref32, ref64 = factory(), factory()
    ref32.load_state_dict(fast.state_dict())
    ref64.load_state_dict(fast.state_dict())
    ref32.backend = ref64.backend = "scan"
    ref64.double()
    x = torch.randn(8, 17, 3)
    results = []
    for layer, xx in ((fast, x), (ref32, x), (ref64, x.double())):
        xx = xx.clone().requires_grad_()
        y, _ = layer(xx, lengths=torch.tensor([8] * 16 + [5]))
        y.square().sum().backward()
        results.append([y.detach(), xx.grad, *(p.grad for p in layer.parameters())])
    assert fast.path == "kernel" and ref32.path == "scan"
    for got, ref, exact in zip(*results):
        scale = exact.abs().max()
        err, ref_err = (got.double() - exact).abs().max() / scale, (ref.double() - exact).abs().max() / scale
        assert err <= max(4 * ref_err, 1e-6), (err, ref_err)


@needs_native
@pytest.mark.parametrize("name,reverse,masked", [(n, r, m) for n in sorted(CONFIGS)
                                                 for r, m in [(False, False), (True, True)]])
def test_native_without_backward_keeps_no_history_and_matches(name, reverse, masked):
    """With nothing to differentiate (no_grad, or no input requiring grad) the native
    kernels reuse one step's buffers; outputs and final states stay the reference's."""
    cell = _cell(name, 4, 6, torch.float32)
    x, state, mask = _inputs(cell, 7, 3, torch.float32, masked, [7, 2, 5])
    kernel = _kernel(cell, x)
    with torch.no_grad():
        want = scan(cell, cell.own_params(), x, state, mask, reverse=reverse)
        got = kernel(cell, cell.own_params(), x, state, mask, reverse=reverse)
    for p in cell.parameters():
        p.requires_grad_(False)
    got2 = kernel(cell, cell.own_params(), x.detach(), tuple(s.detach() for s in state), mask, reverse=reverse)
    for out in (got, got2):
        torch.testing.assert_close(out[0], want[0], atol=1e-5, rtol=1e-5)
        for a, b in zip(out[1], want[1]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("name,reverse,masked", [(n, r, m) for n in sorted(CONFIGS)
                                                 for r, m in [(False, True), (True, True), (True, False)]])
def test_forward_without_backward_in_chunks_matches_the_reference(name, reverse, masked, monkeypatch):
    """A large projection with no backward to follow runs a chunk of steps at a time: with
    chunks of 2 or 4 steps (and a shorter last one) the outputs and final states are the
    reference's, padding and direction included."""
    cell = _cell(name, 4, 6, torch.float32)
    x, state, mask = _inputs(cell, 7, 3, torch.float32, masked, [7, 2, 5])
    monkeypatch.setattr(cpu_common, "CHUNK_BYTES", 2 * 3 * 4 * 6 * 4)  # LSTM: 2 steps of (B 3, 4H 24); GRUs: 2, 4
    kernel = _kernel(cell, x)
    with torch.no_grad():
        want = scan(cell, cell.own_params(), x, state, mask, reverse=reverse)
        got = kernel(cell, cell.own_params(), x, state, mask, reverse=reverse)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer_type", [rnnkit.LSTM, lambda *a, **kw: rnnkit.GRU(*a, variant="reset_before", **kw)])
def test_zoneout_forward_in_chunks_keeps_each_steps_masks(layer_type, monkeypatch):
    """Training-mode zoneout without autograd, in chunks: each chunk reads its own steps' masks
    (the same outputs as one chunk)."""
    torch.manual_seed(0)
    layer = layer_type(4, 6, zoneout=0.3, recurrent_dropout=0.2)
    x = torch.randn(7, 3, 4)
    outs = []
    for chunk in (cpu_common.CHUNK_BYTES, 2 * 3 * 24 * 4):
        monkeypatch.setattr(cpu_common, "CHUNK_BYTES", chunk)
        torch.manual_seed(1)
        with torch.no_grad():
            outs.append(layer(x))
        assert layer.path == "kernel", layer.path
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=0, rtol=0)


@needs_native
@pytest.mark.parametrize("name", sorted(n for n in CONFIGS if n.startswith("lstm")))
def test_lstm_backward_again_over_a_retained_graph_gives_the_same_gradients(name):
    """The LSTM kernel's backward writes its gate gradients over the forward's buffers; a
    second backward over the same graph (retain_graph) runs the forward again first: every
    gradient exactly the first's, and the reference scan's."""
    cell = _cell(name, 4, 6, torch.float32)
    x, state, mask = _inputs(cell, 7, 3, torch.float32, True, [7, 2, 5])
    kernel = _kernel(cell, x)
    y, final = kernel(cell, cell.own_params(), x, state, mask, reverse=False)
    loss = (y * torch.linspace(-1, 1, y.shape[-1])).sum() + final[1].square().sum()
    inputs = [x, *state, *cell.parameters()]
    first, second, third = (torch.autograd.grad(loss, inputs, retain_graph=True) for _ in range(3))
    y_ref, final_ref = scan(cell, cell.own_params(), x, state, mask)
    want = torch.autograd.grad((y_ref * torch.linspace(-1, 1, y.shape[-1])).sum() + final_ref[1].square().sum(),
                               inputs)
    for a, b, c, w in zip(first, second, third, want):
        assert torch.equal(a, b) and torch.equal(a, c)
        torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-5)


def test_zoneout_lstm_backward_again_over_a_retained_graph_reuses_its_masks():
    """With recurrent dropout and zoneout in the loop, the forward run again for a second
    backward draws nothing new: the same masks, the same gradients."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(4, 6, recurrent_dropout=0.3, zoneout=0.2)
    x = torch.randn(5, 3, 4, requires_grad=True)
    y, _ = layer(x)
    assert layer.path == "kernel", layer.path
    loss = (y * torch.linspace(-1, 1, 6)).sum()
    inputs = [x, *layer.parameters()]
    first, second = (torch.autograd.grad(loss, inputs, retain_graph=True) for _ in range(2))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@needs_native
@pytest.mark.parametrize("name", ["lstm_all_proj", "lstm_peephole_layer_norm", "gru_reset_before", "gru_simplified"])
@pytest.mark.parametrize("T,B,H", [(1, 1, 2), (3, 7, 17), (2, 13, 5)])
def test_native_odd_shapes(name, T, B, H):
    """One step, one row, GEMM row tiles 6+1 and 6+6+1, widths that end mid-panel."""
    torch.set_num_threads(2)
    cell = _cell(name, 3, H, torch.float32)
    lengths = [T] * B if B == 1 else [T] + [max(1, T - 1)] * (B - 1)
    x, state, mask = _inputs(cell, T, B, torch.float32, True, lengths)
    kernel = _kernel(cell, x)
    for reverse in (False, True):
        ref_outs, ref_grads = outputs_and_grads(scan, cell, x, state, mask, reverse)
        outs, grads = outputs_and_grads(kernel, cell, x, state, mask, reverse)
        for a, b in zip([*outs, *grads], [*ref_outs, *ref_grads]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("name", ["lstm_peephole", "lstm_all_proj", "lstm_layer_norm", "gru_reset_before",
                                  "gru_simplified"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_native_passes_nan_and_inf_on_like_the_reference(name, bad):
    """A diverging model must show it: non-finite inputs give the reference's non-finite
    outputs (no clamping or fast-math assumption hides them), forward and backward."""
    cell = _cell(name, 4, 6, torch.float32)
    x, state, mask = _inputs(cell, 5, 3, torch.float32, False, None)
    x = x.detach().clone()
    x[1, 0, 2] = bad
    x.requires_grad_()
    kernel = _kernel(cell, x)
    outs, grads = outputs_and_grads(kernel, cell, x, state, mask, False)
    ref_outs, ref_grads = outputs_and_grads(scan, cell, x, state, mask, False)
    for a, b in zip([*outs, *grads], [*ref_outs, *ref_grads]):
        assert torch.equal(torch.isfinite(a), torch.isfinite(b))
        torch.testing.assert_close(a[torch.isfinite(a)], b[torch.isfinite(b)], atol=1e-5, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("name", ["lstm_all_proj", "gru_reset_before"])
def test_native_takes_a_batch_first_mask_and_refuses_broadcast_states(name):
    """A mask made from a batch-first one (not contiguous) is the kernel's; ``(1, S)``
    initial states, which scan broadcasts, are refused by its match (the C reads ``B``
    rows), so the registry runs the reference: the results are scan's either way."""
    cell = _cell(name, 4, 6, torch.float32)
    T, B = 5, 9
    lengths = torch.tensor([5, 2, 4, 1, 5, 3, 5, 2, 1])
    mask = (torch.arange(T)[None] < lengths[:, None]).t().unsqueeze(-1)  # strides (1, T, 1)
    assert not mask.is_contiguous()
    x = torch.randn(T, B, 4)
    state = tuple(torch.randn(1, n) for n in cell.state_sizes())
    full = tuple(s.expand(B, -1).contiguous() for s in state)
    p = cell.own_params()
    assert find(cell, x, p, state, mask) is None
    assert find(cell, x, p, full, mask) is not None
    for reverse in (False, True):
        for run_state in (state, full):
            run = find(cell, x, p, run_state, mask) or scan
            got = run(cell, p, x, run_state, mask, reverse=reverse)
            want = scan(cell, p, x, run_state, mask, reverse=reverse)
            torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
            for a, b in zip(got[1], want[1]):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("name", ["lstm_peephole", "gru_simplified", "gru_reset_before"])
def test_native_keeps_relative_accuracy_for_tiny_activations(name):
    """States near zero (tanh of tiny arguments, where 1 - 2/(e^2x + 1) cancels) keep
    float32 relative accuracy, as torch's tanh does."""
    cell = _cell(name, 4, 6, torch.float32)
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(1e-4)
    x = torch.randn(6, 3, 4)
    state = tuple(torch.zeros(3, n) for n in cell.state_sizes())
    kernel = _kernel(cell, x)
    with torch.no_grad():
        got = kernel(cell, cell.own_params(), x, state)[0]
        exact = scan(cell, cell.double().own_params(), x.double(), tuple(s.double() for s in state))[0]
    assert exact.abs().min() > 0
    assert ((got.double() - exact).abs() / exact.abs()).max() < 1e-5


def test_without_the_c_library_the_reference_runs(monkeypatch):
    """No compiler, a failed build or RNNKIT_NATIVE=0: the CPU kernels say so, the layer runs the scan."""
    monkeypatch.setattr(native, "library", lambda: None)
    cell = LSTMCell(4, 6, peephole=True)
    x = torch.randn(3, 2, 4)
    assert find(cell, x, cell.own_params()) is None
    assert "no native library" in dict(explain(cell, x, cell.own_params()))["cpu.lstm"]
    assert rnnkit.LSTM(3, 5, peephole=True).path == "scan" and rnnkit.GRU(3, 5, variant="simplified").path == "scan"
