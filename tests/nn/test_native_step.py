"""The C one-step kernels of streaming inference (rnnkit.nn.native_step): for every
cell they take, at the batches they take, a step equals the layer's forward on a
one-step chunk (the torch / reference paths), float64 to 1e-10 and float32 to 1e-5;
inputs they do not take fall back to the torch step."""
import pytest
import torch

import rnnkit
from rnnkit.kernels.cpu import native
from rnnkit.kernels.cpu.native import step_guard
from rnnkit.nn import native_step

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler: the native library is not built")


@pytest.fixture(autouse=True, params=["C++ checks", "Python checks"])
def checks(request, monkeypatch):
    """Every test runs with the fast step's checks read in C++ (step_guard.cpp) and in Python."""
    if request.param == "Python checks":
        monkeypatch.setattr(step_guard, "module", lambda: None)
    elif step_guard.module() is None:
        pytest.skip("no C++ compiler or Python headers: the step guard is not built")
    return request.param

I, H = 6, 7
NATIVE = {
    "lstm": lambda i=I, h=H, **kw: rnnkit.LSTM(i, h, **kw),
    "lstm_peephole": lambda i=I, h=H, **kw: rnnkit.LSTM(i, h, peephole=True, **kw),
    "lstm_no_bias": lambda i=I, h=H, **kw: rnnkit.LSTM(i, h, bias=False, **kw),
    "lstm_layer_norm": lambda i=I, h=H, **kw: rnnkit.LSTM(i, h, layer_norm=True, **kw),
    "lstm_layer_norm_peephole_no_bias":
        lambda i=I, h=H, **kw: rnnkit.LSTM(i, h, layer_norm=True, peephole=True, bias=False, **kw),
    "gru": lambda i=I, h=H, **kw: rnnkit.GRU(i, h, **kw),
    "gru_no_bias": lambda i=I, h=H, **kw: rnnkit.GRU(i, h, bias=False, **kw),
    "gru_reset_before": lambda i=I, h=H, **kw: rnnkit.GRU(i, h, variant="reset_before", **kw),
    "gru_reset_before_no_bias": lambda i=I, h=H, **kw: rnnkit.GRU(i, h, variant="reset_before", bias=False, **kw),
    "gru_simplified": lambda i=I, h=H, **kw: rnnkit.GRU(i, h, variant="simplified", **kw),
    "mingru": lambda i=I, h=H, **kw: rnnkit.MinGRU(i, h, **kw),
    "mingru_linear_no_bias": lambda i=I, h=H, **kw: rnnkit.MinGRU(i, h, positive=False, bias=False, **kw),
    "minlstm": lambda i=I, h=H, **kw: rnnkit.MinLSTM(i, h, **kw),
    "minlstm_linear": lambda i=I, h=H, **kw: rnnkit.MinLSTM(i, h, positive=False, **kw),
    "rnn_tanh": lambda i=I, h=H, **kw: rnnkit.RNN(i, h, nonlinearity="tanh", **kw),
    "rnn_relu": lambda i=I, h=H, **kw: rnnkit.RNN(i, h, nonlinearity="relu", **kw),
}
NOT_NATIVE = {
    "lstm_proj": lambda **kw: rnnkit.LSTM(I, H, proj_size=3, **kw),
}


def states_of(layer, batch, dtype, g):
    s = layer.init_state(batch, dtype=dtype)
    s = s if isinstance(s, tuple) else (s,)
    return tuple(torch.randn(t.shape, dtype=dtype, generator=g) for t in s)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("batch", [1, native_step.NATIVE_MAX_BATCH])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("name", sorted(NATIVE))
