"""Drop-in compatibility with torch.nn: each behaviour PyTorch's own recurrent-module
tests check (test/test_nn.py: args checks, no broadcasting in cells, zero-size batches
and hidden sizes, dropout state, weight norm, flat weights, pickling, _apply...), run
on rnnkit's classes and compared with torch.nn's in the same test: same outputs, same
exception types (and, where rnnkit promises it, torch's message inside its own).

Where rnnkit deliberately differs (README, "Deliberate differences from torch.nn"),
the test says so and checks rnnkit's side.
"""
import copy
import dataclasses
import io
import itertools
import pickle
import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit
from rnnkit.errors import RnnkitError
from rnnkit import kernels
from rnnkit.kernels import triton as triton_cells
from rnnkit.nn.scan import scan

LAYERS = {"RNN": (rnnkit.RNN, nn.RNN), "LSTM": (rnnkit.LSTM, nn.LSTM), "GRU": (rnnkit.GRU, nn.GRU)}
CELLS = {"RNNCell": (rnnkit.RNNCell, nn.RNNCell), "LSTMCell": (rnnkit.LSTMCell, nn.LSTMCell),
         "GRUCell": (rnnkit.GRUCell, nn.GRUCell)}
#: rnnkit layers whose cell torch.nn has no kernel for (the "kernel"/"scan" paths)
CUSTOM = {
    "lstm_peephole": lambda *a, **kw: rnnkit.LSTM(*a, peephole=True, **kw),
    "lstm_layer_norm": lambda *a, **kw: rnnkit.LSTM(*a, layer_norm=True, **kw),
    "gru_reset_before": lambda *a, **kw: rnnkit.GRU(*a, variant="reset_before", **kw),
    "gru_simplified": lambda *a, **kw: rnnkit.GRU(*a, variant="simplified", **kw),
}


