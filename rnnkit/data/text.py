"""The corpus value type and the one way a corpus file is read.

Both corpus sources build on these: :mod:`rnnkit.data.corpus` (datasets, any
file or folder, and the ``load_corpus`` entry point) and
:mod:`rnnkit.data.default_corpus` (the embedded standard-library corpus).
They live below both so that ``load_corpus`` can import the default corpus at
module level without the default corpus importing ``corpus.py`` back.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .tokenize import Level

SPLITS = ("train", "valid", "test")
_SNIFF_BYTES = 8192
#: a corpus file larger than this is refused before it is read (override: $RNNKIT_MAX_TEXT_BYTES)
MAX_TEXT_BYTES = 4 * 2**30


def max_text_bytes() -> int:
    value = os.environ.get("RNNKIT_MAX_TEXT_BYTES")
    try:
        return int(value) if value else MAX_TEXT_BYTES
    except ValueError:
        raise DataError(f"RNNKIT_MAX_TEXT_BYTES must be a number of bytes, got {value!r}") from None


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

    Raises DataError if the file is missing, not a regular file (a device such as
    /dev/zero or a pipe would be read forever), larger than :func:`max_text_bytes`,
    has a NUL byte in its first 8 KiB (the usual binary sniff) or is not valid
    UTF-8; the message names the file.
    """
    path = Path(path)
    limit = max_text_bytes()
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise DataError(f"{path} is not a regular file (a device or pipe); give a text file")
            if st.st_size > limit:
                raise DataError(f"{path} is {st.st_size:,} bytes, more than the {limit:,} a corpus file may have "
                                "(set RNNKIT_MAX_TEXT_BYTES to allow more)")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise DataError(f"corpus file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"expected a file, got a directory: {path}") from None
    except PermissionError:
        raise DataError(f"{path} cannot be read (permission denied)") from None
    if len(data) > limit:  # it grew while we read it
        raise DataError(f"{path} is more than the {limit:,} bytes a corpus file may have")
    if b"\0" in data[:_SNIFF_BYTES]:
        raise DataError(f"{path} looks binary (NUL byte in its first {_SNIFF_BYTES} bytes); give a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); give a UTF-8 text file") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
