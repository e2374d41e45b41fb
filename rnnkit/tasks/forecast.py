"""Forecasting a series one step ahead (mean squared error), trained with any feedback
regime; closed-loop multi-step error by horizon shows the exposure bias.

The series is cut into train/valid/test in time order and standardised with the
training part's mean and standard deviation (saved in the checkpoint). Training
carries the state across truncated-BPTT windows of parallel streams, as the
language model does.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.series import mackey_glass
from ..errors import CheckpointError, ConfigError
from ..models.feedback import capture_outputs
from ..options import option, require
from ..train.task import Plan, StepOutput
from ..train.tbptt import StreamWindows, Window, stream_windows
from .feedback import FeedbackOptions, FeedbackTask, unwrap

SERIES = ("mackey_glass",)
EVAL_STREAMS = 4


@dataclass(frozen=True)
class ForecastOptions(FeedbackOptions):
    series: str = option("mackey_glass", "the series: mackey_glass (generated)")
    length: int = option(10_000, "forecast: samples of the series (train/valid/test in time order 80/10/10)")
    tau: float = option(17.0, "mackey_glass: delay (17 is chaotic)")
    warmup: int = option(100, "free-running evaluation: true values read before predicting closed loop")

    def __post_init__(self) -> None:
        checks = [(self.series in SERIES, f"series must be one of {SERIES}, got {self.series!r}"),
                  (self.length >= 200, f"length must be >= 200, got {self.length}"),
                  (self.tau > 0, f"tau must be > 0, got {self.tau}"),
                  (self.warmup >= 1, f"warmup must be >= 1, got {self.warmup}")]
        require(checks, "config: [train]")
        super().__post_init__()


class ForecastTask(FeedbackTask):
    name = "forecast"
    Options = ForecastOptions
    model = "sequence_forecaster"
    model_placeholders = {"channels": 1}
    select = ("mse", "min")
    carries_state = True
    count_key = "values"
    eval_streams = EVAL_STREAMS
    train_defaults = {"out": "runs/forecast", "bptt": 50, "lr": 3e-3, "epochs": 20}

    def __init__(self, options: ForecastOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.scaler: dict[str, float] | None = None
        self.splits: dict[str, Tensor] = {}

    def prepare(self) -> None:
        o = self.options
        raw = mackey_glass(o.length, o.tau)
        cut1, cut2 = int(0.8 * len(raw)), int(0.9 * len(raw))
        if self.scaler is None:
            train = raw[:cut1]
            self.scaler = {"mean": float(train.mean()), "std": float(train.std() or 1.0)}
        z = torch.tensor((raw - self.scaler["mean"]) / self.scaler["std"], dtype=torch.float32)
        self.splits = {"train": z[:cut1], "valid": z[cut1:cut2], "test": z[cut2:]}

    def model_fields(self) -> dict[str, Any]:
        return {"channels": 1}

    def batches(self, plan: Plan) -> StreamWindows:
        streams, windows = stream_windows(self.splits[plan.split], plan, self.eval_streams)
        return StreamWindows(streams.unsqueeze(-1).to(plan.device), windows)  # (B, L, 1): one channel

    def step(self, model: nn.Module, batch: tuple[Window, Tensor, Tensor], state: Any = None) -> StepOutput:
        w, x, y = batch
        feedback = self.feedback(x) if model.training else None
        if model.training and w.carry_at < x.shape[1]:
            raise ConfigError("the forecast task needs bptt_k1 = bptt")
        professor = model.training and self.options.regime == "professor"
        with capture_outputs(unwrap(model).rnn) if professor else nullcontext() as taught:
            pred, new_state = model(x, state, feedback=feedback)
        s = w.score_from - w.start
        se = (pred[:, s:].float() - y[:, s:]).pow(2).sum()
        n = y[:, s:].numel()
        out = StepOutput(se / n, {"se": se.item(), "values": n}, new_state)
        if professor:
            self.professor(model, x, state, taught.sequence(), out)
        return out

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        mse = sums["se"] / sums["values"]
        return {"loss": mse, "mse": mse, "rmse": mse ** 0.5, "values": int(sums["values"])}

    def describe(self, m: dict[str, float]) -> str:
        return f"MSE {m['mse']:.3g} (standardised units)"

    def summary(self) -> str:
        o, n = self.options, {k: len(v) for k, v in self.splits.items()}
        return (f"forecast {o.series} (tau={o.tau:g}): {n['train']:,} train / {n['valid']:,} valid / "
                f"{n['test']:,} test values, standardised (mean {self.scaler['mean']:.3f}, std {self.scaler['std']:.3f})")

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """Persistence (predict the last value), the forecaster's floor."""
        def persistence(split: str) -> dict[str, float]:
            z = self.splits[split]
            return self.metrics({"se": float((z[1:] - z[:-1]).pow(2).sum()), "values": len(z) - 1})
        return {"name": "persistence", "valid": persistence("valid"), "test": persistence("test")}

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scaler = state.get("scaler") if isinstance(state, dict) else None
        if not (isinstance(scaler, dict) and all(isinstance(scaler.get(k), (int, float)) and np.isfinite(scaler[k])
                                                 for k in ("mean", "std")) and scaler["std"] > 0):
            raise CheckpointError("the checkpoint's scaler must have a finite mean and a positive std")
        self.scaler = {"mean": float(scaler["mean"]), "std": float(scaler["std"])}
