"""The video task: generated splits, accuracy from sums, a confusion matrix, and a CNN +
recurrent classifier trained through the one loop."""
import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.tasks.video import VideoOptions, VideoTask
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop, evaluate
from rnnkit.train.saved import load_model

SMALL = {"frames": 6, "frame_size": 8, "speed": 1.0, "shape_radius": 1.5, "train_size": 40, "valid_size": 16,
         "test_size": 24}


def _task(**kw):
    task = VideoTask(VideoOptions(**{**SMALL, **kw}), {})
    task.prepare()
    return task


def test_splits_are_fixed_by_the_seed_and_differ_from_each_other():
    a, b = _task(), _task()
    for split, size in (("train", 40), ("valid", 16), ("test", 24)):
        assert a.splits[split][0].shape == (size, 6, 1, 8, 8)
        assert torch.equal(a.splits[split][0], b.splits[split][0])
    assert not torch.equal(a.splits["train"][0][:16], a.splits["valid"][0])
    assert not torch.equal(a.splits["test"][0], _task(data_seed=7).splits["test"][0])
    assert a.model_fields() == {"num_classes": 8, "channels": 1, "frame_height": 8, "frame_width": 8}


def test_accuracy_and_confusion_matrix_match_a_count_by_hand():
    task = _task(motions=3)
    torch.manual_seed(0)
    model = task.build_model().eval()
    with torch.no_grad():
        pred = model(task.splits["valid"][0]).argmax(-1)
        metrics = evaluate(task, model, "valid")
        (panel,) = task.panels(model)
    y = task.splits["valid"][1]
    assert metrics["accuracy"] == pytest.approx(float((pred == y).float().mean()))
    want = [[int(((y == i) & (pred == j)).sum()) for j in range(3)] for i in range(3)]
    assert panel.data["matrix"] == want and panel.data["y_labels"] == ["left", "right", "up"]


def test_bad_options_name_the_problem():
    with pytest.raises(ConfigError, match="motions must be in"):
        build_config(None, {"train": {"task": "video", "motions": 12}})
    with pytest.raises(ConfigError, match="frames must be >= 2"):
        VideoOptions(frames=1)
    with pytest.raises(ConfigError, match="train_size must be >= 1"):
        VideoOptions(train_size=0)
    with pytest.raises(ConfigError, match="pooling"):
        build_config(None, {"train": {"task": "video"}, "model": {"pooling": "attention"}})


def test_a_cnn_and_gru_learn_it_through_the_loop(tmp_path):
    # six motions, circles either way among them: one frame difference tells left from
    # right but not clockwise from anticlockwise, so these need the recurrent layer. The
    # default model leaves chance after ~40 of these steps and is at ~1.0 by 160-240 (the
    # plain CNN on raw frames sat at chance here); 240 steps, chance is 1/6
    clips = {"frames": 8, "frame_size": 16, "speed": 2.0, "shape_radius": 2.0, "motions": 6, "noise": 0.0,
             "distractors": 0, "train_size": 640, "valid_size": 64, "test_size": 192}
    cfg = build_config(None, {"train": {"task": "video", **clips, "epochs": 6, "batch_size": 16, "lr": 3e-3,
                                        "progress": False, "out": str(tmp_path / "r")},
                              "model": {"hidden_size": 32, "conv_channels": 4, "frame_features": 16}})
    task = cfg.make_task()
    task.prepare()
    result = Loop(cfg, task).fit()
    assert result["test"]["accuracy"] > 0.9
    loaded = load_model(tmp_path / "r" / "best.safetensors")       # an ordinary model file
    assert loaded.model.config.frame_height == 16 and loaded.model.config.cell == "gru"
    assert evaluate(task, loaded.model, "test")["accuracy"] == pytest.approx(result["test"]["accuracy"])
    x, y = task.splits["test"]
    turning = (y == 4) | (y == 5)                                  # clockwise, anticlockwise
    with torch.no_grad():
        pred = loaded.model.eval()(x[turning]).argmax(-1)
    assert float((pred == y[turning]).float().mean()) > 0.9
