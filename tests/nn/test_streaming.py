"""Streaming (issue 17): ``init_state``, ``step`` and ``forward(chunk, state, reset=)``.

On every cell and every path a CPU runs (torch.nn's fused kernel, rnnkit's fused
kernels, the reference scan), stacked: a sequence fed whole, in chunks of random
lengths carrying the state, or step by step gives the same outputs and final state;
a batch of independent streams where some restart equals each stream run on its own
from scratch; and a bad state or reset fails with an error naming what is wrong.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import rnnkit
from rnnkit.cells import JordanCell
from rnnkit.errors import ArgumentError, DeviceError, DtypeError, ShapeError
from rnnkit.models import LanguageModel, LMConfig
from fuzzing import examples

I, H, T, B = 3, 5, 9, 4
f64 = torch.float64

CONFIGS = {
    "lstm": lambda **kw: rnnkit.LSTM(I, H, **kw),
    "lstm_peephole": lambda **kw: rnnkit.LSTM(I, H, peephole=True, **kw),
    "lstm_layer_norm": lambda **kw: rnnkit.LSTM(I, H, layer_norm=True, **kw),
    "lstm_proj": lambda **kw: rnnkit.LSTM(I, H, proj_size=2, **kw),
    "lstm_peephole_proj": lambda **kw: rnnkit.LSTM(I, H, peephole=True, proj_size=2, **kw),
    "gru": lambda **kw: rnnkit.GRU(I, H, **kw),
    "gru_reset_before": lambda **kw: rnnkit.GRU(I, H, variant="reset_before", **kw),
    "gru_simplified": lambda **kw: rnnkit.GRU(I, H, variant="simplified", **kw),
    "rnn_tanh": lambda **kw: rnnkit.RNN(I, H, nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: rnnkit.RNN(I, H, nonlinearity="relu", **kw),
    "mingru": lambda **kw: rnnkit.MinGRU(I, H, **kw),
    "minlstm": lambda **kw: rnnkit.MinLSTM(I, H, **kw),
    "mingru_linear": lambda **kw: rnnkit.MinGRU(I, H, positive=False, **kw),
    "jordan": lambda **kw: rnnkit.Recurrent(JordanCell, I, H, output_size=2, **kw),
}
TORCH_CONFIGS = {"lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"}
BACKENDS = ["auto", "scan"]


def make(name, backend="auto", dtype=f64, **kw):
    torch.manual_seed(0)
    layer = CONFIGS[name](num_layers=2, backend=backend, dtype=dtype, **kw)
    if layer.learn_initial_state:
        with torch.no_grad():
            for n, p in layer.named_parameters():
                if n.startswith("initial_"):
                    p.normal_()
    return layer.eval()


def as_tuple(h):
    return h if isinstance(h, tuple) else (h,)


def close(a, b, tol):
    for u, v in zip(as_tuple(a), as_tuple(b), strict=True):
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)


def random_state(layer, batch, dtype):
    return tuple(torch.randn_like(s) for s in as_tuple(layer.init_state(batch, dtype=dtype)))


def pack(state):
    return state[0] if len(state) == 1 else state


def test_every_path_is_exercised():
    """The configurations cover the torch, kernel and scan paths a CPU has."""
    paths = {make(n, b).path for n in CONFIGS for b in BACKENDS}
    assert paths == {"torch", "kernel", "scan"}
    for n in TORCH_CONFIGS:
        assert make(n).path == "torch"
    assert make("lstm_peephole").path == "kernel" and make("mingru").path == "kernel"


@pytest.mark.parametrize("dtype,tol", [(f64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_whole_equals_chunks_equals_steps(name, backend, dtype, tol):
    layer = make(name, backend, dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, dtype=dtype, generator=g)
    h0 = pack(random_state(layer, B, dtype))
    whole, h_whole = layer(x, h0)

    cuts = sorted(torch.randperm(T - 1, generator=g)[:3].add(1).tolist())
    outs, h = [], h0
    for a, b in zip([0, *cuts], [*cuts, T]):
        out, h = layer(x[a:b], h)
        outs.append(out)
    close(torch.cat(outs), whole, tol)
    close(h, h_whole, tol)

    for grad in (False, True):  # the no-grad step runs the cached fused weights where it can
        ys, h = [], h0
        with torch.set_grad_enabled(grad):
            for t in range(T):
                y, h = layer.step(x[t], h)
                ys.append(y)
        close(torch.stack(ys), whole, tol)
        close(h, h_whole, tol)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_init_state_is_the_default_state(name):
    layer = make(name, learn_initial_state=True)
    x = torch.randn(T, B, I, dtype=f64)
    state = layer.init_state(B)
    for s, n in zip(as_tuple(state), layer._state_sizes()):
        assert s.shape == (2, B, n) and s.dtype == f64
    close(layer(x, state), layer(x), 0)
    ys, h = [], None
    for t in range(T):
        y, h = layer.step(x[t], h)
        ys.append(y)
    close(torch.stack(ys), layer(x)[0], 1e-10)
    # the learned state is differentiable through init_state
    sum(s.sum() for s in as_tuple(layer.init_state(2))).backward()
    assert layer.initial_h.grad is not None and layer.initial_h.grad.abs().sum() > 0
    assert as_tuple(layer.init_state(3, dtype=torch.float32))[0].dtype == torch.float32


def separately(layer, x, h0, restarts):
    """Reference: stream ``b`` run alone, restarting from the initial state at each step in
    ``restarts[b]`` (with ``forward`` on pieces and the state carried between them)."""
    outs, finals = [], []
    for b in range(x.shape[1]):
        h = tuple(s[:, b:b + 1] for s in h0)
        cuts = [0, *sorted(set(restarts[b]) - {0}), x.shape[0]]
        ys = []
        for a, e in zip(cuts, cuts[1:]):
            if a in restarts[b]:
                h = None
            y, h = layer(x[a:e, b:b + 1], None if h is None else pack(h))
            h = as_tuple(h)
            ys.append(y)
        outs.append(torch.cat(ys))
        finals.append(h)
    return torch.cat(outs, 1), tuple(torch.cat([f[i] for f in finals], 1) for i in range(len(h0)))


RESTARTS = [[0], [], [4], [2, 7]]  # stream 0 at the chunk's start, stream 1 never, ...


def reset_mask(restarts, steps=T):
    mask = torch.zeros(steps, len(restarts), dtype=torch.bool)
    for b, ts in enumerate(restarts):
        mask[ts, b] = True
    return mask


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resets_equal_streams_run_separately(name, backend):
    layer = make(name, backend, learn_initial_state=name in ("lstm", "gru_simplified", "jordan"))
    x = torch.randn(T, B, I, dtype=f64)
    h0 = random_state(layer, B, f64)
    want, want_h = separately(layer, x, h0, RESTARTS)
    mask = reset_mask(RESTARTS)

    # per-step mask on the whole chunk
    out, h = layer(x, pack(h0), reset=mask)
    close(out, want, 1e-10)
    close(h, want_h, 1e-10)
    # chunks cut at the restarts, a per-chunk reset (batch,) at each chunk's start
    outs, h = [], pack(h0)
    for a, e in zip([0, 2, 4, 7], [2, 4, 7, T]):
        out, h = layer(x[a:e], h, reset=mask[a])
        outs.append(out)
    close(torch.cat(outs), want, 1e-10)
    close(h, want_h, 1e-10)
    # step by step with reset=
    ys, h = [], pack(h0)
    for t in range(T):
        y, h = layer.step(x[t], h, reset=mask[t])
        ys.append(y)
    close(torch.stack(ys), want, 1e-10)
    close(h, want_h, 1e-10)


@settings(max_examples=examples(15), deadline=None)
@given(name=st.sampled_from(["lstm", "lstm_peephole", "gru", "gru_reset_before", "mingru", "rnn_tanh"]),
       backend=st.sampled_from(BACKENDS), batch_first=st.booleans(),
       restarts=st.lists(st.lists(st.integers(0, T - 1), max_size=3), min_size=1, max_size=3),
       lengths=st.none() | st.lists(st.integers(1, T), min_size=3, max_size=3))
def test_per_step_reset_with_lengths_and_layouts(name, backend, batch_first, restarts, lengths):
    """Random restarts, batch-first layout and padded batches (a restart in the padding
    changes nothing; a stream's final state is its state at its last real step)."""
    layer = make(name, backend, batch_first=batch_first)
    Bn = len(restarts)
    lengths = None if lengths is None else torch.tensor(lengths[:Bn])
    x = torch.randn(T, Bn, I, dtype=f64)
    h0 = random_state(layer, Bn, f64)
    mask = reset_mask(restarts)
    xin = x.transpose(0, 1) if batch_first else x
    out, h = layer(xin, pack(h0), lengths=lengths, reset=mask.t() if batch_first else mask)
    out = out.transpose(0, 1) if batch_first else out
    for b in range(Bn):
        n = T if lengths is None else int(lengths[b])
        kept = [t for t in restarts[b] if t < n]
        want, want_h = separately(_time_major(layer), x[:n, b:b + 1], tuple(s[:, b:b + 1] for s in h0), [kept])
        close(out[:n, b:b + 1], want, 1e-10)
        assert (out[n:, b] == 0).all()
        close(tuple(s[:, b:b + 1] for s in as_tuple(h)), want_h, 1e-10)


def _time_major(layer):
    """``layer`` itself when time-major, else a time-major copy with the same weights."""
    if not layer.batch_first:
        return layer
    import copy
    twin = copy.deepcopy(layer)
    twin.batch_first = False
    return twin


def test_unbatched_step_and_reset():
    layer = make("lstm_peephole")
    x = torch.randn(T, I, dtype=f64)
    out, h_n = layer(x)
    ys, h = [], layer.init_state(1)
    h = tuple(s[:, 0] for s in h)
    for t in range(T):
        y, h = layer.step(x[t], h)
        ys.append(y)
    close(torch.stack(ys), out, 1e-10)
    close(h, h_n, 1e-10)
    out_r, _ = layer(x, h_n, reset=torch.tensor(True))
    close(out_r, out, 1e-10)
    mask = torch.zeros(T, dtype=torch.bool)
    mask[5] = True
    close(layer(x, reset=mask)[0][5:], layer(x[5:])[0], 1e-10)


def test_step_gradients_match_forward():
    for name in ("lstm", "gru", "lstm_peephole", "mingru"):
        layer = make(name)
        x = torch.randn(T, B, I, dtype=f64)
        layer(x)[0].square().sum().backward()
        want = {n: p.grad.clone() for n, p in layer.named_parameters()}
        layer.zero_grad()
        ys, h = [], None
        for t in range(T):
            y, h = layer.step(x[t], h)
            ys.append(y)
        torch.stack(ys).square().sum().backward()
        for n, p in layer.named_parameters():
            torch.testing.assert_close(p.grad, want[n], rtol=1e-9, atol=1e-10, msg=f"{name}: {n}")


def test_cached_step_weights_follow_the_parameters():
    """The no-grad step's cached [W_ih | W_hh] is rebuilt after an in-place update
    (an optimiser step, load_state_dict) and after .to()."""
    layer = make("lstm")
    x = torch.randn(2, B, I, dtype=f64)
    with torch.no_grad():
        layer.step(x[0])
        layer.weight_hh_l1.add_(0.5)
        layer.bias_ih_l0.mul_(2)
        y, _ = layer.step(x[0])
    close(y, layer(x[:1])[0][0], 1e-10)
    layer.float()
    with torch.inference_mode():
        y, _ = layer.step(x[0].float())
    close(y, layer(x[:1].float())[0][0], 1e-5)
    y, _ = layer.step(x[0].float())  # the cache built under inference_mode serves outside it too
    close(y, layer(x[:1].float())[0][0], 1e-5)


def test_step_with_regularization_matches_a_one_step_forward():
    """Eval-mode zoneout (the expectation) runs through the layer's own loop; training
    masks are drawn per step, as a one-step forward draws them."""
    layer = make("lstm", zoneout={"h": 0.1, "c": 0.5}, input_dropout=0.2)
    x = torch.randn(T, B, I, dtype=f64)
    ys, h = [], None
    for t in range(T):
        y, h = layer.step(x[t], h)
        ys.append(y)
    close(torch.stack(ys), layer(x)[0], 1e-10)
    layer.train()
    torch.manual_seed(3)
    y, h = layer.step(x[0])
    torch.manual_seed(3)
    out, h_n = layer(x[:1])
    close((y, *as_tuple(h)), (out[0], *as_tuple(h_n)), 0)


def test_language_model_streams_from_init_state():
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=11, cell="gru", embedding_dim=6, hidden_size=8, num_layers=2)).eval()
    tokens = torch.randint(0, 11, (3, 7))
    logits, _ = model(tokens)
    state, steps = model.init_state(3), []
    for t in range(7):
        out, state = model.step(tokens[:, t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), logits)


