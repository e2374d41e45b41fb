"""The step-wise decoding contract and the feedback regimes of the language model."""
import json
import math
from pathlib import Path

import pytest
import torch

from rnnkit.generate import sample
from rnnkit.models import LanguageModel, LMConfig
from rnnkit.models.feedback import Feedback, check_schedule, teacher_probability
from rnnkit.train.saved import load_model

DATA = Path(__file__).parents[1] / "train" / "data"


def _model(**kw):
    torch.manual_seed(0)
    return LanguageModel(LMConfig(vocab_size=11, embedding_dim=6, hidden_size=8, num_layers=2, **kw)).eval()


def test_sampling_through_the_step_contract_reproduces_the_samples_before_it():
    """Token ids recorded with `rnnkit sample`'s sampler before the contract existed (same seed)."""
    before = json.loads((DATA / "lm_samples_before_step_contract.json").read_text())
    m = load_model(DATA / "lm_model_v0.safetensors")
    cases = {"t1": dict(temperature=1.0), "t05_topk": dict(temperature=0.5, top_k=5), "greedy": dict(greedy=True),
             "prime": dict(prime=torch.tensor([[3, 4, 5, 6]]), temperature=0.8, top_p=0.9)}
    for name, kw in cases.items():
        g = torch.Generator().manual_seed(7)
        got = sample(m.model, batch_size=1 if name == "prime" else 3, max_new_tokens=40, start_id=m.task.start_id(),
                     generator=g, **kw)
        assert got == before[name], name


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm_peephole"])
def test_step_equals_the_parallel_pass(cell):
    model = _model(cell=cell)
    tokens = torch.randint(0, 11, (3, 9))
    full, _ = model(tokens)
    state, steps = None, []
    for t in range(9):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-6, rtol=1e-6)


def test_all_teacher_unroll_equals_teacher_forcing():
    model = _model()
    tokens = torch.randint(0, 11, (4, 7))
    fb = Feedback(torch.ones(4, 7, dtype=torch.bool))
    torch.testing.assert_close(model(tokens, feedback=fb)[0], model(tokens)[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("feed", ["argmax", "sample"])
def test_free_running_feeds_the_models_own_tokens(feed):
    """No teacher after step 0: the outputs equal a loop that feeds its own choices."""
    model = _model()
    tokens = torch.randint(0, 11, (2, 6))
    fb = Feedback(torch.zeros(2, 6, dtype=torch.bool), feed=feed, generator=torch.Generator().manual_seed(3))
    free, _ = model(tokens, feedback=fb)
    g = torch.Generator().manual_seed(3)
    x, state, outs = tokens[:, 0], None, []
    for _ in range(6):
        logits, state = model.step(x, state)
        outs.append(logits)
        x = logits.argmax(-1) if feed == "argmax" else torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    torch.testing.assert_close(free, torch.stack(outs, 1))
    # the true tokens after step 0 do not matter
    other = tokens.clone()
    other[:, 1:] = (other[:, 1:] + 1) % 11
    fb2 = Feedback(fb.teacher, feed=feed, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(other, feedback=fb2)[0], free)


def test_gradient_stopped_or_straight_through():
    """Loss on the last step only: with the gradient stopped at the fed-back tokens the
    decoder bias gets exactly d(sum of last logits)/d(bias) = batch size; straight
    through, earlier steps' logits (through the softmax) add to it."""
    model = _model().train()
    tokens = torch.randint(0, 11, (2, 5))
    for grad in ("stop", "straight_through"):
        model.zero_grad()
        fb = Feedback(torch.zeros(2, 5, dtype=torch.bool), feed="argmax", grad=grad)
        logits, _ = model(tokens, feedback=fb)
        logits[:, -1].sum().backward()
        direct_only = torch.allclose(model.decoder.bias.grad, torch.full((11,), 2.0))
        assert direct_only == (grad == "stop"), grad


def test_soft_feedback_is_the_expected_embedding():
    model = _model()
    logits = torch.randn(3, 11)
    fed = model.feedback(logits, "soft", "stop")
    torch.testing.assert_close(fed, logits.softmax(-1) @ model.encoder.weight)


@pytest.mark.parametrize("schedule,k,c,step,expected", [
    ("linear", 1.0, 1e-3, 250, 0.75), ("linear", 1.0, 1e-3, 5000, 0.0), ("exponential", 0.99, 0.0, 100, 0.99 ** 100),
    ("inverse_sigmoid", 500.0, 0.0, 1000, 500 / (500 + math.exp(2))), ("inverse_sigmoid", 500.0, 0.0, 0, 500 / 501)])
def test_decays_follow_their_formulas(schedule, k, c, step, expected):
    assert teacher_probability("scheduled", step, schedule, k, c) == pytest.approx(expected, rel=1e-12)
    assert teacher_probability("teacher", step, schedule, k, c) == 1.0
    assert teacher_probability("free", step, schedule, k, c) == 0.0


@pytest.mark.parametrize("schedule,k,c,minimum,pattern", [
    ("cosine", 1.0, 0.0, 0.0, "schedule must be one of"), ("linear", 1.0, -0.1, 0.0, "decay schedule_c >= 0"),
    ("exponential", 1.5, 0.0, 0.0, "in \\(0, 1\\]"), ("inverse_sigmoid", 0.5, 0.0, 0.0, ">= 1"),
    ("linear", 1.0, 0.1, 1.5, "schedule_min")])
def test_bad_schedules_name_the_option(schedule, k, c, minimum, pattern):
    import re

    assert re.search(pattern, check_schedule(schedule, k, c, minimum))
