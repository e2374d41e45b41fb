"""Text -> token lists, at character or word level.

Both tokenizers are pure functions of the text, so a corpus tokenizes the same
way on every machine; the vocabulary (:mod:`rnnkit.data.vocab`) maps the tokens
to ids afterwards.
"""
from __future__ import annotations

from typing import Literal, get_args

from .vocab import EOS

Level = Literal["char", "word"]
LEVELS: tuple[str, ...] = get_args(Level)


def char_tokenize(text: str) -> list[str]:
    """Every character is a token; ``"\\n"`` is kept, so line structure survives.

    Returns a list of ``len(text)`` one-character strings.
    """
    return list(text)


def word_tokenize(text: str) -> list[str]:
    """Whitespace-split each line and append ``<eos>`` after it (Zaremba et al.'s PTB reader).

    Empty (or all-whitespace) lines are skipped rather than becoming a lone ``<eos>``:
    they carry no words, and a run of ``<eos>`` would only teach the model blank lines.
    A literal ``<unk>`` in the text stays ``"<unk>"``; the vocabulary maps it to ``unk_id``.
    """
    tokens: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words:
            tokens.extend(words)
            tokens.append(EOS)
    return tokens


def tokenize(text: str, level: Level) -> list[str]:
    """Dispatch to :func:`char_tokenize` or :func:`word_tokenize` by ``level``."""
    if level == "char":
        return char_tokenize(text)
    if level == "word":
        return word_tokenize(text)
    raise ValueError(f"tokenize: level must be one of {LEVELS}, got {level!r}")
