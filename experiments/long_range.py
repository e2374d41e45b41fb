"""Long-range dependencies: the adding problem at T = 150 and T = 400 and copy memory at
T = 100, for a tanh RNN (default and orthogonal init), the IRNN (ReLU + identity, Le et
al. 2015), LSTM and GRU, each with and without gradient clipping; steps to solve and each
model's gradient-decay curve (||dL/dh_t|| against distance in time, before and after
training).

    python experiments/long_range.py adding-t150        # 27 min (one CPU core)
    python experiments/long_range.py adding-t400 copy-t100

"Solved": adding, test MSE < 0.01 (predicting the mean scores 1/6); copy, cross-entropy 10x
below the memoryless baseline 10 ln 8 / (T + 20). Every run trains through the one loop
with ``--target`` (it stops at the first validation that solves the task: its step count
is the steps to solve) and a wall-clock share of the experiment's budget. Writes
results/<experiment>.json (metrics.<model>.test_mse or .test_loss is the clipped run's;
``no_clip`` beside it) and docs/plots/long_range_<experiment>_{gradients,training}.png.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from rnnkit.diagnostics import gradient_through_time  # noqa: E402
from rnnkit.errors import TrainingDiverged  # noqa: E402
from rnnkit.results import git_commit, write_result  # noqa: E402
from rnnkit.tasks.copy_memory import memoryless_nll  # noqa: E402
from rnnkit.train.config import build_config  # noqa: E402
from rnnkit.train.loop import Loop  # noqa: E402
from rnnkit.train.metrics import MetricsLog  # noqa: E402

#: model name -> (model options, learning rate).
#: Run in this order: the budget is a pool, and time a run leaves by solving early goes to
#: the runs after it, so the slow learners (the IRNN's plateau is long) come last.
#: Adam throughout. The gated cells take a large step (at 1e-3 and 3e-3 an LSTM had not
#: left the 1/6 plateau of the adding problem at T = 150 after 3000 updates; at 1e-2 it
#: solved it in 1600) and the LSTM its forget gate open (bias 1, Jozefowicz et al. 2015).
#: The IRNN is slow, not stuck: its plateau at 1/6 lasts thousands of updates (at 1e-4 it
#: solved T = 150 in 12800, at 1e-3 in 7600; a run at 3e-4 given 3500 had not left it).
MODELS = {
    "lstm": ({"cell": "lstm", "forget_bias": 1.0}, 1e-2),
    "gru": ({"cell": "gru"}, 1e-2),
    "tanh": ({"cell": "rnn_tanh"}, 1e-3),
    "tanh_orthogonal": ({"cell": "rnn_tanh", "init": "orthogonal"}, 1e-3),
    "irnn": ({"cell": "rnn_relu", "init": "identity"}, 1e-3),
}
CLIP_NORM = 1.0
HIDDEN = 64


def adding(seq_len: int) -> dict:
    return {"train": {"task": "adding", "seq_len": seq_len, "train_size": 100_000, "valid_size": 1_000,
                      "test_size": 2_000, "target": 0.01},
            "metric": "mse", "model": {}}


def copy(seq_len: int) -> dict:
    return {"train": {"task": "copy_memory", "seq_len": seq_len, "train_size": 100_000, "valid_size": 1_000,
                      "test_size": 2_000, "target": memoryless_nll(seq_len) / 10},
            "metric": "loss", "model": {"embedding_dim": 16}}


EXPERIMENTS = {"adding-t150": adding(150), "adding-t400": adding(400), "copy-t100": copy(100)}


def decay_curve(model: torch.nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    """``||dL/dh_(T-k)||`` relative to k = 0, at log-spaced distances k."""
    g = gradient_through_time(model, inputs)
    ks = sorted({round(k) for k in torch.logspace(0, math.log10(len(g) - 1), 24).tolist()} | {0})
    last = g[-1] or 1.0
    return {str(k): g[-1 - k] / last for k in ks}


def train_one(spec: dict, name: str, clip: bool, minutes: float, seed: int, out: Path) -> dict:
    model_opts, lr = MODELS[name]
    train = {**spec["train"], "lr": lr, "clip_norm": CLIP_NORM if clip else None, "batch_size": 50, "epochs": 1000,
             "max_minutes": minutes, "eval_every": 100, "log_every": 50, "diagnose_every": 500, "seed": seed,
             "progress": False, "out": str(out), "checkpoint_minutes": None}
    cfg = build_config(None, {"train": train, "model": {**spec["model"], **model_opts, "hidden_size": HIDDEN}})
    task = cfg.make_task()
    task.prepare()
    probe = task.splits["test"][0][:100]
    probe = probe.long() if spec["metric"] == "loss" else probe
    loop = Loop(cfg, task)
    loop.open(overwrite=True)
    before = decay_curve(loop.model, probe)
    t = time.perf_counter()
    row: dict = {"lr": lr, "clip_norm": train["clip_norm"], "decay_init": before}
    try:
        result = loop.fit()
    except TrainingDiverged as e:   # no clipping: an explosion is a result, not a crash
        row.update(diverged=str(e), solved=False, steps=loop.progress.step, seconds=time.perf_counter() - t)
        row["test_" + spec["metric"]] = None
        return row
    with loop.best_weights() as model:
        row["decay_trained"] = decay_curve(model, probe)
    test = result["test"][spec["metric"]]
    row.update({"test_" + spec["metric"]: test, "test": result["test"], "valid": result["valid"],
                "solved": result["stopped_by"] == "target", "steps": result["steps"],
                "stopped_by": result["stopped_by"], "seconds": time.perf_counter() - t})
    return row


def plot(experiment: str, metrics: dict, runs: Path, metric: str, target: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120, sharey=True)
    for ax, key, title in ((axes[0], "decay_init", "at initialisation"), (axes[1], "decay_trained", "trained")):
        for name, m in metrics.items():
            curve = m["clip"].get(key)
            if curve:
                ks = [int(k) for k in curve]
                ax.loglog([k + 1 for k in ks], [max(v, 1e-30) for v in curve.values()], label=name)
        ax.set(title=f"{experiment}: gradient through time, {title}", xlabel="distance in time k + 1 (steps back)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("||dL/dh_(T-k)|| / ||dL/dh_T||")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    paths.append(Path("docs/plots") / f"long_range_{experiment}_gradients.png")
    paths[-1].parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(paths[-1])
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120, sharey=True)
    for ax, variant in zip(axes, ("clip", "no_clip")):
        for name in metrics:
            valid = [r for r in MetricsLog(runs / f"{name}-{variant}" / "metrics.jsonl").read() if r.get("split") == "valid"]
            if valid:
                ax.semilogy([r["step"] for r in valid], [r[metric] for r in valid], label=name)
        ax.axhline(target, color="grey", ls="--", lw=0.8, label="solved")
        ax.set(title=f"{experiment}: validation {metric}, " + ("clip 1.0" if variant == "clip" else "no clipping"),
               xlabel="update")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    paths.append(Path("docs/plots") / f"long_range_{experiment}_training.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def run_experiment(experiment: str, minutes: float, seed: int, runs: Path, models: list[str]) -> Path:
    spec = EXPERIMENTS[experiment]
    t0 = time.perf_counter()
    metrics: dict = {}
    left = 2 * len(models)
    for name in models:
        metrics[name] = {}
        for clip in (True, False):
            variant = "clip" if clip else "no_clip"
            share = (minutes - (time.perf_counter() - t0) / 60) / left
            left -= 1
            row = train_one(spec, name, clip, share, seed, runs / f"{name}-{variant}")
            row["budget_minutes"] = share
            metrics[name][variant] = row
            figure = row["test_" + spec["metric"]]
            print(f"{experiment} {name:16s} {variant:8s} test {spec['metric']} "
                  f"{'diverged' if figure is None else f'{figure:.4g}'}  solved {row['solved']} "
                  f"at step {row['steps']}  ({row['seconds']:.0f} s)", flush=True)
        clipped = metrics[name]["clip"]
        metrics[name].update({"test_" + spec["metric"]: clipped["test_" + spec["metric"]],
                              "solved": clipped["solved"], "steps_to_solve": clipped["steps"] if clipped["solved"] else None})
    target = spec["train"]["target"]
    for path in plot(experiment, metrics, runs, spec["metric"], target):
        print(f"wrote {path}")
    budget = {"minutes": minutes, "shared_by_runs_in_order": list(models), "batch_size": 50, "hidden_size": HIDDEN, "clip_norm": CLIP_NORM,
              "eval_every": 100, "solved_when": f"valid {spec['metric']} <= {target:.4g}"}
    return write_result(experiment, metrics, seed=seed, wall_seconds=time.perf_counter() - t0,
                        config={"train": spec["train"], "models": {k: {"model": v[0], "lr": v[1]} for k, v in MODELS.items()}},
                        reference=_reference(experiment),
                        extra={"budget": budget, **table_and_plots(experiment, metrics, spec["metric"])})


def add_tables(paths: list[str]) -> None:
    """Give results files written before the table existed their table, plots and reference
    (derived from the recorded metrics and this script; nothing else changes)."""
    import json

    from rnnkit.atomic import atomic_write_text

    for path in paths:
        record = json.loads(Path(path).read_text())
        metric = EXPERIMENTS[record["experiment"]]["metric"]
        record.update(table_and_plots(record["experiment"], record["metrics"], metric),
                      reference=_reference(record["experiment"]))
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        print(f"updated {path}")


def table_and_plots(experiment: str, metrics: dict, metric: str) -> dict:
    """The record's own table (one row per model and clipping) and its plots, for
    docs/results.md; derived from the metrics alone."""
    rows = []
    for name, m in metrics.items():
        for variant in ("clip", "no_clip"):
            r = m[variant]
            figure = r.get("test_" + metric)
            rows.append([name, "1.0" if variant == "clip" else "none",
                         "diverged" if figure is None else f"{figure:.4g}",
                         f"yes, {r['steps']} updates" if r["solved"] else f"no ({r['steps']} updates)",
                         f"{r['seconds']:.0f} s"])
    return {"table": {"columns": ["model", "clip norm", f"test {metric}", "solved", "time"], "rows": rows},
            "plots": {f"{experiment}: {kind}": f"plots/long_range_{experiment}_{kind}.png"
                      for kind in ("gradients", "training")}}


def _reference(experiment: str) -> dict:
    if experiment.startswith("adding"):
        t = experiment.removeprefix("adding-t")
        return {"what": f"LSTM test MSE at T = {t} (the others in the table)", "metric": "lstm.test_mse",
                "value": 0.01, "source": "issue target (< 0.01); Le et al. 2015 Fig. 2: IRNN and LSTM solve T = 150, "
                                         "plain tanh RNNs do not"}
    return {"what": "LSTM test cross-entropy (the others in the table)", "metric": "lstm.test_loss",
            "value": memoryless_nll(100) / 10,
            "source": "solved = 10x below the memoryless baseline 10 ln 8 / (T + 20) (Arjovsky et al. 2016)"}


def main() -> int:
    git_commit()  # the commit this run starts from: write_result records it at the end
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiments", nargs="*", help="any of " + ", ".join(sorted(EXPERIMENTS)))
    ap.add_argument("--add-tables", nargs="+", metavar="RESULTS_JSON",
                    help="only give these results files their table and plots (derived from their metrics)")
    ap.add_argument("--minutes", type=float, default=27.0, help="budget per experiment (split over its runs)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                    help="which models, in the order they share the time budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="runs/long-range")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.add_tables:
        add_tables(args.add_tables)
        return 0
    unknown = [e for e in args.experiments if e not in EXPERIMENTS] or ([] if args.experiments else ["(none)"])
    if unknown:
        ap.error(f"experiments must be some of {', '.join(sorted(EXPERIMENTS))}; got {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    for experiment in args.experiments:
        print(f"wrote {run_experiment(experiment, args.minutes, args.seed, Path(args.runs) / experiment, args.models)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
