"""The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015; Arjovsky et al. 2016).

Each input step has two channels: a value drawn from U(0, 1) and a marker that is
1 at exactly two steps (one in the first half of the sequence, one in the second)
and 0 elsewhere. The target is the sum of the two marked values, so the model must
remember the first value across up to ``seq_len`` steps. Predicting the mean (1)
scores MSE = Var(U1 + U2) = 1/6 ~ 0.167; a model that solves it gets far below 0.01.

Generated from a seed, no files: the same ``data_seed`` gives the same splits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..options import option
from ..train.task import Panel, StepOutput
from .examples import ExampleTask

EVAL_BATCH = 1000


@dataclass(frozen=True)
class AddingOptions:
    seq_len: int = option(50, "adding problem: sequence length T")
    train_size: int = option(100_000, "adding problem: training sequences")
    valid_size: int = option(2_000, "adding problem: validation sequences")
    test_size: int = option(10_000, "adding problem: test sequences")
    data_seed: int = option(1234, "adding problem: seed of the generated splits")

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(f"config: [train] seq_len must be >= 2 (two marked steps), got {self.seq_len}")
        for name in ("train_size", "valid_size", "test_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config: [train] {name} must be >= 1, got {getattr(self, name)}")


def adding_problem(n: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` sequences: inputs ``(n, T, 2)`` (value, marker) and targets ``(n, 1)``."""
    values = torch.rand(n, seq_len, generator=generator)
    half = seq_len // 2
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, seq_len, (n,), generator=generator)
    marker = torch.zeros(n, seq_len)
    rows = torch.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    target = (values[rows, first] + values[rows, second]).unsqueeze(1)
    return torch.stack([values, marker], dim=-1), target


class AddingTask(ExampleTask):
    """Many-to-one regression of the sum of two marked values; MSE."""

    name = "adding"
    Options = AddingOptions
    model = "sequence_regressor"
    model_placeholders = {"input_size": 2, "output_size": 1}
    select = ("mse", "min")
    count_key = "sequences"
    eval_batch = EVAL_BATCH
    train_defaults = {"out": "runs/adding", "eval_every": 500}

    def prepare(self) -> None:
        o = self.options
        self.generate_splits(lambda n, g: adding_problem(n, o.seq_len, g))

    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor], state: Any = None) -> StepOutput:
        x, y = batch
        pred = model(x)
        se = (pred.float() - y).pow(2).sum()
        loss = se / y.numel()
        return StepOutput(loss, {"se": se.item(), "sequences": y.shape[0], "values": y.numel()})

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        mse = sums["se"] / sums["values"]
        return {"loss": mse, "mse": mse, "sequences": int(sums["sequences"])}

    def describe(self, m: dict[str, float]) -> str:
        return f"MSE {m['mse']:.4f}"

    def summary(self) -> str:
        o = self.options
        return (f"adding problem, T={o.seq_len}: {o.train_size:,} train / {o.valid_size:,} valid / "
                f"{o.test_size:,} test sequences (data seed {o.data_seed})")

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """Always predicting 1, the mean of the target: MSE ~ 1/6."""
        def constant(split: str) -> dict[str, float]:
            y = self.splits[split][1]
            se = float((y - 1.0).pow(2).sum())
            return self.metrics({"se": se, "sequences": len(y), "values": y.numel()})
        return {"name": "always predict 1", "valid": constant("valid"), "test": constant("test")}

    def panels(self, model: nn.Module) -> list[Panel]:
        """The first validation sequences: their two marked values, the target sum and the
        model's prediction."""
        x, y = (t[:8] for t in self.splits["valid"])
        device = next(model.parameters(), torch.empty(0)).device
        pred = model(x.to(device)).float().cpu()
        rows = [[i, " + ".join(f"{v:.3f}" for v in x[i, :, 0][x[i, :, 1] > 0].tolist()), float(y[i, 0]),
                 float(pred[i, 0]), float(pred[i, 0] - y[i, 0])] for i in range(len(y))]
        return [Panel.table("first validation sequences", ["#", "marked values", "target", "prediction", "error"],
                            rows)]
