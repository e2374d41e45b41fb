"""Vocab and tokenizers: ids are deterministic, specials fixed, save is atomic."""
from __future__ import annotations

import json
import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data.tokenize import char_tokenize, tokenize, word_tokenize
from rnnkit.data.vocab import EOS, PAD, UNK, Vocab
from rnnkit.errors import DataError


def test_specials_have_fixed_ids():
    v = Vocab.build([])
    assert v.itos == [PAD, UNK, EOS]
    assert (v.pad_id, v.unk_id, v.eos_id) == (0, 1, 2)
    assert [v.stoi[t] for t in (PAD, UNK, EOS)] == [0, 1, 2]


def test_order_is_frequency_then_token():
    tokens = "b a a c c c d d".split()
    v = Vocab.build(tokens)
    # c:3, then a:2 and d:2 tie -> alphabetical, then b:1
    assert v.itos[3:] == ["c", "a", "d", "b"]
    assert Vocab.build(reversed(tokens)) == v  # independent of first-occurrence order


def test_min_freq_and_max_size():
    tokens = ["x"] * 5 + ["y"] * 3 + ["z"] * 1
    assert Vocab.build(tokens, min_freq=2).itos[3:] == ["x", "y"]
    assert Vocab.build(tokens, max_size=4).itos == [PAD, UNK, EOS, "x"]
    assert len(Vocab.build(tokens, max_size=3)) == 3
    with pytest.raises(ValueError):
        Vocab.build(tokens, max_size=2)
    with pytest.raises(ValueError):
        Vocab.build(tokens, min_freq=0)


def test_ptb_literal_unk_maps_to_unk_id():
    text = " the <unk> cat \n <unk> sat \n"
    tokens = word_tokenize(text)
    assert tokens == ["the", "<unk>", "cat", EOS, "<unk>", "sat", EOS]
    v = Vocab.build(tokens)
    assert v.itos.count(UNK) == 1 and v.itos.count(EOS) == 1
    assert len(v) == 3 + 3  # the, cat, sat
    ids = v.encode(tokens)
    assert ids[1] == v.unk_id and ids[4] == v.unk_id and ids[3] == v.eos_id


def test_encode_unknown_and_tensor():
    v = Vocab.build("a b".split())
    assert v.encode(["a", "zzz", "b"]) == [v.stoi["a"], v.unk_id, v.stoi["b"]]
    t = v.encode_tensor(["a", "b", "a"])
    assert t.dtype == torch.long and t.shape == (3,)
    assert t.tolist() == v.encode(["a", "b", "a"])
    assert "a" in v and "zzz" not in v


def test_decode_tensor_and_range():
    v = Vocab.build("a b".split())
    assert v.decode(torch.tensor([[3, 4], [0, 2]])) == [v.itos[3], v.itos[4], PAD, EOS]
    with pytest.raises(DataError):
        v.decode([len(v)])
    with pytest.raises(DataError):
        v.decode([-1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=3), max_size=40))
def test_encode_decode_round_trip(tokens):
    v = Vocab.build(tokens)  # tokens of <= 3 chars can never be a special
    assert v.decode(v.encode(tokens)) == tokens
    assert len(v) == 3 + len(set(tokens))


def test_dict_and_file_round_trip(tmp_path):
    v = Vocab.build("the cat sat on the mat é".split())
    assert Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    path = tmp_path / "vocab.json"
    v.save(path)
    w = Vocab.load(path)
    assert w == v and w.stoi == v.stoi


def test_save_is_atomic(tmp_path):
    path = tmp_path / "vocab.json"
    old = Vocab.build(["old"])
    old.save(path)
    before = path.read_bytes()
    with mock.patch("rnnkit.data.vocab.os.replace", side_effect=OSError("disk full")):
        with pytest.raises(OSError):
            Vocab.build(["new", "words"]).save(path)
    assert path.read_bytes() == before
    assert Vocab.load(path) == old
    assert os.listdir(tmp_path) == ["vocab.json"]  # the temporary file was cleaned up


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Vocab.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        Vocab.load(bad)
    bad.write_text(json.dumps({"itos": ["a"]}))
    with pytest.raises(DataError):
        Vocab.load(bad)
    bad.write_text(json.dumps({"format": "rnnkit.vocab", "version": 1, "itos": [PAD, UNK, EOS, "a", "a"]}))
    with pytest.raises(DataError, match="duplicate"):
        Vocab.load(bad)


def test_char_tokenize_keeps_newlines():
    assert char_tokenize("ab\nc") == ["a", "b", "\n", "c"]
    assert tokenize("ab\nc", "char") == list("ab\nc")


def test_word_tokenize_matches_zaremba_reader():
    text = " aer banknote \n pierre <unk> N years old \n mr. <unk> is chairman \n"
    # Zaremba's ptb reader: f.read().replace("\n", "<eos>").split()
    assert word_tokenize(text) == text.replace("\n", " <eos> ").split()
    assert tokenize(text, "word") == word_tokenize(text)


def test_word_tokenize_skips_empty_lines():
    assert word_tokenize("a b\n\n   \nc") == ["a", "b", EOS, "c", EOS]
    with pytest.raises(ValueError):
        tokenize("x", "byte")  # type: ignore[arg-type]
