"""ETTh1 (Electricity Transformer Temperature, hourly; Zhou et al. 2021, Informer) and any
CSV laid out like it: a ``date`` column, then numeric columns.

ETTh1 has 17,420 hourly rows of seven channels: six loads (HUFL, HULL, MUFL, MULL,
LUFL, LULL) and the oil temperature OT, the usual target. The split is Informer's:
train = the first 12 months (12*30*24 = 8,640 rows), valid = the next 4 (2,880), test
= the next 4 (2,880); the remaining rows are unused, as in the standard code. A
validation or test window may read the ``lookback`` rows before its split as context
(the standard code starts those splits ``lookback`` rows early), but every forecast
target lies inside its split.

Values are standardised per column with the mean and standard deviation of the
*train rows only*, so nothing about valid/test leaks into the scaling.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

ETTH1_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
MONTH = 30 * 24                                   # hours in a month, as the standard code counts
ETT_SPLIT = (12 * MONTH, 4 * MONTH, 4 * MONTH)    # 8640 / 2880 / 2880 rows
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Table:
    """A CSV series: ``values (N, C)`` float64 in file order, one column per name."""

    path: Path
    dates: list[str]
    columns: tuple[str, ...]
    values: np.ndarray


def read_series_csv(path: str | Path, columns: tuple[str, ...] | None = None) -> Table:
    """Read a CSV with a header whose first column is ``date`` and the rest numbers.

    ``columns`` (optional) are required names, returned in that order; by default every
    column after ``date``. Raises DataError naming the file, line and column of the first
    problem (missing file or column, short row, value that is not a finite number).
    """
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read the series CSV ({e.strerror or e})") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file, expected a header line starting with 'date'")
        header = [h.strip() for h in header]
        if header[0] != "date":
            raise DataError(f"{path}, line 1: the first column must be 'date', got {header[0]!r}")
        wanted = tuple(columns) if columns is not None else tuple(header[1:])
        missing = [c for c in wanted if c not in header[1:]]
        if missing or not wanted:
            raise DataError(f"{path}, line 1: missing column(s) {', '.join(missing) or '(any numeric column)'}; "
                            f"the header has {', '.join(header)}")
        index = [header.index(c) for c in wanted]
        dates, rows = [], []
        for line, row in enumerate(reader, start=2):
            if not row:                                   # a blank line (often the last) holds no data
                continue
            dates.append(row[0])
            rows.append([_number(path, line, row, i, header[i]) for i in index])
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return Table(path, dates, wanted, np.asarray(rows, dtype=np.float64))


def _number(path: Path, line: int, row: list[str], i: int, column: str) -> float:
    if i >= len(row):
        raise DataError(f"{path}, line {line}, column {column!r}: missing value (the row has {len(row)} fields)")
    try:
        v = float(row[i])
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise DataError(f"{path}, line {line}, column {column!r}: {row[i]!r} is not a finite number")
    return v


def split_sizes(n_rows: int) -> tuple[int, int, int]:
    """Rows of train/valid/test: Informer's 12/4/4 months when the file is long enough
    (ETTh1), else the same proportions (60/20/20) of a shorter file."""
    if n_rows >= sum(ETT_SPLIT):
        return ETT_SPLIT
    train, valid = int(0.6 * n_rows), int(0.2 * n_rows)
    return train, valid, int(0.2 * n_rows)


def split_bounds(n_rows: int) -> dict[str, tuple[int, int]]:
    """``split -> (first row, end row)`` of the targets of each split, in time order."""
    sizes = split_sizes(n_rows)
    edges = np.cumsum((0,) + sizes).tolist()
    return {s: (edges[i], edges[i + 1]) for i, s in enumerate(SPLITS)}


@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation ``(x - mean) / std``; ``mean``, ``std``: ``(C,)``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, train: np.ndarray) -> Scaler:
        """From the train rows ``(N, C)`` only; a constant column keeps std 1 (no division by 0)."""
        std = train.std(axis=0)
        return cls(train.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        mean, std = np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64)
        if mean.shape != std.shape or mean.ndim != 1 or not (np.isfinite(mean).all() and (std > 0).all()):
            raise DataError("a scaler needs equal-length lists: finite means and positive stds")
        return cls(mean, std)


@dataclass(frozen=True)
class SeriesSplits:
    """A standardised multivariate series and where its splits lie.

    ``z (N, C)`` float32 standardised values of the whole file; ``bounds[split] = (start,
    end)``: the rows whose values a split forecasts. Context may reach before ``start``.
    """

    columns: tuple[str, ...]
    z: np.ndarray
    bounds: dict[str, tuple[int, int]]
    scaler: Scaler

    def rows(self, split: str) -> np.ndarray:
        """The split's own standardised rows ``(N_split, C)`` (no context)."""
        a, b = self.bounds[split]
        return self.z[a:b]


def load_series(path: str | Path, columns: tuple[str, ...] | None = None,
                scaler: Scaler | None = None) -> SeriesSplits:
    """Read, split and standardise ``path``; ``scaler`` (from a checkpoint) or one fitted
    on the train rows."""
    table = read_series_csv(path, columns)
    bounds = split_bounds(len(table.values))
    if min(b - a for a, b in bounds.values()) < 2:
        raise DataError(f"{path}: {len(table.values)} rows are too few to split into train/valid/test")
    a, b = bounds["train"]
    scaler = scaler or Scaler.fit(table.values[a:b])
    if len(scaler.mean) != len(table.columns):
        raise DataError(f"{path}: the scaler has {len(scaler.mean)} columns, the file {len(table.columns)}")
    return SeriesSplits(table.columns, scaler.transform(table.values).astype(np.float32), bounds, scaler)
