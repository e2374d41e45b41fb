"""Per-run metrics as JSON lines, and the conversions between loss units."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes

LN2 = math.log(2.0)


def loss_metrics(nll: float, level: str) -> dict[str, float]:
    """Mean nats per token -> the units people quote (ppl for words, bits/char for chars)."""
    out = {"nll": nll, "ppl": math.exp(min(nll, 700.0)), "bits_per_token": nll / LN2}
    if level == "char":
        out["bpc"] = out["bits_per_token"]  # the name char-level papers quote
    return out


class MetricsLog:
    """Appends one JSON object per line; each line is flushed so a crash loses nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

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
