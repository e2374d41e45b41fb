"""Teacher forcing, free running and scheduled sampling as options of the LM task,
through the one loop."""
import pytest
import torch

from rnnkit.cli import main
from rnnkit.errors import ConfigError
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop


def _fit(tiny_corpus, out, resume=False, **train):
    base = {"data": str(tiny_corpus), "level": "char", "batch_size": 4, "bptt": 10, "progress": False,
            "out": str(out), "max_steps": 6, "lr": 1e-2}
    cfg = build_config(None, {"train": {**base, **train},
                              "model": {"embedding_dim": 8, "hidden_size": 12, "num_layers": 1, "dropout": 0.1}})
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    loop.open(resume=resume)
    loop.fit()
    return {k: v.clone() for k, v in loop.model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_scheduled_with_probability_one_is_teacher_forcing(tiny_corpus, tmp_path):
    teacher = _fit(tiny_corpus, tmp_path / "t")
    always = _fit(tiny_corpus, tmp_path / "s", regime="scheduled", schedule="linear", schedule_k=1.0, schedule_c=0.0)
    assert _same(teacher, always)


def test_scheduled_with_probability_zero_is_free_running(tiny_corpus, tmp_path):
    free = _fit(tiny_corpus, tmp_path / "f", regime="free")
    never = _fit(tiny_corpus, tmp_path / "s", regime="scheduled", schedule="linear", schedule_k=0.0, schedule_c=0.0)
    assert _same(free, never)
    assert not _same(free, _fit(tiny_corpus, tmp_path / "t"))


@pytest.mark.parametrize("feed,grad", [("sample", "stop"), ("soft", "straight_through")])
def test_resuming_mid_schedule_continues_the_same_coin_flips(tiny_corpus, tmp_path, feed, grad):
    opts = dict(regime="scheduled", schedule="exponential", schedule_k=0.9, feed=feed, feed_grad=grad)
    straight = _fit(tiny_corpus, tmp_path / "a", max_steps=8, **opts)
    _fit(tiny_corpus, tmp_path / "b", max_steps=4, **opts)
    torch.manual_seed(99)
    resumed = _fit(tiny_corpus, tmp_path / "b", max_steps=8, resume=True, **opts)
    assert _same(straight, resumed)


@pytest.mark.parametrize("train,pattern", [
    ({"regime": "professor2"}, "regime must be one of \\('teacher', 'free', 'scheduled'\\)"),
    ({"regime": "scheduled", "schedule": "cosine"}, "schedule must be one of"),
    ({"regime": "scheduled", "schedule": "linear", "schedule_c": -0.1}, "decay schedule_c >= 0"),
    ({"feed": "beam"}, "feed must be one of"),
    ({"task": "adding", "regime": "free"}, "unknown key 'regime' in \\[train\\] for task 'adding'"),
])
def test_bad_regime_options(train, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_config(None, {"train": train})


def test_regime_flag_on_a_task_without_feedback(tmp_path, capsys):
    assert main(["train", "--task", "adding", "--regime", "free", "--out", str(tmp_path / "o")]) == 2
    assert "--regime is not an option of task 'adding'" in capsys.readouterr().err


def test_regimes_need_whole_windows(tiny_corpus, tmp_path):
    from rnnkit.errors import RnnkitError

    with pytest.raises(RnnkitError, match="needs bptt_k1 = bptt"):
        _fit(tiny_corpus, tmp_path / "k", regime="free", bptt_k1=5)
