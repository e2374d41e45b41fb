"""What every task whose model feeds back its outputs shares: the regime options and
their machinery (coin flips on the loop's clock, professor forcing's discriminator).
A task mixes in :class:`FeedbackTask` and adds :class:`FeedbackOptions` to its options;
its model implements the step contract of :mod:`rnnkit.models.feedback`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.feedback import (FEEDS, GRADS, REGIMES, BehaviourDiscriminator, Feedback, capture_outputs,
                               check_schedule, teacher_probability)
from ..options import option, require
from ..train.task import StepOutput, Task


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


@dataclass(frozen=True)
class FeedbackOptions:
    regime: str = option("teacher", "training inputs: teacher (forcing), free (running), scheduled (sampling) "
                                    "or professor (forcing)")
    feed: str = option("argmax", "free/scheduled/professor: how an output is fed back: argmax, sample or soft "
                                 "(a forecaster feeds back its predicted value)")
    feed_grad: str = option("stop", "gradient through the fed-back value: stop or straight_through")
    schedule: str = option("inverse_sigmoid", "scheduled: decay of the teacher probability: linear, "
                                              "exponential or inverse_sigmoid (Bengio et al. 2015)")
    schedule_k: float = option(1000.0, "scheduled: k of the decay (see rnnkit.models.feedback)")
    schedule_c: float = option(1e-4, "scheduled: slope c of the linear decay")
    schedule_min: float = option(0.0, "scheduled: lowest teacher probability")
    professor_weight: float = option(1.0, "professor: weight of the adversarial term next to the loss")
    discriminator_width: int = option(64, "professor: hidden size of the behaviour discriminator")

    def __post_init__(self) -> None:
        problem = check_schedule(self.schedule, self.schedule_k, self.schedule_c, self.schedule_min)
        checks = [
            (self.regime in REGIMES, f"regime must be one of {REGIMES}, got {self.regime!r}"),
            (self.feed in FEEDS, f"feed must be one of {FEEDS}, got {self.feed!r}"),
            (self.feed_grad in GRADS, f"feed_grad must be one of {GRADS}, got {self.feed_grad!r}"),
            (self.professor_weight >= 0, f"professor_weight must be >= 0, got {self.professor_weight}"),
            (self.discriminator_width >= 1, f"discriminator_width must be >= 1, got {self.discriminator_width}"),
            (self.regime != "scheduled" or problem is None, str(problem)),
        ]
        require(checks, "config: [train]")


class FeedbackTask(Task):
    """Regimes for a task whose model has the step contract and a recurrent ``rnn``."""

    discriminator: nn.Module | None = None

    def feedback(self, x: Tensor) -> Feedback | None:
        """Which steps of this training window see their true input (None: all of them,
        the parallel teacher-forced pass). Coin flips depend only on the clock."""
        o = self.options
        p = teacher_probability(o.regime, self.clock.step, o.schedule, o.schedule_k, o.schedule_c, o.schedule_min)
        if p >= 1.0:
            return None
        teacher = torch.rand(x.shape[:2], generator=self.clock.generator()) < p
        return Feedback(teacher.to(x.device), feed=o.feed, grad=o.feed_grad, generator=self._sampler(x))

    def _sampler(self, x: Tensor) -> torch.Generator | None:
        return self.clock.generator(x.device) if self.options.feed == "sample" else None

    def professor(self, model: nn.Module, x: Tensor, state: Any, taught: Tensor, out: StepOutput) -> None:
        """Lamb et al. 2016: run the window free as well; the discriminator learns to tell
        the two hidden-state sequences apart (its loss reaches only it), the model to make
        its free-running sequence look taught (its loss reaches only the model)."""
        o = self.options
        free_inputs = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        with capture_outputs(unwrap(model).rnn) as free:
            model(x, state, feedback=Feedback(free_inputs, feed=o.feed, grad=o.feed_grad, generator=self._sampler(x)))
        free_h = free.sequence()
        d = self.discriminator
        real, fake = d(taught.detach()), d(free_h.detach())
        ones, zeros = torch.ones_like(real), torch.zeros_like(real)
        d_loss = F.binary_cross_entropy_with_logits(real, ones) + F.binary_cross_entropy_with_logits(fake, zeros)
        adversarial = F.binary_cross_entropy_with_logits(d(free_h), ones)
        out.loss = out.loss + o.professor_weight * adversarial
        out.aux_losses["discriminator"] = d_loss
        n = real.shape[0]
        out.stats.update(d_loss=d_loss.item() * n, adversarial=adversarial.item() * n, sequences=n,
                         d_correct=float((real > 0).sum() + (fake <= 0).sum()), d_seen=2 * n)

    def auxiliary(self, model: nn.Module) -> dict[str, nn.Module]:
        if self.options.regime != "professor":
            return {}
        self.discriminator = BehaviourDiscriminator(model.config.hidden_size, self.options.discriminator_width)
        return {"discriminator": self.discriminator}

    def train_log(self, stats: dict[str, float]) -> dict[str, float]:
        if "d_seen" not in stats:
            return {}
        n = stats["sequences"]
        return {"d_loss": stats["d_loss"] / n, "adversarial": stats["adversarial"] / n,
                "d_accuracy": stats["d_correct"] / stats["d_seen"]}
