"""Multivariate forecasting: baselines by hand, the Forecaster's two modes and step
contract, rolling-origin evaluation, and training through the loop on a synthetic CSV."""
import math

import numpy as np
import pytest
import torch

from rnnkit.models import MODELS, Forecaster, MultiForecasterConfig
from rnnkit.tasks import TASKS
from rnnkit.tasks.forecast_multi import naive, report_horizons, seasonal_naive
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop, evaluate


def _csv(path, n=900, seed=0):
    """Three channels with a daily cycle and noise; the last one ("OT") lags the first."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    a = np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=n)
    b = np.cos(2 * np.pi * t / 24) + 0.1 * rng.normal(size=n)
    ot = np.roll(a, 3) + 0.05 * rng.normal(size=n)
    lines = ["date,a,OT,b"] + [f"t{i},{a[i]:.5f},{ot[i]:.5f},{b[i]:.5f}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_registered():
    assert "forecast_multi" in TASKS and MODELS["forecaster"].module is Forecaster


def test_seasonal_naive_and_naive_by_hand():
    ctx = torch.arange(30.0).view(1, 30, 1)          # values 0..29; the last day is 6..29
    s = seasonal_naive(ctx, 27, period=24)
    assert s[0, :, 0].tolist() == [float(v) for v in list(range(6, 30)) + [6, 7, 8]]
    short = seasonal_naive(torch.arange(8.0).view(1, 4, 2), 5, period=2)    # two channels
    assert short[0].tolist() == [[4, 5], [6, 7], [4, 5], [6, 7], [4, 5]]
    assert naive(ctx, 3)[0, :, 0].tolist() == [29.0, 29.0, 29.0]
    assert report_horizons(168) == (24, 48, 168) and report_horizons(30) == (24, 30)


@pytest.mark.parametrize("mode,channels", [("direct", 1), ("direct", 4), ("autoregressive", 4)])
def test_forecast_shapes(mode, channels):
    torch.manual_seed(0)
    m = Forecaster(MultiForecasterConfig(input_size=4, output_size=channels, horizon=10, mode=mode, hidden_size=8))
    out = m.forecast(torch.randn(3, 12, 4))
    assert out.shape == (3, 10, channels if mode == "direct" else 4)
    assert m.forecast(torch.randn(3, 12, 4), 5).shape[1] == 5


def test_direct_residual_starts_from_the_last_value():
    m = Forecaster(MultiForecasterConfig(input_size=3, output_size=1, horizon=4, hidden_size=8))
    torch.nn.init.zeros_(m.head.weight)
    torch.nn.init.zeros_(m.head.bias)                 # the network adds nothing: the naive forecast remains
    x = torch.randn(2, 6, 3)
    torch.testing.assert_close(m.forecast(x), naive(x[..., 2:], 4))


def test_autoregressive_closed_loop_equals_stepping():
    torch.manual_seed(0)
    m = Forecaster(MultiForecasterConfig(input_size=3, output_size=1, horizon=7, mode="autoregressive",
                                         hidden_size=8)).eval()
    ctx = torch.randn(2, 9, 3)
    state, y = None, None
    for t in range(ctx.shape[1]):                     # read the context one step at a time
        y, state = m.step(ctx[:, t], state)
    manual = []
    for _ in range(7):                                # then feed each prediction back
        manual.append(y)
        y, state = m.step(y, state)
    torch.testing.assert_close(m.forecast(ctx), torch.stack(manual, 1), atol=1e-6, rtol=1e-6)
    full, _ = m(ctx)
    torch.testing.assert_close(full[:, -1], m.forecast(ctx, 1)[:, 0], atol=1e-6, rtol=1e-6)


def _config(tmp_path, mode, **train):
    return build_config(None, {"train": {"task": "forecast_multi", "data_file": str(_csv(tmp_path / "s.csv")),
                                         "mode": mode, "lookback": 24, "horizon": 30, "eval_stride": 5,
                                         "batch_size": 16, "lr": 1e-2, "progress": False,
                                         "out": str(tmp_path / mode), **train},
                              "model": {"hidden_size": 16}})


def test_windows_split_and_rolling_origins(tmp_path):
    task = _config(tmp_path, "direct").make_task()
    task.prepare()
    assert task.columns == ("a", "b", "OT")           # target moved last
    assert task.data.bounds == {"train": (0, 540), "valid": (540, 720), "test": (720, 900)}
    test = task.origins("test")
    assert test[0] == 720 and test[-1] + 30 <= 900 and set(np.diff(test)) == {5}
    train = task.origins("train")
    assert train[0] == 24 and train[-1] + 30 == 540   # every target inside train
    ctx, fut = task.windows([720], 30)
    np.testing.assert_array_equal(ctx[0].numpy(), task.data.z[696:720])       # context reaches into valid
    np.testing.assert_array_equal(fut[0].numpy(), task.data.z[720:750])
    from rnnkit.train.task import Plan
    e1 = [x for x, _ in task.batches(Plan("train", epoch=1, batch_size=16))]
    e2 = [x for x, _ in task.batches(Plan("train", epoch=2, batch_size=16))]
    assert len(e1) == len(train) // 16 and not torch.equal(e1[0], e2[0])      # new origins per epoch
    assert all(x.shape == (16, 24, 3) for x in e1)


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_training_through_the_loop_lowers_the_loss(tmp_path, mode):
    cfg = _config(tmp_path, mode, max_steps=60, epochs=5)
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    torch.manual_seed(0)
    before = evaluate(task, loop.model, "valid")
    loop.open()
    result = loop.fit()
    loop.close()
    after = result["valid"]
    assert set(after) >= {"loss", "mse_24", "mae_24", "mse_30", "mae_30"}
    assert after["loss"] < before["loss"] and math.isfinite(result["test"]["mse_30"])
    base = task.baseline()
    assert base["valid"]["mse_24"] > 0 and set(base["naive"]) == {"valid", "test"}


def test_errors(tmp_path):
    from rnnkit.errors import ConfigError, DataError
    with pytest.raises(ConfigError, match="mode"):
        _config(tmp_path, "sideways")
    task = _config(tmp_path, "direct", target_column="nope").make_task()
    with pytest.raises(DataError, match="no target column 'nope'"):
        task.prepare()
    with pytest.raises(ConfigError, match="autoregressive"):
        Forecaster(MultiForecasterConfig(input_size=2, output_size=1, horizon=3)).step(torch.zeros(1, 2))