# --- errors ------------------------------------------------------------------------------
def test_step_refuses_a_bidirectional_layer():
    layer = rnnkit.LSTM(I, H, bidirectional=True)
    with pytest.raises(ArgumentError, match=r"LSTM\.step: a bidirectional layer cannot run step by step"):
        layer.step(torch.randn(2, I))
    with pytest.raises(ArgumentError, match="per-step reset needs a unidirectional layer"):
        layer(torch.randn(T, 2, I), reset=torch.zeros(T, 2, dtype=torch.bool))
    layer(torch.randn(T, 2, I), reset=torch.zeros(2, dtype=torch.bool))  # per chunk is fine


def test_bad_state_errors_name_what_is_wrong():
    lstm, gru = rnnkit.LSTM(I, H, num_layers=2), rnnkit.GRU(I, H)
    x = torch.randn(B, I)
    with pytest.raises(ShapeError, match=r"state h has shape \(2, 3, 5\), expected \(num_layers, batch, size\) "
                                         r"= \(2, 4, 5\)"):
        lstm.step(x, lstm.init_state(3))
    with pytest.raises(ShapeError, match=r"state c has shape \(1, 4, 5\), expected .* = \(2, 4, 5\)"):
        lstm.step(x, (lstm.init_state(B)[0], gru.init_state(B)))
    with pytest.raises(ShapeError, match=r"LSTM\.step: state must be a tuple of 2 tensors \(h, c\).*got 1 tensors"):
        lstm.step(x, gru.init_state(B))
    with pytest.raises(ShapeError, match=r"GRU\.step: state must be one tensor \(h\).*got 2 tensors"):
        gru.step(x, lstm.init_state(B))
    with pytest.raises(DtypeError, match=r"state h has dtype torch.float64, expected .* torch.float32"):
        gru.step(x, gru.init_state(B, dtype=f64))
    with pytest.raises(DeviceError, match=r"state h is on meta but the parameters are on cpu"):
        gru.step(x, gru.init_state(B, device="meta"))
    with pytest.raises(ShapeError, match=r"x_t has shape \(4, 7\), expected \(batch, input_size\)"):
        gru.step(torch.randn(B, 7))
    with pytest.raises(DtypeError, match="x_t has dtype torch.float64"):
        gru.step(x.double())
    with pytest.raises(ArgumentError, match="batch_size must be an int >= 0"):
        gru.init_state(-1)
    with pytest.raises(ShapeError, match=r"h0 has shape \(1, 3, 5\)"):  # forward's own check, as before
        gru(torch.randn(T, B, I), gru.init_state(3))


def test_bad_reset_errors():
    gru = rnnkit.GRU(I, H, batch_first=True)
    x = torch.randn(B, T, I)
    with pytest.raises(DtypeError, match="reset must be a bool tensor"):
        gru(x, reset=torch.zeros(B))
    with pytest.raises(ShapeError, match=r"reset has shape \(9, 4\), expected \(4,\) .* \(batch, seq\) = \(4, 9\)"):
        gru(x, reset=torch.zeros(T, B, dtype=torch.bool))
    with pytest.raises(TypeError, match="reset must be a bool Tensor, got list"):
        gru(x, reset=[True] * B)
    with pytest.raises(ShapeError, match=r"GRU\.step: reset has shape"):
        gru.step(x[:, 0], reset=torch.zeros(3, dtype=torch.bool))
