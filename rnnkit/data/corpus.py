"""Raw text corpora with train/valid/test splits, from a registered dataset,
any text file or folder, or the embedded default corpus.

A :class:`Corpus` holds *text*, not ids: tokenization and the vocabulary come
after, so one corpus serves both char- and word-level models.

Splitting rules (deterministic, no randomness, documented because evaluation
numbers depend on them):

* one file: its lines, in order, 90% / 5% / 5% (each split at least one line);
  a file of fewer than 3 lines is split by characters the same way.
* a folder with >= 3 files (recursive; hidden entries and ``__pycache__``
  skipped): files are ordered by the BLAKE2b hash of their relative path, and
  positions 0, 20, 40, ... go to valid, 1, 21, 41, ... to test, the rest to train
  (about 5/5/90 by file, never an empty split, independent of directory
  listing order). Each split concatenates its files in sorted path order.
* a folder with 1-2 files: the files are concatenated and split like one file.
* a registered single-file dataset (tinyshakespeare): characters 90/5/5.

Newlines are normalized to ``"\\n"`` (as text-mode ``open`` does).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from ..errors import DataError
from .default_corpus import default_corpus
from .registry import DATASETS, WHOLE, get_spec, resolve
from .text import SPLITS, Corpus, read_text_file  # defined below both corpus sources; still public here
from .tokenize import LEVELS, Level

_EVAL_FRACTION = 0.05
_FOLDER_STRIDE = 20


def _split_sizes(n: int, what: str) -> tuple[int, int, int]:
    """(train, valid, test) counts for ``n`` units: 5% each for valid/test, at least one."""
    k = max(1, int(n * _EVAL_FRACTION))
    if n - 2 * k < 1:
        raise DataError(f"{what}: too small to split into train/valid/test ({n} units, need >= 3)")
    return n - 2 * k, k, k


def split_chars(text: str, what: str = "text") -> tuple[str, str, str]:
    """Contiguous 90/5/5 split by characters."""
    a, b, _ = _split_sizes(len(text), what)
    return text[:a], text[a : a + b], text[a + b :]


def split_lines(text: str, what: str = "text") -> tuple[str, str, str]:
    """Contiguous 90/5/5 split by lines (line endings kept, so the parts concatenate back)."""
    lines = text.splitlines(keepends=True)
    if len(lines) < 3:
        return split_chars(text, what)
    a, b, _ = _split_sizes(len(lines), what)
    return "".join(lines[:a]), "".join(lines[a : a + b]), "".join(lines[a + b :])


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def _check_splits(parts: tuple[str, str, str], what: str) -> None:
    for name, text in zip(SPLITS, parts):
        if not text.strip():
            raise DataError(f"{what}: the {name} split is empty (only whitespace)")


def _join(texts: list[str]) -> str:
    # A newline between files keeps the last line of one from running into the first of the next.
    return "".join(t if t.endswith("\n") or not t else t + "\n" for t in texts)


def _list_files(root: Path) -> list[Path]:
    """Regular files under ``root``, recursively, sorted by relative path; hidden entries skipped."""
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") or part == "__pycache__" for part in rel):
            continue
        if p.is_file():
            files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _path_hash(rel: str) -> bytes:
    return hashlib.blake2b(rel.encode("utf-8"), digest_size=16).digest()


def split_files(root: Path, files: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """Assign files to (train, valid, test) by hash order; see the module docstring."""
    by_hash = sorted(files, key=lambda p: (_path_hash(p.relative_to(root).as_posix()), p))
    parts: tuple[list[Path], list[Path], list[Path]] = ([], [], [])
    for i, p in enumerate(by_hash):
        r = i % _FOLDER_STRIDE
        parts[1 if r == 0 else 2 if r == 1 else 0].append(p)
    key = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return tuple(sorted(ps, key=key) for ps in parts)  # type: ignore[return-value]


def load_text(path: str | os.PathLike[str], level: Level = "char") -> Corpus:
    """A corpus from any plain text file or folder of text files (rules in the module docstring).

    Raises DataError on a missing path, an empty corpus, or a binary / non-UTF-8 file.
    """
    _check_level(level)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"corpus path not found: {path}")
    if path.is_dir():
        files = _list_files(path)
        if not files:
            raise DataError(f"corpus folder {path} holds no files")
        texts = {p: read_text_file(p) for p in files}
        if not any(t.strip() for t in texts.values()):
            raise DataError(f"corpus folder {path} is empty (its files hold only whitespace)")
        if len(files) >= 3:
            groups = split_files(path, files)
            parts = tuple(_join([texts[p] for p in g]) for g in groups)
        else:
            parts = split_lines(_join([texts[p] for p in files]), str(path))
    else:
        text = read_text_file(path)
        if not text.strip():
            raise DataError(f"corpus file {path} is empty (only whitespace)")
        parts = split_lines(text, str(path))
    _check_splits(parts, str(path))  # type: ignore[arg-type]
    return Corpus(*parts, name=path.name, level=level)


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Corpus:
    """A registered dataset (see :mod:`rnnkit.data.registry`), checksums verified."""
    spec = get_spec(name)
    paths = resolve(name, data_dir)
    if WHOLE in paths:
        text = read_text_file(paths[WHOLE])
        parts = split_chars(text, name)
    else:
        parts = tuple(read_text_file(paths[s]) for s in SPLITS)  # type: ignore[assignment]
    _check_splits(parts, f"dataset {name!r}")
    return Corpus(*parts, name=name, level=spec.level)


def load_corpus(spec: str | os.PathLike[str] | None, data_dir: str | os.PathLike[str] | None = None,
                level: Level | None = None) -> Corpus:
    """The one entry point the CLI uses.

    * ``None`` -> the embedded default corpus (:func:`rnnkit.data.default_corpus.default_corpus`);
    * a registered dataset name -> :func:`load_dataset`;
    * anything else -> a path for :func:`load_text`.

    ``level`` overrides the corpus's own level (default: the dataset's, or ``"char"``).
    """
    if level is not None:
        _check_level(level)
    if spec is None:
        corpus = default_corpus()
    elif isinstance(spec, str) and spec in DATASETS:
        corpus = load_dataset(spec, data_dir)
    else:
        if not Path(spec).expanduser().exists():
            raise DataError(f"{str(spec)!r} is neither a registered dataset "
                            f"({', '.join(sorted(DATASETS))}) nor an existing file or folder")
        return load_text(spec, level or "char")
    return corpus if level is None else replace(corpus, level=level)
