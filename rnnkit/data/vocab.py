"""Token <-> id mapping with three fixed special tokens.

Ids 0, 1, 2 are always ``<pad>``, ``<unk>``, ``<eos>``, whatever the corpus, so
padding masks and end-of-sentence handling never need to look the ids up.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..atomic import atomic_write_text
from ..errors import DataError

PAD = "<pad>"
UNK = "<unk>"
EOS = "<eos>"
SPECIALS: tuple[str, str, str] = (PAD, UNK, EOS)

_FORMAT = "rnnkit.vocab"
_VERSION = 1


class Vocab:
    """An ordered list of distinct tokens; a token's id is its index.

    Args:
        itos: id -> token. Must start with ``SPECIALS`` and hold no duplicates.

    Build one with :meth:`build`; construct directly only from a saved ``itos``.
    """

    def __init__(self, itos: Sequence[str]) -> None:
        itos = list(itos)
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise DataError(f"Vocab: itos must start with {SPECIALS}, got {itos[:3]!r}")
        if not all(isinstance(t, str) for t in itos):
            raise DataError("Vocab: every token must be a str")
        stoi = {t: i for i, t in enumerate(itos)}
        if len(stoi) != len(itos):
            dup = next(t for t, n in Counter(itos).items() if n > 1)
            raise DataError(f"Vocab: duplicate token {dup!r} in itos")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = stoi

    # -- construction -------------------------------------------------------
    @classmethod
    def build(cls, tokens: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """Count ``tokens`` and keep the frequent ones.

        Args:
            tokens: the training tokens (any iterable; consumed once).
            min_freq: drop tokens seen fewer times than this.
            max_size: cap on ``len(vocab)``, the three specials included.

        Order is frequency descending, then token ascending, so the same corpus
        always gives the same ids (a ``Counter``'s order would depend on first
        occurrence only by accident of implementation). Occurrences of the special
        strings (PTB's literal ``<unk>``, word-level ``<eos>``) are counted but never
        add an entry: they map onto the fixed special ids.
        """
        if min_freq < 1:
            raise ValueError(f"Vocab.build: min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < len(SPECIALS):
            raise ValueError(f"Vocab.build: max_size must be >= {len(SPECIALS)} (the specials), got {max_size}")
        counts = Counter(tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *kept])

    # -- lookups ------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Tokens -> ids; a token not in the vocabulary becomes ``unk_id``."""
        get, unk = self.stoi.get, self.unk_id
        return [get(t, unk) for t in tokens]

    def encode_tensor(self, tokens: Iterable[str]) -> torch.Tensor:
        """Tokens -> LongTensor of shape ``(N,)``."""
        return torch.tensor(self.encode(tokens), dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Ids (a list or any-shape tensor, flattened) -> tokens. Out-of-range ids raise DataError."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        out: list[str] = []
        n = len(self.itos)
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise DataError(f"Vocab.decode: id {i} out of range [0, {n})")
            out.append(self.itos[i])
        return out

    # -- persistence --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description; :meth:`from_dict` inverts it."""
        return {"format": _FORMAT, "version": _VERSION, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: Any) -> "Vocab":
        if not isinstance(d, dict) or d.get("format") != _FORMAT or not isinstance(d.get("itos"), list):
            raise DataError(f"Vocab.from_dict: not a {_FORMAT} dict")
        if d.get("version") != _VERSION:
            raise DataError(f"Vocab.from_dict: unsupported version {d.get('version')!r} (expected {_VERSION})")
        return cls(d["itos"])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically (:mod:`rnnkit.atomic`): a reader sees the old file or
        the new one, never half of one, and the file gets the usual umask permissions."""
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Vocab":
        """Read a file written by :meth:`save`; DataError if missing or not a vocabulary."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"vocabulary file not found: {path}") from None
        except UnicodeDecodeError as e:
            raise DataError(f"vocabulary file {path} is not UTF-8 text: {e}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"vocabulary file {path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except DataError as e:
            raise DataError(f"vocabulary file {path}: {e}") from None