def pair(kind, *args, **kwargs):
    """(rnnkit, torch.nn) modules of one kind with the same weights."""
    ours_cls, torch_cls = {**LAYERS, **CELLS}[kind]
    torch.manual_seed(0)
    ref = torch_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def flat(out):
    """Every tensor in a (nested) output, PackedSequence fields included."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, PackedSequence):
        return [t for t in out if t is not None]
    return [t for o in out for t in flat(o)]


def assert_same(a, b, **tol):
    fa, fb = flat(a), flat(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        torch.testing.assert_close(x, y, **(tol or {"atol": 1e-6, "rtol": 1e-6}))


def same_error(run_ours, run_torch):
    """Both raise; rnnkit's exception is an instance of torch's type (and an RnnkitError)."""
    with pytest.raises(Exception) as theirs:
        run_torch()
    with pytest.raises(type(theirs.value)) as ours:
        run_ours()
    assert isinstance(ours.value, RnnkitError), repr(ours.value)
    return ours.value, theirs.value


# --- constructor arguments -------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("arg,value", [("bias", "False"), ("bias", 0), ("bias", 1), ("batch_first", "False"),
                                       ("batch_first", 1), ("input_size", 3.0), ("hidden_size", "5")])
def test_layer_argument_types_as_torch(kind, arg, value):
    """torch.nn.RNNBase's type checks: a string ``bias``/``batch_first`` used to be taken
    (``batch_first='False'`` ran batch-first, ``bias='False'`` kept the biases)."""
    kwargs = {"input_size": 3, "hidden_size": 5, arg: value}
    ours, theirs = same_error(lambda: LAYERS[kind][0](**kwargs), lambda: LAYERS[kind][1](**kwargs))
    assert str(theirs) in str(ours) and str(ours).startswith(f"{kind}: ")


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("args,kwargs", [((3, 0), {}), ((0, 5), {}), ((3, 5, 0), {}), ((3, -1), {}),
                                         ((3, 5), {"dropout": 1.5}), ((3, 5), {"dropout": True})])
def test_layer_argument_values_as_torch(kind, args, kwargs):
    ours, theirs = same_error(lambda: LAYERS[kind][0](*args, **kwargs), lambda: LAYERS[kind][1](*args, **kwargs))
    assert type(theirs) is ValueError and str(ours).startswith(f"{kind}: ")


@pytest.mark.parametrize("factory,arg", [
    (lambda v: rnnkit.LSTM(3, 5, bidirectional=v), "bidirectional"),
    (lambda v: rnnkit.LSTM(3, 5, peephole=v), "peephole"),
    (lambda v: rnnkit.LSTM(3, 5, layer_norm=v), "layer_norm"),
    (lambda v: rnnkit.GRU(3, 5, learn_initial_state=v), "learn_initial_state"),
    (lambda v: rnnkit.LSTMCell(3, 5, bias=v), "bias"),
    (lambda v: rnnkit.LSTMCell(3, 5, peephole=v), "peephole"),
    (lambda v: rnnkit.GRUCell(3, 5, bias=v), "bias"),
    (lambda v: rnnkit.RNNCell(3, 5, bias=v), "bias"),
])
@pytest.mark.parametrize("value", ["yes", "False", 0, 1, None])
def test_boolean_options_checked_like_bias(factory, arg, value):
    """Deliberate difference: torch.nn checks only a layer's ``bias``/``batch_first``; rnnkit
    checks every boolean option the same way (torch.nn.LSTM(bidirectional='no') is
    bidirectional, torch.nn.LSTMCell(bias='False') keeps its biases)."""
    with pytest.raises(TypeError, match=rf"{arg} should be of type bool, got: {type(value).__name__}"):
        factory(value)


@pytest.mark.parametrize("make,public", [
    (lambda: rnnkit.RNN(3, 5, nonlinearity="sigmoid"), "RNN"),
    (lambda: rnnkit.RNN(3, 0), "RNN"),
    (lambda: rnnkit.RNN(3, 5, forget_bias=1.0), "RNN"),
    (lambda: rnnkit.RNN(3, 5, peephole=True), "RNN"),
    (lambda: rnnkit.LSTM(3, 5, proj_size=5), "LSTM"),
    (lambda: rnnkit.LSTM(3, 5, proj_size=-1), "LSTM"),
    (lambda: rnnkit.GRU(3, 5, variant="minimal"), "GRU"),
    (lambda: rnnkit.GRU(3, 5, proj_size=2), "GRU"),
    (lambda: rnnkit.Recurrent(rnnkit.JordanCell, 3, 5, output_activation="softmax"), "Recurrent"),
])
def test_messages_name_the_public_class(make, public):
    with pytest.raises((ValueError, TypeError)) as e:
        make()
    assert str(e.value).startswith(public), str(e.value)
    assert not re.search(r"ElmanCell|LSTMCell|GRUCell|JordanCell|RNNBase", str(e.value)), str(e.value)


def test_nonlinearity_as_torch():
    assert rnnkit.RNN(1, 10).nonlinearity == "tanh"
    rnn = rnnkit.RNN(2, 3, 1, "relu")  # positional, as torch.nn.RNN
    assert rnn.nonlinearity == "relu" and rnn.mode == "RNN_RELU"
    same_error(lambda: rnnkit.RNN(1, 10, nonlinearity="garbage"), lambda: nn.RNN(1, 10, nonlinearity="garbage"))


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_backend_torch_with_custom_cell_fails_at_construction(name):
    with pytest.raises(ValueError, match=r"backend='torch' needs a torch.nn configuration"):
        CUSTOM[name](3, 5, backend="torch")
    assert CUSTOM[name](3, 5).path == "kernel"  # CPU: the fused CPU kernel, as before


def test_backend_triton_needs_a_cell_with_a_triton_kernel():
    for make in (lambda: rnnkit.LSTM(3, 5, backend="triton"), lambda: rnnkit.GRU(3, 5, backend="triton"),
                 lambda: rnnkit.LSTM(3, 5, peephole=True, proj_size=2, backend="triton")):
        with pytest.raises(ValueError, match=r"backend='triton' needs a cell with a Triton kernel"):
            make()
    # on CPU (no Triton kernel applies) backend="triton" runs what "auto" runs
    assert rnnkit.LSTM(3, 5, peephole=True, backend="triton").path == "kernel"


# --- the Triton kernels: only on request -------------------------------------------------

@pytest.fixture
def fake_triton_device(monkeypatch):
    """CPU tensors look like CUDA tensors to the Triton matcher, with triton "installed";
    the kernels are replaced by spies that run the reference scan. No GPU needed."""
    calls = []

    def spy(cell, p, x, state, mask=None, reverse=False):
        calls.append(type(cell).__name__)
        return scan(cell, p, x, state, mask, reverse)

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("RNNKIT_TRITON", raising=False)
    monkeypatch.setattr(triton_cells, "device_ok", lambda x: True)
    monkeypatch.setattr(triton_cells, "triton_available", lambda: True)
    originals = (triton_cells.LSTM_KERNEL, triton_cells.GRU_KERNEL)
    for kernel in originals:
        kernels.register(dataclasses.replace(kernel, run=spy))
    yield calls
    for kernel in originals:
        kernels.register(kernel)


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_triton_kernels_only_on_request(name, fake_triton_device, monkeypatch):
    """Where the Triton kernels would match (CUDA + triton), a default layer runs the
    reference scan; ``backend="triton"`` or ``RNNKIT_TRITON=1`` selects the kernels."""
    x = torch.randn(4, 2, 3)
    torch.manual_seed(0)
    default = CUSTOM[name](3, 5)
    assert default.path == "scan"
    out_default, _ = default(x)
    assert fake_triton_device == []

    requested = CUSTOM[name](3, 5, backend="triton")
    requested.load_state_dict(default.state_dict())
    assert requested.path == "kernel"
    out_requested, _ = requested(x)
    assert fake_triton_device == [type(default.cells[0]).__name__]
    torch.testing.assert_close(out_requested, out_default)

    monkeypatch.setenv("RNNKIT_TRITON", "1")
    assert default.path == "kernel"
    default(x)
    assert len(fake_triton_device) == 2
    monkeypatch.setenv("RNNKIT_TRITON", "0")
    assert default.path == "scan"


# --- cells -------------------------------------------------------------------------------

def _cell_state(kind, h, c=None):
    return (h, h if c is None else c) if kind == "LSTMCell" else h


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_no_broadcasting(kind):
    """test_nn.py's test_RNN_cell_no_broadcasting: a batch-1 or width-1 state (h0 or c0)
    and a wrong input width are RuntimeErrors, never broadcast; same message as torch."""
    ours, ref = pair(kind, 10, 20)
    x, good, bad_batch, bad_width = torch.randn(3, 10), torch.randn(3, 20), torch.randn(1, 20), torch.randn(3, 1)
    cases = [(x, bad_batch, None), (x, bad_width, None), (torch.randn(3, 1), good, None)]
    if kind == "LSTMCell":
        cases += [(x, good, bad_batch), (x, good, bad_width)]
    for inp, h, c in cases:
        state = _cell_state(kind, h, c)
        e_ours, e_theirs = same_error(lambda: ours(inp, state), lambda: ref(inp, state))
        assert type(e_theirs) is RuntimeError and str(e_theirs) in str(e_ours)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_rank_errors(kind):
    """A 4-D hidden used to come back as a 4-D result; a 3-D input is refused too."""
    ours, ref = pair(kind, 10, 20)
    x = torch.randn(3, 10)
    for inp, state in ((x, _cell_state(kind, torch.randn(3, 1, 1, 20))), (torch.randn(2, 3, 10), None)):
        e_ours, e_theirs = same_error(lambda: ours(inp, state), lambda: ref(inp, state))
        assert type(e_theirs) is ValueError
        assert str(e_theirs).split(": ", 1)[1] in str(e_ours)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_unbatched_and_defaults_match_torch(kind):
    ours, ref = pair(kind, 4, 6)
    x, h, c = torch.randn(4), torch.randn(6), torch.randn(6)
    for args in ((x,), (x, _cell_state(kind, h, c)), (x.expand(3, 4), _cell_state(kind, h.expand(3, 6), c.expand(3, 6)))):
        assert_same(ours(*args), ref(*args))
    assert_same(ours(input=x, hx=None), ref(input=x, hx=None))  # torch's argument names


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_zero_hidden_size_and_zero_batch(kind):
    """test_RNN_cell_forward_zero_hidden_size; and an empty batch, forward and backward."""
    ours, ref = pair(kind, 10, 0)
    x, hx = torch.randn(3, 10), torch.randn(3, 0)
    assert_same(ours(x, _cell_state(kind, hx)), ref(x, _cell_state(kind, hx)))
    ours, ref = pair(kind, 10, 4)
    outs = []
    for m in (ours, ref):
        x = torch.randn(0, 10, requires_grad=True)
        out = m(x)
        sum(t.sum() for t in flat(out)).backward()
        outs.append((out, x.grad, *[p.grad for p in m.parameters()]))
    assert_same(*outs)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_dtype_and_device_errors(kind):
    ours, ref = pair(kind, 4, 6)
    same_error(lambda: ours(torch.randn(3, 4, dtype=torch.float64)), lambda: ref(torch.randn(3, 4, dtype=torch.float64)))
    same_error(lambda: ours(torch.ones(3, 4, dtype=torch.long)), lambda: ref(torch.ones(3, 4, dtype=torch.long)))
    bad = _cell_state(kind, torch.randn(3, 6, dtype=torch.float64))
    same_error(lambda: ours(torch.randn(3, 4), bad), lambda: ref(torch.randn(3, 4), bad))
    with pytest.raises(RuntimeError, match="input is on meta but the parameters are on cpu"):
        ours(torch.randn(3, 4, device="meta"))


# --- layers: inputs ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_rnn_args_check(kind):
    """test_nn.py's test_rnn_args_check: every wrong input or hidden size is a RuntimeError."""
    I, H, L, B, T, bad = 3, 5, 2, 4, 6, 7
    ours, ref = pair(kind, I, H, L)
    good_in, good_h = (T, B, I), (L, B, H)
    cases = [((T, bad, I), good_h), (good_in, (L, bad, H)), ((T, B, bad), good_h), (good_in, (L, B, bad)),
             (good_in, (bad, B, H))]
    for in_shape, h_shape in cases:
        x, h = torch.randn(in_shape), torch.randn(h_shape)
        states = [h] if kind != "LSTM" else ([(h, h)] if h_shape == good_h else
                                             [(h, torch.randn(good_h)), (torch.randn(good_h), h)])
        for hx in states:
            e_ours, e_theirs = same_error(lambda: ours(x, hx), lambda: ref(x, hx))
            assert type(e_theirs) is RuntimeError


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_input_errors_as_torch(kind):
    ours, ref = pair(kind, 3, 5)
    hx = (torch.randn(1, 2, 5),) * 2 if kind == "LSTM" else torch.randn(1, 2, 5)
    for args in ((torch.randn(4, 2, 3, 1),), (torch.randn(4, 2, 3, dtype=torch.float64),),
                 (torch.ones(4, 2, 3, dtype=torch.long),), (torch.randn(0, 2, 3),), (torch.randn(0, 3),),
                 (torch.randn(4, 2, 3), tuple(h[0] for h in hx) if kind == "LSTM" else hx[0]),
                 (torch.randn(4, 3), hx)):
        same_error(lambda: ours(*args), lambda: ref(*args))
    e, _ = same_error(lambda: ours(torch.randn(4, 2, 3, dtype=torch.float64)),
                      lambda: ref(torch.randn(4, 2, 3, dtype=torch.float64)))
    assert re.search(r"RNN input dtype .* does not match weight dtype .* Convert input: input\.to\(.*\), "
                     r"or convert model: model\.to\(.*\)", str(e))
    same_error(lambda: ours(torch.randn(4, 2, 3, device="meta")), lambda: ref(torch.randn(4, 2, 3, device="meta")))


