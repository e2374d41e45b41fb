"""Frame-sequence (video) classification: name the motion in a generated clip.

Clips ``(T, 1, H, W)`` from :mod:`rnnkit.data.video` (a shape moving left, right, up,
down, round either way, zig-zagging or staying still, with pixel noise and a wandering
distractor; no single frame tells the class). The model is a
:class:`~rnnkit.models.frame_sequence.FrameSequenceClassifier` (a CNN per frame, reading
it with its difference from the previous frame, a recurrent layer over the frames);
batches ``(x (B, T, 1, H, W), y (B,))``; cross-entropy; accuracy picks the best model.
Each split is generated from its own seed (``data_seed``). The defaults reach >= 0.99
accuracy within two epochs (results/video-frames.json); six leave a margin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.video import ClipSpec, generate_clips
from ..options import option, require
from ..train.task import Panel, Plan, StepOutput
from .examples import ExampleTask


@dataclass(frozen=True)
class VideoOptions:
    frames: int = option(16, "video: frames per clip")
    frame_size: int = option(32, "video: frame height and width in pixels")
    motions: int = option(8, "video: number of motion classes (left, right, up, down, clockwise, anticlockwise, "
                             "zigzag, still: the first N)")
    speed: float = option(2.0, "video: the shape's speed in pixels per frame")
    shape_radius: float = option(3.0, "video: the moving shape's radius in pixels")
    noise: float = option(0.1, "video: std of the Gaussian pixel noise")
    distractors: int = option(1, "video: randomly wandering distractor shapes per clip")
    train_size: int = option(4_000, "video: training clips")
    valid_size: int = option(500, "video: validation clips")
    test_size: int = option(1_000, "video: test clips")
    data_seed: int = option(1234, "video: seed of the generated splits")

    def __post_init__(self) -> None:
        checks = [(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
                  for k in ("train_size", "valid_size", "test_size")]
        require(checks + [(self.data_seed >= 0, f"data_seed must be >= 0, got {self.data_seed}")], "config: [train]")
        self.spec()                                     # the clip options, checked where they are defined

    def spec(self) -> ClipSpec:
        return ClipSpec(frames=self.frames, size=self.frame_size, motions=self.motions, speed=self.speed,
                        radius=self.shape_radius, noise=self.noise, distractors=self.distractors)


class VideoTask(ExampleTask):
    """Many-to-one over frames; batches ``(clips (B, T, 1, H, W), labels (B,))``."""

    name = "video"
    Options = VideoOptions
    model = "frame_sequence"
    model_placeholders = {"num_classes": 8, "channels": 1, "frame_height": 32, "frame_width": 32}
    select = ("accuracy", "max")
    count_key = "clips"
    eval_batch = 250
    train_defaults = {"out": "runs/video", "batch_size": 32, "epochs": 6, "lr": 3e-3, "clip_norm": 1.0}

    def prepare(self) -> None:
        spec = self.options.spec()
        self.generate_splits(lambda n, g: generate_clips(n, spec, g))

    def model_fields(self) -> dict[str, Any]:
        o = self.options
        return {"num_classes": o.motions, "channels": 1, "frame_height": o.frame_size, "frame_width": o.frame_size}

    @property
    def labels(self) -> list[str]:
        return self.options.spec().labels

    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor], state: Any = None) -> StepOutput:
        x, y = batch
        logits = model(x).float()
        nll = F.cross_entropy(logits, y, reduction="sum")
        correct = (logits.argmax(-1) == y).sum()
        return StepOutput(nll / len(y), {"nll": nll.item(), "correct": float(correct), "clips": len(y)})

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = sums["clips"]
        return {"loss": sums["nll"] / n, "nll": sums["nll"] / n, "accuracy": sums["correct"] / n, "clips": int(n)}

    def describe(self, m: dict[str, float]) -> str:
        return f"accuracy {m['accuracy']:.2%} (loss {m['loss']:.4f})"

    def summary(self) -> str:
        o, n = self.options, {k: len(v[1]) for k, v in self.splits.items()}
        return (f"video: {n['train']:,} train / {n['valid']:,} valid / {n['test']:,} test clips of {o.frames} frames "
                f"{o.frame_size}x{o.frame_size}, {o.motions} motions, noise {o.noise:g}, {o.distractors} distractor(s)")

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """The majority class of the training split."""
        majority = int(torch.bincount(self.splits["train"][1]).argmax())

        def score(split: str) -> dict[str, float]:
            y = self.splits[split][1]
            return {"accuracy": float((y == majority).float().mean()), "loss": float("nan"), "nll": float("nan")}
        return {"name": f"majority class ({self.labels[majority]})", "valid": score("valid"), "test": score("test")}

    def panels(self, model: nn.Module, limit: int = 500) -> list[Panel]:
        """The confusion matrix on (up to ``limit`` clips of) the validation split: rows the
        true motion, columns the predicted one."""
        k = self.options.motions
        counts = torch.zeros(k, k, dtype=torch.long)
        device = next(model.parameters()).device
        seen = 0
        for x, y in self.batches(Plan(split="valid", batch_size=self.eval_batch, device=device)):
            pred = model(x).argmax(-1)
            counts += torch.bincount((y * k + pred).cpu(), minlength=k * k).view(k, k)
            seen += len(y)
            if seen >= limit:
                break
        return [Panel.heatmap(f"confusion matrix ({seen:,} validation clips)", counts, x_labels=self.labels,
                              y_labels=self.labels, xlabel="predicted", ylabel="true")]
