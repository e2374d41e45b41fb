"""The copy memory problem: generated data laid out as Arjovsky et al. describe, the
memoryless baseline, metrics from sums, and training through the one loop."""
import math

import pytest
import torch
import torch.nn.functional as F

import rnnkit.tasks
from rnnkit.cli import main
from rnnkit.errors import ConfigError
from rnnkit.tasks.copy_memory import (BLANK, DELIMITER, VOCAB, CopyMemoryOptions, CopyMemoryTask, copy_memory,
                                      memoryless_nll)
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop, evaluate
from rnnkit.train.saved import load_model
from rnnkit.train.task import Plan


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(rnnkit.tasks.TASKS, "copy_memory", CopyMemoryTask)


def make(**kw) -> CopyMemoryTask:
    task = CopyMemoryTask(CopyMemoryOptions(**{"seq_len": 7, "train_size": 64, "valid_size": 30,
                                               "test_size": 20, **kw}), {})
    task.prepare()
    return task


@pytest.mark.parametrize("T,K", [(100, 10), (1, 10), (5, 3)])
def test_inputs_and_targets_are_laid_out_as_in_the_paper(T, K):
    x, y = (t.long() for t in copy_memory(300, T, torch.Generator().manual_seed(0), K))
    assert x.shape == y.shape == (300, T + 2 * K)
    data = x[:, :K]
    assert ((data >= 1) & (data <= 8)).all() and len(data.unique()) == 8  # all 8 symbols used, no others
    assert (x[:, K:T + K - 1] == BLANK).all()                 # T - 1 blanks
    assert (x[:, T + K - 1] == DELIMITER).all()               # the delimiter
    assert (x[:, T + K:] == BLANK).all()                      # K more blanks
    assert (y[:, :T + K] == BLANK).all()                      # T + K blank targets
    assert torch.equal(y[:, T + K:], data)                    # then the symbols, in order
    assert VOCAB == 10 and int(max(x.max(), y.max())) <= 9


def test_the_default_is_the_papers_setting():
    o = CopyMemoryOptions()
    assert (o.seq_len, o.copy_len) == (100, 10)
    x, y = copy_memory(2, o.seq_len, torch.Generator().manual_seed(0))
    assert x.shape == (2, 120)


def test_memoryless_baseline_equals_the_hand_computed_cross_entropy():
    """10 ln 8 / (T + 20): blanks are certain, each copied symbol is one of 8."""
    assert memoryless_nll(100) == pytest.approx(10 * 2.0794415416798357 / 120)  # 0.17329
    assert memoryless_nll(100) == pytest.approx(0.173287, abs=1e-6)
    task = make(seq_len=100)
    base = task.baseline()
    assert base["name"] == "memoryless"
    assert base["test"]["loss"] == pytest.approx(0.173287, abs=1e-6)
    assert base["valid"]["accuracy"] == pytest.approx(1 / 8)

    class Memoryless(torch.nn.Module):
        """Blank with certainty before the copy, uniform over the 8 symbols during it."""

        def forward(self, x):
            logits = torch.full((*x.shape, VOCAB), -1e4)
            logits[:, :-10, BLANK] = 0.0
            logits[:, -10:, 1:9] = 0.0
            return logits, None

    m = evaluate(task, Memoryless(), "test")
    assert m["loss"] == pytest.approx(base["test"]["loss"], rel=1e-5)


