"""Evaluation records: ``results/<experiment>.json`` written by each run, and the
table in ``docs/results.md`` generated from them (never typed by hand).

    python -m rnnkit.results [docs/results.md]
"""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_bytes

#: literature figures the presets reproduce: preset -> (what, metric key path, value, source)
REFERENCES: dict[str, tuple[str, str, float, str]] = {
    "char-small": ("valid bits/char", "valid.bits_per_token", 2.361, "5-gram Kneser-Ney on the same split (must beat)"),
    "ptb-small": ("test perplexity", "test.ppl", 114.5, "Zaremba et al. 2014, small (non-regularised)"),
    "ptb-medium": ("test perplexity", "test.ppl", 82.7, "Zaremba et al. 2014, medium"),
    "ptb-large": ("test perplexity", "test.ppl", 78.4, "Zaremba et al. 2014, large"),
    "shakespeare-char": ("valid nats/char", "valid.nll", 1.50, "issue target (char-rnn 2-layer LSTM)"),
    "shakespeare-char-reg": ("valid nats/char", "valid.nll", 1.33, "issue target (<= 1.33; the same 2x512 "
                             "unregularised: 1.366)"),
    "ptb-reg": ("test perplexity", "test.ppl", 100.0, "issue target (<= 100 trained in <= 3 h on a 2-core CPU); "
                "Zaremba et al. 2014 small, non-regularised: 114.5"),
    "adding-t50": ("test MSE", "test.mse", 0.01, "issue target (< 0.01); Le et al. 2015 solve T=150+ with LSTMs"),
    "conll2003-bilstm-crf": ("test entity F1", "test.f1", 0.9094, "Lample et al. 2016 LSTM-CRF, with pretrained "
                             "word vectors (ours: random init, none offline)"),
    "conll2003-bilstm-crf-nochar": ("test entity F1", "test.f1", 0.9094, "Lample et al. 2016 (pretrained vectors); "
                                    "this run without character features"),
    "conll2003-bilstm": ("test entity F1", "test.f1", 0.9094, "Lample et al. 2016 (pretrained vectors); this run "
                         "without the CRF (softmax per token)"),
    "ud-ewt-upos": ("test UPOS accuracy", "test.accuracy", 0.93, "issue target (>= 0.93)"),
    "sst-bilstm": ("test SST-2 accuracy", "test.accuracy", 0.875, "Tai et al. 2015 BiLSTM with GloVe vectors "
                   "(87.5 binary; ours: random init)"),
    "sst-tree-lstm": ("test SST-2 root accuracy", "test.sst2_accuracy", 0.880, "Tai et al. 2015 constituency "
                      "Tree-LSTM with GloVe vectors (88.0 binary, 51.0 fine-grained; ours: random init)"),
    "dna-motif": ("test accuracy", "test.accuracy", 0.99, "issue target (>= 0.99), a planted 8-mer in 100 bases"),
    "jsb-chorales": ("test NLL per step", "test.nll_per_step", 8.5, "Chung et al. 2014, GRU on JSB Chorales "
                     "(nats per time step)"),
    "fsdd-digits": ("test accuracy (official split)", "test.accuracy", 0.97, "issue target (>= 0.97), FSDD "
                    "takes 0-4 as test"),
    "fsdd-ctc": ("test WER (prefix beam), connected digits", "test.wer", 0.05, "issue target (<= 0.05), seen "
                 "speakers"),
    "video-frames": ("test accuracy", "test.accuracy", 0.95, "issue target (>= 0.95), 8 generated motions, "
                     "no single frame tells the class"),
}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD when first called in this process, then the same value: a run calls it when it
    starts, so the commit recorded at its end is the code that ran, not one made while it
    trained (hours, sometimes)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_result(experiment: str, metrics: dict[str, Any], *, seed: int, wall_seconds: float,
                 config: dict | None = None, reference: dict | None = None,
                 directory: str | Path = "results", extra: dict | None = None, command: str | None = None) -> Path:
    """Write ``results/<experiment>.json`` atomically and return its path. ``command``:
    how to run it again (default: this process's arguments)."""
    record = {"experiment": experiment, "metrics": metrics, "command": command or " ".join(sys.argv),
              "git_commit": git_commit(), "machine": machine(), "wall_seconds": wall_seconds,
              "seed": seed, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "config": config, "reference": reference, **(extra or {})}
    path = Path(directory) / f"{experiment}.json"
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
    return path


def _get(d: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(v) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _reference(experiment: str, config: dict) -> dict:
    """The literature figure for a record written without one (a run started before its
    preset had a reference): by experiment name, else by the preset the run names."""
    key = experiment if experiment in REFERENCES else config.get("preset")
    if key not in REFERENCES:
        return {}
    what, metric, value, source = REFERENCES[key]
    return {"what": what, "metric": metric, "value": value, "source": source}


def render(directory: str | Path = "results") -> str:
    """The markdown results table, one row per results file."""
    rows = ["| experiment | metric | ours | reference | source | baseline | epochs | train time | machine | command |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    records = [r for r in (json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json")))
               if "experiment" in r]
    for r in records:
        ref = r.get("reference") or _reference(r["experiment"], r.get("config") or {})
        key = ref.get("metric", "")
        ours = _get(r["metrics"], key) if key else None
        base = _get(r["metrics"], ref.get("baseline_metric", "")) if ref.get("baseline_metric") else None
        # a resumed run's own wall time is only its last leg; the checkpoint carries the total
        wall = max(r.get("wall_seconds") or 0.0, r["metrics"].get("train_seconds") or 0.0)
        rows.append("| " + " | ".join([
            r["experiment"], ref.get("what", ""), _fmt(ours), _fmt(ref.get("value")), ref.get("source", ""),
            _fmt(base), _fmt(r["metrics"].get("epochs_completed")), f"{wall / 60:.1f} min" if wall else "", (r.get("machine") or {}).get("processor", ""),
            f"`{r.get('command', '')}`"]) + " |")
    notes = [f"- **{r['experiment']}**: {n}" for r in records for n in r.get("notes", [])]
    tail = "\n## Notes\n\n" + "\n".join(notes) + "\n" if notes else ""
    tail += "".join(_detail(r) for r in records)
    head = ("# Results\n\nGenerated by `python -m rnnkit.results` from `results/*.json`; do not edit by hand.\n"
            "Each file also records the git commit, seed, full configuration and all metrics.\n\n")
    return head + "\n".join(rows) + "\n" + tail


def _detail(r: dict) -> str:
    """An experiment's own table and plots, when its record carries them (a multi-run
    experiment such as exposure-bias: one row per setting, mean ± std over seeds)."""
    table, plots = r.get("table"), r.get("plots") or {}
    if not (table or plots):
        return ""
    out = [f"\n## {r['experiment']}\n", f"`{r.get('command', '')}` ({(r.get('wall_seconds') or 0) / 60:.1f} min, "
           f"commit {str(r.get('git_commit'))[:10]})\n"]
    if table:
        out.append("| " + " | ".join(table["columns"]) + " |")
        out.append("|" + "---|" * len(table["columns"]))
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
    out += [f"\n![{name}]({path})" for name, path in plots.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/results.md")
    atomic_write_bytes(out, render().encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
