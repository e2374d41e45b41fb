"""Polyphonic music modelling (one-to-many): predict the next piano-roll frame.

JSB Chorales (:mod:`rnnkit.data.music`), as in Boulanger-Lewandowski et al. (2012)
and Chung et al. (2014). The input at step t is frame t-1 (frame -1 is an all-zero
start frame) and the target is frame t, so every real frame is predicted. Each of
the 88 keys is an independent Bernoulli given the state; the loss of a step is the
sum over keys of the binary cross-entropy, and the reported metric

    nll_per_step = total NLL (nats, summed over the 88 keys) / predicted time steps

is the papers' "negative log-likelihood per time step" (~8.5 for a GRU). Batches are
whole pieces of similar length padded to the longest, with their lengths; padded
steps are masked out of every sum.

Training augmentation (``--transpose N``, off by default): each training piece is
shifted by a random number of semitones in [-N, N], limited to shifts that keep
every note on the piano.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.music import HIGHEST, KEYS, LOWEST, load_chorales
from ..options import option, require
from ..train.task import Panel, Plan, StepOutput, Task
from .examples import length_buckets

Batch = tuple[Tensor, Tensor, Tensor]   # inputs (B, T, K), targets (B, T, K), lengths (B,)


@dataclass(frozen=True)
class MusicOptions:
    data_dir: str | None = option(None, "folder holding the dataset files (default $RNNKIT_DATA)")
    transpose: int = option(0, "music: shift each training piece by a random -N..N semitones (0: off)")

    def __post_init__(self) -> None:
        require([(0 <= self.transpose <= 24, f"transpose must be in 0..24 semitones, got {self.transpose}")],
                "config: [train]")


def piece_batch(rolls: list[Tensor]) -> Batch:
    """Pieces ``(T_i, K)`` -> ``(inputs, targets, lengths)``: targets are the pieces padded
    to the longest with zeros, inputs the targets shifted one step right behind a zero
    start frame. Float 0/1 tensors; lengths ``(B,)`` int64."""
    lengths = torch.tensor([len(r) for r in rolls], dtype=torch.long)
    targets = torch.zeros(len(rolls), int(lengths.max()), rolls[0].shape[1])
    for i, r in enumerate(rolls):
        targets[i, :len(r)] = r.float()
    inputs = torch.cat([torch.zeros_like(targets[:, :1]), targets[:, :-1]], 1)
    return inputs, targets, lengths


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """``(B, T)`` bool: True at the real steps of each sequence."""
    return torch.arange(steps, device=lengths.device) < lengths.unsqueeze(1)


def transpose(roll: Tensor, shift: int) -> Tensor:
    """``roll (T, K)`` moved ``shift`` keys up (down if negative); the caller keeps notes on the piano."""
    return torch.roll(roll, shift, dims=1) if shift else roll


def shift_range(roll: Tensor, limit: int) -> tuple[int, int]:
    """The shifts in ``[-limit, limit]`` that keep every note of ``roll (T, K)`` on the keyboard."""
    keys = torch.nonzero(roll.any(0)).flatten()
    if len(keys) == 0:
        return 0, 0
    return -min(limit, int(keys.min())), min(limit, roll.shape[1] - 1 - int(keys.max()))


class MusicTask(Task):
    """Next-frame prediction of piano rolls; batches ``(inputs, targets, lengths)`` of :func:`piece_batch`."""

    name = "music"
    Options = MusicOptions
    model = "piano_roll"
    model_placeholders = {"keys": KEYS}
    select = ("nll_per_step", "min")
    count_key = "steps"
    train_defaults = {"out": "runs/music", "lr": 1e-3, "batch_size": 16, "epochs": 100}
    eval_batch = 128

    def __init__(self, options: MusicOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.splits: dict[str, list[Tensor]] = {}

    # --- data ---------------------------------------------------------------------
    def prepare(self) -> None:
        self.splits = {split: [r.float() for r in rolls]
                       for split, rolls in load_chorales(self.options.data_dir).items()}

    def model_fields(self) -> dict[str, Any]:
        return {"keys": KEYS}

    def batches(self, plan: Plan) -> list[Batch]:
        rolls = self.splits[plan.split]
        groups = length_buckets([len(r) for r in rolls], plan, self.eval_batch)
        out = []
        for b, group in enumerate(groups):
            pieces = [rolls[i] for i in group]
            if plan.split == "train" and self.options.transpose:
                pieces = self._transposed(pieces, plan, b)
            out.append(tuple(t.to(plan.device) for t in piece_batch(pieces)))
        return out

    def _transposed(self, pieces: list[Tensor], plan: Plan, batch: int) -> list[Tensor]:
        # seeded by (run seed, epoch, batch, rank): a resumed epoch draws the same shifts
        g = torch.Generator().manual_seed(((plan.seed * 1_000_003 + plan.epoch) * 100_003 + batch) * 64 + plan.rank)
        out = []
        for roll in pieces:
            lo, hi = shift_range(roll, self.options.transpose)
            out.append(transpose(roll, int(torch.randint(lo, hi + 1, (1,), generator=g))))
        return out

    # --- one batch ----------------------------------------------------------------
    def step(self, model: nn.Module, batch: Batch, state: Any = None) -> StepOutput:
        x, y, lengths = batch
        logits, _ = model(x, lengths=lengths)
        bce = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none").sum(-1)   # (B, T)
        mask = step_mask(lengths, y.shape[1])
        nll = torch.where(mask, bce, torch.zeros_like(bce)).sum()  # where, not *: a padded inf never leaks
        steps = int(lengths.sum())
        return StepOutput(nll / steps, {"nll": nll.item(), "steps": steps, "pieces": len(lengths)})

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        per_step = sums["nll"] / sums["steps"]
        return {"loss": per_step, "nll_per_step": per_step, "nll_per_key": per_step / KEYS,
                "steps": int(sums["steps"]), "pieces": int(sums["pieces"])}

    def describe(self, m: dict[str, float]) -> str:
        return f"NLL/step {m['nll_per_step']:.4f} nats"

    def summary(self) -> str:
        n = {k: len(v) for k, v in self.splits.items()}
        steps = {k: sum(len(r) for r in v) for k, v in self.splits.items()}
        aug = f", transpose +-{self.options.transpose}" if self.options.transpose else ""
        return (f"music jsb-chorales: {n['train']} train / {n['valid']} valid / {n['test']} test pieces "
                f"({steps['train']:,} / {steps['valid']:,} / {steps['test']:,} steps), "
                f"{KEYS} keys (MIDI {LOWEST}..{HIGHEST}){aug}")

    def panels(self, model: nn.Module, steps: int = 96) -> list[Panel]:
        """Piano rolls of the first validation piece (up to ``steps`` frames): the notes
        played, and the model's probability of each note given the frames before it."""
        x, y, lengths = piece_batch([self.splits["valid"][0][:steps + 1]])
        device = next(model.parameters()).device
        logits, _ = model(x.to(device), lengths=lengths.to(device))
        prob = torch.sigmoid(logits.float())[0].cpu()
        rows = [f"{k}" for k in range(LOWEST, HIGHEST + 1)][::-1]          # high notes on top
        return [Panel.heatmap(title, roll.T.flip(0), y_labels=rows, xlabel="frame", ylabel="MIDI note")
                for title, roll in (("first validation piece: notes played", y[0]),
                                    ("model: probability of each note, given the frames before", prob))]

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """Each key an independent Bernoulli with its training frequency (add-one smoothed,
        so a key never heard in training costs a finite amount)."""
        train = torch.cat(self.splits["train"])
        p = (train.sum(0) + 1) / (len(train) + 2)                          # (K,)
        on, off = torch.log(p).double(), torch.log1p(-p).double()

        def frequency(split: str) -> dict[str, float]:
            rolls = torch.cat(self.splits[split]).double()
            nll = -float((rolls * on + (1 - rolls) * off).sum())
            return self.metrics({"nll": nll, "steps": len(rolls), "pieces": len(self.splits[split])})
        return {"name": "per-key training frequency", "valid": frequency("valid"), "test": frequency("test")}
