"""Issue 16: every model config that builds a recurrent layer takes the layer's
regularisation (recurrent_dropout, weight_drop, hidden_dropout, zoneout_h, zoneout_c),
checks it (ConfigError) and hands it to the layer; a regularised model trains."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models import MODELS
from rnnkit.models.cells import RegularizationOptions, layer_regularization
from rnnkit.models.classifier import ClassifierConfig
from rnnkit.models.forecaster import ForecasterConfig
from rnnkit.models.language_model import LMConfig
from rnnkit.models.multi_forecaster import MultiForecasterConfig
from rnnkit.models.piano_roll import PianoRollConfig
from rnnkit.models.regressor import RegressorConfig
from rnnkit.models.seq2seq import Seq2SeqConfig, shift_right
from rnnkit.models.tagger import TaggerConfig
from rnnkit.train.saved import _same_config

REG = {"recurrent_dropout": 0.2, "weight_drop": 0.3, "hidden_dropout": 0.25, "zoneout_h": 0.1, "zoneout_c": 0.4}
REG_FIELDS = tuple(REG)
B, T = 3, 5


def _lengths():
    return torch.tensor([T, 3, 2])


def _classifier_loss(model):
    x = torch.randint(1, 20, (B, T))
    return model(x, _lengths()).logsumexp(-1).sum()


def _tagger_loss(model):
    words = torch.randint(1, 20, (B, T))
    chars = torch.randint(1, 9, (B, T, 4))
    mask = torch.arange(T).unsqueeze(0) < _lengths().unsqueeze(1)
    tags = torch.randint(0, 4, (B, T))
    return model.loss(words.masked_fill(~mask, 0), chars, tags, mask)


def _forecaster_loss(model):
    y, _ = model(torch.randn(B, T, 2))
    return y.pow(2).mean()


def _multi_forecaster_loss(model):
    y, _ = model(torch.randn(B, T, 3))
    return y.pow(2).mean()


def _piano_roll_loss(model):
    logits, _ = model(torch.bernoulli(torch.full((B, T, 8), 0.3)), lengths=_lengths())
    return logits.sigmoid().mean()


def _regressor_loss(model):
    return model(torch.randn(B, T, 2), lengths=_lengths()).pow(2).mean()


def _seq2seq_loss(model):
    src = torch.randint(3, 12, (B, T))
    tgt = torch.randint(3, 10, (B, 4))
    return model(src, _lengths(), shift_right(tgt, 2, 0)).logsumexp(-1).sum()


def _lm_loss(model):
    logits, _ = model(torch.randint(0, 20, (B, T)))
    return logits.logsumexp(-1).sum()


#: model name -> (config class, the smallest config's fields, its recurrent layers, a training loss)
CASES = {
    "language_model": (LMConfig, dict(vocab_size=20, embedding_dim=6, hidden_size=7, num_layers=2), ("rnn",), _lm_loss),
    "sequence_classifier": (ClassifierConfig, dict(num_classes=3, vocab_size=20, embedding_dim=6, hidden_size=7,
                                                   num_layers=2), ("rnn",), _classifier_loss),
    "sequence_tagger": (TaggerConfig, dict(vocab_size=20, num_tags=4, char_vocab_size=9, embedding_dim=6, char_dim=3,
                                           char_hidden=3, hidden_size=7, num_layers=2), ("rnn",), _tagger_loss),
    "sequence_forecaster": (ForecasterConfig, dict(channels=2, hidden_size=7, num_layers=2), ("rnn",),
                            _forecaster_loss),
    "forecaster": (MultiForecasterConfig, dict(input_size=3, output_size=1, horizon=2, hidden_size=7, num_layers=2),
                   ("rnn",), _multi_forecaster_loss),
    "piano_roll": (PianoRollConfig, dict(keys=8, hidden_size=7, num_layers=2), ("rnn",), _piano_roll_loss),
    "sequence_regressor": (RegressorConfig, dict(input_size=2, output_size=1, hidden_size=7, num_layers=2), ("rnn",),
                           _regressor_loss),
    "seq2seq": (Seq2SeqConfig, dict(src_vocab_size=12, tgt_vocab_size=10, embedding_dim=6, hidden_size=8,
                                    encoder_layers=2, decoder_layers=2), ("encoder", "decoder"), _seq2seq_loss),
}
NAMES = sorted(CASES)


def _config(name, **kw):
    cls, base, _, _ = CASES[name]
    return cls(**{**base, "cell": "lstm", **kw})


@pytest.mark.parametrize("name", NAMES)
def test_the_config_declares_the_options_with_the_shared_help(name):
    cls = CASES[name][0]
    assert MODELS[name].config is cls and issubclass(cls, RegularizationOptions)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    shared = {f.name: f for f in dataclasses.fields(RegularizationOptions)}
    for r in REG_FIELDS:
        assert fields[r].default == 0.0 and fields[r].metadata["help"] == shared[r].metadata["help"]


@pytest.mark.parametrize("name", NAMES)
def test_a_regularized_config_builds_and_the_layers_carry_the_rates(name):
    torch.manual_seed(0)
    model = MODELS[name].build(_config(name, **REG))
    for layer in CASES[name][2]:
        reg = getattr(model, layer).regularization
        assert reg.recurrent_dropout == 0.2 and reg.weight_drop == 0.3 and reg.hidden_dropout == 0.25
        assert reg.zoneout == {"h": 0.1, "c": 0.4}
    plain = MODELS[name].build(_config(name))
    for layer in CASES[name][2]:
        assert not getattr(plain, layer).regularization.active


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("field", REG_FIELDS)
def test_a_rate_outside_0_1_is_a_config_error(name, field):
    with pytest.raises(ConfigError, match=f"{field} must be in \\[0, 1\\), got 1.0"):
        _config(name, **{field: 1.0})
    with pytest.raises(ConfigError, match=field):
        _config(name, **{field: -0.1})


@pytest.mark.parametrize("name", NAMES)
def test_zoneout_c_needs_a_memory_cell(name):
    with pytest.raises(ConfigError, match="zoneout_c needs a cell with a memory cell c.*'gru' has only h"):
        _config(name, cell="gru", zoneout_c=0.3)
    _config(name, cell="gru", zoneout_h=0.3)   # zoneout of h is fine on a GRU


@pytest.mark.parametrize("name", [n for n in NAMES if n != "sequence_tagger"])   # the tagger has lstm/gru only
def test_recurrent_dropout_needs_recurrent_weights(name):
    with pytest.raises(ConfigError, match="recurrent_dropout and weight_drop need recurrent weights"):
        _config(name, cell="mingru", weight_drop=0.2)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_regularized_model_trains_forward_and_backward(name, cell):
    torch.manual_seed(0)
    reg = dict(REG, zoneout_c=REG["zoneout_c"] if cell == "lstm" else 0.0)
    model = MODELS[name].build(_config(name, cell=cell, **reg)).train()
    loss = CASES[name][3](model)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    for layer in CASES[name][2]:
        w = getattr(model, layer).weight_hh_l0
        assert w.grad is not None and torch.isfinite(w.grad).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(CASES[name][3](model))   # evaluation: zoneout's expectation, no dropout


def test_seq2seq_hidden_dropout_follows_each_stack_depth():
    c = _config("seq2seq", encoder_layers=2, decoder_layers=1, hidden_dropout=0.3)
    model = MODELS["seq2seq"].build(c)
    assert model.encoder.regularization.hidden_dropout == 0.3
    assert model.decoder.regularization.hidden_dropout == 0.0   # one layer: nothing between layers
    assert layer_regularization(c, num_layers=1)["hidden_dropout"] == 0.0
    assert layer_regularization(c, num_layers=3)["hidden_dropout"] == 0.3


def test_one_layer_stacks_have_no_hidden_dropout():
    c = _config("sequence_regressor", num_layers=1, hidden_dropout=0.3)
    assert MODELS["sequence_regressor"].build(c).rnn.regularization.hidden_dropout == 0.0


def test_the_options_are_keyword_only():
    with pytest.raises(TypeError):
        RegressorConfig(2, 1, "lstm", 8, 1, 0.0, "torch", None, 0.2)   # one positional too many


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_stored_before_the_options_still_matches(name):
    config = _config(name)
    older = {k: v for k, v in config.to_dict().items() if k not in REG_FIELDS}
    assert _same_config(config, older)
    assert not _same_config(_config(name, zoneout_h=0.1), older)
