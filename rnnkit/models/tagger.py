"""Sequence tagging (NER, POS): the BiLSTM(-CRF) tagger of Lample et al. (2016),
"Neural Architectures for Named Entity Recognition".

Each word is its embedding, optionally concatenated with a character-level
BiLSTM's final forward and backward states (:class:`CharEncoder`); a bidirectional
recurrent layer reads the sentence and a linear layer gives per-token tag scores,
decoded jointly by a CRF (:mod:`rnnkit.nn.crf`) or independently by argmax.

Typical use::

    word_index, char_index, tag_index = build_indices(train_sentences)
    model = SequenceTagger(TaggerConfig(len(word_index), len(tag_index), len(char_index)))
    batch = encode_batch(sentences, word_index, char_index, tag_index)
    loss = model.loss(**batch)                                  # summed over the batch
    predicted = model.decode(batch["words"], batch["chars"], batch["mask"])   # (B, T), -1 at padding

Id 0 is padding for words and characters (:func:`build_indices` reserves it as
``<pad>``); the character encoder reads a word's length as its number of non-zero ids.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError, DataError, ShapeError
from ..nn.crf import CRF, SCHEMES, allowed_transitions
from ..options import option, require
from .cells import RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks

PAD = "<pad>"
UNK = "<unk>"
#: recurrent cells the tagger's sentence layer may use
TAGGER_CELLS = ("lstm", "gru")


@dataclass(frozen=True)
class TaggerConfig(RegularizationOptions):
    """Architecture of a :class:`SequenceTagger`; vocabulary and tag set sizes come from the data.
    The sentence layer's regularisation comes from :class:`RegularizationOptions` (the
    character encoder has none)."""

    vocab_size: int
    num_tags: int
    char_vocab_size: int = 0          # from the data: characters known to the char encoder
    tag_names: str = ""               # from the data: the tags by id, space-separated (for constraints)
    char_features: bool = option(True, "a character BiLSTM per word (Lample et al. 2016) beside its embedding")
    constraints: str = option("none", "CRF transitions a tag scheme forbids stay impossible: none, IOB1, BIO, IOBES")
    embedding_dim: int = option(100, "word embedding size")
    char_dim: int = option(25, "character embedding size")
    char_hidden: int = option(25, "character BiLSTM state size per direction")
    hidden_size: int = option(100, "sentence recurrent state size per direction")
    num_layers: int = option(1, "stacked bidirectional recurrent layers")
    cell: str = option("lstm", "sentence recurrent cell: " + ", ".join(TAGGER_CELLS))
    dropout: float = option(0.5, "dropout on the word representations and the recurrent outputs")
    crf: bool = option(True, "score tag sequences with a CRF (else per-token softmax)")

    def __post_init__(self) -> None:
        ints = ("vocab_size", "num_tags", "char_vocab_size", "embedding_dim", "char_dim", "char_hidden",
                "hidden_size", "num_layers")
        checks = [(isinstance(getattr(self, n), int) and not isinstance(getattr(self, n), bool),
                   f"{n} must be an int, got {getattr(self, n)!r}") for n in ints]
        checks += [(getattr(self, n) > 0, f"{n} must be > 0, got {getattr(self, n)}")
                   for n in ints if n != "char_vocab_size"]
        checks += [
            (self.char_vocab_size >= 0, f"char_vocab_size must be >= 0 (0: no character features), "
                                        f"got {self.char_vocab_size}"),
            (self.cell in TAGGER_CELLS, f"cell must be one of {', '.join(TAGGER_CELLS)}, got {self.cell!r}"),
            (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
             and 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}"),
            (isinstance(self.crf, bool), f"crf must be a bool, got {self.crf!r}"),
            (self.constraints in ("none",) + SCHEMES, f"constraints must be one of none, {', '.join(SCHEMES)}, "
                                                      f"got {self.constraints!r}"),
            (self.constraints == "none" or self.crf, "constraints need crf=True"),
            (not self.tag_names or len(self.tag_names.split()) == self.num_tags,
             f"tag_names must name the {self.num_tags} tags, got {len(self.tag_names.split())}"),
        ]
        require(checks + regularization_checks(self), "tagger config:")

    def to_dict(self) -> dict:
        return asdict(self)


class CharEncoder(nn.Module):
    """``forward(chars (B, T, L) long) -> (B, T, 2 * hidden)``: a character BiLSTM per
    word, the word's feature being its final forward and backward states concatenated
    (Lample et al. 2016). All words of the batch run as one batch of ``B*T`` sequences
    with their lengths (non-zero ids); padded words (no characters) get zeros."""

    def __init__(self, vocab_size: int, embedding_dim: int = 25, hidden_size: int = 25) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.rnn = recurrent_layer("lstm", embedding_dim, hidden_size, 1, bidirectional=True)

    @property
    def output_size(self) -> int:
        return 2 * self.hidden_size

    def forward(self, chars: Tensor) -> Tensor:
        if chars.dim() != 3:
            raise ShapeError(f"CharEncoder: chars must be (batch, seq, word_len), got shape {tuple(chars.shape)}")
        b, t, length = chars.shape
        flat = chars.reshape(b * t, length)
        lengths = (flat != 0).sum(1)                                   # (B*T,)
        words = lengths.nonzero().squeeze(1)                           # rows that are real words
        out = flat.new_zeros(b * t, self.output_size, dtype=self.embedding.weight.dtype)
        if words.numel():
            x = self.embedding(flat.index_select(0, words))            # (N, L, C)
            _, (h, _) = self.rnn(x, lengths=lengths.index_select(0, words).cpu())   # h (2, N, H)
            out = out.index_copy(0, words, torch.cat([h[0], h[1]], dim=-1))
        return out.view(b, t, self.output_size)


class SequenceTagger(nn.Module):
    """Word embeddings (+ :class:`CharEncoder` features) -> dropout -> bidirectional
    LSTM/GRU -> dropout -> linear: ``forward(words (B, T), chars (B, T, L), mask (B, T))
    -> tag scores (B, T, K)``, 0 at padding.

    ``mask`` is True at real tokens, left-aligned, >= 1 per row (None: all real);
    padded steps are skipped by the recurrent layer, so padding never changes a real
    token's scores. ``chars`` may be None when ``char_vocab_size == 0``.
    ``allowed``: ``(transitions (K, K), start (K,), end (K,))`` bool masks for the CRF
    (:func:`rnnkit.nn.crf.allowed_transitions`); only with ``crf=True``.
    """

    def __init__(self, config: TaggerConfig, allowed: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        super().__init__()
        self.config = c = config
        if allowed is not None and not c.crf:
            raise ConfigError("tagger config: allowed transitions need crf=True")
        if allowed is None and c.constraints != "none":
            if not c.tag_names:
                raise ConfigError("tagger config: constraints need the tag names (tag_names, from the data)")
            allowed = allowed_transitions(c.tag_names.split(), c.constraints)
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim)
        self.chars = CharEncoder(c.char_vocab_size, c.char_dim, c.char_hidden) \
            if c.char_features and c.char_vocab_size else None
        input_size = c.embedding_dim + (self.chars.output_size if self.chars is not None else 0)
        self.dropout = nn.Dropout(c.dropout)
        self.rnn = recurrent_layer(c.cell, input_size, c.hidden_size, c.num_layers, dropout=c.dropout,
                                   bidirectional=True, **layer_regularization(c))
        self.head = nn.Linear(2 * c.hidden_size, c.num_tags)
        self.crf = CRF(c.num_tags, allowed=allowed) if c.crf else None

    def _mask(self, words: Tensor, mask: Tensor | None) -> Tensor:
        if words.dim() != 2:
            raise ShapeError(f"SequenceTagger: words must be (batch, seq), got shape {tuple(words.shape)}")
        if words.shape[1] == 0:
            raise ShapeError("SequenceTagger: words has 0 time steps; every row needs >= 1 real token")
        if mask is None:
            return torch.ones_like(words, dtype=torch.bool)
        if mask.shape != words.shape:
            raise ShapeError(f"SequenceTagger: mask must have the shape of words {tuple(words.shape)}, "
                             f"got {tuple(mask.shape)}")
        mask = mask.bool()
        lengths = mask.sum(1)
        prefix = torch.arange(mask.shape[1], device=mask.device) < lengths.unsqueeze(1)
        if not bool(mask[:, 0].all()) or not torch.equal(prefix, mask):
            raise ShapeError("SequenceTagger: mask rows must be left-aligned with >= 1 real token "
                             "(True first, then only False)")
        return mask

    def forward(self, words: Tensor, chars: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        mask = self._mask(words, mask)
        x = self.embedding(words)                                       # (B, T, E)
        if self.chars is not None:
            if chars is None or chars.shape[:2] != words.shape:
                got = None if chars is None else tuple(chars.shape)
                raise ShapeError(f"SequenceTagger: chars must be (batch, seq, word_len) matching words "
                                 f"{tuple(words.shape)}, got {got}")
            x = torch.cat([x, self.chars(chars)], dim=-1)               # (B, T, E + 2C)
        x = self.dropout(x)
        h, _ = self.rnn(x, lengths=mask.sum(1).cpu())                   # (B, T, 2H), 0 at padding
        scores = self.head(self.dropout(h))                             # (B, T, K)
        return scores.masked_fill(~mask.unsqueeze(-1), 0.0)

    def loss(self, words: Tensor, chars: Tensor | None, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """Summed over the batch: the CRF's negative log-likelihood of ``tags (B, T)``,
        or (``crf=False``) the token cross-entropy over real tokens."""
        mask = self._mask(words, mask)
        scores = self(words, chars, mask)
        if self.crf is not None:
            return self.crf(scores, tags, mask, reduction="sum")
        return F.cross_entropy(scores[mask], tags[mask], reduction="sum")

    @torch.no_grad()
    def decode(self, words: Tensor, chars: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Best tags ``(B, T)`` long, -1 at padding: Viterbi with the CRF, else argmax
        per token. Runs in the module's current mode (call ``eval()`` first)."""
        mask = self._mask(words, mask)
        scores = self(words, chars, mask)
        if self.crf is not None:
            return self.crf.decode(scores, mask)[0]
        return scores.argmax(-1).masked_fill(~mask, -1)


