"""Registry: data-dir precedence, checksum verification and the errors users see."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from rnnkit.data import registry
from rnnkit.data.registry import DATASETS, WHOLE, DatasetSpec, FileSpec, check, data_dir, resolve
from rnnkit.errors import DataError

TOY_TEXT = b"hello world\n" * 10


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A registered two-file dataset whose checksums the test knows."""
    spec = DatasetSpec(
        name="toy", level="char",
        splits={"train": FileSpec("toy/train.txt", hashlib.sha256(TOY_TEXT).hexdigest(), len(TOY_TEXT)),
                "valid": FileSpec("toy/valid.txt", hashlib.sha256(b"v\n").hexdigest(), 2)},
        description="test dataset")
    monkeypatch.setitem(DATASETS, "toy", spec)
    (tmp_path / "toy").mkdir()
    return spec


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "env"))
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv("RNNKIT_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "rnnkit"


def test_missing_file_error_says_how_to_fix(tmp_path):
    with pytest.raises(DataError) as e:
        resolve("ptb", tmp_path)
    msg = str(e.value)
    fs = DATASETS["ptb"].splits["train"]
    for part in ("'ptb'", fs.relpath, str(tmp_path / fs.relpath), fs.sha256, "RNNKIT_DATA", "--data-dir"):
        assert part in msg


def test_resolve_uses_env_when_no_dir_given(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path / "ptb" / "ptb.train.txt")):
        resolve("ptb")


def test_wrong_content_same_size_is_corrupt(tmp_path):
    fs = DATASETS["tinyshakespeare"].splits[WHOLE]
    path = tmp_path / fs.relpath
    path.parent.mkdir(parents=True)
    fake = b"x" * fs.bytes  # right size, so only the sha256 can catch it
    path.write_bytes(fake)
    with pytest.raises(DataError) as e:
        resolve("tinyshakespeare", tmp_path)
    msg = str(e.value)
    assert fs.sha256 in msg and str(path) in msg and hashlib.sha256(fake).hexdigest() in msg
    assert check("tinyshakespeare", tmp_path) == [(WHOLE, path, "corrupt")]


def test_wrong_size_is_corrupt(tmp_path):
    fs = DATASETS["ptb"].splits["train"]
    path = tmp_path / fs.relpath
    path.parent.mkdir(parents=True)
    path.write_text("not ptb\n")
    with pytest.raises(DataError) as e:
        resolve("ptb", tmp_path)
    assert fs.sha256 in str(e.value) and str(path) in str(e.value)


def test_check_and_resolve_statuses(toy, tmp_path):
    train, valid = tmp_path / "toy/train.txt", tmp_path / "toy/valid.txt"
    train.write_bytes(TOY_TEXT)
    assert check("toy", tmp_path) == [("train", train, "ok"), ("valid", valid, "missing")]
    valid.write_bytes(b"w\n")
    assert check("toy", tmp_path)[1] == ("valid", valid, "corrupt")
    valid.write_bytes(b"v\n")
    assert resolve("toy", tmp_path) == {"train": train, "valid": valid}


def test_edited_file_is_hashed_again(toy, tmp_path):
    train = tmp_path / "toy/train.txt"
    train.write_bytes(TOY_TEXT)
    (tmp_path / "toy/valid.txt").write_bytes(b"v\n")
    assert check("toy", tmp_path)[0][2] == "ok"
    train.write_bytes(TOY_TEXT.replace(b"h", b"j"))  # same size, new content
    st = train.stat()
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert check("toy", tmp_path)[0][2] == "corrupt"
    assert registry.file_sha256(train) == hashlib.sha256(train.read_bytes()).hexdigest()


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'nope'.*ptb"):
        resolve("nope")


def test_registered_datasets():
    assert {"tinyshakespeare", "ptb", "ptb-char", "wikitext2"} <= set(DATASETS)
    assert DATASETS["ptb"].level == "word" and DATASETS["ptb-char"].level == "char"
    assert DATASETS["ptb-char"].splits == DATASETS["ptb"].splits
    wt2 = DATASETS["wikitext2"]
    assert not wt2.complete and wt2.splits["train"].relpath == "wikitext2/wiki.train.tokens"
    for spec in DATASETS.values():
        for fs in spec.splits.values():
            assert fs.sha256 is None or len(fs.sha256) == 64


def _real_data() -> Path | None:
    env = os.environ.get("RNNKIT_DATA")
    return Path(env) if env and (Path(env) / "ptb" / "ptb.train.txt").is_file() else None


@pytest.mark.skipif(_real_data() is None, reason="RNNKIT_DATA does not point at the real data")
def test_real_data_resolves():
    root = _real_data()
    assert set(resolve("ptb", root)) == {"train", "valid", "test"}
    assert resolve("tinyshakespeare", root) == {WHOLE: root / "tinyshakespeare/input.txt"}
    statuses = {split: status for split, _, status in check("wikitext2", root)}
    assert statuses["valid"] == statuses["test"] == "ok"
    if statuses["train"] == "missing":
        with pytest.raises(DataError, match="incomplete"):
            resolve("wikitext2", root)
