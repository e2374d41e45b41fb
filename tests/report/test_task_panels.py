"""Each task's panels (Task.panels) hold what the model does, checked against an
independent computation, and every panel draws."""
import numpy as np
import pytest
import torch

from rnnkit.models import PianoRollConfig, PianoRollModel
from rnnkit.report.plots import panel_figure
from rnnkit.tasks.music import MusicOptions, MusicTask, piece_batch
from rnnkit.train.config import build_config
from rnnkit.train.loop import evaluate
from rnnkit.train.task import Task


def _task_and_model(train, model=None):
    cfg = build_config(None, {"train": {"progress": False, **train}, "model": model or {}})
    task = cfg.make_task()
    task.prepare()
    torch.manual_seed(0)
    return task, task.build_model().eval()


def _panels(task, model):
    with torch.no_grad():
        panels = [p.to_dict() for p in task.panels(model)]
    for p in panels:
        if p["kind"] in ("heatmap", "lines"):
            assert panel_figure(p).axes          # draws
    return panels


def test_default_is_no_panels_and_no_samples_for_a_task_without_text():
    assert Task.panels(None, None) == []             # the base class's default
    task, model = _task_and_model({"task": "adding", "seq_len": 6, "train_size": 8, "valid_size": 8, "test_size": 8})
    assert task.samples(model, torch.Generator()) == []


def test_classify_confusion_matrix_agrees_with_accuracy():
    task, model = _task_and_model({"task": "classify", "seq_len": 12, "train_size": 20, "valid_size": 50,
                                   "test_size": 10}, {"hidden_size": 8})
    (p,) = _panels(task, model)
    m = np.array(p["matrix"])
    assert p["kind"] == "heatmap" and m.shape == (2, 2) and m.sum() == 50
    assert np.trace(m) / m.sum() == pytest.approx(evaluate(task, model, "valid")["accuracy"])
    assert p["x_labels"] == p["y_labels"] == ["no motif", "motif"]


def test_adding_table_is_target_and_prediction():
    task, model = _task_and_model({"task": "adding", "seq_len": 6, "train_size": 8, "valid_size": 8, "test_size": 8},
                                  {"hidden_size": 4})
    (p,) = _panels(task, model)
    x, y = task.splits["valid"]
    with torch.no_grad():
        pred = model(x)[:, 0]
    assert [r[2] for r in p["rows"]] == pytest.approx(y[:, 0].tolist())
    assert [r[3] for r in p["rows"]] == pytest.approx(pred.tolist())


def test_copy_memory_table_shows_the_symbols_to_remember():
    task, model = _task_and_model({"task": "copy_memory", "seq_len": 5, "copy_len": 3, "train_size": 8,
                                   "valid_size": 8, "test_size": 8}, {"hidden_size": 8})
    (p,) = _panels(task, model)
    y = task.splits["valid"][1]
    assert [r[1] for r in p["rows"]] == ["".join(str(int(v)) for v in row[-3:]) for row in y[:8]]


def test_forecast_multi_lines_are_context_truth_and_forecast(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["date,a,OT"] + [f"t{i},{rng.normal():.4f},{np.sin(i / 4):.4f}" for i in range(300)]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    task, model = _task_and_model({"task": "forecast_multi", "data_file": str(tmp_path / "s.csv"), "lookback": 24,
                                   "horizon": 6, "mode": "direct"}, {"hidden_size": 8})
    (p,) = _panels(task, model)
    origin = task.origins("valid")[0]
    assert p["x"] == list(range(-24, 6))
    np.testing.assert_allclose(p["series"]["truth"], task.data.z[origin - 24:origin + 6, -1], rtol=1e-6)
    ctx, _ = task.windows([origin], 6)
    assert p["series"]["forecast"][:24] == [None] * 24
    np.testing.assert_allclose(p["series"]["forecast"][24:], task.predict(model, ctx)[0, :, -1].numpy(), rtol=1e-6)


def test_esn_forecast_lines_skip_the_washout():
    task, model = _task_and_model({"task": "esn_forecast", "length": 1200, "bptt": 100},
                                  {"reservoir_size": 20, "washout": 30})
    (p,) = _panels(task, model)
    assert p["series"]["forecast"][:30] == [None] * 30 and None not in p["series"]["forecast"][30:]
    np.testing.assert_allclose(p["series"]["truth"], task.splits["valid"][1:301].numpy(), rtol=1e-6)


def test_music_piano_rolls_are_the_notes_and_their_probabilities():
    task = MusicTask(MusicOptions(), {})
    piece = (torch.rand(40, 88, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    task.splits = {"valid": [piece]}
    torch.manual_seed(0)
    model = PianoRollModel(PianoRollConfig(hidden_size=10)).eval()
    notes, probs = _panels(task, model)
    np.testing.assert_array_equal(np.array(notes["matrix"])[::-1].T, piece.numpy())   # high notes drawn on top
    x, _, lengths = piece_batch([piece])
    with torch.no_grad():
        expected = torch.sigmoid(model(x, lengths=lengths)[0])[0]
    np.testing.assert_allclose(np.array(probs["matrix"])[::-1].T, expected.numpy(), rtol=1e-5, atol=1e-6)
