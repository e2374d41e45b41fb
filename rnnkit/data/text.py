"""The corpus value type and the one way a corpus file is read.

Both corpus sources build on these: :mod:`rnnkit.data.corpus` (datasets, any
file or folder, and the ``load_corpus`` entry point) and
:mod:`rnnkit.data.default_corpus` (the embedded standard-library corpus).
They live below both so that ``load_corpus`` can import the default corpus at
module level without the default corpus importing ``corpus.py`` back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .tokenize import Level

SPLITS = ("train", "valid", "test")
_SNIFF_BYTES = 8192


@dataclass
class Corpus:
    """Three text splits plus where they came from. ``repr`` omits the (large) texts."""

    train: str = field(repr=False)
    valid: str = field(repr=False)
    test: str = field(repr=False)
    name: str
    level: Level

    def split(self, which: str) -> str:
        """The text of ``"train"``, ``"valid"`` or ``"test"``."""
        if which not in SPLITS:
            raise ValueError(f"Corpus.split: expected one of {SPLITS}, got {which!r}")
        return getattr(self, which)

    def sizes(self) -> dict[str, int]:
        """Characters per split."""
        return {s: len(self.split(s)) for s in SPLITS}


def read_text_file(path: str | os.PathLike[str]) -> str:
    """A file's text, UTF-8 (BOM dropped), newlines normalized.

    Raises DataError if the file is missing, has a NUL byte in its first 8 KiB
    (the usual binary sniff) or is not valid UTF-8; the message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"corpus file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"expected a file, got a directory: {path}") from None
    if b"\0" in data[:_SNIFF_BYTES]:
        raise DataError(f"{path} looks binary (NUL byte in its first {_SNIFF_BYTES} bytes); give a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); give a UTF-8 text file") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
