"""Models whose outputs feed back into their inputs, and how they are trained.

**The step-wise decoding contract.** A model that feeds back implements

* ``step(input_t, state) -> (output_t, state)``: one time step;
* ``feedback(output_t, feed, grad, generator) -> input_{t+1}``: how an output becomes
  the next input (``feed``: ``"argmax"`` token, ``"sample"``d token, ``"soft"``
  expected embedding; the predicted value for regression);
* ``mix(teacher (B,) bool, true_input_t, fed_input_t) -> input_t``: per-sequence choice.

Sampling, free running and the training regimes below use only these, so a new
feedback model (a seq2seq decoder, a forecaster) gets all of them.

**Regimes** (which input each step sees while training):

* ``teacher``: the true previous token (teacher forcing); steps decouple, so the whole
  window runs in one parallel pass;
* ``free``: the model's own previous output (free running);
* ``scheduled``: per token, the true one with probability ``p_i`` and the model's own
  otherwise, ``p_i`` decaying with the global update ``i`` (Bengio et al. 2015):
  linear ``max(min, k - c i)``, exponential ``max(min, k^i)``, inverse sigmoid
  ``k / (k + exp(i / k))``;
* ``professor`` (Lamb et al. 2016): teacher forcing plus a term that makes the
  free-running hidden-state sequence indistinguishable, to a discriminator trained
  alongside (:class:`BehaviourDiscriminator`), from the teacher-forced one.

The gradient through a fed-back value is stopped (``grad="stop"``: the fed token is a
constant, as in Bengio et al.) or passed straight through (``grad="straight_through"``:
forward uses the hard token's embedding, backward the softmax's; with ``feed="soft"``
the expected embedding is differentiated exactly).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

FEEDS = ("argmax", "sample", "soft")
GRADS = ("stop", "straight_through")
REGIMES = ("teacher", "free", "scheduled", "professor")
SCHEDULES = ("linear", "exponential", "inverse_sigmoid")


def teacher_probability(regime: str, step: int, schedule: str = "inverse_sigmoid", k: float = 1000.0,
                        c: float = 0.0, minimum: float = 0.0) -> float:
    """Probability that a training step sees the true input, at global update ``step``."""
    if regime in ("teacher", "professor"):
        return 1.0
    if regime == "free":
        return 0.0
    if schedule == "linear":
        return max(minimum, min(1.0, k - c * step))
    if schedule == "exponential":
        return max(minimum, k ** step)
    return max(minimum, k / (k + math.exp(min(step / k, 700.0))))


def check_schedule(schedule: str, k: float, c: float, minimum: float) -> str | None:
    """What is wrong with a schedule's constants, or None."""
    if schedule not in SCHEDULES:
        return f"schedule must be one of {SCHEDULES}, got {schedule!r}"
    if not 0.0 <= minimum <= 1.0:
        return f"schedule_min must be in [0, 1], got {minimum}"
    if schedule == "linear" and not (0.0 <= k <= 1.0 and c >= 0.0):
        return f"linear schedule: schedule_k must be in [0, 1] and the decay schedule_c >= 0, got {k} and {c}"
    if schedule == "exponential" and not 0.0 < k <= 1.0:
        return f"exponential schedule: schedule_k must be in (0, 1], got {k}"
    if schedule == "inverse_sigmoid" and k < 1.0:
        return f"inverse_sigmoid schedule: schedule_k must be >= 1, got {k}"
    return None


@dataclass(frozen=True)
class Feedback:
    """One unrolled pass: ``teacher[b, t]`` True feeds the true input at step t, False
    the model's own output of step t-1 (step 0 always sees the true input)."""

    teacher: Tensor                       # (B, T) bool
    feed: str = "argmax"
    grad: str = "stop"
    generator: torch.Generator | None = None


def unroll(model, inputs: Tensor, state, fb: Feedback):
    """Run ``model.step`` over ``inputs (B, T, ...)``, feeding back outputs where
    ``fb.teacher`` says so. Returns ``(outputs (B, T, ...), state)``."""
    outputs = []
    for t, x_t in enumerate(inputs.unbind(1)):  # unbind: slicing inside the loop would make each
        # step's backward write a whole (B, T, ...) gradient of zeros when the inputs need one
        if t > 0 and not bool(fb.teacher[:, t].all()):
            fed = model.feedback(outputs[-1], fb.feed, fb.grad, fb.generator)
            x_t = model.mix(fb.teacher[:, t], x_t, fed)
        y_t, state = model.step(x_t, state)
        outputs.append(y_t)
    return torch.stack(outputs, 1), state


@torch.no_grad()
def closed_loop(model, context: Tensor, horizon: int) -> Tensor:
    """Free running of a one-step-ahead model (the step contract): read ``context
    (B, T0, C)``, then predict ``horizon`` steps, each from the previous prediction ->
    ``(B, horizon, C)``."""
    y, state = model(context)
    preds, last = [], y[:, -1]
    for _ in range(horizon):
        preds.append(last)
        last, state = model.step(last, state)
    return torch.stack(preds, 1)


def choose_tokens(logits: Tensor, feed: str, generator: torch.Generator | None = None) -> Tensor:
    """``(B, V)`` logits -> ``(B,)`` token ids, the most likely or a sample."""
    if feed == "argmax":
        return logits.argmax(-1)
    probs = logits.detach().float().softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class BehaviourDiscriminator(torch.nn.Module):
    """Professor forcing's discriminator (Lamb et al. 2016): a small bidirectional GRU
    over a sequence of hidden states ``(B, T, H)`` -> the logit that the sequence came
    from a teacher-forced run rather than a free-running one ``(B,)``."""

    def __init__(self, hidden_size: int, width: int = 64) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(hidden_size, width, batch_first=True, bidirectional=True)
        self.head = torch.nn.Sequential(torch.nn.Linear(2 * width, width), torch.nn.ReLU(), torch.nn.Linear(width, 1))

    def forward(self, behaviour: Tensor) -> Tensor:
        out, _ = self.rnn(behaviour)
        return self.head(out.mean(1)).squeeze(-1)


class capture_outputs:
    """Collects what ``module`` returns (its first output) on every call inside the
    block, e.g. a language model's top-layer hidden states during an unrolled pass."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.outputs = module, []

    def __enter__(self) -> "capture_outputs":
        self.handle = self.module.register_forward_hook(lambda m, args, out: self.outputs.append(out[0]))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def sequence(self) -> Tensor:
        """The captured ``(B, t, H)`` pieces joined over time."""
        return torch.cat(self.outputs, 1)
