"""Parallel text for translation: aligned source/target lines (plain or gzipped), a word
tokeniser that keeps case and splits punctuation, and its inverse for scoring
detokenised output with sacrebleu."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

from ..errors import DataError

_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:%)\]}'’]|n't\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{]) ")


def tokenize(line: str) -> list[str]:
    """Words (apostrophes inside kept) and single punctuation marks; case kept."""
    return _TOKEN.findall(line)


def detokenize(tokens: list[str]) -> str:
    """Join tokens as text: no space before closing punctuation or after an opening bracket."""
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", " ".join(tokens)))


def read_lines(path: str | Path) -> list[str]:
    """The file's lines (``.gz`` read through gzip), UTF-8, trailing newline stripped."""
    path = Path(path)
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8").splitlines()
    except (OSError, EOFError) as e:   # a truncated or non-gzip file
        raise DataError(f"{path}: cannot be read ({e})") from None
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text") from None


def read_parallel(source: str | Path, target: str | Path) -> list[tuple[str, str]]:
    """Aligned ``(source line, target line)`` pairs; the files must have as many lines, and
    no line may be empty (an empty source has nothing to translate)."""
    src, tgt = read_lines(source), read_lines(target)
    if len(src) != len(tgt):
        raise DataError(f"{source} has {len(src)} lines but {target} has {len(tgt)}: the files are not aligned")
    for path, lines in ((source, src), (target, tgt)):
        for i, line in enumerate(lines, 1):
            if not line.strip():
                raise DataError(f"{path}:{i}: empty sentence")
    return list(zip(src, tgt))