def test_native_step_equals_the_forward(name, layers, batch, dtype, tol):
    torch.manual_seed(0)
    layer = NATIVE[name](num_layers=layers, dtype=dtype).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, I, dtype=dtype, generator=g) * 3  # saturating gates too
    states = states_of(layer, batch, dtype, g)
    with torch.no_grad():
        got = native_step.step_stack(layer, x, states, grad=False)
        assert got is not None, "the C step should take this layer"
        y, finals = got
        want_y, want_h = layer(x.unsqueeze(0), states[0] if len(states) == 1 else states)
    want_h = want_h if isinstance(want_h, tuple) else (want_h,)
    torch.testing.assert_close(y, want_y[0], rtol=tol, atol=tol)
    for a, b in zip(finals, want_h, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _stepped(layer, xs, state=None):
    """``layer.step`` over ``xs (T, ...)`` from ``state`` (None: the initial state): (stacked
    outputs, final state)."""
    ys = []
    for x in xs:
        y, state = layer.step(x, state)
        ys.append(y)
    return torch.stack(ys), state


def _spy(monkeypatch, name: str) -> list[bool]:
    """Records, per call of ``native_step.<name>``, whether it took the step (not None)."""
    taken = []
    real = getattr(native_step, name)

    def spy(*args):
        out = real(*args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(native_step, name, spy)
    return taken


def test_the_public_step_runs_it_and_follows_weight_updates(monkeypatch):
    """``layer.step`` under no_grad goes through the C step at batch 1, and a weight
    written in place (an optimiser step) is seen by the next step."""
    calls = _spy(monkeypatch, "step_stack")
    layer = rnnkit.LSTM(I, H, num_layers=2, peephole=True, dtype=torch.float64).eval()
    x = torch.randn(1, I, dtype=torch.float64)
    with torch.no_grad():
        layer.step(x)
        layer.weight_hh_l1.add_(0.25)
        layer.weight_co_l0.mul_(-1)
        y, _ = layer.step(x)
    assert calls == [True, True]
    torch.testing.assert_close(y, layer(x.unsqueeze(0))[0][0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(NOT_NATIVE))
def test_cells_without_a_c_step_are_refused(name):
    layer = NOT_NATIVE[name]().eval()
    x = torch.randn(1, I)
    assert native_step.step_stack(layer, x, states_of(layer, 1, torch.float32, None), grad=False) is None


def test_inputs_it_does_not_take_fall_back():
    layer = rnnkit.LSTM(I, H).eval()
    s = states_of(layer, 1, torch.float32, None)
    x = torch.randn(1, I)
    # a gradient asked of the weights: autograd needs the torch step
    assert native_step.step_stack(layer, x, s, grad=True) is None
    # the weights frozen and grad mode on: nothing is differentiated, the C step runs
    layer.requires_grad_(False)
    assert native_step.step_stack(layer, x, s, grad=True) is not None
    assert native_step.step_stack(layer, x.requires_grad_(), s, grad=True) is None
    # more streams than the C steps take: torch's GEMM
    many = torch.randn(native_step.NATIVE_MAX_BATCH + 1, I)
    assert native_step.step_stack(layer, many, states_of(layer, len(many), torch.float32, None), grad=False) is None
    half = rnnkit.LSTM(I, H, dtype=torch.bfloat16).eval()
    assert native_step.step_stack(half, x.bfloat16(), states_of(half, 1, torch.bfloat16, None), grad=False) is None


@pytest.mark.parametrize("shape", ["unbatched", "batch1", "batch2"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("name", sorted(NATIVE))
def test_fast_step_equals_the_forward_on_the_whole_sequence(monkeypatch, name, layers, shape):
    """After a stream's first step (the general path binds the C steps), every step is
    taken by the fast path and the outputs and final state equal one forward."""
    taken = _spy(monkeypatch, "fast_step")
    torch.manual_seed(0)
    layer = NATIVE[name](num_layers=layers, dtype=torch.float64).eval()
    B = {"unbatched": None, "batch1": 1, "batch2": 2}[shape]
    xs = torch.randn(5, *(() if B is None else (B,)), I, dtype=torch.float64) * 3
    with torch.no_grad():
        ys, state = _stepped(layer, xs)
        want_y, want_state = layer(xs)
    assert taken == [False, True, True, True, True]
    torch.testing.assert_close(ys, want_y, rtol=1e-10, atol=1e-10)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    want_state if isinstance(want_state, tuple) else (want_state,), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_fast_step_declines_what_it_was_not_bound_for(monkeypatch):
    """Anything but the stream it was bound for goes to the general path: its errors,
    its autograd, the new weights."""
    taken = _spy(monkeypatch, "fast_step")
    layer = rnnkit.LSTM(I, H, num_layers=2, dtype=torch.float64).eval()
    x = torch.randn(1, I, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer.step(x)
        layer.step(x, state)
        assert taken == [False, True]
        # bad input: the general path's clear errors
        with pytest.raises(rnnkit.errors.ShapeError, match="state h has shape"):
            layer.step(x, (state[0][:, :, :3].contiguous(), state[1]))
        with pytest.raises(rnnkit.errors.DtypeError, match="x_t has dtype"):
            layer.step(x.float(), state)
        with pytest.raises(rnnkit.errors.ShapeError, match="x_t has shape"):
            layer.step(torch.randn(1, I + 1, dtype=torch.float64), state)
        # a list state, a non-contiguous input, a reset: the general path computes them
        wide = torch.randn(1, 2 * I, dtype=torch.float64)[:, ::2]
        y_list, _ = layer.step(wide, list(state))
        y_reset, _ = layer.step(x, state, reset=torch.tensor([True]))
        torch.testing.assert_close(y_list, layer(wide.unsqueeze(0), state)[0][0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(y_reset, layer(x.unsqueeze(0))[0][0], rtol=1e-10, atol=1e-10)
        # a weight written in place, then one replaced: the next step sees each
        layer.weight_hh_l1.mul_(-1)
        y_in_place, _ = layer.step(x, state)
        torch.testing.assert_close(y_in_place, layer(x.unsqueeze(0), state)[0][0], rtol=1e-10, atol=1e-10)
        layer.weight_ih_l0 = torch.nn.Parameter(torch.randn_like(layer.weight_ih_l0))
        y_replaced, _ = layer.step(x, state)
        torch.testing.assert_close(y_replaced, layer(x.unsqueeze(0), state)[0][0], rtol=1e-10, atol=1e-10)
        # training mode
        layer.train()
        layer.step(x, state)
        layer.eval()
    # gradients asked of the weights: autograd's path
    y, _ = layer.step(x, state)
    assert y.grad_fn is not None
    assert taken == [False, True] + [False] * 8  # (the reset step does not ask it)


def test_weights_made_under_inference_mode_are_bound_afresh_each_step():
    """Inference tensors keep no version counter, so an in-place change cannot be seen:
    the C steps are bound again every step rather than risk stale weights."""
    with torch.inference_mode():
        layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
        x = torch.randn(1, I, dtype=torch.float64)
        _, state = layer.step(x)
        layer(x.unsqueeze(0), state)  # a one-step forward binds them too
        layer.weight_hh_l0.mul_(-2)
        y, _ = layer.step(x, state)
        y_forward = layer(x.unsqueeze(0), state)[0][0]
        want = layer(torch.stack((x, x)), state)[0][0]
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y_forward, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["lstm_peephole", "lstm_layer_norm", "gru", "gru_reset_before", "minlstm",
                                  "rnn_tanh"])
def test_scratch_from_the_caller_equals_scratch_on_the_stack(monkeypatch, name):
    """Steps whose scratch would not fit the C step's stack buffer get it from the caller
    (forced here by a zero limit): same results."""
    torch.manual_seed(0)
    layer = NATIVE[name](num_layers=2, dtype=torch.float64).eval()
    x = torch.randn(2, I, dtype=torch.float64)
    states = states_of(layer, 2, torch.float64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        on_stack = native_step.step_stack(layer, x, states, grad=False)
        monkeypatch.setattr(native_step, "STACK_SCRATCH", 0)
        from_caller = native_step.step_stack(layer, x, states, grad=False)
    torch.testing.assert_close(from_caller, on_stack, rtol=0, atol=0)


@pytest.mark.parametrize("layout,batch", [("time_major", 1), ("time_major", 2), ("batch_first", 1),
                                          ("batch_first", 2), ("unbatched", 1)])
@pytest.mark.parametrize("name", sorted(NATIVE))
def test_one_step_chunks_through_forward_equal_the_whole_sequence(monkeypatch, name, batch, layout):
    """A stream calling ``layer(x_t, hx)`` one step at a time (torch.nn's idiom) goes
    through the C steps from its second chunk (the first has no hx) and gets the outputs
    and final state of one forward over the sequence, in the forward's own layouts."""
    taken = _spy(monkeypatch, "fast_forward")
    torch.manual_seed(0)
    layer = NATIVE[name](num_layers=2, batch_first=layout == "batch_first", dtype=torch.float64).eval()
    shape = {"time_major": (5, batch, I), "batch_first": (batch, 5, I), "unbatched": (5, I)}[layout]
    xs = torch.randn(shape, dtype=torch.float64) * 3
    time_dim = 1 if layout == "batch_first" else 0
    with torch.no_grad():
        outs, hx = [], None
        for x in xs.split(1, dim=time_dim):
            out, hx = layer(x.contiguous(), hx)
            outs.append(out)
        want_out, want_hx = layer(xs)
    assert taken == [False, True, True, True, True, False]  # (then the whole sequence: declined)
    torch.testing.assert_close(torch.cat(outs, time_dim), want_out, rtol=1e-10, atol=1e-10)
    for a, b in zip(hx if isinstance(hx, tuple) else (hx,), want_hx if isinstance(want_hx, tuple) else (want_hx,),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_one_step_forward_output_does_not_share_memory_with_the_state():
    """As torch.nn.LSTM's: writing into the output leaves h_n alone."""
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    x, state = torch.randn(1, 1, I, dtype=torch.float64), layer.init_state(1)
    with torch.no_grad():
        out, (h, _) = layer(x, state)
        kept = h.clone()
        out.zero_()
    assert torch.equal(h, kept)


def test_one_step_forward_declines_what_the_c_steps_do_not_compute(monkeypatch):
    taken = _spy(monkeypatch, "fast_forward")
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    x = torch.randn(1, 1, I, dtype=torch.float64)
    state = layer.init_state(1)
    with torch.no_grad():
        layer(x, state)                                  # taken
        layer(torch.cat((x, x)), state)                  # two steps
        layer(x, state, torch.tensor([1]))               # lengths: not asked
        layer.weight_hh_l0.mul_(-1)                      # rebound, then taken
        y, _ = layer(x, state)
        torch.testing.assert_close(y, layer(torch.cat((x, x)), state)[0][:1], rtol=1e-10, atol=1e-10)
        layer.train()
        layer(x, state)                                  # training mode
        layer.eval()
    y, _ = layer(x, state)                               # gradients asked
    assert y.grad_fn is not None
    assert taken == [True, False, True, False, False, False]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace:DeprecationWarning")
def test_jit_trace_of_a_one_step_chunk_records_the_computation():
    """torch.jit.trace cannot see a C call: under tracing the general path runs, so the
    traced module computes the layer for new inputs too."""
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    x, state = torch.randn(1, 1, I, dtype=torch.float64), layer.init_state(1)
    with torch.no_grad():
        traced = torch.jit.trace(layer, (x, state), check_trace=False)
        other = torch.randn(1, 1, I, dtype=torch.float64)
        torch.testing.assert_close(traced(other, state)[0], layer(other, state)[0], rtol=1e-10, atol=1e-10)


def test_compiled_one_step_chunk_keeps_one_graph():
    """Under torch.compile the one-step forward takes the general path (its custom ops),
    so fullgraph compiles and equals eager."""
    layer = rnnkit.LSTM(I, H, layer_norm=True).eval()
    x, state = torch.randn(1, 1, I), layer.init_state(1)
    with torch.no_grad():
        got = torch.compile(layer, fullgraph=True, backend="eager")(x, state)
        want = layer(x, state)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_steps_split_over_threads_equal_the_forward(two_threads, name):
    """Weights large enough to split a step's GEMV over two threads (each thread its own
    block of rows): same results."""
    size = 192  # every cell's GEMVs >= stream_step.h's STREAM_PARALLEL_MIN (65536) weights
    torch.manual_seed(0)
    layer = NATIVE[name](i=size, h=size, num_layers=2, dtype=torch.float64).eval()
    xs = torch.randn(4, 3, size, dtype=torch.float64)  # three streams
    with torch.no_grad():
        ys, _ = _stepped(layer, xs)
        want, _ = layer(xs)
    torch.testing.assert_close(ys, want, rtol=1e-10, atol=1e-10)


def test_one_step_forward_of_parametrised_weights_takes_the_general_path(monkeypatch):
    """A parametrised weight is computed anew each call: binding it every step would cost
    more than it saves, so the one-step forward leaves it to the general path."""
    taken = _spy(monkeypatch, "fast_forward")
    layer = torch.nn.utils.parametrizations.weight_norm(rnnkit.LSTM(I, H, dtype=torch.float64), "weight_hh_l0")
    layer.eval()
    x, state = torch.randn(1, 1, I, dtype=torch.float64), layer.init_state(1)
    with torch.no_grad():
        y, _ = layer(x, state)
        want = layer(torch.cat((x, x)), state)[0][:1]
    assert taken == [False, False]
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)


def _program(layer, x, state):
    with torch.no_grad():
        layer.step(x, state)
    return native_step._PROGRAMS[layer]


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_the_cxx_checks_answer_as_the_python_checks(name, checks):
    """step_guard.cpp's check and native_step._checked: the same addresses for what the
    bound step takes, None for everything else (shapes, dtypes, layouts, state types,
    written or swapped weights, gradients asked)."""
    if checks != "C++ checks":
        pytest.skip("compares the two")
    layer = NATIVE[name](num_layers=2, dtype=torch.float64).eval()
    lstm = name == "lstm"
    x = torch.randn(2, I, dtype=torch.float64)
    state = layer.init_state(2, dtype=torch.float64)
    prog = _program(layer, x, state)
    assert prog.guard is not None
    one = state if not lstm else state[0]
    h1 = torch.zeros(2, H, dtype=torch.float64)
    cases = {
        "bound": (x, state), "unbatched": (x[0], (h1, h1) if lstm else h1),
        "batch 8": (torch.randn(8, I, dtype=torch.float64), layer.init_state(8, dtype=torch.float64)),
        "batch 9": (torch.randn(9, I, dtype=torch.float64), layer.init_state(9, dtype=torch.float64)),
        "float32 x": (x.float(), state), "wrong input size": (torch.randn(2, I + 1, dtype=torch.float64), state),
        "3-d x": (x[None], state), "non-contiguous x": (torch.randn(2, 2 * I, dtype=torch.float64)[:, ::2], state),
        "x a Parameter": (torch.nn.Parameter(x, requires_grad=False), state),
        "list state": (x, list(state) if lstm else [state]), "1-tuple state": (x, (one,)),
        "state batch 3": (x, layer.init_state(3, dtype=torch.float64)),
        "non-contiguous state": (x, tuple(s.transpose(0, 1).contiguous().transpose(0, 1) for s in state)
                                 if lstm else state.transpose(0, 1).contiguous().transpose(0, 1)),
        "float32 state": (x, tuple(s.float() for s in state) if lstm else state.float()),
        "x needs grad": (x.clone().requires_grad_(), state),
    }
    for case, (xx, ss) in cases.items():
        with torch.no_grad():
            want, got = native_step._checked(prog, xx, ss), prog.guard.check(xx, ss)
        assert got == want, case
        if case in ("bound", "unbatched", "batch 8"):
            assert got is not None, case
    with torch.enable_grad():  # gradients asked of the weights (they require grad)
        assert prog.guard.check(x, state) is None and native_step._checked(prog, x, state) is None
        layer.requires_grad_(False)
        assert prog.guard.check(x, state) == native_step._checked(prog, x, state) is not None
        layer.requires_grad_(True)
    with torch.no_grad():
        layer.weight_hh_l1.add_(1)  # written in place
        assert prog.guard.check(x, state) is None and native_step._checked(prog, x, state) is None
        prog = _program(layer, x, state)
        layer.weight_ih_l0.data = layer.weight_ih_l0.data.clone()  # its data swapped
        assert prog.guard.check(x, state) is None and native_step._checked(prog, x, state) is None


def test_outputs_made_ahead_are_distinct_and_the_states_kept_stay_intact():
    """A stream keeping every step's state (as a beam search does) sees each unchanged:
    the outputs made ahead are never handed out twice."""
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    xs = torch.randn(3 * native_step.OUTPUTS_AHEAD, 1, I, dtype=torch.float64)
    kept, state = [], None
    with torch.no_grad():
        for x in xs:
            y, state = layer.step(x, state)
            kept.append((y, state, y.clone(), tuple(s.clone() for s in state)))
        want, _ = layer(xs)
    assert len({s[0].data_ptr() for _, s, _, _ in kept}) == len(kept)
    for t, (y, s, y_copy, s_copy) in enumerate(kept):
        assert torch.equal(y, y_copy) and all(torch.equal(a, b) for a, b in zip(s, s_copy))
        torch.testing.assert_close(y, want[t], rtol=1e-10, atol=1e-10)


class _Stepper(torch.nn.Module):
    """A module whose forward is one stream step (torch.jit.trace traces modules' weights
    as parameters, a plain function's as constants it refuses)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, h, c):
        return self.layer.step(x, (h, c))[0]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace:DeprecationWarning")
def test_jit_trace_of_a_stream_step_records_the_computation():
    """torch.jit.trace cannot see a C call: under it both the general step and a stream's
    fast step take torch's step, so the trace computes the step for new inputs (it
    recorded constants before)."""
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    x = torch.randn(1, I, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer.step(x)
        layer.step(x, state)  # binds the C steps: a traced step would take the fast path
        traced = torch.jit.trace(_Stepper(layer), (x, *state), check_trace=False)
        x2, h2 = torch.randn(1, I, dtype=torch.float64), torch.randn_like(state[0])
        torch.testing.assert_close(traced(x2, h2, state[1]), layer.step(x2, (h2, state[1]))[0],
                                   rtol=1e-10, atol=1e-10)


def test_autocast_takes_the_general_step(monkeypatch):
    """Autocast changes the arithmetic (its GEMMs in bfloat16): no C step under it."""
    taken = _spy(monkeypatch, "fast_step")
    layer = rnnkit.LSTM(I, H).eval()
    x = torch.randn(1, I)
    with torch.no_grad():
        _, state = layer.step(x)
        layer.step(x, state)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer.step(x, state)
        layer.step(x, state)
    assert taken == [False, True, False, True]


@pytest.mark.parametrize("stack", ["on the stack", "from the heap"])
@pytest.mark.parametrize("name", ["lstm", "lstm_layer_norm_peephole_no_bias", "gru_reset_before", "minlstm",
                                  "rnn_relu"])
def test_the_cxx_step_runs_the_whole_step_and_equals_the_forward(monkeypatch, checks, name, stack):
    """With the guard built, a stream's later steps never reach the Python checks or the
    ctypes calls: C++ runs the stack (its scratch on the C stack, or allocated when it
    would not fit: forced by a zero limit), equal to one forward."""
    if checks != "C++ checks":
        pytest.skip("the C++ step")
    if stack == "from the heap":
        monkeypatch.setattr(native_step, "STACK_SCRATCH", 0)
    torch.manual_seed(0)
    layer = NATIVE[name](num_layers=2, dtype=torch.float64).eval()
    xs = torch.randn(native_step.OUTPUTS_AHEAD + 3, 2, I, dtype=torch.float64)  # past one refill
    with torch.no_grad():
        _, state = layer.step(xs[0])
        monkeypatch.setattr(native_step, "_checked", None)  # would raise if called
        monkeypatch.setattr(native_step.StackProgram, "run_at", None)
        ys, state = _stepped(layer, xs[1:], state)
        want_y, want_state = layer(xs)
    torch.testing.assert_close(ys, want_y[1:], rtol=1e-10, atol=1e-10)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    want_state if isinstance(want_state, tuple) else (want_state,), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_two_python_threads_stepping_one_layer_each_get_their_own_stream():
    """The step releases the GIL for its arithmetic and takes its outputs from a shared
    pool: two threads stepping their own streams through one layer each get exactly the
    forward of their own sequence."""
    import threading
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H, num_layers=2, dtype=torch.float64).eval()
    seqs = [torch.randn(3 * native_step.OUTPUTS_AHEAD, 1, I, dtype=torch.float64) for _ in range(2)]
    got = [None, None]

    def run(k):
        with torch.no_grad():
            got[k] = _stepped(layer, seqs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with torch.no_grad():
        for k in range(2):
            want_y, want_state = layer(seqs[k])
            torch.testing.assert_close(got[k][0], want_y, rtol=1e-10, atol=1e-10)
            for a, b in zip(got[k][1], want_state, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_outputs_made_when_the_pool_runs_dry_are_the_callers_even_if_another_thread_empties_it():
    """The race the two threads above can hit: the list a step makes is shared the moment
    it is stored, and another thread may take all of it before this one takes its own."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    x = torch.randn(1, I, dtype=torch.float64)
    program = _program(layer, x, None)

    class Greedy(dict):  # another thread, taking every output the moment a list is stored
        def __setitem__(self, key, made):
            super().__setitem__(key, made)
            taken.extend(made)
            made.clear()
    taken: list = []
    program.spare = Greedy()
    mine = program._outputs(1, True)
    assert taken and all(mine[1].data_ptr() != t[1].data_ptr() for t in taken)  # never handed out twice


@pytest.mark.parametrize("layout,batch", [("time_major", 2), ("batch_first", 2), ("time_major", None)])
@pytest.mark.parametrize("name", ["lstm", "gru", "lstm_layer_norm"])
def test_the_cxx_step_runs_one_step_chunks_of_the_forward(monkeypatch, checks, name, layout, batch):
    """``layer(x_t, hx)`` on one-step chunks after the first: C++ alone (the Python checks
    and ctypes calls are never reached), outputs in their own memory in the forward's
    layout, equal to one forward over the whole sequence."""
    if checks != "C++ checks":
        pytest.skip("the C++ step")
    torch.manual_seed(0)
    bf = layout == "batch_first"
    layer = NATIVE[name](num_layers=2, batch_first=bf, dtype=torch.float64).eval()
    T = native_step.OUTPUTS_AHEAD + 3
    xs = torch.randn(T, *(() if batch is None else (batch,)), I, dtype=torch.float64)
    chunks = [x.unsqueeze(1 if bf and batch is not None else 0) for x in xs]
    with torch.no_grad():
        state = layer.init_state(batch or 1, dtype=torch.float64)
        if batch is None:  # unbatched: (L, H)
            state = tuple(s[:, 0].contiguous() for s in state) if isinstance(state, tuple) else state[:, 0].contiguous()
        out, state = layer(chunks[0], state)
        outs = [out]
        monkeypatch.setattr(native_step, "_plain_states", None)  # would raise if called
        monkeypatch.setattr(native_step.StackProgram, "run_at", None)
        for chunk in chunks[1:]:
            out, state = layer(chunk, state)
            assert out.shape == chunk.shape[:-1] + (H,)
            assert all(out.data_ptr() != s.data_ptr() for s in (state if isinstance(state, tuple) else (state,)))
            outs.append(out)
        want, want_state = layer(xs.transpose(0, 1) if bf and batch is not None else xs)
    got = torch.cat(outs, dim=1 if bf and batch is not None else 0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    want_state if isinstance(want_state, tuple) else (want_state,), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_compiled_stream_step_keeps_one_graph():
    """Under torch.compile a stream's step (bound beforehand, so the fast path would take
    it) takes torch's step: fullgraph compiles and equals eager."""
    layer = rnnkit.LSTM(I, H).eval()
    x = torch.randn(1, I)
    with torch.no_grad():
        _, state = layer.step(x)
        layer.step(x, state)
        got = torch.compile(lambda x_, s: layer.step(x_, s)[0], fullgraph=True, backend="eager")(x, state)
        want = layer.step(x, state)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_torch_func_transforms_of_a_stream_step_take_torchs_step():
    """vmap's and functionalize's tensors only look dense (no storage, or address 0): the
    C steps decline them (they aborted or read address 0), torch's step computes."""
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    x = torch.randn(1, I, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer.step(x)
        layer.step(x, state)
        xs = torch.randn(4, 1, I, dtype=torch.float64)
        mapped = torch.func.vmap(lambda x_: layer.step(x_, state)[0])(xs)
        torch.testing.assert_close(mapped, torch.stack([layer.step(x_, state)[0] for x_ in xs]),
                                   rtol=1e-10, atol=1e-10)
        fresh = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
        for lay in (layer, fresh):  # a bound stream, and the general path's first step
            functional = torch.func.functionalize(lambda x_: lay.step(x_, state)[0])(x)
            torch.testing.assert_close(functional, lay.step(x, state)[0], rtol=1e-10, atol=1e-10)


def test_weight_data_swapped_back_to_the_same_size_is_seen():
    """``p.data = ...`` does not bump the version; the program holds the storages it bound,
    so new data never reuses their address unseen."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    x = torch.randn(1, I, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer.step(x)
        layer.step(x, state)
        for _ in range(3):
            layer.weight_hh_l0.data = torch.empty(0, dtype=torch.float64)
            layer.weight_hh_l0.data = torch.randn(4 * H, H, dtype=torch.float64)
            y, _ = layer.step(x, state)
            torch.testing.assert_close(y, layer(x.unsqueeze(0), state)[0][0], rtol=1e-10, atol=1e-10)


def test_weights_of_another_dtype_get_the_general_paths_error():
    layer = rnnkit.GRU(I, H, dtype=torch.float64).eval()
    x = torch.randn(1, I, dtype=torch.float64)
    with torch.no_grad():
        layer.weight_hh_l0.data = layer.weight_hh_l0.data.float()
        with pytest.raises((rnnkit.errors.DtypeError, RuntimeError)):
            layer.step(x)


def test_a_step_never_returns_the_refill_signal(monkeypatch, checks):
    """If another thread takes the outputs a refill made before this one can, the step
    refills again rather than return the C++ step's 'ran out' signal."""
    layer = rnnkit.LSTM(I, H, dtype=torch.float64).eval()
    x = torch.randn(1, I, dtype=torch.float64)
    real, calls = native_step.StackProgram._refill, []

    def stolen_once(self, x_, chunk):
        real(self, x_, chunk)
        calls.append(chunk)
        if len(calls) == 1:  # as if another thread took them all
            for made in self.spare.values():
                made.clear()

    monkeypatch.setattr(native_step.StackProgram, "_refill", stolen_once)
    with torch.no_grad():
        _, state = layer.step(x)
        y, state = layer.step(x, state)
        out, _ = layer(x.unsqueeze(0), state)
    assert isinstance(y, torch.Tensor) and isinstance(out, torch.Tensor)
    assert len(calls) >= (2 if checks == "C++ checks" else 0)  # (the Python checks make outputs as they go)