def test_metrics_are_sums_divided_once(monkeypatch):
    """Batches of unequal size (500 + 200): the mean over all steps, not of batch means."""
    task = make(seq_len=4, copy_len=3, valid_size=700)
    x, y = (t.long() for t in task.splits["valid"])
    torch.manual_seed(0)
    emb = torch.randn(VOCAB, VOCAB)

    class InputDependent(torch.nn.Module):
        def forward(self, x):
            return emb[x] + torch.roll(emb[x], 3, dims=1), None

    m = evaluate(task, InputDependent(), "valid")
    logits = InputDependent()(x)[0]
    assert m["loss"] == pytest.approx(float(F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))), rel=1e-6)
    hit = logits[:, -3:].argmax(-1) == y[:, -3:]
    assert m["accuracy"] == pytest.approx(float(hit.float().mean()))
    assert m["solved"] == pytest.approx(float(hit.all(1).float().mean()))
    assert m["sequences"] == 700
    # metrics() divides the sums it is given, once
    assert task.metrics({"nll": 6.0, "steps": 4, "correct": 1, "copied": 4, "solved": 0, "sequences": 2}) == {
        "loss": 1.5, "nll": 1.5, "accuracy": 0.25, "solved": 0.0, "sequences": 2, "tokens": 4}


def test_training_loss_is_the_batch_mean_and_its_stats_give_it_back():
    task = make(seq_len=3, copy_len=2)
    model = task.build_model()
    model.train()
    out = task.step(model, task.batches(Plan("train", batch_size=8))[0])
    assert task.metrics(out.stats)["loss"] == pytest.approx(out.loss.item(), rel=1e-9)
    assert out.loss.requires_grad


def test_same_seed_same_data_and_epochs_reshuffle_identically_across_processes():
    a, b = make(), make()
    assert torch.equal(a.splits["test"][0], b.splits["test"][0])
    assert not torch.equal(a.splits["train"][0][:20], make(data_seed=7).splits["train"][0][:20])
    one = a.batches(Plan("train", epoch=1, batch_size=16))
    two = a.batches(Plan("train", epoch=2, batch_size=16))
    assert not torch.equal(one[0][0], two[0][0])
    halves = [a.batches(Plan("train", epoch=1, batch_size=16, rank=r, world_size=2))[0][0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), one[0][0])
    assert one[0][0].dtype == torch.uint8 and len(one) == 4


@pytest.mark.parametrize("key,value", [("seq_len", 0), ("copy_len", 0), ("train_size", 0), ("valid_size", -1),
                                       ("test_size", 0)])
def test_bad_options_are_config_errors_naming_the_option(registered, key, value):
    with pytest.raises(ConfigError, match=key):
        CopyMemoryOptions(**{key: value})
    with pytest.raises(ConfigError, match=rf"\[train\] {key}"):
        build_config(None, {"train": {"task": "copy_memory", key: value}})
    with pytest.raises(ConfigError, match="seq_len"):
        build_config(None, {"train": {"task": "copy_memory", "seq_len": "long"}})


def test_trains_through_the_loop_and_beats_the_memoryless_baseline(registered, tmp_path):
    cfg = build_config(None, {"train": {"task": "copy_memory", "seq_len": 5, "copy_len": 3, "train_size": 2000,
                                        "valid_size": 200, "test_size": 200, "epochs": 3, "batch_size": 32,
                                        "lr": 1e-2, "progress": False, "out": str(tmp_path / "run")},
                              "model": {"hidden_size": 32, "num_layers": 1, "embedding_dim": 16}})
    task = cfg.make_task()
    task.prepare()
    result = Loop(cfg, task).fit()
    base = task.baseline()["test"]
    assert base["loss"] == pytest.approx(3 * math.log(8) / 11)
    assert result["test"]["loss"] < 0.9 * base["loss"]
    assert result["test"]["accuracy"] > 0.2   # chance: 1/8
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    assert loaded.task.name == "copy_memory" and loaded.task.options.copy_len == 3
    assert loaded.model.config.vocab_size == VOCAB


def test_cli(registered, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "copy_memory", "--seq-len", "3", "--copy-len", "2", "--train-size", "64",
                 "--valid-size", "16", "--test-size", "16", "--epochs", "1", "--hidden-size", "8",
                 "--num-layers", "1", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "copy memory, T=3 (7 steps)" in text and "memoryless" in text and "copy accuracy" in text
    assert main(["eval", str(out / "best.safetensors"), "--split", "valid"]) == 0
    text = capsys.readouterr().out
    assert "copy accuracy" in text and "over 112 tokens" in text  # 16 sequences of 7 steps
