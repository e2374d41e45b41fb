"""Exposure bias, measured: a model trained on true inputs is run on its own.

Teacher-forced loss says how well a model predicts the next token given the truth;
free running says what happens when it is fed its own predictions, the closed-loop
setting of generation (Bengio et al. 2015; Lamb et al. 2016). For text there is no
truth to compare a sample with, so its quality is judged by a reference model fitted
on the same training data (the Kneser-Ney n-gram): the NLL it assigns to each
generated token, by position (horizon), and the diversity of the samples (distinct-n).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError

DEFAULT_HORIZONS = (1, 10, 50)


def distinct_n(samples: Sequence[Sequence[int]], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of the samples (Li et al. 2016): 1 = no repeats."""
    grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def text_free_running(task, model: torch.nn.Module, *, samples: int = 64, length: int = 100,
                      horizons: Sequence[int] = DEFAULT_HORIZONS, order: int = 5, seed: int = 0,
                      temperature: float = 1.0, reference=None) -> dict[str, Any]:
    """Closed-loop quality of a language model: ``samples`` sequences of ``length``
    tokens from its start token, scored by a ``order``-gram Kneser-Ney model of the
    task's training split. Returns the mean reference NLL per token, the NLL at each
    horizon (the mean over samples of token ``h``'s NLL), the per-position curve, and
    distinct-1/2. The task must be prepared (its data loaded)."""
    from .baselines.ngram import KneserNeyLM
    from .generate import sample

    if length < max(horizons):
        raise DataError(f"length={length} is shorter than the largest horizon {max(horizons)}")
    if reference is None:  # pass one in to score several models against the same reference
        reference = KneserNeyLM(order=order, vocab_size=len(task.vocab)).fit(task.data.train.numpy())
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    start = task.start_id()
    seqs = sample(model, batch_size=samples, max_new_tokens=length, start_id=start, temperature=temperature,
                  forbid=[task.vocab.pad_id, task.vocab.unk_id], generator=g)
    nll = np.stack([-reference.token_logprobs(s, context=[start]) for s in seqs])  # (samples, length)
    curve = nll.mean(0)
    return {"samples": samples, "length": length, "reference": f"{reference.order}-gram Kneser-Ney (train split)",
            "reference_nll": float(nll.mean()), "reference_nll_at": {str(h): float(curve[h - 1]) for h in horizons},
            "reference_nll_curve": curve.tolist(), "distinct_1": distinct_n(seqs, 1), "distinct_2": distinct_n(seqs, 2)}


def plot_horizon(curves: dict[str, Sequence[float]], path: str | Path, *, ylabel: str = "reference NLL (nats)",
                 title: str = "free running: quality by horizon") -> Path:
    """One line per regime/model: value at horizon 1..T, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=label)
    ax.set(xlabel="horizon (steps after the last true input)", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def series_free_running(task, model: torch.nn.Module, *, split: str = "test",
                        horizons: Sequence[int] = DEFAULT_HORIZONS, starts: int = 64) -> dict[str, Any]:
    """Closed-loop multi-step forecasts from ``starts`` evenly spaced points of ``split``:
    each reads ``task.options.warmup`` true values, then predicts ``max(horizons)`` steps
    from its own predictions. Returns the squared error at each horizon (standardised
    units, mean over start points) and the whole curve."""
    series = task.splits[split]
    warmup, horizon = task.options.warmup, max(horizons)
    last_start = len(series) - horizon
    if last_start <= warmup:
        raise DataError(f"the {split} split ({len(series)} values) is too short for warmup {warmup} "
                         f"and horizon {horizon}")
    points = torch.linspace(warmup, last_start, steps=min(starts, last_start - warmup + 1)).long()
    device = next(model.parameters()).device
    context = torch.stack([series[p - warmup:p] for p in points]).unsqueeze(-1).to(device)
    target = torch.stack([series[p:p + horizon] for p in points]).unsqueeze(-1).to(device)
    model.eval()
    error = (model.forecast(context, horizon) - target).pow(2).mean(dim=(0, 2))   # (horizon,)
    curve = error.cpu().tolist()
    return {"starts": len(points), "warmup": warmup, "mse_at": {str(h): curve[h - 1] for h in horizons},
            "mse_curve": curve}
