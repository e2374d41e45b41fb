"""Tests of rnnkit.reservoir: echo-state networks, streaming ridge, extreme learning machines."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from rnnkit.data.series import mackey_glass
from rnnkit.errors import ConfigError, DataError
from rnnkit.reservoir import (EchoStateNetwork, EchoStatePropertyWarning, ESNConfig, ExtremeLearningMachine,
                              RidgeAccumulator, spectral_radius)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The reservoir loop and the small eigen-solves are latency-bound: with intra-op
    threads they slow down many-fold on a loaded 2-core machine. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _esn(**kw) -> EchoStateNetwork:
    base = dict(input_size=1, reservoir_size=50, output_size=1, washout=10, seed=3)
    base.update(kw)
    return EchoStateNetwork(ESNConfig(**base))


def _batch_ridge(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    x, y = x.double(), y.double()
    return torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)


# --------------------------------------------------------------------------- ridge

@pytest.mark.parametrize("chunk", [1, 7, 64, 333, 1000])
def test_streaming_ridge_equals_batch_ridge(chunk):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 20, generator=g, dtype=torch.float64)
    y = x @ torch.randn(20, 3, generator=g, dtype=torch.float64) + 0.1 * torch.randn(500, 3, generator=g,
                                                                                       dtype=torch.float64)
    acc = RidgeAccumulator(20, 3)
    for s in range(0, 500, chunk):
        acc.update(x[s:s + chunk], y[s:s + chunk])
    assert acc.n_rows == 500
    for ridge in (0.0, 1e-3, 10.0):
        expected = _batch_ridge(x, y, ridge)
        torch.testing.assert_close(acc.solve(ridge), expected, rtol=0, atol=1e-6)
    # the ridge term matters: a large ridge gives a different (shrunk) answer
    assert (acc.solve(1e3) - _batch_ridge(x, y, 0.0)).abs().max() > 1e-3


def test_streaming_ridge_accumulates_float64_from_float32_chunks():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 5, generator=g) * 1e3
    y = torch.randn(400, 1, generator=g)
    acc = RidgeAccumulator(5, 1)
    for s in range(0, 400, 13):
        acc.update(x[s:s + 13], y[s:s + 13])
    assert acc.xtx.dtype == torch.float64
    torch.testing.assert_close(acc.solve(1e-6), _batch_ridge(x, y, 1e-6), rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk", [None, 1, 17, 40, 500])
def test_esn_fit_in_chunks_equals_batch_ridge_on_states_after_washout(chunk):
    esn = _esn(input_size=2, output_size=2, washout=25, ridge=1e-4, bias_scaling=0.3)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(3, 120, 2, generator=g, dtype=torch.float64)
    y = torch.sin(u.cumsum(1))
    esn.fit(u, y, chunk_size=chunk)
    states = esn.states(u)[:, 25:]
    feats = torch.cat([torch.ones(3, 95, 1, dtype=torch.float64), u[:, 25:], states], -1).reshape(-1, 1 + 2 + 50)
    expected = _batch_ridge(feats, y[:, 25:].reshape(-1, 2), 1e-4)
    torch.testing.assert_close(esn.W_out, expected.T, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- weights

@pytest.mark.parametrize("size,density,radius", [(100, 0.1, 0.9), (60, 0.5, 0.5), (200, 0.05, 1.0), (1, 1.0, 0.7)])
def test_recurrent_matrix_has_the_configured_spectral_radius(size, density, radius):
    esn = _esn(reservoir_size=size, density=density, spectral_radius=radius)
    w = esn.W.numpy()
    assert np.max(np.abs(np.linalg.eigvals(w))) == pytest.approx(radius, rel=1e-9)
    if size > 1:  # sparse as configured: about density * size² non-zeros
        nnz = np.count_nonzero(w) / w.size
        assert abs(nnz - density) < 0.3 * density + 0.02


def test_spectral_radius_of_known_matrices_matches_numpy():
    rot = torch.tensor([[0.0, 2.0], [-2.0, 0.0]])          # eigenvalues +-2i
    assert spectral_radius(rot) == pytest.approx(2.0, rel=1e-12)
    tri = torch.tensor([[3.0, 100.0], [0.0, -0.5]])        # eigenvalues 3, -0.5 (not the norm)
    assert spectral_radius(tri) == pytest.approx(3.0, rel=1e-12)
    m = torch.randn(40, 40, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert spectral_radius(m) == pytest.approx(np.max(np.abs(np.linalg.eigvals(m.numpy()))), rel=1e-10)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        spectral_radius(torch.zeros(2, 3))


def test_weights_are_seeded_buffers_not_parameters():
    a, b, c = _esn(bias_scaling=0.5), _esn(bias_scaling=0.5), _esn(bias_scaling=0.5, seed=4)
    assert list(a.parameters()) == []
    assert {"W_in", "W", "bias", "W_out"} <= set(dict(a.named_buffers()))
    for name in ("W_in", "W", "bias"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))
    assert float(a.W_in.abs().max()) <= 1.0 and float(a.bias.abs().max()) <= 0.5
    d = _esn(input_scaling=0.25)
    assert float(d.W_in.abs().max()) <= 0.25 and float(d.W_in.abs().max()) > 0.2


# --------------------------------------------------------------------------- dynamics

def _reference_states(esn, u, teacher=None):
    """x_t = (1-a) x_{t-1} + a tanh(W_in u_t + W x_{t-1} + b [+ W_fb y_{t-1}]) in a float64 loop."""
    a = esn.config.leak_rate
    w_in, w, b, w_fb = (getattr(esn, n).numpy().astype(np.float64) for n in ("W_in", "W", "bias", "W_fb"))
    x = np.zeros(w.shape[0])
    y_prev = np.zeros(w_fb.shape[1])
    out = []
    for t in range(u.shape[0]):
        pre = w_in @ u[t] + w @ x + b
        if teacher is not None:
            pre = pre + w_fb @ y_prev
            y_prev = teacher[t]
        x = (1 - a) * x + a * np.tanh(pre)
        out.append(x)
    return np.array(out)


@pytest.mark.parametrize("leak", [1.0, 0.3])
def test_state_update_matches_hand_written_leaky_loop(leak):
    esn = _esn(input_size=3, leak_rate=leak, bias_scaling=0.4, spectral_radius=0.95)
    u = np.random.default_rng(0).normal(size=(60, 3))
    got = esn.states(torch.tensor(u)).numpy()
    np.testing.assert_allclose(got, _reference_states(esn, u), rtol=0, atol=1e-12)


def test_output_feedback_is_teacher_forced_in_fit():
    esn = _esn(input_size=1, output_size=2, leak_rate=0.5, output_feedback=True, feedback_scaling=0.5,
               washout=5, ridge=1e-5)
    rng = np.random.default_rng(1)
    u = rng.normal(size=(80, 1))
    y = np.concatenate([np.sin(np.cumsum(u, 0)), np.cos(np.cumsum(u, 0))], 1)
    ref = _reference_states(esn, u, teacher=y)
    np.testing.assert_allclose(esn.states(torch.tensor(u), teacher=torch.tensor(y)).numpy(), ref, atol=1e-12)
    esn.fit(torch.tensor(u), torch.tensor(y), chunk_size=16)
    feats = np.concatenate([np.ones((75, 1)), u[5:], ref[5:]], 1)
    expected = _batch_ridge(torch.tensor(feats), torch.tensor(y[5:]), 1e-5)
    torch.testing.assert_close(esn.W_out, expected.T, rtol=0, atol=1e-6)
    # the feedback weights change the states: without teacher forcing they would differ
    no_fb = esn.states(torch.tensor(u), teacher=torch.zeros(80, 2, dtype=torch.float64)).numpy()
    assert np.abs(no_fb - ref).max() > 1e-3


# --------------------------------------------------------------------------- tasks

@pytest.fixture(scope="module")
def mackey_glass_esn():
    series = torch.tensor(np.tanh(mackey_glass(2300) - 1.0)).unsqueeze(-1)   # centred, in (-1, 1)
    u, y = series[:-1], series[1:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        esn = EchoStateNetwork(ESNConfig(input_size=1, reservoir_size=300, output_size=1, spectral_radius=0.9,
                                         leak_rate=0.3, bias_scaling=0.2, ridge=1e-8, washout=100, seed=1))
        esn.fit(u[:1800], y[:1800], chunk_size=500)
    return esn, u, y


def _nrmse(pred, target):
    return float(((pred - target) ** 2).mean().sqrt() / target.std())


def test_esn_fits_mackey_glass_one_step_ahead(mackey_glass_esn):
    esn, u, y = mackey_glass_esn
    pred = esn(u)                     # run from the start so the held-out part has a warm state
    test_nrmse = _nrmse(pred[1800:], y[1800:])
    assert test_nrmse < 0.05, test_nrmse
    # a constant (persistence) forecast is much worse: the fit learned the dynamics
    assert test_nrmse < 0.2 * _nrmse(u[1800:], y[1800:])


def test_esn_generates_mackey_glass_in_closed_loop(mackey_glass_esn):
    esn, u, y = mackey_glass_esn
    gen = esn.generate(u[:1800], 100)
    assert gen.shape == (100, 1) and bool(torch.isfinite(gen).all())
    truth = y[1799:1899]              # gen[0] follows the last warmup input u[1799]
    assert float((gen[:5] - truth[:5]).abs().max()) < 0.01
    assert _nrmse(gen[:20], truth[:20]) < 0.1
    batched = esn.generate(u[:1800].unsqueeze(0).repeat(2, 1, 1), 10)
    assert batched.shape == (2, 10, 1)
    torch.testing.assert_close(batched[1], gen[:10])


def test_elm_fits_a_smooth_regression():
    x = torch.linspace(-np.pi, np.pi, 400, dtype=torch.float64).unsqueeze(1)
    y = torch.cat([torch.sin(x), torch.cos(2 * x)], 1)
    elm = ExtremeLearningMachine(1, 100, 2, ridge=1e-8, seed=0).fit(x[::2], y[::2], chunk_size=37)
    pred = elm.predict(x[1::2])                    # held-out interleaved points
    assert pred.shape == (200, 2)
    assert float((pred - y[1::2]).abs().max()) < 5e-3       # worst at the edge, x = pi
    assert float(((pred - y[1::2]) ** 2).mean().sqrt()) < 1e-3
    assert float(((elm.predict(x[1::2] + 1.0) - y[1::2]) ** 2).mean().sqrt()) > 0.1  # inputs matter
    assert list(elm.parameters()) == []
    # chunked fit equals a single-chunk fit (compared on a well-conditioned ridge)
    a = ExtremeLearningMachine(1, 100, 2, ridge=1e-2, seed=0).fit(x[::2], y[::2])
    b = ExtremeLearningMachine(1, 100, 2, ridge=1e-2, seed=0).fit(x[::2], y[::2], chunk_size=37)
    torch.testing.assert_close(a.W_out, b.W_out, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- warnings

def test_no_echo_state_warning_for_standard_settings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sr, leak in ((0.9, 1.0), (1.0, 1.0), (0.5, 0.3), (0.99, 0.1)):
            esn = _esn(spectral_radius=sr, leak_rate=leak)
            assert esn.effective_spectral_radius <= 1.0 + 1e-9
        esn.fit(torch.randn(200, 1, dtype=torch.float64), torch.randn(200, 1, dtype=torch.float64))


@pytest.mark.parametrize("sr,leak", [(1.2, 1.0), (1.5, 0.5)])
def test_warns_when_effective_spectral_radius_exceeds_one(sr, leak):
    with pytest.warns(EchoStatePropertyWarning, match="effective spectral radius"):
        esn = _esn(spectral_radius=sr, leak_rate=leak, reservoir_size=80, density=0.2)
    w = esn.W.numpy()
    eff = np.max(np.abs(np.linalg.eigvals((1 - leak) * np.eye(80) + leak * w)))
    assert esn.effective_spectral_radius == pytest.approx(eff, rel=1e-9) and eff > 1


def test_effective_radius_accounts_for_leak():
    # radius 1.05 with leak 0.2: the warning follows the radius of 0.8 I + 0.2 W, not of W
    esn = _esn_quiet(spectral_radius=1.05, leak_rate=0.2, reservoir_size=80, density=0.2)
    eff = np.max(np.abs(np.linalg.eigvals(0.8 * np.eye(80) + 0.2 * esn.W.numpy())))
    assert esn.effective_spectral_radius == pytest.approx(eff, rel=1e-9)
    assert esn.effective_spectral_radius < 1.05
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _esn(spectral_radius=1.05, leak_rate=0.2, reservoir_size=80, density=0.2)
    warned = any(issubclass(r.category, EchoStatePropertyWarning) for r in rec)
    assert warned == (eff > 1.0 + 1e-9)


def _esn_quiet(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EchoStatePropertyWarning)
        return _esn(**kw)


def test_warns_for_saturating_input_scaling():
    with pytest.warns(EchoStatePropertyWarning, match="input_scaling"):
        _esn(input_scaling=50.0)
    esn = _esn_quiet()
    with pytest.warns(EchoStatePropertyWarning, match="saturated"):
        esn.fit(1e3 * torch.randn(300, 1, dtype=torch.float64), torch.randn(300, 1, dtype=torch.float64))


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("option,value", [
    ("spectral_radius", 0.0), ("spectral_radius", -1.0), ("ridge", -1e-3), ("leak_rate", 0.0),
    ("leak_rate", 1.5), ("density", 0.0), ("density", 1.01), ("input_size", 0), ("reservoir_size", 0),
    ("output_size", 0), ("washout", -1), ("input_scaling", float("nan")),
])
def test_invalid_config_raises_config_error_naming_the_option(option, value):
    with pytest.raises(ConfigError, match=option):
        _esn(**{option: value})


def test_config_is_frozen():
    cfg = ESNConfig(input_size=1, reservoir_size=10, output_size=1)
    with pytest.raises(Exception):
        cfg.spectral_radius = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("where,bad", [("inputs", float("nan")), ("inputs", float("inf")),
                                       ("targets", float("nan")), ("targets", float("-inf"))])
def test_non_finite_series_raise_data_error_naming_it(where, bad):
    esn = _esn()
    u, y = torch.randn(100, 1, dtype=torch.float64), torch.randn(100, 1, dtype=torch.float64)
    (u if where == "inputs" else y)[42, 0] = bad
    with pytest.raises(DataError, match=rf"{where}.*\(42, 0\)"):
        esn.fit(u, y)


def test_non_finite_inputs_at_inference_raise_data_error():
    esn = _esn().fit(torch.randn(100, 1), torch.randn(100, 1))
    u = torch.randn(30, 1)
    u[3] = float("nan")
    with pytest.raises(DataError, match="inputs"):
        esn(u)
    with pytest.raises(DataError, match="warmup_inputs"):
        esn.generate(u, 5)


def test_shape_mismatches_raise_value_error_with_the_shapes():
    esn = _esn(input_size=2)
    with pytest.raises(ValueError, match=r"\(100, 3\)"):
        esn.fit(torch.randn(100, 3), torch.randn(100, 1))
    with pytest.raises(ValueError, match=r"\(90, 1\).*\(100, 2\)"):
        esn.fit(torch.randn(100, 2), torch.randn(90, 1))
    with pytest.raises(ValueError, match=r"\(100, 2\)"):
        esn.fit(torch.randn(100, 2), torch.randn(100, 2))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        esn.fit(torch.randn(5), torch.randn(5))
    with pytest.raises(ValueError, match="washout"):
        esn.fit(torch.randn(10, 2), torch.randn(10, 1))
    esn.fit(torch.randn(100, 2), torch.randn(100, 1))
    with pytest.raises(ValueError, match="input_size"):
        esn.generate(torch.randn(10, 2), 5)
    with pytest.raises(ValueError, match=r"\(10, 1\)"):
        esn(torch.randn(10, 1))


def test_unfitted_readout_raises():
    with pytest.raises(RuntimeError, match="fit"):
        _esn()(torch.randn(10, 1))


def test_ridge_accumulator_and_elm_bad_input():
    acc = RidgeAccumulator(3, 1)
    with pytest.raises(DataError):
        acc.solve(0.0)
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        acc.update(torch.randn(4, 2), torch.randn(4, 1))
    x = torch.randn(4, 3)
    x[1, 1] = float("nan")
    with pytest.raises(DataError, match="X"):
        acc.update(x, torch.randn(4, 1))
    elm = ExtremeLearningMachine(2, 10)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        elm.fit(torch.randn(5, 3), torch.randn(5))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        elm.fit(torch.randn(5, 2), torch.randn(4))
    y = torch.randn(5)
    y[0] = float("inf")
    with pytest.raises(DataError, match="Y"):
        elm.fit(torch.randn(5, 2), y)
    with pytest.raises(ConfigError, match="hidden_size"):
        ExtremeLearningMachine(2, 0)
    with pytest.raises(ConfigError, match="ridge"):
        ExtremeLearningMachine(2, 5, ridge=-1.0)


def test_fitted_readout_round_trips_through_state_dict():
    g = torch.Generator().manual_seed(7)
    u = torch.randn(150, 1, generator=g, dtype=torch.float64)
    esn = _esn().fit(u, torch.sin(u))
    fresh = _esn()
    fresh.load_state_dict(esn.state_dict())
    torch.testing.assert_close(fresh(u), esn(u), rtol=0, atol=0)


def test_generate_with_output_feedback_follows_its_own_outputs():
    series = torch.sin(torch.arange(400, dtype=torch.float64) * 0.2).unsqueeze(-1)
    esn = _esn(reservoir_size=80, output_feedback=True, feedback_scaling=0.2, washout=50, ridge=1e-8)
    esn.fit(series[:-1], series[1:])
    gen = esn.generate(series[:300], 20)
    assert bool(torch.isfinite(gen).all())
    assert float((gen[:5] - series[300:305]).abs().max()) < 0.05