# --- batching ------------------------------------------------------------------------
def build_indices(sentences: Iterable, min_count: int = 1, lowercase: bool = True
                  ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """``(word_index, char_index, tag_index)`` from training sentences (anything with
    ``.words`` and ``.tags``). Words (lowercased unless ``lowercase=False``) seen at
    least ``min_count`` times and all characters get ids after ``<pad>`` = 0 and
    ``<unk>`` = 1; tags get ids 0.. in sorted order."""
    words: Counter[str] = Counter()
    chars: Counter[str] = Counter()
    tags: set[str] = set()
    for s in sentences:
        words.update(w.lower() if lowercase else w for w in s.words)
        for w in s.words:
            chars.update(w)
        tags.update(s.tags)

    def index(items: Iterable[str]) -> dict[str, int]:
        out = {PAD: 0, UNK: 1}
        for item in sorted(items):
            out.setdefault(item, len(out))
        return out

    return (index(w for w, n in words.items() if n >= min_count), index(chars),
            {t: i for i, t in enumerate(sorted(tags))})


def _lookup(word: str, word_index: Mapping[str, int], unk: int) -> int:
    """The word's id, else its lowercased form's, else ``unk``."""
    i = word_index.get(word)
    return i if i is not None else word_index.get(word.lower(), unk)


def encode_batch(sentences: Sequence, word_index: Mapping[str, int], char_index: Mapping[str, int] | None,
                 tag_index: Mapping[str, int], device: torch.device | str | None = None,
                 max_word_len: int | None = None) -> dict[str, Tensor]:
    """Pad sentences (anything with ``.words`` and ``.tags``) into tensors:
    ``words (B, T)``, ``chars (B, T, L)`` (``(B, T, 0)`` without ``char_index``),
    ``tags (B, T)`` long, ``mask (B, T)`` bool (True at real tokens); padding is 0.

    A word missing from ``word_index`` is looked up lowercased, then is ``<unk>``;
    characters keep their case, an unknown one is the char index's ``<unk>``. Words
    longer than ``max_word_len`` characters keep their first ``max_word_len``.

    Raises:
        ConfigError: an index without ``<unk>``, or a char index whose id 0 is not ``<pad>``.
        DataError: an empty batch or sentence, words and tags of different lengths,
            or a tag missing from ``tag_index``.
    """
    if UNK not in word_index:
        raise ConfigError(f"encode_batch: word_index has no {UNK!r} entry for unknown words")
    if char_index is not None and (UNK not in char_index or char_index.get(PAD, 0) != 0):
        raise ConfigError(f"encode_batch: char_index needs {UNK!r} and {PAD!r} = 0 (0 pads characters)")
    if max_word_len is not None and max_word_len < 1:
        raise ConfigError(f"encode_batch: max_word_len must be >= 1 or None, got {max_word_len}")
    if not sentences:
        raise DataError("encode_batch: no sentences")
    for i, s in enumerate(sentences):
        if not s.words or len(s.words) != len(s.tags):
            raise DataError(f"encode_batch: sentence {i} has {len(s.words)} words and {len(s.tags)} tags "
                            "(need the same number, >= 1)")
    b, t = len(sentences), max(len(s.words) for s in sentences)
    length = 0 if char_index is None else max(len(w) for s in sentences for w in s.words)
    length = length if max_word_len is None else min(length, max_word_len)
    words = torch.zeros(b, t, dtype=torch.long)
    chars = torch.zeros(b, t, length, dtype=torch.long)
    tags = torch.zeros(b, t, dtype=torch.long)
    mask = torch.zeros(b, t, dtype=torch.bool)
    unk = word_index[UNK]
    for i, s in enumerate(sentences):
        n = len(s.words)
        words[i, :n] = torch.tensor([_lookup(w, word_index, unk) for w in s.words])
        mask[i, :n] = True
        try:
            tags[i, :n] = torch.tensor([tag_index[tag] for tag in s.tags])
        except KeyError as e:
            raise DataError(f"encode_batch: sentence {i} has tag {e.args[0]!r}, not in tag_index "
                            f"({len(tag_index)} tags)") from None
        if char_index is not None:
            cunk = char_index[UNK]
            for j, w in enumerate(s.words):
                ids = [char_index.get(ch, cunk) for ch in w[:length]]
                if 0 in ids:
                    raise ConfigError(f"encode_batch: char_index maps a character of {w!r} to 0, the padding id")
                chars[i, j, :len(ids)] = torch.tensor(ids)
    batch = {"words": words, "chars": chars, "tags": tags, "mask": mask}
    return batch if device is None else {name: x.to(device) for name, x in batch.items()}
