"""Figures of runs, drawn with matplotlib's object API on its Agg canvas (no display,
no global pyplot state): the curves of ``rnnkit plot`` and the figures of the report.

:func:`curves` is the main one: for each run, the metric on the train and valid lines
of ``metrics.jsonl`` (as logged: one point per line), the task's baseline on valid as
a dashed horizontal line, and the learning-rate schedule below (when any run logs one).
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .rundata import Run, number

SPLITS = ("train", "valid")
X_LABELS = {"step": "update", "time": "training time (s)"}
_SKIP = {"split", "step", "epoch"}


def figure(width: float = 7.0, height: float = 4.0):
    """A matplotlib Figure not tied to any GUI backend (saved through Agg)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def data_uri(fig) -> str:
    """The figure as an inline PNG (``data:image/png;base64,...``)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")


def parse_metric(metric: str) -> tuple[tuple[str, ...], str]:
    """``"valid.nll"`` -> ``(("valid",), "nll")``; ``"loss"`` -> ``(("train", "valid"), "loss")``."""
    split, dot, key = metric.partition(".")
    if dot and split in SPLITS and key:
        return (split,), key
    if not metric or metric.startswith(".") or metric.endswith("."):
        raise ConfigError(f"--metric must be KEY or SPLIT.KEY (e.g. valid.nll), got {metric!r}")
    return SPLITS, metric


def available_metrics(runs: list[Run]) -> list[str]:
    names = {f"{r['split']}.{k}" for run in runs for r in run.records if r.get("split") in SPLITS
             for k, v in r.items() if k not in _SKIP and number(v) is not None}
    return sorted(names)


def _seen_key(run: Run) -> str | None:
    unit = run.info.get("count_key")
    if isinstance(unit, str):
        return f"{unit}_seen"
    keys = {k for r in run.split("train") for k in r if k.endswith("_seen")}
    return next(iter(sorted(keys)), None)


def x_values(run: Run, records: list[dict[str, Any]], x: str) -> np.ndarray:
    """The x of each record: its update, training seconds, or the task's unit seen. Valid
    lines of an older log have no time; theirs is interpolated from the train lines."""
    steps = np.array([r.get("step", 0) for r in records], dtype=float)
    if x == "step":
        return steps
    key = "time" if x == "time" else _seen_key(run)
    if key is None:
        raise DataError(f"{run.name}: its log has no count of the task's unit seen (written by an older rnnkit); "
                        "use --x step or --x time")
    known = [(r["step"], r[key]) for r in run.records if r.get("split") in SPLITS and number(r.get(key)) is not None
             and isinstance(r.get("step"), (int, float))]
    if not known:
        raise DataError(f"{run.name}: its log has no {key!r} to put on the x axis; use --x step")
    ks, vs = zip(*sorted(known))
    own = np.array([number(r.get(key)) if number(r.get(key)) is not None else np.nan for r in records], dtype=float)
    return np.where(np.isnan(own), np.interp(steps, ks, vs), own)


def series(run: Run, split: str, key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``key`` on the ``split`` lines that log it, in log order."""
    records = [r for r in run.split(split) if number(r.get(key)) is not None]
    return x_values(run, records, x), np.array([r[key] for r in records], dtype=float)


def baseline_value(run: Run, key: str, split: str = "valid") -> tuple[str, float] | None:
    """The baseline's ``key`` on ``split``, if the run has a baseline that reports it. A
    baseline without ``loss`` (the n-gram model's nll and ppl) stands for the loss when
    the run's own loss is its selection metric (a language model's loss is its nll)."""
    b = run.baseline
    if b is None or not isinstance(b.get(split), dict):
        return None
    value = number(b[split].get(key))
    if value is None and key == "loss" and run.select is not None:
        valid = run.split("valid")
        metric = run.select[0]
        if valid and all(number(r.get(metric)) is not None and r.get(metric) == r.get("loss") for r in valid):
            value = number(b[split].get(metric))
    return None if value is None else (str(b.get("name", "baseline")), value)


