import math

import pytest
import torch

from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.train.config import PRESETS, build_config
from rnnkit.train.lm_data import prepare_lm_data
from rnnkit.train.trainer import LMTrainer, load_model


def _config(tiny_corpus, out, **train):
    base = {"data": str(tiny_corpus), "level": "char", "batch_size": 8, "bptt": 12, "epochs": 2,
            "progress": False, "out": str(out), "log_every": 1, "lr": 3e-3}
    model = {"embedding_dim": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.2}
    return build_config(None, {"train": {**base, **train}, "model": model})


def _params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_is_bit_exact(tiny_corpus, tmp_path, optimizer):
    """2N steps straight == N steps, stop, new process state, resume N more (dropout on)."""
    n = 7
    straight = LMTrainer(_config(tiny_corpus, tmp_path / "a", max_steps=2 * n, optimizer=optimizer),
                         prepare_lm_data(_config(tiny_corpus, tmp_path / "a").train))
    straight.fit()

    cfg = _config(tiny_corpus, tmp_path / "b", max_steps=n, optimizer=optimizer)
    first = LMTrainer(cfg, prepare_lm_data(cfg.train))
    first.fit()
    torch.manual_seed(1234)  # a different RNG state in the "new process"
    cfg2 = _config(tiny_corpus, tmp_path / "b", max_steps=2 * n, optimizer=optimizer)
    second = LMTrainer(cfg2, prepare_lm_data(cfg2.train))
    second.resume()
    assert second.progress.step == n
    second.fit()
    a, b = _params(straight), _params(second)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_crosses_epoch_boundary(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path / "a", epochs=2)
    data = prepare_lm_data(cfg.train)
    straight = LMTrainer(cfg, data)
    straight.fit()
    per_epoch = len(straight.windows)
    cfg_b = _config(tiny_corpus, tmp_path / "b", max_steps=per_epoch + 3)
    LMTrainer(cfg_b, data).fit()
    resumed = LMTrainer(_config(tiny_corpus, tmp_path / "b"), data)
    resumed.resume()
    resumed.fit()
    for k, v in _params(straight).items():
        assert torch.equal(v, _params(resumed)[k]), k


def test_resume_rejects_other_architecture(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path, max_steps=2)
    data = prepare_lm_data(cfg.train)
    LMTrainer(cfg, data).fit()
    other = build_config(None, {"train": {"data": str(tiny_corpus), "level": "char", "out": str(tmp_path),
                                          "progress": False},
                                "model": {"embedding_dim": 8, "hidden_size": 32}})
    with pytest.raises(CheckpointError, match="different architecture: .*hidden_size: checkpoint 16 vs config 32"):
        LMTrainer(other, data).resume()


def test_clip_norm_logs_pre_clip_norm_and_bounds_update(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path, clip_norm=1e-3, optimizer="sgd", lr=1.0, max_steps=1)
    trainer = LMTrainer(cfg, prepare_lm_data(cfg.train))
    before = _params(trainer)
    loss, norm = trainer.train_step(trainer.windows[0])
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    clipped = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert norm > 1e-2, "pre-clip norm should be the raw norm"
    assert clipped == pytest.approx(1e-3, rel=1e-4)
    step = torch.linalg.vector_norm(torch.stack([(v - before[k]).norm() for k, v in _params(trainer).items()
                                                 if not k.startswith("decoder.weight") or True]))
    assert step <= 1e-3 * 1.0001 + 1e-7


def test_clip_value(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path, clip_value=1e-4, max_steps=1)
    trainer = LMTrainer(cfg, prepare_lm_data(cfg.train))
    trainer.train_step(trainer.windows[0])
    for p in trainer.model.parameters():
        assert p.grad.abs().max() <= 1e-4


def test_training_reduces_loss_and_writes_metrics(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path, epochs=3, lr=1e-2)
    trainer = LMTrainer(cfg, prepare_lm_data(cfg.train))
    first = trainer.evaluate(trainer.data.valid)["nll"]
    result = trainer.fit()
    assert result["valid"]["nll"] < first - 0.5
    assert result["valid"]["bpc"] == pytest.approx(result["valid"]["nll"] / math.log(2))
    records = trainer.log.read()
    assert {r["split"] for r in records} == {"train", "valid", "final"}
    model, vocab, _ = load_model(tmp_path / "best.safetensors")
    assert len(vocab) == model.config.vocab_size


def test_early_stopping(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path, epochs=50, lr=50.0, optimizer="sgd", patience=1, clip_norm=None)
    result = LMTrainer(cfg, prepare_lm_data(cfg.train)).fit()
    assert result["stopped_by"] == "early_stopping" and result["epochs_completed"] < 50


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
    cfg = build_config("ptb-small", overrides={"train": {"data": str(tiny_corpus), "level": "word"}})
    trainer = LMTrainer.__new__(LMTrainer)
    trainer.cfg = cfg.train
    assert [trainer.lr_for_epoch(e) for e in range(1, 8)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("file,pattern", [
    ({"train": {"bogus": 1}}, "unknown key 'bogus' in \\[train\\]"),
    ({"train": {"lr": "fast"}}, "\\[train\\] lr must be float, got str"),
    ({"train": {"epochs": 1.5}}, "\\[train\\] epochs must be int"),
    ({"model": {"cell": "transformer"}}, "cell must be one of"),
    ({"optim": {}}, "unknown section \\[optim\\]"),
    ({"train": {"bptt_k1": 99, "bptt": 10}}, "bptt_k1 must be in"),
])
def test_config_errors(file, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_config(None, file)


def test_truncated_bptt_k1_less_than_k2_trains(tiny_corpus, tmp_path):
    cfg = _config(tiny_corpus, tmp_path, bptt=12, bptt_k1=4, max_steps=5)
    trainer = LMTrainer(cfg, prepare_lm_data(cfg.train))
    result = trainer.fit()
    assert result["steps"] == 5 and math.isfinite(result["valid"]["nll"])


def test_sigterm_saves_a_checkpoint(tiny_corpus, tmp_path):
    import os
    import signal

    cfg = _config(tiny_corpus, tmp_path, max_steps=50)
    trainer = LMTrainer(cfg, prepare_lm_data(cfg.train))
    original = trainer.train_step

    def step_then_terminate(w):
        out = original(w)
        if trainer.progress.step == 2:  # the third update: the signal lands mid-step
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer.train_step = step_then_terminate
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        trainer.fit()
    resumed = LMTrainer(cfg, prepare_lm_data(cfg.train))
    resumed.resume()
    assert resumed.progress.step == 3 and resumed.progress.elapsed > 0  # the third update completed
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    assert oct((tmp_path / "checkpoint.safetensors").stat().st_mode & 0o777) != oct(0o600)
