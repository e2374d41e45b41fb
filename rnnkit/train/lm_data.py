"""From a corpus to id streams for language modelling."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..data import Vocab, load_corpus
from ..data.tokenize import tokenize
from ..errors import DataError
from .config import TrainConfig


@dataclass
class LMData:
    """A tokenised corpus: ``train/valid/test`` are 1-D id tensors ``(N,)``."""

    name: str
    level: str
    vocab: Vocab
    train: Tensor
    valid: Tensor
    test: Tensor


def prepare_lm_data(cfg: TrainConfig, vocab: Vocab | None = None) -> LMData:
    """Load the corpus named by ``cfg.data``, build (or reuse) the vocabulary, encode.

    The vocabulary comes from the training split only; words never seen there
    become ``<unk>``.
    """
    corpus = load_corpus(cfg.data, cfg.data_dir, cfg.level)
    tokens = {split: tokenize(corpus.split(split), corpus.level) for split in ("train", "valid", "test")}
    for split, toks in tokens.items():
        if len(toks) < 2:
            raise DataError(f"corpus {corpus.name!r}: the {split} split has {len(toks)} tokens; "
                            "a language model needs at least 2")
    if vocab is None:
        vocab = Vocab.build(tokens["train"], min_freq=cfg.min_freq, max_size=cfg.max_vocab)
    ids = {split: vocab.encode_tensor(toks) for split, toks in tokens.items()}
    return LMData(corpus.name, corpus.level, vocab, ids["train"], ids["valid"], ids["test"])
