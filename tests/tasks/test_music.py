"""The music task: next-frame NLL per time step, padding never counted, trained by the one loop."""
import math

import pytest
import torch
from shared_data import DATA, needs

from rnnkit.models import PianoRollConfig, PianoRollModel
from rnnkit.tasks import TASKS
from rnnkit.tasks.music import MusicOptions, MusicTask, piece_batch, shift_range, transpose
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop, evaluate
from rnnkit.train.task import Plan

JSB = "jsb_chorales/jsb-chorales-quarter.json"


def roll(steps: int, seed: int) -> torch.Tensor:
    return (torch.rand(steps, 88, generator=torch.Generator().manual_seed(seed)) < 0.1).float()


def tiny_model() -> PianoRollModel:
    torch.manual_seed(0)
    return PianoRollModel(PianoRollConfig(hidden_size=10)).eval()


def task_with(splits) -> MusicTask:
    task = MusicTask(MusicOptions(), {})
    task.splits = splits
    return task


def test_inputs_are_targets_behind_a_start_frame():
    a, b = roll(5, 0), roll(3, 1)
    x, y, n = piece_batch([a, b])
    assert x.shape == y.shape == (2, 5, 88) and n.tolist() == [5, 3]
    assert not x[:, 0].any()
    assert torch.equal(x[0, 1:], a[:-1]) and torch.equal(y[0], a)
    assert torch.equal(y[1, :3], b) and not y[1, 3:].any()


def test_padding_never_changes_the_loss():
    task, model = task_with({}), tiny_model()
    short, long = roll(4, 0), roll(11, 1)
    together = task.step(model, piece_batch([short, long]))
    alone = [task.step(model, piece_batch([r])) for r in (short, long)]
    assert together.stats["steps"] == 15
    assert together.stats["nll"] == pytest.approx(sum(o.stats["nll"] for o in alone), rel=1e-6)
    # a short piece's nll is the same whatever it is padded against
    x, y, n = piece_batch([short, long])
    per_piece = task.step(model, (x[:1], y[:1], n[:1])).stats["nll"]
    assert per_piece == pytest.approx(alone[0].stats["nll"], rel=1e-6)


def test_nll_per_step_by_hand():
    """Two keys matter: a model whose logits are constant, a two-step piece."""
    p = torch.full((88,), 0.1)
    p[0], p[1] = 0.5, 0.8

    class Constant(torch.nn.Module):
        def forward(self, x, state=None, lengths=None):
            return torch.logit(p).expand(*x.shape[:2], 88), None

    piece = torch.zeros(2, 88)
    piece[0, 0] = 1                          # step 0: key 0 on
    piece[1, 0] = piece[1, 1] = 1            # step 1: keys 0 and 1 on
    off = 86 * -math.log(0.9)                # the other keys, off at each step
    step0 = -math.log(0.5) - math.log(0.2) + off
    step1 = -math.log(0.5) - math.log(0.8) + off
    task = task_with({"valid": [piece, piece[:1]]})
    m = evaluate(task, Constant(), "valid")
    assert m["steps"] == 3 and m["pieces"] == 2
    assert m["nll_per_step"] == pytest.approx((2 * step0 + step1) / 3, rel=1e-6)
    assert m["loss"] == m["nll_per_step"]


def test_baseline_is_the_training_frequency_of_each_key():
    train = [torch.zeros(8, 88)]
    train[0][:4, 5] = 1                       # key 5 on half the time: p = (4+1)/(8+2)
    task = task_with({"train": train, "valid": [torch.zeros(1, 88)], "test": [train[0][:1]]})
    b = task.baseline()
    off = 87 * -math.log(1 - 1 / 10)          # other keys: p = 1/10, off
    assert b["valid"]["nll_per_step"] == pytest.approx(off - math.log(0.5), rel=1e-6)
    assert b["test"]["nll_per_step"] == pytest.approx(off - math.log(0.5), rel=1e-6)


def test_transposition_stays_on_the_keyboard_and_is_off_by_default():
    r = torch.zeros(3, 88)
    r[0, 2] = r[2, 80] = 1
    assert shift_range(r, 12) == (-2, 7)
    assert torch.equal(transpose(r, -2)[0, 0], torch.tensor(1.0)) and transpose(r, 7)[2, 87] == 1
    assert MusicOptions().transpose == 0
    pieces = [roll(6, i) for i in range(4)]
    plain = task_with({"train": pieces})
    shifted = MusicTask(MusicOptions(transpose=5), {})
    shifted.splits = {"train": pieces}
    plan = Plan("train", batch_size=4)
    assert torch.equal(plain.batches(plan)[0][1].sum(), shifted.batches(plan)[0][1].sum())  # notes kept
    assert torch.equal(shifted.batches(plan)[0][1], shifted.batches(plan)[0][1])             # seeded


def test_registered():
    assert TASKS["music"] is MusicTask and MusicTask.select == ("nll_per_step", "min")


@needs(JSB)
def test_training_through_the_loop_lowers_nll_per_step(tmp_path):
    cfg = build_config(None, {"train": {"task": "music", "data_dir": str(DATA), "epochs": 2, "batch_size": 16,
                                        "lr": 1e-2, "progress": False, "out": str(tmp_path / "run")},
                              "model": {"hidden_size": 16}})
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    before = evaluate(task, loop.model, "valid")["nll_per_step"]
    result = loop.fit()
    assert result["valid"]["nll_per_step"] < before - 5          # an untrained model is near 61 = 88 ln 2
    assert result["test"]["nll_per_step"] < task.baseline()["test"]["nll_per_step"] + 3
