"""A run folder as the report sees it: its ``run.json``, metrics log and evaluations,
read so that nothing in a folder is fatal that a report could show around: a killed
run's cut-short last line is skipped, a folder of an older rnnkit (no ``run.json``, no
``evaluations.jsonl``) reads with a note of what is missing. Only what leaves nothing to
show is an error: no folder, no metrics, or files of a newer format than this rnnkit
reads."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..train.metrics import read_jsonl
from ..train.rundir import EVALUATIONS, EVALUATIONS_FORMAT, METRICS, METRICS_FORMAT, RUN_FORMAT, RunDir


@dataclass
class Run:
    """One run folder's records. ``notes`` say what is missing or was skipped."""

    path: Path
    info: dict[str, Any]                  # run.json, {} for an older run
    records: list[dict[str, Any]]         # metrics.jsonl
    evaluations: list[dict[str, Any]]     # evaluations.jsonl, [] for an older run
    notes: list[str] = field(default_factory=list)
    label: str | None = None              # set when several runs' folders share a name

    @property
    def name(self) -> str:
        return self.label or self.path.resolve().name or str(self.path)

    @property
    def task(self) -> str:
        return str(self.info.get("task") or (self.info.get("config") or {}).get("train", {}).get("task")
                   or "unknown task")

    def split(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("split") == name]

    @property
    def final(self) -> dict[str, Any] | None:
        finals = self.split("final")
        return finals[-1] if finals else None

    @property
    def select(self) -> tuple[str, str] | None:
        """The task's selection metric and direction, if the run recorded it."""
        s = self.info.get("select")
        return (str(s[0]), str(s[1])) if isinstance(s, list) and len(s) == 2 else None

    @property
    def baseline(self) -> dict[str, Any] | None:
        b = self.info.get("baseline")
        return b if isinstance(b, dict) and isinstance(b.get("valid"), dict) else None

    def final_metrics(self) -> dict[str, dict[str, float]]:
        """``{split: metrics}`` of the best weights (the final line), else of the last validation."""
        final = self.final
        if final is not None:
            return {s: final[s] for s in ("valid", "test") if isinstance(final.get(s), dict)}
        valid = self.split("valid")
        if not valid:
            return {}
        return {"valid (last)": {k: v for k, v in valid[-1].items() if k not in ("split", "step", "epoch")}}


def _newer(what: str, found: Any, known: int) -> bool:
    return isinstance(found, int) and not isinstance(found, bool) and found > known


def load_run(path: str | Path) -> Run:
    """Read one run folder (see the module docstring for what is an error)."""
    folder = RunDir(path)
    if not folder.path.exists():
        raise DataError(f"{folder.path}: no such run folder")
    if not folder.path.is_dir():
        raise DataError(f"{folder.path} is a file, not a run folder (rnnkit train --out FOLDER)")
    info = folder.read_info()
    notes: list[str] = []
    if not folder.info.is_file():
        notes.append(f"no {folder.info.name} (a run of an older rnnkit): its config, command and baseline are "
                     "not known")
    elif not info:
        notes.append(f"{folder.info.name} is not a JSON object; its config, command and baseline are not known")
    if _newer("run.json", info.get("format"), RUN_FORMAT):
        raise DataError(f"{folder.info} has format {info['format']}, newer than this rnnkit reads ({RUN_FORMAT}): "
                        "upgrade rnnkit to read this run")
    formats = info.get("formats") if isinstance(info.get("formats"), dict) else {}
    if _newer(METRICS, formats.get(METRICS), METRICS_FORMAT):
        raise DataError(f"{folder.metrics} has format {formats[METRICS]}, newer than this rnnkit reads "
                        f"({METRICS_FORMAT}): upgrade rnnkit to read this run")
    if not folder.metrics.is_file():
        raise DataError(f"{folder.path}: no {METRICS}, so nothing to show (not a run folder, or a run that "
                        "never started)")
    records, skipped = read_jsonl(folder.metrics)
    notes += skipped
    stepped = ("train", "valid", "diagnose")
    malformed = [r for r in records if not isinstance(r.get("split"), str)
                 or (r["split"] in stepped and number(r.get("step")) is None)]
    if malformed:
        notes.append(f"{METRICS}: {len(malformed)} line(s) without a split or an update number; skipped")
    records = [r for r in records if not any(r is m for m in malformed)]
    if not any(r["split"] in ("train", "valid", "final") for r in records):
        raise DataError(f"{folder.metrics} holds no training or validation metrics yet"
                        + (f" ({skipped[0]})" if skipped else ""))
    evaluations: list[dict[str, Any]] = []
    if folder.evaluations.is_file():
        lines, skipped = read_jsonl(folder.evaluations)
        notes += skipped
        newer = [e for e in lines if _newer(EVALUATIONS, e.get("format"), EVALUATIONS_FORMAT)]
        if newer:
            notes.append(f"{EVALUATIONS}: {len(newer)} evaluation(s) of a newer format than this rnnkit reads "
                         f"({EVALUATIONS_FORMAT}); skipped")
        evaluations = [e for e in lines if e not in newer and isinstance(e.get("step"), int)]
    else:
        notes.append(f"no {EVALUATIONS} (a run of an older rnnkit): no samples or task panels were recorded")
    if not any(r["split"] == "final" for r in records):
        notes.append("no final line in the metrics log: the run did not finish (killed, or still running); "
                     "the last validation is shown instead of the best weights' test metrics")
    return Run(folder.path, info, records, evaluations, notes)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Each folder's run; folders of the same name are told apart by their parents."""
    runs = [load_run(p) for p in paths]
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.label = "/".join(run.path.resolve().parts[-2:])
    return runs


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
