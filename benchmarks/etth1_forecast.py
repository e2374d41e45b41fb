"""ETTh1 forecasting (OT from all 7 channels, Informer's 12/4/4-month split, train-only
scaling): the rnnkit Forecaster trained through the loop vs seasonal naive, naive and
darts' ``RNNModel`` (GRU), all scored on the same test rolling origins (one every
``--eval-stride`` hours) at horizons 24, 48 and 168 in standardised units.

    pip install 'rnnkit[bench]'      # darts (+ pytorch-lightning): a benchmark-only peer
    OMP_NUM_THREADS=1 python benchmarks/etth1_forecast.py --minutes 4 --darts-minutes 4

Writes ``results/etth1-forecast.json`` with ``metrics.<model>.mse_<h>`` / ``mae_<h>``.
darts' RNNModel is autoregressive (one-step training over ``training_length`` windows,
closed-loop prediction), so it forecasts all 7 channels and is scored on OT.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rnnkit.results import git_commit, write_result  # noqa: E402
from rnnkit.tasks.forecast_multi import report_horizons  # noqa: E402
from rnnkit.train.config import build_config  # noqa: E402
from rnnkit.train.loop import fresh_run  # noqa: E402


def train_forecaster(a) -> tuple[dict, object, dict]:
    """The rnnkit Forecaster through the one training loop; (test metrics, task, config)."""
    train = {"task": "forecast_multi", "data_dir": a.data_dir, "mode": a.mode, "lookback": a.lookback,
             "horizon": a.horizon, "eval_stride": a.eval_stride, "epochs": 1000, "max_minutes": a.minutes,
             "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed, "patience": a.patience, "progress": False,
             "out": a.out, "eval_every": a.eval_every}
    model = {"cell": "gru", "hidden_size": a.hidden}
    cfg = build_config(None, {"train": train, "model": model})
    with fresh_run(cfg) as loop:
        task = loop.task
        print(task.summary(), flush=True)
        result = loop.fit()
    print(f"forecaster: stopped by {result['stopped_by']} after {result['steps']} updates", flush=True)
    return result["test"], task, {"train": train, "model": model, "stopped_by": result["stopped_by"],
                                  "steps": result["steps"]}


def train_darts(a, task) -> tuple[dict | None, str | None]:
    """darts' RNNModel (GRU) on the same standardised train rows, scored on the same origins."""
    try:
        from darts import TimeSeries
        from darts.models import RNNModel
    except ImportError as e:
        return None, f"darts not importable: {e}"
    a0, b0 = task.data.bounds["train"]
    train = TimeSeries.from_values(task.data.z[a0:b0].astype(np.float32))
    model = RNNModel(model="GRU", input_chunk_length=a.lookback, training_length=a.lookback + 24,
                     hidden_dim=a.hidden, n_rnn_layers=1, batch_size=a.batch_size, n_epochs=1000,
                     optimizer_kwargs={"lr": a.lr}, random_state=a.seed,
                     pl_trainer_kwargs={"accelerator": "cpu", "max_time": {"minutes": a.darts_minutes},
                                        "enable_progress_bar": False, "enable_model_summary": False,
                                        "logger": False, "enable_checkpointing": False})
    t0 = time.perf_counter()
    model.fit(train, verbose=False)
    print(f"darts RNNModel trained in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)

    def forecast(ctx: torch.Tensor, horizon: int) -> torch.Tensor:
        series = [TimeSeries.from_values(c.numpy()) for c in ctx]
        preds = model.predict(n=horizon, series=series, verbose=False, show_warnings=False)
        return torch.from_numpy(np.stack([p.values() for p in preds]).astype(np.float32))
    return task.evaluate_forecaster(forecast, "test"), None


def main() -> int:
    git_commit()  # the commit this run starts from: write_result records it at the end
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder holding etth1/ETTh1.csv (default $RNNKIT_DATA)")
    p.add_argument("--mode", default="direct", choices=("direct", "autoregressive"))
    p.add_argument("--lookback", type=int, default=96)
    p.add_argument("--horizon", type=int, default=168)
    p.add_argument("--eval-stride", type=int, default=24)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--minutes", type=float, default=4.0, help="rnnkit training budget")
    p.add_argument("--darts-minutes", type=float, default=4.0, help="darts training budget")
    p.add_argument("--eval-every", type=int, default=500, help="validate every this many updates")
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-darts", action="store_true")
    p.add_argument("--out", default="runs/etth1-forecast")
    p.add_argument("--experiment", default="etth1-forecast")
    a = p.parse_args()
    t0 = time.perf_counter()

    ours, task, config = train_forecaster(a)
    base = task.baseline()
    metrics = {"forecaster": ours, "seasonal_naive": base["test"], "naive": base["naive"]["test"]}
    if a.no_darts:
        metrics["darts_rnn"], why = None, "skipped (--no-darts)"
    else:
        metrics["darts_rnn"], why = train_darts(a, task)

    hs = report_horizons(a.horizon)
    keep = [f"{k}_{h}" for h in hs for k in ("mse", "mae")]
    metrics = {m: ({k: v[k] for k in keep} if v is not None else None) for m, v in metrics.items()}
    print(f"\n{'model':<16}" + "".join(f"{'MSE@' + str(h):>10}{'MAE@' + str(h):>10}" for h in hs))
    for name, m in metrics.items():
        cells = "".join(f"{m[f'mse_{h}']:>10.4f}{m[f'mae_{h}']:>10.4f}" for h in hs) if m else f"  {why}"
        print(f"{name:<16}{cells}")
    beats = all(metrics["forecaster"][f"mse_{h}"] < metrics["seasonal_naive"][f"mse_{h}"] for h in hs)
    print(f"\nforecaster beats seasonal naive (MSE) at every horizon: {beats}")
    notes = [f"test: {len(task.origins('test'))} rolling origins every {a.eval_stride} h; standardised units "
             "(train-split mean/std per column); target OT from all 7 channels",
             f"forecaster: rnnkit GRU {a.mode}, hidden {a.hidden}, lookback {a.lookback}, {a.minutes} min budget, "
             f"best validation weights"]
    notes.append(f"darts_rnn: {why}" if why else
                 f"darts_rnn: darts RNNModel GRU hidden {a.hidden}, input_chunk_length {a.lookback}, "
                 f"{a.darts_minutes} min budget, autoregressive on all 7 channels, scored on OT")
    path = write_result(
        a.experiment, metrics, seed=a.seed, wall_seconds=time.perf_counter() - t0,
        config={**config, "darts": None if why else {"hidden_dim": a.hidden, "input_chunk_length": a.lookback,
                                                     "training_length": a.lookback + 24, "minutes": a.darts_minutes}},
        reference={"what": "test MSE at 24 h vs seasonal naive", "metric": "forecaster.mse_24",
                   "value": metrics["seasonal_naive"]["mse_24"],
                   "source": "seasonal naive on the same split (must beat)"},
        extra={"notes": notes, "beats_seasonal_naive": beats})
    print(f"wrote {path}")
    return 0 if beats else 1


if __name__ == "__main__":
    sys.exit(main())
