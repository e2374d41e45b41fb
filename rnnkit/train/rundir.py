"""A run directory holds one run: its checkpoints, best weights and metrics log.

Reusing a folder that already holds files needs ``resume`` (continue that run) or
``overwrite`` (replace it): an unrelated run never silently mixes its checkpoints
or metrics with another's. A lock keeps two live processes out of one folder, and
temp files left by a killed save are removed when the next run opens it."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import ConfigError

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
LOCK = ".lock"
#: what a run writes; --overwrite removes exactly these (and temp files), nothing of the user's
RUN_FILES = (CHECKPOINT, BEST, METRICS, "vocab.json")


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def contents(self) -> list[str]:
        """Names in the folder that belong to some run or user (not our lock)."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK)

    def open(self, *, resume: bool = False, overwrite: bool = False) -> None:
        """Claim the folder for this process; refuse before touching anything."""
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pass one")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a folder")
        existing = self.contents()
        if resume and not self.checkpoint.is_file():
            raise ConfigError(f"nothing to resume in {self.path}: no {CHECKPOINT}"
                              + (" (start it again with --overwrite)" if existing else ""))
        if existing and not (resume or overwrite):
            shown = ", ".join(existing[:4]) + (", ..." if len(existing) > 4 else "")
            raise ConfigError(f"--out {self.path} already holds a run ({shown}); pass --resume to continue it "
                              "or --overwrite to replace it, or choose another folder")
        for name in RUN_FILES:
            if (self.path / name).is_dir():
                raise ConfigError(f"{self.path / name} is a folder; rnnkit needs that name for its {name}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
        except PermissionError as e:
            raise ConfigError(f"cannot write to --out {self.path}: {e.strerror}") from None
        except OSError as e:
            raise ConfigError(f"cannot use --out {self.path}: {e.strerror}") from None
        self.remove_temp_files()
        if overwrite:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"--out {self.path} is in use by another running rnnkit process") from None
        self._lock_fd = fd

    def remove_temp_files(self) -> list[Path]:
        """Temp files of saves that were killed mid-write (see :mod:`rnnkit.atomic`)."""
        removed = [p for p in self.path.glob(".*.tmp") if p.is_file()]
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None
