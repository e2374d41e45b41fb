"""The copy memory problem (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016).

Ten symbols drawn from 8 (ids 1..8) are shown, then ``T - 1`` blanks, a delimiter and ten
more blanks; the target is blank for the first ``T + 10`` steps and the ten symbols,
in order, for the last ten. Ids: ``0`` blank, ``1..8`` data symbols, ``9`` delimiter.

The loss is the cross-entropy over all ``T + 20`` steps, as in Arjovsky et al. A
memoryless model that predicts blank where the target is always blank and a uniform
guess over the 8 symbols where it must copy scores ``10 ln 8 / (T + 20)`` (0.173 for
T = 100) and copies 1/8 of the symbols; a model that solves it gets near 0 and 100%.

``copy_len`` K (default 10, the paper's) generalises it: K symbols, ``T + 2K`` steps,
baseline ``K ln 8 / (T + 2K)``; a small K makes a quick check (the tests use K = 3).

Generated from a seed, no files: the same ``data_seed`` gives the same splits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..options import option, require
from ..train.task import Panel, StepOutput
from .examples import ExampleTask

BLANK, DELIMITER = 0, 9
NUM_DATA = 8           # data symbols 1..8
VOCAB = NUM_DATA + 2   # blank, 8 data symbols, delimiter
EVAL_BATCH = 500


@dataclass(frozen=True)
class CopyMemoryOptions:
    seq_len: int = option(100, "copy memory: the delay T (sequences are T + 20 long)")
    train_size: int = option(100_000, "copy memory: training sequences")
    valid_size: int = option(2_000, "copy memory: validation sequences")
    test_size: int = option(10_000, "copy memory: test sequences")
    data_seed: int = option(1234, "copy memory: seed of the generated splits")
    copy_len: int = option(10, "copy memory: symbols to remember (10 in Arjovsky et al.)")

    def __post_init__(self) -> None:
        checks = [(self.seq_len >= 1, f"seq_len must be >= 1 (the delay T), got {self.seq_len}"),
                  (self.copy_len >= 1, f"copy_len must be >= 1, got {self.copy_len}")]
        checks += [(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
                   for k in ("train_size", "valid_size", "test_size")]
        require(checks, "config: [train]")


def copy_memory(n: int, seq_len: int, generator: torch.Generator, copy_len: int = 10) -> tuple[Tensor, Tensor]:
    """``n`` sequences of ids ``(n, T + 2K)`` (K = ``copy_len``, 10 in the paper): inputs and
    targets (uint8; ``.long()`` to use)."""
    length = seq_len + 2 * copy_len
    data = torch.randint(1, NUM_DATA + 1, (n, copy_len), generator=generator, dtype=torch.uint8)
    x = torch.full((n, length), BLANK, dtype=torch.uint8)
    y = torch.full((n, length), BLANK, dtype=torch.uint8)
    x[:, :copy_len] = data
    x[:, seq_len + copy_len - 1] = DELIMITER
    y[:, -copy_len:] = data
    return x, y


def memoryless_nll(seq_len: int, copy_len: int = 10) -> float:
    """Mean cross-entropy of predicting blank, then uniform over the 8 symbols for the copy:
    ``K ln 8 / (T + 2K)``."""
    return copy_len * math.log(NUM_DATA) / (seq_len + 2 * copy_len)


class CopyMemoryTask(ExampleTask):
    """Recall 10 symbols after a delay of T steps; cross-entropy at every step."""

    name = "copy_memory"
    Options = CopyMemoryOptions
    model = "language_model"
    model_placeholders = {"vocab_size": VOCAB}
    # The objective itself: continuous, so it ranks models while copy accuracy sits at
    # chance (1/8) for a long plateau, where accuracy would pick among ties by noise;
    # and it is the figure Arjovsky et al. report.
    select = ("loss", "min")
    count_key = "sequences"
    eval_batch = EVAL_BATCH
    train_defaults = {"out": "runs/copy_memory", "eval_every": 500}

    def prepare(self) -> None:
        o = self.options
        self.generate_splits(lambda n, g: copy_memory(n, o.seq_len, g, o.copy_len))

    def model_fields(self) -> dict[str, Any]:
        return {"vocab_size": VOCAB}

    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor], state: Any = None) -> StepOutput:
        x, y = (t.long() for t in batch)
        logits, _ = model(x)
        flat = logits.reshape(-1, logits.shape[-1]).float()
        if model.training:
            loss = F.cross_entropy(flat, y.reshape(-1))
            nll = loss.detach().double() * y.numel()  # exact: metrics() gives loss.item() back
        else:
            nll = F.cross_entropy(flat, y.reshape(-1), reduction="sum")
            loss = nll / y.numel()
        hit = logits[:, -self.options.copy_len:].argmax(-1) == y[:, -self.options.copy_len:]
        return StepOutput(loss, {"nll": nll.item(), "steps": y.numel(), "correct": int(hit.sum()),
                                 "copied": hit.numel(), "solved": int(hit.all(1).sum()), "sequences": y.shape[0]})

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        nll = sums["nll"] / sums["steps"]
        return {"loss": nll, "nll": nll, "accuracy": sums["correct"] / sums["copied"],
                "solved": sums["solved"] / sums["sequences"], "sequences": int(sums["sequences"]),
                "tokens": int(sums["steps"])}  # `rnnkit eval` reports nll per token with this count

    def describe(self, m: dict[str, float]) -> str:
        return f"CE {m['loss']:.4f}, copy accuracy {m['accuracy']:.1%}"

    def summary(self) -> str:
        o = self.options
        return (f"copy memory, T={o.seq_len} ({o.seq_len + 2 * o.copy_len} steps): {o.train_size:,} train / "
                f"{o.valid_size:,} valid / {o.test_size:,} test sequences (data seed {o.data_seed})")

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """The memoryless strategy: CE ``K ln 8 / (T + 2K)``, 1/8 of the symbols copied
        (in expectation; ``solved`` is 8**-K, about 0)."""
        steps = self.options.seq_len + 2 * self.options.copy_len
        k = self.options.copy_len

        def memoryless(split: str) -> dict[str, float]:
            n = len(self.splits[split][0])
            return self.metrics({"nll": n * k * math.log(NUM_DATA), "steps": n * steps,
                                 "correct": n * k / NUM_DATA, "copied": n * k,
                                 "solved": n * NUM_DATA ** -k, "sequences": n})
        return {"name": "memoryless", "valid": memoryless("valid"), "test": memoryless("test")}

    def panels(self, model: nn.Module) -> list[Panel]:
        """The first validation sequences: the symbols to remember and what the model
        outputs in the copy steps (its most likely symbol; ``.`` is a blank)."""
        x, y = (t[:8].long() for t in self.splits["valid"])
        k = self.options.copy_len
        logits, _ = model(x.to(next(model.parameters()).device))
        copied = logits[:, -k:].argmax(-1).cpu()

        def show(ids: Tensor) -> str:
            return "".join("." if i == BLANK else str(int(i)) for i in ids)
        rows = [[i, show(y[i, -k:]), show(copied[i]), int((copied[i] == y[i, -k:]).sum())] for i in range(len(x))]
        return [Panel.table(f"first validation sequences (delay {self.options.seq_len})",
                            ["#", "to remember", "model's copy", f"correct of {k}"], rows)]