def curves(runs: list[Run], metric: str = "loss", x: str = "step", lr: bool = True):
    """The figure of ``rnnkit plot``: ``metric`` of every run (train and valid lines,
    the baseline dashed) above, the learning rate below (``lr``)."""
    if x not in ("step", "time", "tokens"):
        raise ConfigError(f"--x must be step, time or tokens, got {x!r}")
    splits, key = parse_metric(metric)
    plotted = {run.name: [s for s in splits if series(run, s, key, "step")[1].size] for run in runs}
    if not any(plotted.values()):
        raise ConfigError(f"no run logs the metric {metric!r}; these do: {', '.join(available_metrics(runs))}")
    lr = lr and any(series(run, "train", "lr", "step")[1].size for run in runs)   # none: a closed-form fit
    fig = figure(7.5, 6.0 if lr else 4.0)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1]) if lr else [fig.subplots()]
    ax = axes[0]
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for run, color in zip(runs, colors):
        label = f"{run.name}: " if len(runs) > 1 else ""
        for split in plotted[run.name]:
            xs, ys = series(run, split, key, x)
            ax.plot(xs, ys, color=color, ls="-" if split == "valid" else ":", marker="o" if split == "valid" else None,
                    ms=3, lw=1.5 if split == "valid" else 1.0, label=f"{label}{split} {key}")
        if "valid" in plotted[run.name]:
            b = baseline_value(run, key)
            if b is not None:
                ax.axhline(b[1], color=color, ls="--", lw=1.0, label=f"{label}baseline: {b[0]} (valid)")
    ax.set_ylabel(key)
    ax.set_title(f"{key} by {x}" + (f" ({runs[0].name})" if len(runs) == 1 else f" ({len(runs)} runs)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if lr:
        ax_lr = axes[1]
        for run, color in zip(runs, colors):
            xs, ys = series(run, "train", "lr", x)
            if ys.size:
                ax_lr.step(xs, ys, where="post", color=color, label=run.name if len(runs) > 1 else "learning rate")
        ax_lr.legend(fontsize=7)
        ax_lr.set_ylabel("learning rate")
        ax_lr.grid(alpha=0.3)
    unit = (runs[0].info.get("count_key") or "units") + " seen" if x == "tokens" else X_LABELS.get(x, x)
    axes[-1].set_xlabel(unit)
    return fig


def save_curves(runs: list[Run], output: str | Path, metric: str = "loss", x: str = "step") -> Path:
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise ConfigError(f"-o must name a .png file, got {str(output)!r}")
    fig = curves(runs, metric, x)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, format="png")
    return output


# --- the panels tasks record (rnnkit.train.task.Panel) ---------------------------------
def panel_figure(panel: dict[str, Any]):
    """The figure of a ``heatmap`` or ``lines`` panel; None for the kinds shown as HTML."""
    kind = panel.get("kind")
    if kind == "heatmap":
        m = np.array(panel.get("matrix") or [[np.nan]], dtype=float)
        if m.ndim != 2 or not m.size:
            raise DataError("a heatmap panel needs a non-empty 2-D matrix")
        fig = figure(min(max(5.5, 2.5 + 0.25 * m.shape[1]), 10), min(max(3.5, 2 + 0.22 * m.shape[0]), 8))
        ax = fig.subplots()
        im = ax.imshow(m, aspect="auto", cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8)
        if m.shape[0] * m.shape[1] <= 36:    # small (a confusion matrix): the numbers too
            middle = (np.nanmax(m) + np.nanmin(m)) / 2
            for (i, j), v in np.ndenumerate(m):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8,
                        color="black" if v > middle else "white")
        for labels, set_ticks, n in ((panel.get("x_labels"), ax.set_xticks, m.shape[1]),
                                     (panel.get("y_labels"), ax.set_yticks, m.shape[0])):
            if labels and len(labels) == n and n <= 60:
                set_ticks(range(n), labels, fontsize=7, **({"rotation": 90} if set_ticks == ax.set_xticks else {}))
        ax.set(xlabel=panel.get("xlabel", ""), ylabel=panel.get("ylabel", ""), title=panel.get("title", ""))
        return fig
    if kind == "lines":
        fig = figure(7, 3.5)
        ax = fig.subplots()
        xs = np.array(panel.get("x") or [], dtype=float)
        for name, ys in (panel.get("series") or {}).items():
            ys = np.array(ys, dtype=float)
            ax.plot(xs[:len(ys)] if len(xs) >= len(ys) else np.arange(len(ys)), ys, label=name, lw=1.2)
        ax.set(xlabel=panel.get("xlabel", ""), ylabel=panel.get("ylabel", ""), title=panel.get("title", ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return fig
    return None
