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
    ({"regime": "professor2"}, "regime must be one of \\('teacher', 'free', 'scheduled', 'professor'\\)"),
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


def _professor_loop(tiny_corpus, out, **train):
    base = {"data": str(tiny_corpus), "level": "char", "batch_size": 4, "bptt": 8, "progress": False,
            "out": str(out), "max_steps": 4, "regime": "professor", "log_every": 1, "discriminator_width": 8}
    cfg = build_config(None, {"train": {**base, **train}, "model": {"embedding_dim": 8, "hidden_size": 12,
                                                                      "num_layers": 1}})
    task = cfg.make_task()
    task.prepare()
    return Loop(cfg, task)


def test_professor_losses_reach_only_their_own_parameters(tiny_corpus, tmp_path):
    loop = _professor_loop(tiny_corpus, tmp_path / "p")
    model_params, d_params = list(loop.model.parameters()), list(loop.aux["discriminator"].parameters())
    batch = loop.task.batches(loop.plan("train"))[0]
    loop.net.train()
    out = loop.task.step(loop.net, batch, None)
    want_model = torch.autograd.grad(out.loss, model_params, retain_graph=True)
    want_d = torch.autograd.grad(out.aux_losses["discriminator"], d_params, retain_graph=True)
    through_d = torch.autograd.grad(out.loss, d_params, retain_graph=True)
    assert any(g.abs().sum() > 0 for g in through_d)  # the adversarial term does pass through D...
    loop._aux_backward(out)
    for p, g in zip(model_params, want_model):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(d_params, want_d):  # ...but D is trained on its own loss alone
        torch.testing.assert_close(p.grad, g)


def test_professor_trains_logs_and_resumes_exactly(tiny_corpus, tmp_path):
    import json

    straight = _professor_loop(tiny_corpus, tmp_path / "a", max_steps=6)
    straight.fit()
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert all(0 <= r["d_accuracy"] <= 1 and "d_loss" in r and "adversarial" in r for r in train)
    _professor_loop(tiny_corpus, tmp_path / "b", max_steps=3).fit()
    resumed = _professor_loop(tiny_corpus, tmp_path / "b", max_steps=6)
    resumed.open(resume=True)
    resumed.fit()
    for a, b in ((straight.model, resumed.model), (straight.aux, resumed.aux)):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k
