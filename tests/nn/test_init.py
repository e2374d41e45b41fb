import pytest
import torch

import rnnkit


def test_irnn_identity_init():
    rnn = rnnkit.RNN(3, 6, num_layers=2, nonlinearity="relu", init="identity", init_gain=0.5)
    for k in range(2):
        torch.testing.assert_close(getattr(rnn, f"weight_hh_l{k}"), 0.5 * torch.eye(6), atol=0, rtol=0)
        assert torch.count_nonzero(getattr(rnn, f"bias_ih_l{k}")) == 0
        assert torch.count_nonzero(getattr(rnn, f"bias_hh_l{k}")) == 0
        assert getattr(rnn, f"weight_ih_l{k}").abs().max() < 0.01  # N(0, 0.001^2)


@pytest.mark.parametrize("layer,gates", [(rnnkit.LSTM, 4), (rnnkit.GRU, 3), (rnnkit.RNN, 1)])
def test_orthogonal_init_per_gate_block(layer, gates):
    m = layer(5, 8, num_layers=2, bidirectional=True, init="orthogonal")
    for name, w in m.named_parameters():
        if name.startswith("weight_hh"):
            for block in w.detach().split(8):
                torch.testing.assert_close(block.T @ block, torch.eye(8), atol=1e-5, rtol=0)
        elif name.startswith("bias"):
            assert torch.count_nonzero(w) == 0


def test_xavier_init_bounds():
    m = rnnkit.GRU(5, 8, init="xavier")
    bound = (6 / (5 + 8)) ** 0.5
    assert m.weight_ih_l0.abs().max() <= bound
    assert m.weight_ih_l0.abs().max() > 0.5 * bound


def test_torch_init_is_uniform_inverse_sqrt_h():
    m = rnnkit.LSTM(5, 16, peephole=True)
    for p in m.parameters():
        assert p.abs().max() <= 0.25


def test_forget_bias():
    m = rnnkit.LSTM(4, 6, num_layers=2, forget_bias=1.0)
    for k in range(2):
        b = getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}")
        torch.testing.assert_close(b[6:12], torch.ones(6))
    with pytest.raises(ValueError, match="forget gate"):
        rnnkit.GRU(4, 6, forget_bias=1.0)
    with pytest.raises(ValueError, match="bias=True"):
        rnnkit.LSTM(4, 6, bias=False, forget_bias=1.0)


def test_unknown_init_rejected():
    with pytest.raises(ValueError, match="init must be one of"):
        rnnkit.LSTM(4, 6, init="he")
