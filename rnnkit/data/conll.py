"""Sequence-labelling corpora: CoNLL column files (CoNLL-2003 NER), Universal
Dependencies CoNLL-U, and conversion between chunk tagging schemes.

Typical pipeline::

    train = read_conll("conll2003/train.txt")                 # IOB1 NER tags
    train = [Sentence(s.words, convert_scheme(s.tags, "IOB1", "IOBES")) for s in train]
    ud = read_conllu("en_ewt-ud-train.conllu", field="upos")  # POS tags

Every :class:`~rnnkit.errors.DataError` raised while reading names the file and,
where one is to blame, the line (``path:line: message``).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError

#: tagging schemes :func:`convert_scheme` knows, with the prefixes each allows
SCHEMES: dict[str, frozenset[str]] = {
    "IOB1": frozenset("IB"),
    "BIO": frozenset("BI"),
    "IOBES": frozenset("BIES"),
}
#: the first field of a CoNLL-2003 document separator line
DOCSTART = "-DOCSTART-"
#: CoNLL-U fields :func:`read_conllu` can read tags from (all plain strings)
CONLLU_FIELDS = ("upos", "xpos", "lemma", "deprel", "form")
_CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


@dataclass
class Sentence:
    """One labelled sentence: ``words[i]`` carries ``tags[i]``."""

    words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.words)


# --- reading lines -------------------------------------------------------------------
def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number from 1, text without the line break)``; a DataError naming the
    line for bytes that are not UTF-8, and naming the file when it cannot be read."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                                    f"column {e.start + 1})") from None
                if number == 1:
                    text = text.removeprefix("\ufeff")
                yield number, text.rstrip("\r\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _column(index: int, n: int, name: str, path: Path, number: int) -> int:
    """``index`` (negative counts from the end) as a position in ``n`` columns."""
    if not -n <= index < n:
        raise DataError(f"{path}:{number}: {name}={index} is out of range for a line of {n} columns")
    return index % n


def read_conll(path: str | Path, columns: int | None = None, word_col: int = 0,
               tag_col: int = -1) -> list[Sentence]:
    """Sentences of a CoNLL column file (e.g. CoNLL-2003: ``word POS chunk NER``).

    Columns are separated by whitespace, sentences by blank lines (several in a row
    are one break); ``-DOCSTART-`` lines are skipped. Every token line must have
    ``columns`` columns, or, if that is None, as many as the file's first token line.
    The word is column ``word_col`` and the tag column ``tag_col`` (negative counts
    from the end). Tags are returned as in the file (CoNLL-2003: IOB1).

    Raises:
        DataError: naming the file and line, for a line with the wrong number of
            columns, non-UTF-8 bytes, or a column index out of range; naming the file
            when it is missing or holds no sentence.
    """
    path = Path(path)
    if columns is not None and (isinstance(columns, bool) or not isinstance(columns, int) or columns < 1):
        raise ConfigError(f"read_conll: columns must be an int >= 1 or None, got {columns!r}")
    sentences: list[Sentence] = []
    current = Sentence()
    width, wi, ti = columns, 0, 0

    def flush() -> None:
        nonlocal current
        if current.words:
            sentences.append(current)
            current = Sentence()

    for number, line in _lines(path):
        parts = line.split()
        if not parts:
            flush()
            continue
        if parts[0] == DOCSTART:
            flush()
            continue
        if width is None:
            width = len(parts)
        if len(parts) != width:
            expected = "" if columns is not None else " (as the first token line)"
            raise DataError(f"{path}:{number}: expected {width} columns{expected}, got {len(parts)}: {line[:80]!r}")
        if not current.words and not sentences:   # first token line: check the column indices once
            wi = _column(word_col, width, "word_col", path, number)
            ti = _column(tag_col, width, "tag_col", path, number)
        current.words.append(parts[wi])
        current.tags.append(parts[ti])
    flush()
    if not sentences:
        raise DataError(f"{path}: no sentences (the file is empty or holds only blank and -DOCSTART- lines)")
    return sentences


def read_conllu(path: str | Path, field: str = "upos") -> list[Sentence]:
    """Sentences of a Universal Dependencies CoNLL-U file, tagged with ``field``
    (one of :data:`CONLLU_FIELDS`; ``"_"`` where the file leaves it empty).

    Token lines are parsed with the ``conllu`` package; comments (``#``) are skipped,
    and so are multiword token ranges (``1-2``) and empty nodes (``8.1``): the words
    are the syntactic words.

    Raises:
        ConfigError: for an unknown ``field``.
        DataError: naming the file and line, for a token line without exactly 10
            tab-separated fields, an invalid ID, or non-UTF-8 bytes; naming the file
            when it is missing or holds no sentence.
    """
    from conllu.exceptions import ParseException
    from conllu.parser import parse_line

    if field not in CONLLU_FIELDS:
        raise ConfigError(f"read_conllu: unknown field {field!r}; choose one of {', '.join(CONLLU_FIELDS)}")
    path = Path(path)
    needed = _CONLLU_COLUMNS[:_CONLLU_COLUMNS.index(field) + 1]   # parse no field past the tag's
    sentences: list[Sentence] = []
    current = Sentence()
    for number, line in _lines(path):
        if not line.strip():
            if current.words:
                sentences.append(current)
                current = Sentence()
            continue
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != len(_CONLLU_COLUMNS):
            raise DataError(f"{path}:{number}: a CoNLL-U token line needs {len(_CONLLU_COLUMNS)} "
                            f"tab-separated fields, got {len(parts)}: {line[:80]!r}")
        try:
            token = parse_line(line, needed)
        except ParseException as e:
            raise DataError(f"{path}:{number}: {e}") from None
        if not isinstance(token["id"], int):   # a range 1-2, an empty node 8.1 (tuples), or "_"
            continue
        current.words.append(parts[1])
        tag = token[field]
        current.tags.append("_" if tag is None else str(tag))
    if current.words:
        sentences.append(current)
    if not sentences:
        raise DataError(f"{path}: no sentences (the file is empty or holds only comments)")
    return sentences


# --- tagging schemes -----------------------------------------------------------------
def _check_scheme(name: str, role: str) -> None:
    if name not in SCHEMES:
        raise ConfigError(f"convert_scheme: unknown {role} scheme {name!r}; choose one of {', '.join(SCHEMES)}")


def _split(tags: Sequence[str], scheme: str) -> list[tuple[str, str]]:
    """``(prefix, type)`` per tag, ``("O", "")`` for outside; a DataError for a tag the
    scheme does not allow."""
    allowed = SCHEMES[scheme]
    out = []
    for i, tag in enumerate(tags):
        if tag == "O":
            out.append(("O", ""))
            continue
        prefix, _, kind = tag.partition("-")
        if prefix not in allowed:
            raise DataError(f"convert_scheme: tag {i} {tag!r} is not O or {'/'.join(sorted(allowed))}-TYPE "
                            f"as {scheme} requires")
        out.append((prefix, kind))
    return out


def _to_bio(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Any scheme's ``(prefix, type)`` pairs as BIO: a chunk starts at B/S, and at an
    I/E that does not continue a chunk of its type (IOB1's rule, which also repairs
    BIO written loosely)."""
    out: list[tuple[str, str]] = []
    inside: str | None = None     # type of the chunk the previous token may be continued by
    for prefix, kind in pairs:
        if prefix == "O":
            out.append(("O", ""))
            inside = None
            continue
        starts = prefix in ("B", "S") or inside != kind
        out.append(("B" if starts else "I", kind))
        inside = None if prefix in ("E", "S") else kind
    return out


def _from_bio(pairs: list[tuple[str, str]], target: str) -> list[tuple[str, str]]:
    if target == "BIO":
        return pairs
    out = []
    for i, (prefix, kind) in enumerate(pairs):
        after = pairs[i + 1] if i + 1 < len(pairs) else ("O", "")
        continued = after == ("I", kind)
        before = out[-1] if out else ("O", "")
        if prefix == "O":
            out.append(("O", ""))
        elif target == "IOBES":
            out.append((prefix if continued else {"B": "S", "I": "E"}[prefix], kind))
        else:  # IOB1: B only where a chunk starts right after one of the same type
            out.append(("B" if prefix == "B" and before[0] != "O" and before[1] == kind else "I", kind))
    return out


def convert_scheme(tags: Sequence[str], source: str = "IOB1", target: str = "BIO") -> list[str]:
    """Chunk tags in ``source`` scheme rewritten in ``target``: any of ``IOB1``,
    ``BIO`` (IOB2) and ``IOBES`` to any other (usually IOB1 -> BIO or IOBES, BIO -> IOBES).

    Tags are ``O`` or ``PREFIX-TYPE`` (``B-PER``); the chunks are the same in both.
    An I (or E) tag that does not continue a chunk of its type starts one, so BIO
    written loosely (``O I-PER``) is repaired rather than refused.

    Raises:
        ConfigError: for an unknown scheme, naming it and the valid choices.
        DataError: for a tag whose prefix ``source`` does not allow.
    """
    _check_scheme(source, "source")
    _check_scheme(target, "target")
    pairs = _from_bio(_to_bio(_split(tags, source)), target)
    return [p if p == "O" else f"{p}-{k}" if k else p for p, k in pairs]
