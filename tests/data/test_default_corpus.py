"""The embedded default corpus: present, deterministic, split by whole files."""
from __future__ import annotations

import shutil

import pytest

from rnnkit.data.corpus import read_text_file
from rnnkit.data.default_corpus import (DEFAULT_CORPUS_FILES, TEST_FILES, TRAIN_FILES, VALID_FILES,
                                        default_corpus, stdlib_dir)
from rnnkit.errors import DataError


@pytest.fixture(scope="module")
def corpus():
    return default_corpus()


def test_file_list_is_fixed_and_disjoint():
    assert 40 <= len(DEFAULT_CORPUS_FILES) <= 80
    assert len(set(DEFAULT_CORPUS_FILES)) == len(DEFAULT_CORPUS_FILES)
    assert not set(TRAIN_FILES) & set(VALID_FILES)
    assert not set(TRAIN_FILES) & set(TEST_FILES)
    assert not set(VALID_FILES) & set(TEST_FILES)
    assert all(f.endswith(".py") for f in DEFAULT_CORPUS_FILES)


def test_non_empty_and_sized(corpus):
    assert corpus.level == "char" and corpus.name == "default"
    sizes = corpus.sizes()
    assert 1_000_000 < sizes["train"] < 4_000_000
    assert 50_000 < sizes["valid"] < 400_000 and 50_000 < sizes["test"] < 400_000


def test_deterministic(corpus):
    again = default_corpus()
    assert (again.train, again.valid, again.test) == (corpus.train, corpus.valid, corpus.test)


def test_each_present_file_is_in_exactly_its_split(corpus):
    root = stdlib_dir()
    for split, files in (("train", TRAIN_FILES), ("valid", VALID_FILES), ("test", TEST_FILES)):
        present = [f for f in files if (root / f).is_file()]
        texts = [read_text_file(root / f) for f in present]
        # the split is exactly its files, in list order
        assert corpus.split(split) == "".join(t if t.endswith("\n") else t + "\n" for t in texts)
        others = [s for s in ("train", "valid", "test") if s != split]
        for t in texts[:5]:
            assert all(t not in corpus.split(o) for o in others)


def _copy(root, files):
    for rel in files:
        src = stdlib_dir() / rel
        if src.is_file():
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def test_missing_modules_are_skipped(tmp_path):
    keep = TRAIN_FILES[: len(TRAIN_FILES) - 3] + VALID_FILES[:1] + TEST_FILES[:1]
    _copy(tmp_path, keep)
    c = default_corpus(tmp_path)
    assert c.valid == read_text_file(tmp_path / VALID_FILES[0])
    assert c.test == read_text_file(tmp_path / TEST_FILES[0])


def test_too_few_modules_is_an_error(tmp_path):
    _copy(tmp_path, TRAIN_FILES[:10] + VALID_FILES + TEST_FILES)
    with pytest.raises(DataError, match="only"):
        default_corpus(tmp_path)
    with pytest.raises(DataError):
        default_corpus(tmp_path / "nothing")
