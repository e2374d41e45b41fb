"""SequenceTagger: padding never leaks, it can overfit, decode shapes, config and batching errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from rnnkit.data.conll import Sentence
from rnnkit.errors import ConfigError, DataError
from rnnkit.models.tagger import (PAD, UNK, CharEncoder, SequenceTagger, TaggerConfig, build_indices,
                                  encode_batch)
from rnnkit.nn.crf import allowed_transitions

SENTENCES = [
    Sentence("Peter Blackburn visited Brussels .".split(), ["B-PER", "I-PER", "O", "B-LOC", "O"]),
    Sentence("EU rejects German lamb".split(), ["B-ORG", "O", "B-MISC", "O"]),
    Sentence("Japan wins".split(), ["B-LOC", "O"]),
]
LONG = Sentence("the quick brown fox jumps over the lazy dog near Brussels today".split(), ["O"] * 12)


def _indices():
    return build_indices(SENTENCES + [LONG])


def _model(crf: bool, chars: bool, cell: str = "lstm", dropout: float = 0.0, **kw) -> SequenceTagger:
    wi, ci, ti = _indices()
    torch.manual_seed(0)
    config = TaggerConfig(len(wi), len(ti), len(ci) if chars else 0, embedding_dim=12, char_dim=6,
                          char_hidden=5, hidden_size=10, cell=cell, dropout=dropout, crf=crf, **kw)
    return SequenceTagger(config)


CASES = [(crf, chars) for crf in (True, False) for chars in (True, False)]


@pytest.mark.parametrize(("crf", "chars"), CASES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_does_not_change_real_positions(crf, chars, cell):
    model = _model(crf, chars, cell, dropout=0.5, num_layers=2).eval()
    wi, ci, ti = _indices()
    for sentence in SENTENCES:
        alone = encode_batch([sentence], wi, ci, ti)
        padded = encode_batch([sentence, LONG], wi, ci, ti)
        n = len(sentence)
        # garbage ids in the padding must not matter either
        padded["words"][0, n:] = 3
        args = [alone[k] for k in ("words", "chars", "mask")]
        pargs = [padded[k] for k in ("words", "chars", "mask")]
        scores, pscores = model(*args), model(*pargs)
        assert pscores.shape == (2, len(LONG), len(ti))
        torch.testing.assert_close(pscores[0, :n], scores[0], rtol=1e-5, atol=1e-6)
        assert torch.all(pscores[0, n:] == 0)
        decoded, pdecoded = model.decode(*args), model.decode(*pargs)
        assert torch.equal(pdecoded[0, :n], decoded[0])
        assert torch.all(pdecoded[0, n:] == -1)
        # the loss of a padded batch is the sum of the sentences' own losses
        both = model.loss(**padded)
        apart = model.loss(**alone) + model.loss(**encode_batch([LONG], wi, ci, ti))
        torch.testing.assert_close(both, apart, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("crf", "chars"), CASES)
def test_loss_decreases_when_overfitting(crf, chars):
    model = _model(crf, chars)
    wi, ci, ti = _indices()
    batch = encode_batch(SENTENCES, wi, ci, ti)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = model.loss(**batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    predicted = model.eval().decode(batch["words"], batch["chars"], batch["mask"])
    assert torch.equal(predicted[batch["mask"]], batch["tags"][batch["mask"]])


@pytest.mark.parametrize(("crf", "chars"), CASES)
def test_decode_shape_and_padding(crf, chars):
    model = _model(crf, chars).eval()
    wi, ci, ti = _indices()
    batch = encode_batch(SENTENCES, wi, ci, ti)
    out = model.decode(batch["words"], batch["chars"], batch["mask"])
    assert out.shape == (3, 5) and out.dtype == torch.long
    assert torch.equal(out == -1, ~batch["mask"])
    assert out[batch["mask"]].min() >= 0 and out[batch["mask"]].max() < len(ti)


def test_allowed_transitions_constrain_decoding():
    wi, ci, ti = _indices()
    tags = sorted(ti, key=ti.get)
    allowed = allowed_transitions(tags, "BIO")
    config = TaggerConfig(len(wi), len(ti), len(ci), embedding_dim=8, hidden_size=6, dropout=0.0)
    model = SequenceTagger(config, allowed=allowed).eval()
    assert torch.equal(model.crf.transitions_allowed, allowed[0])
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([5.0 if t.startswith("I-") else 0.0 for t in tags]))
    batch = encode_batch(SENTENCES, wi, ci, ti)
    for row, n in zip(model.decode(batch["words"], batch["chars"], batch["mask"]), batch["mask"].sum(1)):
        names = [tags[i] for i in row[:n]]
        assert not names[0].startswith("I-")     # BIO: a chunk never starts with I
        for a, b in zip(names, names[1:]):
            assert not b.startswith("I-") or a[2:] == b[2:]
    with pytest.raises(ConfigError, match="crf"):
        SequenceTagger(dataclasses.replace(config, crf=False), allowed=allowed)


def test_char_encoder_runs_all_words_with_lengths():
    torch.manual_seed(0)
    enc = CharEncoder(10, 4, 3).eval()
    chars = torch.tensor([[[1, 2, 3, 0], [4, 0, 0, 0]], [[5, 6, 0, 0], [0, 0, 0, 0]]])
    out = enc(chars)
    assert out.shape == (2, 2, 6)
    assert torch.all(out[1, 1] == 0)                           # a padded word has no features
    alone = enc(torch.tensor([[[1, 2, 3]]]))                   # no padding at all
    torch.testing.assert_close(out[0, 0], alone[0, 0])
    out.sum().backward()
    assert enc.embedding.weight.grad is not None


@pytest.mark.parametrize(("field", "value"), [
    ("vocab_size", 0), ("num_tags", -1), ("char_vocab_size", -1), ("embedding_dim", 0),
    ("char_dim", 0), ("char_hidden", 0), ("hidden_size", 0), ("num_layers", 0), ("cell", "rnn_tanh"),
    ("dropout", 1.0), ("dropout", -0.1), ("crf", "yes"), ("hidden_size", 2.5), ("vocab_size", True),
])
def test_config_errors_name_the_field(field, value):
    kwargs = {"vocab_size": 10, "num_tags": 3} | {field: value}
    with pytest.raises(ConfigError, match=rf"tagger config: {field} must"):
        TaggerConfig(**kwargs)


def test_config_is_frozen_and_serializable():
    config = TaggerConfig(10, 3)
    assert config.to_dict()["crf"] is True and config.char_vocab_size == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 5  # type: ignore[misc]


def test_encode_batch():
    wi, ci, ti = _indices()
    assert wi[PAD] == 0 and wi[UNK] == 1 and ci[PAD] == 0 and "peter" in wi and "Peter" not in wi
    sentences = [Sentence(["Peter", "Zorglub"], ["B-PER", "O"]), Sentence(["EU"], ["B-ORG"])]
    batch = encode_batch(sentences, wi, ci, ti, "cpu")
    assert batch["words"].tolist() == [[wi["peter"], wi[UNK]], [wi["eu"], 0]]
    assert batch["mask"].tolist() == [[True, True], [True, False]]
    assert batch["tags"].tolist() == [[ti["B-PER"], ti["O"]], [ti["B-ORG"], 0]]
    assert batch["chars"].shape == (2, 2, 7)
    assert batch["chars"][0, 0].tolist() == [ci[c] for c in "Peter"] + [0, 0]   # case kept
    assert batch["chars"][0, 1, 0] == ci[UNK]                                 # 'Z' never seen
    assert torch.all(batch["chars"][1, 1] == 0)
    assert encode_batch(sentences, wi, None, ti)["chars"].shape == (2, 2, 0)
    assert encode_batch(sentences, wi, ci, ti, max_word_len=3)["chars"].shape == (2, 2, 3)


def test_encode_batch_errors():
    wi, ci, ti = _indices()
    with pytest.raises(DataError, match="sentence 1 has tag 'B-FOO'"):
        encode_batch([SENTENCES[0], Sentence(["x"], ["B-FOO"])], wi, ci, ti)
    with pytest.raises(DataError, match="sentence 0 has 0 words"):
        encode_batch([Sentence([], [])], wi, ci, ti)
    with pytest.raises(DataError, match="no sentences"):
        encode_batch([], wi, ci, ti)
    with pytest.raises(ConfigError, match="<unk>"):
        encode_batch(SENTENCES, {"a": 0}, ci, ti)


def test_forward_rejects_bad_masks_and_missing_chars():
    model = _model(crf=True, chars=True)
    words = torch.ones(2, 3, dtype=torch.long)
    chars = torch.ones(2, 3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="left-aligned"):
        model(words, chars, torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match="left-aligned"):
        model(words, chars, torch.tensor([[False, False, False], [True, True, True]]))
    with pytest.raises(ValueError, match="chars"):
        model(words, None)
