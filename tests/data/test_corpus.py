"""Corpus loading: split rules, determinism, and errors for bad inputs."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from rnnkit.data.corpus import Corpus, load_corpus, load_dataset, load_text
from rnnkit.data.registry import DATASETS, WHOLE, DatasetSpec, FileSpec
from rnnkit.errors import DataError


def _lines(n: int) -> str:
    return "".join(f"line {i}\n" for i in range(n))


def test_file_split_is_90_5_5_by_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(_lines(100))
    c = load_text(path, "word")
    assert (c.name, c.level) == ("t.txt", "word")
    assert [s.count("\n") for s in (c.train, c.valid, c.test)] == [90, 5, 5]
    assert c.train + c.valid + c.test == _lines(100)
    assert c.valid.startswith("line 90\n") and c.test.startswith("line 95\n")


def test_tiny_file_still_splits(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij")  # one line -> by characters
    c = load_text(path)
    assert (c.train, c.valid, c.test) == ("abcdefgh", "i", "j")


def test_crlf_is_normalized(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(_lines(40).replace("\n", "\r\n").encode())
    c = load_text(path)
    assert "\r" not in c.train + c.valid + c.test
    assert c.train + c.valid + c.test == _lines(40)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t \n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        load_text(path)


@pytest.mark.parametrize("content", [b"text\x00more" + b"x" * 100, b"caf\xe9 au lait\n" * 3])
def test_binary_or_non_utf8_file_is_an_error(tmp_path, content):
    path = tmp_path / "blob.bin"
    path.write_bytes(content)
    with pytest.raises(DataError, match="blob.bin"):
        load_text(path)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_text(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="neither a registered dataset"):
        load_corpus(str(tmp_path / "nope.txt"))


def _make_folder(root: Path, n: int, reverse: bool = False) -> dict[str, str]:
    files = {f"sub{i % 3}/doc{i:02d}.txt": f"unique text of document {i}\n" for i in range(n)}
    for rel in sorted(files, reverse=reverse):  # creation order must not matter
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(files[rel])
    return files


def test_folder_split_by_file_follows_the_documented_rule(tmp_path):
    files = _make_folder(tmp_path / "a", 45)
    (tmp_path / "a" / ".hidden").write_text("SECRET\n")
    c = load_text(tmp_path / "a")
    by_hash = sorted(files, key=lambda r: hashlib.blake2b(r.encode(), digest_size=16).digest())
    expected = {"valid": by_hash[0::20], "test": by_hash[1::20]}
    expected["train"] = [r for r in by_hash if r not in expected["valid"] + expected["test"]]
    for split, rels in expected.items():
        assert c.split(split) == "".join(files[r] for r in sorted(rels))
    assert "SECRET" not in c.train + c.valid + c.test
    # disjoint by file: every document lands in exactly one split
    for text in files.values():
        assert sum(text in c.split(s) for s in ("train", "valid", "test")) == 1


def test_folder_split_is_deterministic(tmp_path):
    _make_folder(tmp_path / "a", 30)
    _make_folder(tmp_path / "b", 30, reverse=True)
    a, b = load_text(tmp_path / "a"), load_text(tmp_path / "b")
    assert (a.train, a.valid, a.test) == (b.train, b.valid, b.test)
    assert a == load_text(tmp_path / "a")
    assert a.valid and a.test


def test_folder_with_binary_file_names_it(tmp_path):
    _make_folder(tmp_path, 5)
    (tmp_path / "sub1" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(DataError, match="image.png"):
        load_text(tmp_path)


def test_folder_of_two_files_splits_by_lines(tmp_path):
    (tmp_path / "a.txt").write_text(_lines(30))
    (tmp_path / "b.txt").write_text(_lines(30).replace("line", "row"))
    c = load_text(tmp_path)
    assert c.train + c.valid + c.test == _lines(30) + _lines(30).replace("line", "row")
    assert [s.count("\n") for s in (c.train, c.valid, c.test)] == [54, 3, 3]


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no files"):
        load_text(tmp_path)
    (tmp_path / "a.txt").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_text(tmp_path)


@pytest.fixture
def toy_data(monkeypatch, tmp_path):
    """Two registered toy datasets in a temporary data dir: one split per file, one whole file."""
    texts = {"train": "a b c\n" * 5, "valid": "b c\n", "test": "c a\n"}
    whole = "0123456789" * 10
    splits = {}
    for split, text in texts.items():
        (tmp_path / f"{split}.txt").write_text(text)
        splits[split] = FileSpec(f"{split}.txt", hashlib.sha256(text.encode()).hexdigest(), len(text))
    (tmp_path / "whole.txt").write_text(whole)
    monkeypatch.setitem(DATASETS, "toyword", DatasetSpec("toyword", "word", splits, "toy"))
    monkeypatch.setitem(DATASETS, "toywhole", DatasetSpec(
        "toywhole", "char", {WHOLE: FileSpec("whole.txt", hashlib.sha256(whole.encode()).hexdigest(), 100)},
        "toy"))
    return tmp_path, texts, whole


def test_load_dataset(toy_data):
    root, texts, whole = toy_data
    c = load_dataset("toyword", root)
    assert (c.train, c.valid, c.test, c.name, c.level) == (texts["train"], texts["valid"], texts["test"],
                                                           "toyword", "word")
    w = load_dataset("toywhole", root)
    assert (w.train, w.valid, w.test) == (whole[:90], whole[90:95], whole[95:])


def test_load_corpus_dispatch(toy_data, monkeypatch):
    root, texts, _ = toy_data
    assert load_corpus("toyword", root).train == texts["train"]
    assert load_corpus("toyword", root, level="char").level == "char"
    monkeypatch.setenv("RNNKIT_DATA", str(root))
    assert load_corpus("toyword").valid == texts["valid"]
    path_corpus = load_corpus(str(root / "train.txt"))
    assert path_corpus.level == "char" and path_corpus.name == "train.txt"
    default = load_corpus(None)
    assert isinstance(default, Corpus) and default.name == "default" and default.level == "char"


def test_repr_omits_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(_lines(50))
    assert "line" not in repr(load_text(path))


def _real_data() -> Path | None:
    env = os.environ.get("RNNKIT_DATA")
    return Path(env) if env and (Path(env) / "ptb" / "ptb.train.txt").is_file() else None


@pytest.mark.skipif(_real_data() is None, reason="RNNKIT_DATA does not point at the real data")
def test_real_tinyshakespeare_split():
    c = load_dataset("tinyshakespeare", _real_data())
    n = len(c.train) + len(c.valid) + len(c.test)
    assert n == 1115394 and len(c.valid) == len(c.test) == n // 20
    assert c.train.startswith("First Citizen:")
