"""Corpora, tokenization, vocabularies and batching for sequence models.

Typical language-model pipeline::

    from rnnkit.data.tokenize import tokenize
    corpus = load_corpus("ptb")                      # or a path, or None for the default
    vocab = Vocab.build(tokenize(corpus.train, corpus.level))
    streams = batchify(vocab.encode_tensor(tokenize(corpus.train, corpus.level)), 20)  # (B, L)
    for x, y in bptt_batches(streams, 35):           # (B, T) each
        ...
"""
from .batching import (batchify, bptt_batches, bucket_batches, bucket_indices, num_bptt_batches,
                       pad_batch, shard_streams)
from .corpus import Corpus, load_corpus, load_dataset, load_text, read_text_file
from .default_corpus import DEFAULT_CORPUS_FILES
from .registry import DATASETS, DatasetSpec, FileSpec, check, data_dir, resolve
# tokenize() and default_corpus() are not re-exported: binding them here would hide
# the submodules of the same name (and break mock.patch("rnnkit.data.tokenize...")).
from .tokenize import Level, char_tokenize, word_tokenize
from .vocab import EOS, PAD, UNK, Vocab

__all__ = [
    "batchify", "bptt_batches", "bucket_batches", "bucket_indices", "num_bptt_batches", "pad_batch",
    "shard_streams", "Corpus", "load_corpus", "load_dataset", "load_text", "read_text_file",
    "DEFAULT_CORPUS_FILES", "DATASETS", "DatasetSpec", "FileSpec", "check",
    "data_dir", "resolve", "Level", "char_tokenize", "word_tokenize", "EOS", "PAD",
    "UNK", "Vocab",
]