def test_zero_length_sequences_refused():
    ours, ref = pair("LSTM", 3, 5)
    lengths = torch.tensor([3, 0, 2])
    same_error(lambda: ours(torch.randn(4, 3, 3), lengths=lengths),
               lambda: ref(pack_padded_sequence(torch.randn(4, 3, 3), lengths, enforce_sorted=False)))


@pytest.mark.parametrize("kind", sorted(LAYERS) + sorted(CUSTOM))
@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_zero_batch(kind, batch_first):
    """test_RNN_input_size_zero: an empty batch gives empty outputs and states (torch.nn's
    shapes), and backward runs; rnnkit used to raise. Custom cells: against the scan."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=batch_first)
    if kind in LAYERS:
        modules = pair(kind, 3, 5, **kw)
    else:
        modules = (CUSTOM[kind](3, 5, **kw), CUSTOM[kind](3, 5, backend="scan", **kw))
    results = []
    for m in modules:
        x = torch.zeros((0, 4, 3) if batch_first else (4, 0, 3), requires_grad=True)
        out, h = m(x, **({"lengths": torch.zeros(0, dtype=torch.long)} if isinstance(m, rnnkit.Recurrent) else {}))
        (out.sum() + sum(t.sum() for t in flat(h))).backward()
        results.append((out, h, x.grad, *[p.grad for p in m.parameters()]))
    assert_same(*results)
    assert results[0][0].shape == ((0, 4, 10) if batch_first else (4, 0, 10))


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("backend", ["auto", "scan"])
def test_packed_unsorted_with_hx(kind, backend):
    """enforce_sorted=False with an explicit hx: hx and h_n are in the caller's batch order
    (torch.nn permutes them around the sorted kernel)."""
    ours, ref = pair(kind, 3, 5, 2, bidirectional=True)
    ours.backend = backend
    x, lengths = torch.randn(6, 4, 3), torch.tensor([2, 6, 1, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    h = torch.randn(4, 4, 5)
    hx = (h, torch.randn(4, 4, 5)) if kind == "LSTM" else h
    out_ours, out_ref = ours(packed, hx), ref(packed, hx)
    assert torch.equal(out_ours[0].sorted_indices, out_ref[0].sorted_indices)
    assert_same(out_ours, out_ref, atol=1e-5, rtol=1e-5)


def test_proj_size_matches_torch():
    ours, ref = pair("LSTM", 3, 6, 2, proj_size=2, bidirectional=True, batch_first=True)
    h = (torch.randn(4, 5, 2), torch.randn(4, 5, 6))
    for args in ((torch.randn(5, 7, 3),), (torch.randn(5, 7, 3), h), (torch.randn(7, 3), tuple(t[:, 0] for t in h))):
        assert_same(ours(*args), ref(*args), atol=1e-5, rtol=1e-5)
    assert ours.proj_size == ref.proj_size == 2
    assert rnnkit.GRU(3, 5).proj_size == nn.GRU(3, 5).proj_size == 0


# --- layers: dropout ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_dropout_same_masks_as_torch(kind):
    """torch.nn configurations run torch's own kernel: same RNG use, so the same dropout
    masks under the same seed; nothing in eval, nothing with p=0."""
    ours, ref = pair(kind, 4, 8, 3, dropout=0.5)
    x = torch.randn(5, 2, 4)
    for train in (True, False):
        ours.train(train), ref.train(train)
        torch.manual_seed(7)
        a = ours(x)
        torch.manual_seed(7)
        b = ref(x)
        assert_same(a, b)


@pytest.mark.parametrize("make", [lambda: rnnkit.RNN(10, 10, 2, dropout=0, nonlinearity="relu"),
                                  lambda: rnnkit.GRU(10, 10, 2, variant="reset_before", backend="scan")],
                         ids=["torch_path", "scan_path"])
def test_change_dropout(make):
    """test_RNN_change_dropout: the dropout attribute is read at each call."""
    for train in (True, False):
        rnn = make().train(train)
        x, prev = torch.rand(3, 2, 10), None
        for p in (0, 0.5, 0, 0.7, 0.2, 1, 0.2, 0):
            rnn.dropout = p
            out1, h1 = rnn(x)
            out2, h2 = rnn(x)
            if p in (0, 1) or not train:
                assert torch.equal(out1, out2) and torch.equal(h1, h2)
            else:
                assert not torch.equal(out1, out2) and not torch.equal(h1, h2)
            if prev is not None:
                assert torch.equal(out1, prev) == (not train)
            prev = out1


@pytest.mark.parametrize("p,train", list(itertools.product([0.0, 0.25], [True, False])))
def test_dropout_state_survives_pickle(p, train):
    """test_RNN_dropout_state: pickle, unpickle, flatten_parameters, same results."""
    rnn = rnnkit.RNN(10, 10, 2, bias=False, dropout=p, nonlinearity="relu").train(train)
    x, hx = torch.rand(3, 2, 10), torch.randn(2, 2, 10)
    out1, _ = rnn(x, hx)
    out2, _ = rnn(x, hx)
    rnn2 = pickle.loads(pickle.dumps(rnn))
    rnn2.flatten_parameters()
    out3, _ = rnn2(x, hx)
    if p == 0 or not train:
        assert torch.equal(out1, out2) and torch.equal(out1, out3)
    else:
        assert not torch.equal(out1, out2) and not torch.equal(out1, out3)


# --- layers: weights -----------------------------------------------------------------------

@pytest.mark.parametrize("kind,kw", [("RNN", {}), ("GRU", {"bias": False}), ("LSTM", {}), ("LSTM", {"proj_size": 2})])
def test_flat_weights_and_all_weights_as_torch(kind, kw):
    ours, ref = pair(kind, 3, 5, 2, bidirectional=True, **kw)
    assert ours._flat_weights_names == ref._flat_weights_names
    assert ours._all_weights == ref._all_weights
    assert_same(ours._flat_weights, ref._flat_weights)
    assert_same(ours.all_weights, ref.all_weights)
    params = dict(ours.named_parameters())
    assert all(w is params[n] for w, n in zip(ours._flat_weights, ours._flat_weights_names))
    # copying weights through them (code written for torch.nn does)
    fresh = LAYERS[kind][0](3, 5, 2, bidirectional=True, **kw)
    with torch.no_grad():
        for dst, src in zip(fresh.all_weights, ref.all_weights):
            for a, b in zip(dst, src):
                a.copy_(b)
    x = torch.randn(4, 2, 3)
    assert_same(fresh(x), ref(x), atol=1e-6, rtol=1e-6)
    # the custom cells' extras follow torch's names, after them
    assert rnnkit.LSTM(3, 5, peephole=True)._flat_weights_names == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ci_l0", "weight_cf_l0", "weight_co_l0"]


@pytest.mark.parametrize("kind,kw", [("RNN", {}), ("LSTM", {"proj_size": 2}), ("GRU", {"bidirectional": True})])
def test_flatten_parameters_runs_torchs_code_with_torchs_arguments(kind, kw, monkeypatch):
    """flatten_parameters exists (a no-op on CPU, as torch.nn's) and, for a torch.nn
    configuration, hands torch.nn's own implementation what torch.nn.LSTM hands it, so on
    CUDA the weights are laid out for cuDNN exactly as torch.nn's."""
    seen = []
    real = nn.RNNBase.flatten_parameters

    def record(self):
        seen.append({k: getattr(self, k) for k in ("mode", "bias", "proj_size", "input_size", "hidden_size",
                                                    "num_layers", "batch_first", "bidirectional",
                                                    "_flat_weights_names")}
                    | {"shapes": [tuple(w.shape) for w in self._flat_weights]})
        real(self)

    ours, ref = pair(kind, 3, 5, 2, **kw)
    monkeypatch.setattr(nn.RNNBase, "flatten_parameters", record)
    ours.flatten_parameters()
    ref.flatten_parameters()
    assert len(seen) == 2 and seen[0] == seen[1]
    seen.clear()
    rnnkit.LSTM(3, 5, peephole=True).flatten_parameters()  # custom cell: nothing for cuDNN
    assert seen == []


@pytest.mark.parametrize("name,num_params,kw", [("weight_ih_l0", 4, {}), ("weight_hh_l0", 4, {}),
                                                ("weight_hr_l0", 5, {"proj_size": 3})])
def test_weight_norm(name, num_params, kw):
    """test_rnn_weight_norm, plus the same outputs and gradients as torch.nn with the same
    weights, with both weight-norm APIs."""
    for api in ("old", "parametrizations"):
        ours, ref = pair("LSTM", 8, 8, **kw)
        x = torch.randn(5, 2, 8)
        results = []
        for m in (ours, ref):
            if api == "old":
                with pytest.warns(FutureWarning):
                    nn.utils.weight_norm(m, name=name)
                assert sum(isinstance(p, nn.Parameter) for p in m._flat_weights) == num_params - 1
            else:
                nn.utils.parametrizations.weight_norm(m, name=name)
            out, (h, c) = m(x)
            (out.sum() + c.sum()).backward()
            results.append((out, h, c, *[p.grad for _, p in sorted(m.named_parameters())]))
            if api == "old":
                nn.utils.remove_weight_norm(m, name=name)
                assert sum(isinstance(p, nn.Parameter) for p in m._flat_weights) == num_params
                assert name in m._parameters and m._parameters[name] is not None
                assert name + "_g" not in dict(m.named_parameters())
        assert_same(*results, atol=1e-5, rtol=1e-5)


def test_weight_norm_on_a_custom_cell_layer():
    m = rnnkit.LSTM(4, 6, peephole=True)
    nn.utils.parametrizations.weight_norm(m, name="weight_hh_l0")
    out, _ = m(torch.randn(3, 2, 4))
    out.sum().backward()
    assert m.parametrizations.weight_hh_l0.original1.grad is not None
    assert not isinstance(m._flat_weights[1], nn.Parameter)


# --- layers: copies, moves, state_dict -------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: rnnkit.LSTM(3, 5, 2, dropout=0.2, proj_size=2),
                                  lambda: rnnkit.GRU(3, 5, variant="simplified", learn_initial_state=True),
                                  lambda: rnnkit.LSTM(3, 5, layer_norm=True, bidirectional=True)])
