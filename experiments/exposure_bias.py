"""Exposure bias: the four training regimes (teacher forcing, free running, scheduled
sampling, professor forcing) on (a) Mackey-Glass tau=17 with a GRU forecaster and (b)
a character LM on tiny-shakespeare; 3 seeds each; teacher-forced validation loss next
to closed-loop quality by horizon.

    RNNKIT_DATA=../shared/data python experiments/exposure_bias.py          # ~20-30 min, 2 CPU cores

Writes results/exposure-bias.json (mean and std over seeds, every run's figures) and
docs/plots/exposure_bias_{series,text}.png; `python -m rnnkit.results` puts its table
in docs/results.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rnnkit.baselines.ngram import KneserNeyLM  # noqa: E402
from rnnkit.exposure_bias import plot_horizon, series_free_running, text_free_running  # noqa: E402
from rnnkit.results import git_commit, write_result  # noqa: E402
from rnnkit.train.config import build_config  # noqa: E402
from rnnkit.train.loop import Loop  # noqa: E402

REGIMES = ("teacher", "free", "scheduled", "professor")
HORIZONS = (1, 10, 50)
SERIES = {"train": {"task": "forecast", "length": 10_000, "batch_size": 16, "bptt": 50, "lr": 3e-3, "epochs": 1000,
                    "schedule": "inverse_sigmoid", "schedule_k": 50.0, "discriminator_width": 32},
          "model": {"cell": "gru", "hidden_size": 32}}
TEXT = {"train": {"task": "lm", "data": "tinyshakespeare", "batch_size": 32, "bptt": 50, "lr": 3e-3, "epochs": 1,
                  "feed": "sample", "schedule": "inverse_sigmoid", "schedule_k": 40.0, "discriminator_width": 32},
        "model": {"cell": "lstm", "embedding_dim": 32, "hidden_size": 128, "num_layers": 1}}


def run(spec: dict, regime: str, seed: int, steps: int, out: Path):
    train = {**spec["train"], "regime": regime, "seed": seed, "max_steps": steps, "progress": False,
             "out": str(out), "log_every": 25}
    cfg = build_config(None, {"train": train, "model": spec["model"]})
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    loop.open(overwrite=True)
    result = loop.fit()
    with loop.best_weights() as model:
        model.eval()
        return task, model, result


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> int:
    git_commit()  # the commit this run starts from: write_result records it at the end
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--series-steps", type=int, default=400)
    ap.add_argument("--text-steps", type=int, default=300)
    ap.add_argument("--samples", type=int, default=64, help="text: samples scored per run")
    ap.add_argument("--runs", default="runs/exposure-bias")
    ap.add_argument("--experiment", default="exposure-bias")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads: these models are small and fed back step by step, where a second thread "
                         "only adds synchronisation (and stalls badly when another process holds a core)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runs: list[dict] = []
    curves: dict[str, dict[str, list[np.ndarray]]] = {"series": {}, "text": {}}
    reference = None
    for regime in REGIMES:
        for seed in args.seeds:
            t = time.perf_counter()
            task, model, result = run(SERIES, regime, seed, args.series_steps, Path(args.runs) / f"series-{regime}-{seed}")
            fr = series_free_running(task, model, split="test", horizons=HORIZONS)
            runs.append({"task": "series", "regime": regime, "seed": seed, "valid_mse": result["valid"]["mse"],
                         **{f"mse_h{h}": fr["mse_at"][str(h)] for h in HORIZONS}, "seconds": time.perf_counter() - t})
            curves["series"].setdefault(regime, []).append(np.array(fr["mse_curve"]))
            print(runs[-1], flush=True)
            t = time.perf_counter()
            task, model, result = run(TEXT, regime, seed, args.text_steps, Path(args.runs) / f"text-{regime}-{seed}")
            if reference is None:  # one reference model for every run: same data, same vocabulary
                reference = KneserNeyLM(order=5, vocab_size=len(task.vocab)).fit(task.data.train.numpy())
            fr = text_free_running(task, model, samples=args.samples, length=max(HORIZONS) * 2, horizons=HORIZONS,
                                   seed=seed, reference=reference)
            runs.append({"task": "text", "regime": regime, "seed": seed, "valid_nll": result["valid"]["nll"],
                         "reference_nll": fr["reference_nll"],
                         **{f"reference_nll_h{h}": fr["reference_nll_at"][str(h)] for h in HORIZONS},
                         "distinct_2": fr["distinct_2"], "seconds": time.perf_counter() - t})
            curves["text"].setdefault(regime, []).append(np.array(fr["reference_nll_curve"]))
            print(runs[-1], flush=True)
    summary: dict[str, dict[str, dict]] = {}
    for r in runs:
        figures = {k: v for k, v in r.items() if k not in ("task", "regime", "seed", "seconds")}
        for key, value in figures.items():
            summary.setdefault(r["task"], {}).setdefault(r["regime"], {}).setdefault(key, []).append(value)
    summary = {task: {regime: {k: mean_std(v) for k, v in figs.items()} for regime, figs in regs.items()}
               for task, regs in summary.items()}
    plots = {}
    for name, ylabel in (("series", "closed-loop squared error (standardised)"), ("text", "reference NLL (nats)")):
        path = REPO / "docs" / "plots" / f"exposure_bias_{name}.png"
        plot_horizon({regime: np.mean(c, axis=0) for regime, c in curves[name].items()}, path, ylabel=ylabel,
                     title=f"exposure bias ({name}): mean over {len(args.seeds)} seeds")
        plots[name] = str(path.relative_to(REPO / "docs"))
    wall = time.perf_counter() - t0
    path = write_result(args.experiment, {"summary": summary, "runs": runs}, seed=args.seeds[0], wall_seconds=wall,
                        config={"series": SERIES, "text": TEXT, "series_steps": args.series_steps,
                                "text_steps": args.text_steps, "seeds": args.seeds, "samples": args.samples},
                        extra={"plots": plots, "table": table(summary)})
    print(f"wrote {path} ({wall / 60:.1f} min)")
    return 0


def table(summary: dict) -> dict:
    """The rows docs/results.md shows (generated from the summary, never typed)."""
    def cell(stats: dict | None, fmt: str) -> str:
        return "" if stats is None else f"{stats['mean']:{fmt}} ± {stats['std']:{fmt}}"

    columns = ["task", "regime", "teacher-forced valid loss", "h=1", "h=10", "h=50", "distinct-2"]
    rows = []
    for regime, f in summary.get("series", {}).items():
        rows.append(["Mackey-Glass (MSE)", regime, cell(f["valid_mse"], ".4f"),
                     *(cell(f[f"mse_h{h}"], ".4f") for h in HORIZONS), ""])
    for regime, f in summary.get("text", {}).items():
        rows.append(["tiny-shakespeare (ref. NLL)", regime, cell(f["valid_nll"], ".3f"),
                     *(cell(f[f"reference_nll_h{h}"], ".3f") for h in HORIZONS), cell(f["distinct_2"], ".3f")])
    return {"columns": columns, "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
