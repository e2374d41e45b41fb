"""The adding problem: generated data with the known statistics, and trained
through the one loop with no loop code of its own."""
import pytest
import torch

from rnnkit.cli import main
from rnnkit.tasks.adding import AddingOptions, AddingTask, adding_problem
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop, evaluate
from rnnkit.train.saved import load_model
from rnnkit.train.task import Plan


def test_two_markers_one_in_each_half_and_target_is_their_sum():
    x, y = adding_problem(500, 20, torch.Generator().manual_seed(0))
    assert x.shape == (500, 20, 2) and y.shape == (500, 1)
    marker = x[..., 1]
    assert torch.equal(marker.sum(1), torch.full((500,), 2.0))
    assert torch.equal(marker[:, :10].sum(1), torch.ones(500))  # one in the first half
    torch.testing.assert_close((x[..., 0] * marker).sum(1, keepdim=True), y)
    assert 0 <= x[..., 0].min() and x[..., 0].max() < 1


def test_predicting_one_scores_about_one_sixth():
    """Var(U1 + U2) = 2/12: the baseline the issue quotes (0.167)."""
    task = AddingTask(AddingOptions(seq_len=10, train_size=10, valid_size=20_000, test_size=10), {})
    task.prepare()
    assert task.baseline()["valid"]["mse"] == pytest.approx(1 / 6, abs=0.005)


def test_same_seed_same_data_and_epochs_reshuffle_identically_across_processes():
    a, b = (AddingTask(AddingOptions(seq_len=8, train_size=64, valid_size=8, test_size=8), {}) for _ in range(2))
    a.prepare(), b.prepare()
    assert torch.equal(a.splits["test"][0], b.splits["test"][0])
    one = a.batches(Plan("train", epoch=1, batch_size=16))
    two = a.batches(Plan("train", epoch=2, batch_size=16))
    assert not torch.equal(one[0][1], two[0][1])
    # two processes each take their half of the same global batch
    halves = [a.batches(Plan("train", epoch=1, batch_size=16, rank=r, world_size=2))[0][1] for r in (0, 1)]
    torch.testing.assert_close(torch.cat(halves), one[0][1])


def test_metrics_are_sums_divided_once():
    task = AddingTask(AddingOptions(seq_len=6, train_size=8, valid_size=30, test_size=8), {})
    task.prepare()
    x, y = task.splits["valid"]

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 1), 0.5)

    m = evaluate(task, Constant(), "valid")
    assert m["mse"] == pytest.approx(float(((y - 0.5) ** 2).mean()), rel=1e-6) and m["sequences"] == 30


def test_trains_through_the_loop_and_beats_the_baseline(tmp_path):
    cfg = build_config(None, {"train": {"task": "adding", "seq_len": 8, "train_size": 2000, "valid_size": 200,
                                        "test_size": 200, "epochs": 4, "batch_size": 20, "lr": 1e-2,
                                        "progress": False, "out": str(tmp_path / "run")},
                              "model": {"hidden_size": 16}})
    task = cfg.make_task()
    task.prepare()
    result = Loop(cfg, task).fit()
    assert result["test"]["mse"] < 0.5 * task.baseline()["test"]["mse"]
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    assert loaded.task.name == "adding" and loaded.model.config.hidden_size == 16


def test_cli_task_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "adding", "--seq-len", "6", "--train-size", "200", "--valid-size", "50",
                 "--test-size", "50", "--epochs", "1", "--hidden-size", "8", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "adding problem, T=6" in text and "always predict 1" in text and "MSE" in text
    assert main(["eval", str(out / "best.safetensors"), "--split", "valid"]) == 0
    assert "MSE" in capsys.readouterr().out
    assert main(["eval", str(out / "best.safetensors"), "--data", "ptb"]) == 2  # the data is generated
    assert "--data does not apply to task 'adding'" in capsys.readouterr().err
    rc = main(["train", "--task", "adding", "--level", "char", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--level is not an option of task 'adding'" in err
    rc = main(["sample", str(out / "best.safetensors")])
    assert rc == 2 and "needs a language model" in capsys.readouterr().err
