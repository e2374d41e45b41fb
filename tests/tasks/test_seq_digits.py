"""Sequential 8x8 digits: pixels in time, a fixed permutation, accuracy from sums."""
import pytest
import torch

from rnnkit.tasks.seq_digits import SeqDigitsOptions, SeqDigitsTask, load_digits_sequences
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop, evaluate

pytest.importorskip("sklearn")


def _task(**kw):
    task = SeqDigitsTask(SeqDigitsOptions(**kw), {})
    task.prepare()
    return task


def test_pixels_row_by_row_and_splits_partition_the_images():
    x, y = load_digits_sequences()
    from sklearn.datasets import load_digits

    torch.testing.assert_close(x[5, :, 0], torch.tensor(load_digits().data[5], dtype=torch.float32) / 16)
    task = _task()
    sizes = {k: len(v[1]) for k, v in task.splits.items()}
    assert sizes == {"train": 1257, "valid": 180, "test": 360}
    rows = torch.cat([v[0][:, :, 0] for v in task.splits.values()])
    assert torch.unique(rows, dim=0).shape[0] == torch.unique(x[:, :, 0], dim=0).shape[0]  # every image once


def test_permuted_variant_uses_one_fixed_permutation():
    plain, perm = _task(), _task(permuted=True)
    p = perm.permutation
    assert sorted(p.tolist()) == list(range(64)) and not torch.equal(p, torch.arange(64))
    for split in ("train", "test"):
        torch.testing.assert_close(perm.splits[split][0], plain.splits[split][0][:, p])
    assert torch.equal(_task(permuted=True).permutation, p)


def test_accuracy_is_correct_over_seen():
    task = _task()

    class Votes(torch.nn.Module):  # always class 3
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 3] = 1.0
            return out

    m = evaluate(task, Votes(), "test")
    assert m["accuracy"] == pytest.approx(float((task.splits["test"][1] == 3).float().mean()))


def test_an_lstm_learns_it_through_the_loop(tmp_path):
    cfg = build_config(None, {"train": {"task": "seq_digits", "epochs": 3, "progress": False, "out": str(tmp_path / "r"),
                                        "batch_size": 32, "lr": 1e-2},
                              "model": {"hidden_size": 32}})
    task = cfg.make_task()
    task.prepare()
    result = Loop(cfg, task).fit()
    assert result["test"]["accuracy"] > 0.2  # chance is 0.1
