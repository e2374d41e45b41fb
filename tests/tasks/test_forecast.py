"""Forecasting: the generated Mackey-Glass series, the forecaster's step contract,
regimes through the loop, and closed-loop error by horizon."""
import math

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.data.series import mackey_glass
from rnnkit.exposure_bias import series_free_running
from rnnkit.models import ForecasterConfig, SequenceForecaster
from rnnkit.models.feedback import Feedback
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop


def test_integration_matches_the_closed_form_without_feedback_term():
    """beta = 0 leaves dx/dt = -gamma x: x(t) = x0 exp(-gamma t), which RK4 gets to ~1e-9."""
    x = mackey_glass(30, beta=0.0, gamma=0.1, x0=1.2, transient=0)
    np.testing.assert_allclose(x, 1.2 * np.exp(-0.1 * np.arange(30)), rtol=1e-8)


def test_mackey_glass_tau_17_is_the_usual_attractor():
    x = mackey_glass(3000)
    assert np.array_equal(x, mackey_glass(3000))             # generated, deterministic
    assert 0.2 < x.min() < 0.5 and 1.2 < x.max() < 1.45      # the familiar range of the tau=17 series
    assert np.abs(np.diff(x)).max() < 0.2                     # smooth at one sample per time unit


def _model():
    torch.manual_seed(0)
    return SequenceForecaster(ForecasterConfig(channels=1, hidden_size=8)).eval()


def test_step_contract_and_closed_loop_forecast():
    model = _model()
    x = torch.randn(3, 12, 1)
    full, _ = model(x)
    stepped, _ = model(x, feedback=Feedback(torch.ones(3, 12, dtype=torch.bool)))  # model.step at every t
    torch.testing.assert_close(stepped, full, atol=1e-6, rtol=1e-6)
    pred = model.forecast(x, 5)
    y, state = model(x)
    manual, last = [], y[:, -1]
    for _ in range(5):
        manual.append(last)
        last, state = model.step(last, state)
    torch.testing.assert_close(pred, torch.stack(manual, 1))
    free, _ = model(x, feedback=Feedback(torch.zeros(3, 12, dtype=torch.bool)))
    torch.testing.assert_close(free[:, 1:], model.forecast(x[:, :1], 12)[:, 1:12], atol=1e-6, rtol=1e-6)


def _fit(tmp_path, name, **train):
    cfg = build_config(None, {"train": {"task": "forecast", "length": 1200, "batch_size": 8, "bptt": 20,
                                        "max_steps": 6, "progress": False, "out": str(tmp_path / name), **train},
                              "model": {"hidden_size": 8}})
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    result = loop.fit()
    return loop, task, result


def test_regimes_on_a_series(tmp_path):
    teacher, _, _ = _fit(tmp_path, "t")
    always, _, _ = _fit(tmp_path, "s", regime="scheduled", schedule="linear", schedule_k=1.0, schedule_c=0.0)
    for k, v in teacher.model.state_dict().items():
        assert torch.equal(v, always.model.state_dict()[k])
    prof, task, result = _fit(tmp_path, "p", regime="professor", discriminator_width=4)
    assert "discriminator" in prof.aux and math.isfinite(result["test"]["mse"])


def test_free_running_error_by_horizon(tmp_path):
    loop, task, result = _fit(tmp_path, "f", max_steps=20)
    report = series_free_running(task, loop.model, split="test", horizons=(1, 10), starts=8)
    assert report["starts"] == 8 and len(report["mse_curve"]) == 10
    # horizon 1 is an ordinary one-step prediction after reading the warmup
    points = torch.linspace(task.options.warmup, len(task.splits["test"]) - 10, 8).long()
    z = task.splits["test"]
    ctx = torch.stack([z[p - task.options.warmup:p] for p in points]).unsqueeze(-1)
    one_step = loop.model(ctx)[0][:, -1, 0].detach()
    target = torch.stack([z[p] for p in points])
    assert report["mse_at"]["1"] == pytest.approx(float((one_step - target).pow(2).mean()), rel=1e-5)


def test_cli_forecast_and_free_running(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "forecast", "--length", "1200", "--max-steps", "3", "--hidden-size", "8",
                 "--out", str(out), "--no-progress"]) == 0
    assert "persistence" in capsys.readouterr().out
    assert main(["eval", str(out / "best.safetensors"), "--free-running", "--samples", "4"]) == 2
    assert "too short for warmup 100 and horizon 50" in capsys.readouterr().err
    out2 = tmp_path / "run2"
    assert main(["train", "--task", "forecast", "--length", "2000", "--max-steps", "3", "--hidden-size", "8",
                 "--out", str(out2), "--no-progress"]) == 0
    assert main(["eval", str(out2 / "best.safetensors"), "--free-running", "--samples", "4"]) == 0
    assert "MSE by horizon" in capsys.readouterr().out
