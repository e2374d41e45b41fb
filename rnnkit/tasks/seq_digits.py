"""Sequential digits: classify a handwritten digit from its pixels read one per time step.

scikit-learn's bundled 8x8 digits (1,797 images, no download) give 64-step sequences of
one grey value each (the small sibling of sequential MNIST, Le et al. 2015); the
permuted variant reads the pixels in one fixed random order, which spreads the
strokes' neighbouring pixels far apart in time. A many-to-one model: the head reads
the state after the last pixel. Cross-entropy; accuracy picks the best model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError
from ..options import option, require
from ..train.task import StepOutput
from .examples import ExampleTask

SPLITS = {"test": 360, "valid": 180}   # the rest (1,257) trains
EVAL_BATCH = 500


@dataclass(frozen=True)
class SeqDigitsOptions:
    permuted: bool = option(False, "seq_digits: read the pixels in a fixed random order (permuted variant)")
    data_seed: int = option(1234, "seq_digits: seed of the split and of the permutation")

    def __post_init__(self) -> None:
        require([(self.data_seed >= 0, f"data_seed must be >= 0, got {self.data_seed}")], "config: [train]")


def load_digits_sequences() -> tuple[Tensor, Tensor]:
    """``(1797, 64, 1)`` pixel sequences in [0, 1] (row by row) and ``(1797,)`` labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the seq_digits task needs scikit-learn (its bundled 8x8 digits): "
                        "pip install 'rnnkit[datasets]'") from None
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    return x.unsqueeze(-1), torch.tensor(digits.target, dtype=torch.long)


class SeqDigitsTask(ExampleTask):
    name = "seq_digits"
    Options = SeqDigitsOptions
    model = "sequence_regressor"         # many-to-one: a linear head on the last state, here 10 logits
    model_placeholders = {"input_size": 1, "output_size": 10}
    select = ("accuracy", "max")
    count_key = "sequences"
    eval_batch = EVAL_BATCH
    train_defaults = {"out": "runs/seq-digits", "batch_size": 32, "epochs": 30, "lr": 3e-3, "clip_norm": 1.0}

    def __init__(self, options: SeqDigitsOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.permutation: Tensor | None = None

    def prepare(self) -> None:
        x, y = load_digits_sequences()
        g = torch.Generator().manual_seed(self.options.data_seed)
        order = torch.randperm(len(y), generator=g)
        self.permutation = torch.randperm(64, generator=g) if self.options.permuted else torch.arange(64)
        x = x[:, self.permutation]
        test, valid = order[:SPLITS["test"]], order[SPLITS["test"]:SPLITS["test"] + SPLITS["valid"]]
        train = order[SPLITS["test"] + SPLITS["valid"]:]
        self.splits = {"train": (x[train], y[train]), "valid": (x[valid], y[valid]), "test": (x[test], y[test])}

    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor], state: Any = None) -> StepOutput:
        x, y = batch
        logits = model(x).float()
        nll = F.cross_entropy(logits, y, reduction="sum")
        correct = (logits.argmax(-1) == y).sum()
        return StepOutput(nll / len(y), {"nll": nll.item(), "correct": float(correct), "sequences": len(y)})

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = sums["sequences"]
        return {"loss": sums["nll"] / n, "nll": sums["nll"] / n, "accuracy": sums["correct"] / n,
                "sequences": int(n)}

    def describe(self, m: dict[str, float]) -> str:
        return f"accuracy {m['accuracy']:.4f}"

    def summary(self) -> str:
        n = {k: len(v[1]) for k, v in self.splits.items()}
        kind = "permuted" if self.options.permuted else "row-by-row"
        return f"sequential 8x8 digits ({kind}, 64 steps): {n['train']} train / {n['valid']} valid / {n['test']} test"

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """The majority class of the training split."""
        majority = int(torch.bincount(self.splits["train"][1]).argmax())

        def score(split: str) -> dict[str, float]:
            y = self.splits[split][1]
            return {"accuracy": float((y == majority).float().mean()), "loss": float("nan"), "nll": float("nan")}
        return {"name": "majority class", "valid": score("valid"), "test": score("test")}
