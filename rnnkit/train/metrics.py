"""Per-run metrics as JSON lines (optionally mirrored to TensorBoard), and the
conversions between loss units. The lines' fields are listed in :mod:`.rundir`."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import ConfigError

LN2 = math.log(2.0)


def loss_metrics(nll: float, level: str) -> dict[str, float]:
    """Mean nats per token -> the units people quote (ppl for words, bits/char for chars)."""
    out = {"nll": nll, "ppl": math.exp(min(nll, 700.0)), "bits_per_token": nll / LN2}
    if level == "char":
        out["bpc"] = out["bits_per_token"]  # the name char-level papers quote
    return out


def read_jsonl(path: str | Path) -> tuple[list[dict], list[str]]:
    """The JSON objects of a JSON-lines log, and a note per line that is not one (a run
    killed mid-write leaves its last line cut short): such lines are skipped, never fatal."""
    records, notes = [], []
    lines = Path(path).read_text(errors="replace").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif i == len(lines):
            notes.append(f"{Path(path).name}: the last line (line {i}) is cut short, as a killed run leaves it; "
                         "skipped")
        else:
            notes.append(f"{Path(path).name}: line {i} is not a JSON object; skipped")
    return records, notes


class MetricsLog:
    """Appends one JSON object per line; each line is flushed so a crash loses nothing.
    ``mirror`` (e.g. a :class:`TensorBoardLog`) gets every record too."""

    def __init__(self, path: str | Path | None, mirror: Any = None) -> None:
        self.path = Path(path) if path is not None else None
        self.mirror = mirror

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self.mirror is not None:
            self.mirror.write(record)

    def read(self) -> list[dict]:
        """The records logged so far (a cut-short last line, as a killed run leaves, skipped)."""
        if self.path is None or not self.path.exists():
            return []
        return read_jsonl(self.path)[0]

    def truncate(self, step: int) -> int:
        """Keep what happened up to ``step`` (a resumed checkpoint's): later lines would be
        logged again by the resumed run, and a "final" line no longer ends it. Also drops
        a half-written last line. Returns the number of lines removed."""
        if self.path is None or not self.path.exists():
            return 0
        kept, removed = [], 0
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                removed += 1
                continue
            if record.get("split") == "final" or record.get("step", 0) > step:
                removed += 1
            else:
                kept.append(line)
        if removed:
            atomic_write_bytes(self.path, "".join(k + "\n" for k in kept).encode())
        return removed


class TensorBoardLog:
    """The metrics log's records as TensorBoard scalars (``train/loss``, ``valid/nll``,
    ``diagnose/spectral_radius/weight_hh_l0:0`` ...) at their update, and histograms
    (:meth:`histogram`), through ``torch.utils.tensorboard``. Needs the ``tensorboard``
    package (``pip install 'rnnkit[tensorboard]'``)."""

    def __init__(self, directory: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ConfigError(f"--tensorboard needs the tensorboard package: pip install 'rnnkit[tensorboard]' "
                              f"(or pip install tensorboard) ({e})") from None
        self.writer = SummaryWriter(log_dir=str(directory))

    def write(self, record: dict[str, Any]) -> None:
        split = record.get("split")
        if split == "final":
            step = record.get("steps", 0)
            for name in ("valid", "test"):
                for key, value in (record.get(name) or {}).items():
                    self._scalar(f"final/{name}/{key}", value, step)
            return
        if split not in ("train", "valid", "diagnose", "nonfinite"):
            return
        step = record.get("step", 0)
        for key, value in record.items():
            if key in ("split", "step", "epoch"):
                continue
            if isinstance(value, dict):
                for sub, v in value.items():
                    self._scalar(f"{split}/{key}/{sub}", v, step)
            else:
                self._scalar(f"{split}/{key}", value, step)
        self.writer.flush()

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            self.writer.add_scalar(tag, float(value), step)

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        import numpy as np

        self.writer.add_histogram(tag, np.asarray(values, dtype=np.float64), step)

    def close(self) -> None:
        self.writer.close()
