"""The one training loop, driven by the language-model task: resume, clipping,
early stopping, schedules, signals, and equality with the pre-loop trainer."""
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.train.config import PRESETS, build_config
from rnnkit.train.loop import Loop
from rnnkit.train.metrics import MetricsLog
from rnnkit.train.saved import load_model

from curve_cases import CASES, run_case

DATA = Path(__file__).parent / "data"


def _config(tiny_corpus, out, **train):
    base = {"data": str(tiny_corpus), "level": "char", "batch_size": 8, "bptt": 12, "epochs": 2,
            "progress": False, "out": str(out), "log_every": 1, "lr": 3e-3}
    model = {"embedding_dim": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.2}
    return build_config(None, {"train": {**base, **train}, "model": model})


def _loop(cfg, resume=False):
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    loop.open(resume=resume)
    return loop


def _params(loop):
    return {k: v.detach().clone() for k, v in loop.model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_curves_as_the_trainer_before_the_loop(tiny_corpus, tmp_path, name):
    """Losses of every update, validations and final metrics, recorded with the LM-only
    trainer this loop replaced (adam + dropout + eval_every; sgd + Zaremba's summed loss +
    lr decay; TBPTT with k1 < k2 + clip_value on a fused cell)."""
    before = json.loads((DATA / "lm_curves_before_loop.json").read_text())[name]
    now = run_case(name, tiny_corpus, tmp_path / name)
    for key in ("train", "valid", "final"):
        assert len(now[key]) == len(before[key])
        assert now[key] == pytest.approx(before[key], abs=1e-6, rel=0), key


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_is_bit_exact(tiny_corpus, tmp_path, optimizer):
    """2N steps straight == N steps, stop, new process state, resume N more (dropout on)."""
    n = 7
    straight = _loop(_config(tiny_corpus, tmp_path / "a", max_steps=2 * n, optimizer=optimizer))
    straight.fit()
    _loop(_config(tiny_corpus, tmp_path / "b", max_steps=n, optimizer=optimizer)).fit()
    torch.manual_seed(1234)  # a different RNG state in the "new process"
    second = _loop(_config(tiny_corpus, tmp_path / "b", max_steps=2 * n, optimizer=optimizer), resume=True)
    assert second.progress.step == n
    second.fit()
    a, b = _params(straight), _params(second)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_crosses_epoch_boundary(tiny_corpus, tmp_path):
    straight = _loop(_config(tiny_corpus, tmp_path / "a", epochs=2))
    straight.fit()
    per_epoch = len(straight.task.batches(straight.plan("train")))
    _loop(_config(tiny_corpus, tmp_path / "b", max_steps=per_epoch + 3)).fit()
    resumed = _loop(_config(tiny_corpus, tmp_path / "b"), resume=True)
    resumed.fit()
    for k, v in _params(straight).items():
        assert torch.equal(v, _params(resumed)[k]), k


def test_resume_rejects_other_architecture(tiny_corpus, tmp_path):
    _loop(_config(tiny_corpus, tmp_path / "run", max_steps=2)).fit()
    other = build_config(None, {"train": {"data": str(tiny_corpus), "level": "char", "out": str(tmp_path / "run"),
                                          "progress": False, "batch_size": 8, "bptt": 12, "lr": 3e-3},
                                "model": {"embedding_dim": 8, "hidden_size": 32, "num_layers": 2, "dropout": 0.2}})
    with pytest.raises(ConfigError, match=r"\[model\] hidden_size: 16 -> 32"):
        _loop(other, resume=True)


def test_clip_norm_logs_pre_clip_norm_and_bounds_update(tiny_corpus, tmp_path):
    loop = _loop(_config(tiny_corpus, tmp_path / "run", clip_norm=1e-3, optimizer="sgd", lr=1.0, max_steps=1))
    before = _params(loop)
    _, norm, _ = loop.train_step(loop.task.batches(loop.plan("train"))[0])
    grads = [p.grad for p in loop.model.parameters() if p.grad is not None]
    clipped = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert norm > 1e-2, "pre-clip norm should be the raw norm"
    assert clipped == pytest.approx(1e-3, rel=1e-4)
    step = torch.linalg.vector_norm(torch.stack([(v - before[k]).norm() for k, v in _params(loop).items()]))
    assert step <= 1e-3 * 1.0001 + 1e-7


def test_clip_value(tiny_corpus, tmp_path):
    loop = _loop(_config(tiny_corpus, tmp_path / "run", clip_value=1e-4, max_steps=1))
    loop.train_step(loop.task.batches(loop.plan("train"))[0])
    for p in loop.model.parameters():
        assert p.grad.abs().max() <= 1e-4


def test_training_reduces_loss_and_writes_metrics(tiny_corpus, tmp_path):
    loop = _loop(_config(tiny_corpus, tmp_path / "run", epochs=3, lr=1e-2))
    first = loop.evaluate("valid")["nll"]
    result = loop.fit()
    assert result["valid"]["nll"] < first - 0.5
    assert result["valid"]["bpc"] == pytest.approx(result["valid"]["nll"] / math.log(2))
    assert {r["split"] for r in loop.log.read()} == {"train", "valid", "final"}
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    assert len(loaded.task.vocab) == loaded.model.config.vocab_size
    with loop.best_weights() as best:  # the in-memory best equals the file
        for k, v in loaded.model.state_dict().items():
            assert torch.equal(best.state_dict()[k], v), k


def test_early_stopping(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path / "run", epochs=50, lr=50.0, optimizer="sgd", patience=1, clip_norm=None)
    result = _loop(cfg).fit()
    assert result["stopped_by"] == "early_stopping" and result["epochs_completed"] < 50


def test_target_stops_at_the_first_validation_that_reaches_it(tiny_corpus, tmp_path):
    free = _loop(_config(tiny_corpus, tmp_path / "free", epochs=3, lr=1e-2, eval_every=2)).fit()
    curve = [r["nll"] for r in MetricsLog(tmp_path / "free" / "metrics.jsonl").read() if r["split"] == "valid"]
    steps = [r["step"] for r in MetricsLog(tmp_path / "free" / "metrics.jsonl").read() if r["split"] == "valid"]
    target = curve[len(curve) // 2]   # reached mid-run (or earlier, if the curve is not monotone)
    first = next(i for i, v in enumerate(curve) if v <= target)
    result = _loop(_config(tiny_corpus, tmp_path / "run", epochs=3, lr=1e-2, eval_every=2, target=target)).fit()
    assert result["stopped_by"] == "target" and result["steps"] == steps[first] < free["steps"]
    with pytest.raises(ConfigError, match="target"):
        _config(tiny_corpus, tmp_path / "bad", target=float("nan"))


def test_zaremba_presets_exact():
    small = PRESETS["ptb-small"]
    assert small["model"] | {} == {"cell": "lstm", "embedding_dim": 200, "hidden_size": 200, "num_layers": 2,
                                   "dropout": 0.0, "init_range": 0.1}
    assert {k: small["train"][k] for k in ("batch_size", "bptt", "epochs", "lr", "lr_decay", "lr_decay_start",
                                           "clip_norm", "sum_over_time")} == \
        {"batch_size": 20, "bptt": 20, "epochs": 13, "lr": 1.0, "lr_decay": 0.5, "lr_decay_start": 4,
         "clip_norm": 5.0, "sum_over_time": True}
    medium, large = PRESETS["ptb-medium"], PRESETS["ptb-large"]
    assert (medium["model"]["hidden_size"], medium["model"]["dropout"], medium["train"]["epochs"]) == (650, 0.5, 39)
    assert (large["model"]["hidden_size"], large["model"]["dropout"], large["train"]["clip_norm"]) == (1500, 0.65, 10.0)


def test_zaremba_lr_schedule(tiny_corpus, tmp_path):
    cfg = build_config("ptb-small", overrides={"train": {"data": str(tiny_corpus), "level": "word",
                                                         "out": str(tmp_path / "run")}})
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    assert [loop.lr_for_epoch(e) for e in range(1, 8)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]


def test_truncated_bptt_k1_less_than_k2_trains(tiny_corpus, tmp_path):
    result = _loop(_config(tiny_corpus, tmp_path / "run", bptt=12, bptt_k1=4, max_steps=5)).fit()
    assert result["steps"] == 5 and math.isfinite(result["valid"]["nll"])


def test_sigterm_saves_a_checkpoint(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path / "run", max_steps=50)
    loop = _loop(cfg)
    original = loop.train_step

    def step_then_terminate(batch):
        out = original(batch)
        if loop.progress.step == 2:  # the third update: the signal lands mid-step
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    loop.train_step = step_then_terminate
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        loop.fit()
    loop.close()
    resumed = _loop(cfg, resume=True)
    assert resumed.progress.step == 3 and resumed.progress.elapsed > 0  # the third update completed
    for k, v in loop.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    assert oct((tmp_path / "run" / "checkpoint.safetensors").stat().st_mode & 0o777) != oct(0o600)


def test_checkpoints_of_the_pre_loop_trainer_still_load(tmp_path):
    """A model file and a training checkpoint written by LMTrainer (kinds lm-model / lm-train)."""
    loaded = load_model(DATA / "lm_model_v0.safetensors")
    assert loaded.task.name == "lm" and loaded.task.level == "char" and len(loaded.task.vocab) == 24
    from_train = load_model(DATA / "lm_train_v0.safetensors")
    for k, v in loaded.model.state_dict().items():
        assert v.shape == from_train.model.state_dict()[k].shape
    tokens = torch.randint(0, 24, (2, 9))
    logits, _ = loaded.model(tokens)
    assert logits.shape == (2, 9, 24) and torch.isfinite(logits).all()


def test_fresh_run_prepares_trains_and_closes_even_on_error(tmp_path, monkeypatch):
    """fresh_run (what experiment scripts use): the task prepared, the run directory
    overwritten, and the loop closed after the block, also when the block raises."""
    from rnnkit.train.config import build_config
    from rnnkit.train.loop import fresh_run

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. a dog ran far.\n" * 30)
    cfg = build_config(None, {"train": {"data": str(corpus), "level": "char", "batch_size": 4, "bptt": 8,
                                        "max_steps": 2, "progress": False, "out": str(tmp_path / "run")},
                              "model": {"hidden_size": 8, "embedding_dim": 4, "num_layers": 1}})
    closed = []
    with fresh_run(cfg) as loop:
        monkeypatch.setattr(loop, "close", lambda real=loop.close: (closed.append(1), real()))
        result = loop.fit()
    assert result["steps"] == 2 and closed and set(closed) == {1}  # fit closes too: close is idempotent
    with pytest.raises(RuntimeError, match="boom"):
        with fresh_run(cfg) as loop:     # the finished run's directory is overwritten, not refused
            monkeypatch.setattr(loop, "close", lambda real=loop.close: (closed.append(2), real()))
            raise RuntimeError("boom")
    assert closed[-1] == 2  # closed although the block raised
