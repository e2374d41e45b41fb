import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models import CELLS, LanguageModel, LMConfig


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("inp", ["embedding", "onehot", "hashing"])
def test_forward_shapes_and_state(cell, inp):
    torch.manual_seed(0)
    m = LanguageModel(LMConfig(vocab_size=13, cell=cell, input=inp, embedding_dim=6, hidden_size=8, num_layers=2))
    logits, state = m(torch.randint(0, 13, (3, 5)))
    assert logits.shape == (3, 5, 13)
    logits.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_one_hot_input_is_identity_rows():
    m = LanguageModel(LMConfig(vocab_size=5, input="onehot", hidden_size=4, num_layers=1))
    x = m.encode(torch.tensor([[0, 3]]))
    torch.testing.assert_close(x, torch.eye(5)[[0, 3]].unsqueeze(0))


def test_weight_tying_shares_the_matrix():
    m = LanguageModel(LMConfig(vocab_size=20, embedding_dim=8, hidden_size=8, num_layers=1, tie_weights=True))
    assert m.decoder.weight is m.encoder.weight
    n_untied = sum(p.numel() for p in LanguageModel(LMConfig(vocab_size=20, embedding_dim=8, hidden_size=8,
                                                              num_layers=1)).parameters())
    assert sum(p.numel() for p in m.parameters()) == n_untied - 20 * 8


def test_init_range_is_uniform_bound():
    m = LanguageModel(LMConfig(vocab_size=50, hidden_size=16, init_range=0.1))
    for p in m.parameters():
        assert p.abs().max() <= 0.1


def test_dropout_only_in_training():
    m = LanguageModel(LMConfig(vocab_size=10, hidden_size=8, dropout=0.5))
    x = torch.randint(0, 10, (2, 6))
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0])
    m.train()
    assert not torch.allclose(m(x)[0], m(x)[0])


@pytest.mark.parametrize("kw,pattern", [
    ({"tie_weights": True, "embedding_dim": 4, "hidden_size": 8}, "embedding_dim == hidden_size"),
    ({"tie_weights": True, "input": "onehot"}, "input='embedding'"),
    ({"cell": "lstmx"}, "cell must be one of"), ({"dropout": 1.0}, "dropout"),
])
def test_config_validation(kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        LMConfig(vocab_size=10, **kw)


def test_rejects_float_tokens():
    m = LanguageModel(LMConfig(vocab_size=10, hidden_size=8))
    with pytest.raises(ValueError, match="LongTensor"):
        m(torch.zeros(2, 3))
