"""Multivariate multi-step forecasting (ETTh1, or any CSV with a ``date`` column and
numeric columns): read ``lookback`` hours of every channel, forecast the target (OT, or
all channels) up to ``horizon`` hours ahead.

* **Data** (:mod:`rnnkit.data.etth`): Informer's 12/4/4-month train/valid/test split,
  standardised with the train rows' per-column mean and std. Errors are reported in
  those standardised units, as the papers do.
* **Training**: windows with random origins in the train split (a fresh permutation
  per epoch from the run's seed), every target inside the split. ``direct`` mode
  regresses the whole horizon of the target at once; ``autoregressive`` mode learns the
  next step of all channels (teacher forcing over the window).
* **Evaluation**: rolling origin over valid/test, one origin every ``eval_stride`` hours,
  the context allowed to reach back before the split (as Informer's loaders do). At each
  origin the model forecasts ``horizon`` steps (closed loop in autoregressive mode) and
  MSE/MAE are reported at the horizons 24, 48, 168 (those <= ``horizon``) and
  ``horizon``: ``mse_24, mae_24, ...``; ``loss`` is the MSE over the full horizon.
* **Baselines** (:meth:`ForecastMultiTask.baseline`): naive (last value repeated) and
  seasonal naive (the last 24 hours repeated), on the same origins.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.etth import ETTH1_COLUMNS, Scaler, SeriesSplits, load_series
from ..data.registry import WHOLE, resolve
from ..errors import CheckpointError, ConfigError, DataError
from ..models.multi_forecaster import MODES
from ..options import option, require
from ..train.task import Panel, Plan, StepOutput, Task
from .feedback import unwrap

DATASETS = ("etth1",)
REPORT_HORIZONS = (24, 48, 168)
SEASON = 24                                      # hours: the daily cycle of load and temperature


@dataclass(frozen=True)
class ForecastMultiOptions:
    dataset: str = option("etth1", "the series: etth1 ($RNNKIT_DATA/etth1/ETTh1.csv)")
    data_dir: str | None = option(None, "folder holding the dataset files (default $RNNKIT_DATA)")
    data_file: str | None = option(None, "any CSV (date column + numeric columns) instead of --dataset")
    # not "target": the loop's [train] target (stop at a metric value) owns that key
    target_column: str = option("OT", "the forecast target: a column name (multivariate-to-univariate) or 'all'")
    mode: str = option("direct", "direct (all horizon steps at once) or autoregressive (one step, closed loop)")
    lookback: int = option(96, "context steps the model reads before each forecast")
    horizon: int = option(168, "steps forecast (direct head size; closed-loop length)")
    eval_stride: int = option(24, "valid/test: one rolling origin every this many steps")
    train_windows: int | None = option(None, "training windows per epoch (default: every train origin once)")

    def __post_init__(self) -> None:
        checks = [(self.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {self.dataset!r}"),
                  (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
                  (self.target_column not in ("", "date"),
                   f"target_column must be a column or 'all', got {self.target_column!r}"),
                  (self.lookback >= SEASON, f"lookback must be >= {SEASON} (seasonal naive reads a day), "
                                            f"got {self.lookback}"),
                  (self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}"),
                  (self.eval_stride >= 1, f"eval_stride must be >= 1, got {self.eval_stride}"),
                  (self.train_windows is None or self.train_windows >= 1,
                   f"train_windows must be >= 1, got {self.train_windows}")]
        require(checks, "config: [train]")


def naive(context: Tensor, horizon: int) -> Tensor:
    """The last value repeated: ``context (B, T, C)`` -> ``(B, horizon, C)``."""
    return context[:, -1:].expand(-1, horizon, -1)


def seasonal_naive(context: Tensor, horizon: int, period: int = SEASON) -> Tensor:
    """The last ``period`` values repeated: step k (0-based) of the forecast is the value
    ``period`` steps before it, ``context[:, T - period + k % period]`` -> ``(B, horizon, C)``."""
    T = context.shape[1]
    if T < period:
        raise ConfigError(f"seasonal naive needs at least {period} context steps, got {T}")
    index = T - period + torch.arange(horizon, device=context.device) % period
    return context[:, index]


def report_horizons(horizon: int) -> tuple[int, ...]:
    """The horizons scored: 24, 48, 168 where they fit, and the full horizon."""
    return tuple(sorted({h for h in REPORT_HORIZONS if h <= horizon} | {horizon}))


class ForecastMultiTask(Task):
    """Batches ``(context (B, lookback, C), future (B, F, C))``: F = ``horizon``, or 1
    when training an autoregressive model (its targets are the window shifted by one)."""

    name = "forecast_multi"
    Options = ForecastMultiOptions
    model = "forecaster"
    model_placeholders = {"input_size": 7, "output_size": 1, "horizon": 168, "mode": "direct"}
    select = ("loss", "min")
    count_key = "windows"
    train_defaults = {"out": "runs/forecast_multi", "lr": 1e-3, "epochs": 10, "batch_size": 32, "clip_norm": 1.0}
    eval_batch = 256

    def __init__(self, options: ForecastMultiOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.scaler: Scaler | None = None
        self.data: SeriesSplits | None = None
        self.columns: tuple[str, ...] = ()

    # --- data ---------------------------------------------------------------------
    def path(self):
        o = self.options
        return o.data_file if o.data_file is not None else resolve(o.dataset, o.data_dir)[WHOLE]

    def prepare(self) -> None:
        o = self.options
        path = self.path()
        header = load_series(path).columns if o.data_file is not None else ETTH1_COLUMNS
        if o.target_column != "all" and o.target_column not in header:
            raise DataError(f"{path}: no target column {o.target_column!r}; columns: {', '.join(header)}")
        # the targets go last: the model predicts its last output_size channels
        t = o.target_column
        self.columns = header if t == "all" else tuple(c for c in header if c != t) + (t,)
        self.data = load_series(path, self.columns, self.scaler)
        self.scaler = self.data.scaler
        a, b = self.data.bounds["train"]
        if b - a < o.lookback + self._future("train"):
            raise DataError(f"{path}: {b - a} train rows are fewer than lookback + horizon")
        for split in ("valid", "test"):
            if self.origins(split) == []:
                raise DataError(f"{path}: the {split} split is shorter than the horizon {o.horizon}")

    @property
    def n_targets(self) -> int:
        return len(self.columns) if self.options.target_column == "all" else 1

    def model_fields(self) -> dict[str, Any]:
        return {"input_size": len(self.columns) or 7, "output_size": self.n_targets, "horizon": self.options.horizon,
                "mode": self.options.mode}

    def _future(self, split: str) -> int:
        return 1 if split == "train" and self.options.mode == "autoregressive" else self.options.horizon

    def origins(self, split: str) -> list[int]:
        """First forecast rows of a split's windows: every one whose targets fit inside the
        split (train), every ``eval_stride``-th from the split's start (valid/test)."""
        o = self.options
        a, b = self.data.bounds[split]
        future = self._future(split)
        if split == "train":
            return list(range(a + o.lookback, b - future + 1))
        return list(range(max(a, o.lookback), b - future + 1, o.eval_stride))

    def windows(self, origins: list[int], future: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """``(context (B, lookback, C), future (B, future, C))`` at the given origins."""
        lb, z = self.options.lookback, self.data.z
        starts = np.asarray(origins)[:, None]
        ctx = z[starts + np.arange(-lb, 0)]
        fut = z[starts + np.arange(future)]
        return torch.from_numpy(ctx).to(device), torch.from_numpy(fut).to(device)

    def batches(self, plan: Plan) -> list[tuple[Tensor, Tensor]]:
        origins = self.origins(plan.split)
        if plan.split == "train":
            g = torch.Generator().manual_seed(plan.seed * 1_000_003 + plan.epoch)   # new origins every epoch
            order = torch.randperm(len(origins), generator=g)[:self.options.train_windows].tolist()
            per = plan.batch_size // plan.world_size
            groups = [order[i + plan.rank * per:i + (plan.rank + 1) * per]
                      for i in range(0, len(order) - plan.batch_size + 1, plan.batch_size)]   # whole batches only
            origins_of = [[origins[j] for j in grp] for grp in groups]
        else:
            mine = origins[plan.rank::plan.world_size]
            origins_of = [mine[i:i + self.eval_batch] for i in range(0, len(mine), self.eval_batch)]
        future = self._future(plan.split)
        return [self.windows(grp, future, plan.device) for grp in origins_of if grp]

    # --- one batch ----------------------------------------------------------------
    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor], state: Any = None) -> StepOutput:
        ctx, fut = batch
        if model.training:
            return self._train_step(model, ctx, fut)
        pred = self.predict(unwrap(model), ctx)
        return self._scored(pred, fut[..., -self.n_targets:])

    def _train_step(self, model: nn.Module, ctx: Tensor, fut: Tensor) -> StepOutput:
        if self.options.mode == "autoregressive":
            seq = torch.cat([ctx, fut], 1)                     # (B, lookback + 1, C)
            pred, _ = model(seq[:, :-1])
            target = seq[:, 1:]                                # every channel, one step ahead
        else:
            pred, _ = model(ctx)                               # (B, horizon, O)
            target = fut[..., -self.n_targets:]
        se = (pred.float() - target).pow(2).sum()
        n = target.numel()
        return StepOutput(se / n, {"se": se.item(), "values": n, "windows": len(ctx)})

    def panels(self, model: nn.Module) -> list[Panel]:
        """The first validation window: the target's context and truth, and the model's
        forecast over the horizon (standardised units; the last target channel)."""
        origin = self.origins("valid")[0]
        ctx, fut = self.windows([origin], self.options.horizon, next(model.parameters()).device)
        pred = self.predict(unwrap(model), ctx)[0, :, -1].cpu().tolist()
        truth = torch.cat([ctx[0, :, -1], fut[0, :, -1]]).cpu().tolist()
        lb = self.options.lookback
        name = self.columns[-1] if self.columns else "target"
        return [Panel.lines(f"forecast of {name} from validation row {origin}", range(-lb, len(pred)),
                            {"truth": truth, "forecast": [None] * lb + pred},
                            xlabel="steps from the forecast origin", ylabel=f"{name} (standardised)")]

    @torch.no_grad()
    def predict(self, model: nn.Module, ctx: Tensor) -> Tensor:
        """The model's forecast of the targets: ``ctx (B, lookback, C)`` -> ``(B, horizon, O)``."""
        return model.forecast(ctx, self.options.horizon)[..., -self.n_targets:].float()

    def _scored(self, pred: Tensor, target: Tensor) -> StepOutput:
        """Squared and absolute errors summed up to each reported horizon."""
        err = pred - target                                    # (B, H, O)
        se_t, ae_t = err.pow(2).sum((0, 2)).cumsum(0), err.abs().sum((0, 2)).cumsum(0)   # (H,): through step t
        per_step = len(pred) * pred.shape[2]
        stats = {"windows": len(pred), "se": float(se_t[-1]), "values": per_step * pred.shape[1]}
        for h in report_horizons(self.options.horizon):
            stats.update({f"se_{h}": float(se_t[h - 1]), f"ae_{h}": float(ae_t[h - 1]), f"n_{h}": per_step * h})
        return StepOutput(se_t[-1] / stats["values"], stats)

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        m = {"loss": sums["se"] / sums["values"], "windows": int(sums["windows"])}
        for h in report_horizons(self.options.horizon):
            if f"n_{h}" in sums:                               # evaluation; training sums have none
                m[f"mse_{h}"] = sums[f"se_{h}"] / sums[f"n_{h}"]
                m[f"mae_{h}"] = sums[f"ae_{h}"] / sums[f"n_{h}"]
        return m

    def describe(self, m: dict[str, float]) -> str:
        shown = [f"MSE@{h} {m[f'mse_{h}']:.4f}" for h in report_horizons(self.options.horizon) if f"mse_{h}" in m]
        return " ".join(shown) or f"MSE {m['loss']:.4f}"

    def summary(self) -> str:
        o, d = self.options, self.data
        n = {s: b - a for s, (a, b) in d.bounds.items()}
        what = o.data_file or o.dataset
        return (f"forecast_multi {what} ({o.mode}): {len(self.columns)} channels -> {o.target_column}, lookback "
                f"{o.lookback}, horizon {o.horizon}; {n['train']:,} train / {n['valid']:,} valid / {n['test']:,} "
                f"test rows, {len(self.origins('test'))} test origins (stride {o.eval_stride}), standardised")

    # --- baselines ----------------------------------------------------------------
    def evaluate_forecaster(self, forecast: Callable[[Tensor, int], Tensor], split: str) -> dict[str, float]:
        """Metrics of ``forecast(context (B, lookback, C), horizon) -> (B, horizon, C or O)``
        over the split's rolling origins (the model's own evaluation, for any predictor)."""
        sums: dict[str, float] = {}
        for ctx, fut in self.batches(Plan(split=split)):
            pred = forecast(ctx, self.options.horizon)[..., -self.n_targets:].float()
            for k, v in self._scored(pred, fut[..., -self.n_targets:]).stats.items():
                sums[k] = sums.get(k, 0.0) + v
        return self.metrics(sums)

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """Seasonal naive (yesterday's same hour) as the baseline, and naive (last value)
        under ``"naive"``; both on the same origins as the model."""
        def both(fn: Callable[[Tensor, int], Tensor]) -> dict[str, dict[str, float]]:
            return {s: self.evaluate_forecaster(fn, s) for s in ("valid", "test")}
        return {"name": "seasonal naive (24 h)", **both(seasonal_naive), "naive": both(naive)}

    # --- what the task learned from data -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.to_dict() if self.scaler is not None else None, "columns": list(self.columns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.scaler = Scaler.from_dict(state["scaler"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"the checkpoint's forecast_multi scaler is unusable: {e}") from None