def test_pickle_deepcopy_and_torch_save(make):
    m = make().eval()
    x = torch.randn(4, 2, 3)
    want = m(x)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    for copied in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), torch.load(buf, weights_only=False)):
        assert_same(copied(x), want, atol=0, rtol=0)
        params = dict(copied.named_parameters())
        assert all(w is params[n] for w, n in zip(copied._flat_weights, copied._flat_weights_names))


@pytest.mark.parametrize("kind,kw", [("RNN", {"nonlinearity": "relu"}), ("LSTM", {"proj_size": 2}), ("GRU", {})])
def test_state_dict_round_trips_both_ways(kind, kw):
    torch.manual_seed(0)
    ours_cls, torch_cls = LAYERS[kind]
    ref, ours = torch_cls(3, 5, 2, bidirectional=True, **kw), ours_cls(3, 5, 2, bidirectional=True, **kw)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    back = torch_cls(3, 5, 2, bidirectional=True, **kw)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 3)
    assert_same(ours(x), ref(x), atol=1e-6, rtol=1e-6)
    assert_same(back(x), ref(x), atol=0, rtol=0)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_dtype_and_device_moves(kind):
    ours, ref = pair(kind, 3, 5, 2)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    for move in (lambda m: m.double(), lambda m: m.to(torch.float64), lambda m: m.to("cpu", torch.float64),
                 lambda m: m._apply(lambda t: t.double())):
        a, b = move(copy.deepcopy(ours)), move(copy.deepcopy(ref))
        assert all(w.dtype == torch.float64 for w in a._flat_weights)
        params = dict(a.named_parameters())
        assert all(w is params[n] for w, n in zip(a._flat_weights, a._flat_weights_names))
        assert_same(a(x), b(x), atol=1e-12, rtol=1e-12)
    same_error(lambda: ours.double()(torch.randn(4, 2, 3)), lambda: ref.double()(torch.randn(4, 2, 3)))
