"""Recurrent regularisation: each method against a hand-written float64 loop with the
same masks, evaluation behaviour, the PyTorch-kernel path against the reference scan,
exact resume through the loop, and the bad inputs."""
import pytest
import torch

import rnnkit
from rnnkit.errors import ArgumentError, ArgumentTypeError, ConfigError
from rnnkit.models.language_model import LanguageModel, LMConfig
from rnnkit.nn.regularization import LockedDropout, activation_penalty, drop_weight, embedding_dropout, step_masks
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop

ALL_ZERO = dict(input_dropout=0.0, hidden_dropout=0.0, output_dropout=0.0, recurrent_dropout=0.0,
                zoneout=0.0, weight_drop=0.0)
LAYERS = [(rnnkit.LSTM, {}), (rnnkit.LSTM, {"peephole": True}), (rnnkit.GRU, {}),
          (rnnkit.GRU, {"variant": "reset_before"}), (rnnkit.RNN, {})]


def _copy(layer_cls, kwargs, source, **extra):
    layer = layer_cls(5, 6, num_layers=2, **kwargs, **extra)
    layer.load_state_dict(source.state_dict())
    return layer


@pytest.mark.parametrize("layer_cls,kwargs", LAYERS)
def test_all_rates_zero_is_the_layer_as_before(layer_cls, kwargs):
    torch.manual_seed(0)
    plain = layer_cls(5, 6, num_layers=2, dropout=0.3, **kwargs)
    zero = _copy(layer_cls, kwargs, plain, dropout=0.3, **ALL_ZERO)
    assert repr(zero) == repr(plain) and zero.path == plain.path and not zero.regularization.active
    x = torch.randn(7, 3, 5)
    outs = []
    for layer in (plain, zero):
        torch.manual_seed(1)  # same dropout draws between layers
        y, _ = layer(x)
        y.square().sum().backward()
        outs.append((y, [p.grad for p in layer.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("layer_cls,kwargs", LAYERS)
def test_dropout_family_is_the_identity_in_evaluation(layer_cls, kwargs):
    torch.manual_seed(0)
    plain = layer_cls(5, 6, num_layers=2, **kwargs).eval()
    reg = _copy(layer_cls, kwargs, plain, input_dropout=0.3, hidden_dropout=0.4, output_dropout=0.5,
                recurrent_dropout=0.5, weight_drop=0.5).eval()
    x = torch.randn(7, 3, 5)
    torch.testing.assert_close(reg(x)[0], plain(x)[0], rtol=0, atol=0)


def _lstm_reference(x, h, c, w_ih, w_hh, b, drop_h, zone_h, zone_c, z_eval=None):
    """torch.nn.LSTM's equations step by step (float64), with recurrent dropout and zoneout."""
    ys = []
    for t in range(x.shape[0]):
        a = x[t] @ w_ih.T + (h if drop_h is None else h * drop_h) @ w_hh.T + b
        i, f, g, o = a.chunk(4, -1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if z_eval is not None:
            c_new, h_new = z_eval[1] * c + (1 - z_eval[1]) * c_new, z_eval[0] * h + (1 - z_eval[0]) * h_new
        else:
            c_new = torch.where(zone_c[t], c, c_new) if zone_c is not None else c_new
            h_new = torch.where(zone_h[t], h, h_new) if zone_h is not None else h_new
        h, c = h_new, c_new
        ys.append(h)
    return torch.stack(ys), h, c


def test_recurrent_dropout_and_zoneout_follow_their_definitions():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(5, 6, recurrent_dropout=0.4, zoneout={"h": 0.2, "c": 0.5}, dtype=torch.float64)
    x, h0, c0 = torch.randn(9, 3, 5, dtype=torch.float64), torch.randn(1, 3, 6, dtype=torch.float64), \
        torch.randn(1, 3, 6, dtype=torch.float64)
    torch.manual_seed(7)
    y, (h_n, c_n) = layer(x, (h0, c0))
    torch.manual_seed(7)  # the layer's draws, in its order
    masks = step_masks(layer.regularization, layer.cells[0], x, True)
    assert masks.drop_h.shape == (3, 6) and set(masks.drop_h.unique().tolist()) <= {0.0, 1 / 0.6}
    p = layer._params(0, 0)
    want, h, c = _lstm_reference(x, h0[0], c0[0], p.weight_ih, p.weight_hh, p.bias_ih + p.bias_hh,
                                 masks.drop_h, *masks.zone)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(h_n[0], h)
    torch.testing.assert_close(c_n[0], c)


def test_zoneout_in_evaluation_is_the_expectation():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(5, 6, zoneout={"h": 0.1, "c": 0.6}, dtype=torch.float64).eval()
    x = torch.randn(9, 3, 5, dtype=torch.float64)
    zeros = torch.zeros(3, 6, dtype=torch.float64)
    p = layer._params(0, 0)
    want, *_ = _lstm_reference(x, zeros, zeros, p.weight_ih, p.weight_hh, p.bias_ih + p.bias_hh,
                               None, None, None, z_eval=(0.1, 0.6))
    torch.testing.assert_close(layer(x)[0], want)


def test_gru_recurrent_dropout_masks_only_the_products_with_w_hh():
    torch.manual_seed(0)
    layer = rnnkit.GRU(4, 5, recurrent_dropout=0.5, dtype=torch.float64)
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    torch.manual_seed(3)
    y, _ = layer(x)
    torch.manual_seed(3)
    m = step_masks(layer.regularization, layer.cells[0], x, True).drop_h
    p, h, ys = layer._params(0, 0), torch.zeros(2, 5, dtype=torch.float64), []
    for t in range(6):
        xr, xz, xn = (x[t] @ p.weight_ih.T + p.bias_ih).chunk(3, -1)
        hr, hz, hn = ((h * m) @ p.weight_hh.T + p.bias_hh).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        h = (1 - z) * torch.tanh(xn + r * hn) + z * h  # the carried h itself is not dropped
        ys.append(h)
    torch.testing.assert_close(y, torch.stack(ys))


def test_weight_drop_runs_pytorchs_kernel_on_the_dropped_matrix():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(5, 6, num_layers=2, weight_drop=0.5)
    assert layer.path == "torch"
    x = torch.randn(7, 3, 5)
    torch.manual_seed(11)
    y, _ = layer(x)
    ref = torch.nn.LSTM(5, 6, num_layers=2)  # built before the seed: its init draws too
    ref.load_state_dict(layer.state_dict())
    torch.manual_seed(11)
    dropped = {f"weight_hh_l{k}": drop_weight(getattr(layer, f"weight_hh_l{k}"), 0.5, True) for k in range(2)}
    want, _ = torch.func.functional_call(ref, dropped, (x,))
    torch.testing.assert_close(y, want)
    y.sum().backward()
    assert layer.weight_hh_l0.grad is not None and (layer.weight_hh_l0.grad == 0).any()


def test_pytorch_path_layer_by_layer_equals_the_reference_scan():
    """Variational dropout between layers splits PyTorch's stacked call into one per layer;
    the reference scan with the same draws must agree, forward and backward."""
    torch.manual_seed(0)
    kw = dict(num_layers=3, bidirectional=True, input_dropout=0.2, hidden_dropout=0.3, output_dropout=0.25,
              weight_drop=0.3, batch_first=True)
    fast = rnnkit.LSTM(5, 6, **kw)
    slow = rnnkit.LSTM(5, 6, backend="scan", **kw)
    slow.load_state_dict(fast.state_dict())
    assert fast.path == "torch" and slow.path == "scan"
    x = torch.randn(3, 8, 5)
    lengths = torch.tensor([8, 5, 2])
    results = []
    for layer in (fast, slow):
        torch.manual_seed(5)
        y, (h, c) = layer(x, lengths=lengths)
        (y.square().sum() + h.sum() + c.sum()).backward()
        results.append((y, h, c, [p.grad.clone() for p in layer.parameters()]))
    for a, b in zip(results[0][:3], results[1][:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][3], results[1][3]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_locked_dropout_keeps_one_mask_over_time():
    torch.manual_seed(0)
    layer = rnnkit.GRU(4, 16, output_dropout=0.5, batch_first=True)
    y, _ = layer(torch.randn(2, 9, 4))
    dropped = y == 0
    assert dropped.any() and torch.equal(dropped, dropped[:, :1].expand_as(dropped))
    locked = LockedDropout(0.5)
    z = locked(torch.ones(3, 7, 10))
    assert torch.equal(z, z[:, :1].expand_as(z)) and set(z.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(locked.eval()(torch.ones(3, 7, 10)), torch.ones(3, 7, 10))


def test_zoneout_with_padding_ends_at_each_sequences_last_real_step():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(4, 5, zoneout=0.3, batch_first=True).eval()
    x = torch.randn(2, 6, 4)
    _, (h, c) = layer(x, lengths=torch.tensor([6, 3]))
    _, (h_short, c_short) = layer(x[1:, :3])
    torch.testing.assert_close(h[:, 1], h_short[:, 0])
    torch.testing.assert_close(c[:, 1], c_short[:, 0])


def test_embedding_dropout_drops_whole_word_types():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)
    tokens = torch.randint(50, (4, 30))
    out = embedding_dropout(emb, tokens, 0.5, True)
    zero_rows = (out == 0).all(-1)
    for word in tokens.unique():  # every occurrence of a word shares its fate
        fate = zero_rows[tokens == word]
        assert fate.all() or not fate.any()
    kept = ~zero_rows
    torch.testing.assert_close(out[kept], 2 * emb(tokens)[kept])
    torch.testing.assert_close(embedding_dropout(emb, tokens, 0.5, False), emb(tokens))


def test_activation_penalties_follow_merity_et_al():
    h = torch.randn(2, 5, 3)
    d = torch.randn(2, 5, 3)
    want = 2.0 * d.pow(2).mean() + 3.0 * (h[:, 1:] - h[:, :-1]).pow(2).mean()
    torch.testing.assert_close(activation_penalty(h, d, 2.0, 3.0), want)
    model = LanguageModel(LMConfig(vocab_size=20, hidden_size=8, embedding_dim=8, num_layers=2, ar=1.0, tar=1.0,
                                   output_dropout=0.2, weight_drop=0.2, hidden_dropout=0.2, input_dropout=0.1,
                                   embedding_dropout=0.1, zoneout_h=0.1, zoneout_c=0.2, recurrent_dropout=0.2))
    model(torch.randint(20, (3, 6)))
    assert model.activation_penalty is not None and model.activation_penalty > 0
    model.eval()
    model(torch.randint(20, (3, 6)))
    assert model.activation_penalty is None


@pytest.mark.parametrize("kwargs,error", [
    ({"recurrent_dropout": 1.0}, ArgumentError), ({"weight_drop": -0.1}, ArgumentError),
    ({"zoneout": 1.5}, ArgumentError), ({"input_dropout": "0.2"}, ArgumentTypeError),
    ({"output_dropout": True}, ArgumentTypeError), ({"zoneout": {"x": 0.1}}, ArgumentError),
    ({"zoneout": {"c": 2.0}}, ArgumentError), ({"zoneout": 0.1, "backend": "torch"}, ArgumentError),
])
def test_bad_rates_are_one_clear_error(kwargs, error):
    with pytest.raises(error, match="|".join(k for k in kwargs if k != "backend")):
        rnnkit.LSTM(4, 5, **kwargs)


def test_regularising_a_cell_without_what_it_needs_is_refused():
    with pytest.raises(ArgumentError, match="zoneout names state.*'c'.*GRUCell has states \\['h'\\]"):
        rnnkit.GRU(4, 5, zoneout={"c": 0.1})
    with pytest.raises(ArgumentError, match="recurrent_dropout needs a cell with recurrent weights"):
        rnnkit.MinGRU(4, 5, recurrent_dropout=0.1)
    with pytest.raises(ConfigError, match="zoneout_c needs a cell with a memory cell"):
        LMConfig(vocab_size=10, cell="gru", zoneout_c=0.1)
    with pytest.raises(ConfigError, match="weight_drop must be in"):
        LMConfig(vocab_size=10, weight_drop=1.0)


def _fit(corpus, out, resume=False, **train):
    base = {"data": str(corpus), "level": "char", "batch_size": 4, "bptt": 10, "progress": False,
            "out": str(out), "max_steps": 6, "lr": 1e-2}
    model = {"embedding_dim": 8, "hidden_size": 12, "num_layers": 2, "weight_drop": 0.3, "zoneout_c": 0.3,
             "zoneout_h": 0.1, "recurrent_dropout": 0.2, "hidden_dropout": 0.2, "output_dropout": 0.2,
             "embedding_dropout": 0.1, "ar": 1.0, "tar": 1.0}
    cfg = build_config(None, {"train": {**base, **train}, "model": model})
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    loop.open(resume=resume)
    loop.fit()
    return loop


def test_a_regularised_run_resumes_bit_exactly(tiny_corpus, tmp_path):
    straight = _fit(tiny_corpus, tmp_path / "a")
    _fit(tiny_corpus, tmp_path / "b", max_steps=3)
    resumed = _fit(tiny_corpus, tmp_path / "b", resume=True)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 0.9])
def test_zoneout_masks_have_the_rate_and_independent_units(p):
    """The per-step masks come from 16-bit lanes of 64-bit draws: each element is True
    with probability p (to 2^-16), neighbours (which share a draw) independently, and
    the same seed gives the same mask."""
    from rnnkit.nn.regularization import bernoulli_mask

    torch.manual_seed(3)
    m = bernoulli_mask((200, 50, 100), p, "cpu")
    assert m.dtype == torch.bool and m.shape == (200, 50, 100) and m.is_contiguous()
    n, rate = m.numel(), m.double().mean().item()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(rate - p) <= 5 * sd + 2 ** -16
    flat = m.flatten().double()
    for lag in (1, 2, 3, 4):  # the lanes of one draw, and the next draw
        joint = (flat[:-lag] * flat[lag:]).mean().item()
        assert abs(joint - p * p) <= 5 * sd + 1e-12
    torch.manual_seed(3)
    assert torch.equal(bernoulli_mask((200, 50, 100), p, "cpu"), m)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1001, 4096])
@pytest.mark.parametrize("threshold", [0, 1, 3277, 32768, 65535])
def test_zoneout_masks_are_the_same_from_c_and_from_torch_ops(n, threshold):
    """The C expander (masks.h) and the torch ops (other devices, torch.compile) give
    the same bits for the same seed, tails (n not a multiple of 4) and extremes included;
    and both match SplitMix64 computed here with Python ints."""
    from rnnkit.nn import regularization as R

    expand = R._native_mask()
    if expand is None:
        pytest.skip("no native library")
    seed = torch.randint(-2 ** 63, 2 ** 63 - 1, (), dtype=torch.int64)
    c = torch.empty(n, dtype=torch.bool)
    expand(n, seed.item(), threshold, c.data_ptr())
    assert torch.equal(c, R.splitmix_mask(n, seed, threshold))
    mask64 = (1 << 64) - 1
    expected = []
    for i in range((n + 3) // 4):
        z = (seed.item() + (i + 1) * 0x9E3779B97F4A7C15) & mask64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
        z ^= z >> 31
        expected += [((z >> (16 * k)) & 0xFFFF) < threshold for k in range(4)]
    assert c.tolist() == expected[:n]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_is_inverted_dropout_with_the_rate(dtype, p):
    """Every dropout here (weight drop, locked, variational, embedding) multiplies by this:
    0 with probability p, else 1 / (1 - p), so its expectation is 1."""
    from rnnkit.nn.regularization import dropout_mask

    torch.manual_seed(0)
    like = torch.zeros(1, dtype=dtype)
    m = dropout_mask((400, 500), p, like)
    assert m.dtype == dtype and m.shape == (400, 500)
    values = m.unique().tolist()
    assert values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p)) and len(values) == 2
    sd = (p * (1 - p) / m.numel()) ** 0.5
    assert abs((m == 0).double().mean().item() - p) <= 5 * sd + 2 ** -16
    torch.manual_seed(0)
    assert torch.equal(dropout_mask((400, 500), p, like), m)  # seeded by torch's generator


def test_zoneout_rates_are_read_only_and_survive_copies():
    """A rate changed in place would go unseen by the layer's checked fast paths: refused;
    deep copies and pickles keep the rates (and stay read-only)."""
    import copy
    import pickle
    layer = rnnkit.LSTM(4, 5, zoneout={"h": 0.1})
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4)
    layer.eval()
    want = layer(x)[0]
    for write in (lambda z: z.__setitem__("h", 0.5), lambda z: z.update(h=0.5), lambda z: z.pop("h"),
                  lambda z: z.clear(), lambda z: z.setdefault("c", 0.5)):
        with pytest.raises(TypeError, match="read-only"):
            write(layer.regularization.zoneout)
    assert layer.regularization.zoneout == {"h": 0.1}
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert other.regularization.zoneout == {"h": 0.1}
        torch.testing.assert_close(other(x)[0], want, rtol=0, atol=0)
        with pytest.raises(TypeError, match="read-only"):
            other.regularization.zoneout["h"] = 0.5
