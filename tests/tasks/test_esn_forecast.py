"""The loop's closed-form hook, driven by the echo state network forecaster: one pass
accumulates the normal equations, one solve; equal to fitting the ESN directly."""
import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models import EchoStateConfig, EchoStateForecaster
from rnnkit.reservoir import EchoStateNetwork
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop
from rnnkit.train.saved import load_model

MODEL = {"reservoir_size": 60, "washout": 30, "leak_rate": 0.3, "ridge": 1e-6}


def _loop(tmp_path, **train):
    cfg = build_config(None, {"train": {"task": "esn_forecast", "length": 1200, "bptt": 100, "progress": False,
                                        "out": str(tmp_path / "run"), **train}, "model": MODEL})
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    loop.open(overwrite=True)
    return loop


def test_closed_form_fit_equals_fitting_the_esn_on_the_same_rows(tmp_path):
    loop = _loop(tmp_path, batch_size=2)
    result = loop.fit()
    assert result["stopped_by"] == "closed_form" and result["steps"] == 1
    batches = loop.task.batches(loop.plan("train"))
    x = torch.cat([batches[i][1] for i in range(len(batches))], dim=1)   # the two streams, windows joined
    y = torch.cat([batches[i][2] for i in range(len(batches))], dim=1)
    direct = EchoStateNetwork(EchoStateConfig(channels=1, **MODEL).esn_config()).fit(x, y, chunk_size=None)
    torch.testing.assert_close(loop.model.esn.W_out, direct.W_out, rtol=1e-4, atol=1e-6)  # ill-conditioned: sum order
    test = loop.task.splits["test"].view(1, -1, 1).double()
    torch.testing.assert_close(loop.model(test)[0], direct(test), rtol=0, atol=1e-7)
    persistence = loop.task.baseline()["test"]["mse"]
    assert result["test"]["mse"] < 0.01 * persistence     # Mackey-Glass one step ahead: far below persistence


def test_saved_model_predicts_the_same(tmp_path):
    loop = _loop(tmp_path)
    loop.fit()
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    x = loop.task.splits["test"][:200].view(1, -1, 1)
    torch.testing.assert_close(loaded.model(x)[0], loop.model(x)[0])
    state = None
    stepped = []
    for t in range(20):                                    # the step contract carries the state
        y_t, state = loaded.model.step(x[:, t], state)
        stepped.append(y_t)
    torch.testing.assert_close(torch.stack(stepped, 1), loop.model(x[:, :20])[0], rtol=1e-5, atol=1e-6)


def test_washout_is_left_out_of_the_scores():
    model = EchoStateForecaster(EchoStateConfig(channels=1, reservoir_size=10, washout=30))
    assert model.washout_left(None, 20) == 20
    _, state = model(torch.zeros(1, 20, 1))
    assert model.washout_left(state, 20) == 10 and model.washout_left(model(torch.zeros(1, 20, 1), state)[1], 5) == 0


def test_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="regime 'free'.*closed form"):
        _loop(tmp_path, regime="free")
    with pytest.raises(ConfigError, match="cannot fit a model in closed form"):
        build_config(None, {"train": {"task": "adding"}}).make_task().closed_form_step(None, None)
    with pytest.raises(ConfigError, match="spectral_radius"):
        EchoStateConfig(channels=1, spectral_radius=0.0)
