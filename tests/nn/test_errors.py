"""Bad input raises one ValueError/TypeError naming the argument, expected vs given."""
import pytest
import torch

import rnnkit


@pytest.fixture(params=["auto", "scan"])
def lstm(request):
    return rnnkit.LSTM(4, 6, num_layers=2, backend=request.param)


def test_wrong_rank(lstm):
    with pytest.raises(ValueError, match=r"input must be 3-D \(seq, batch, input_size\).*got 4-D"):
        lstm(torch.randn(2, 3, 4, 5))


def test_wrong_feature_size(lstm):
    with pytest.raises(ValueError, match=r"input has shape \(5, 3, 7\) with 7 features, expected input_size=4"):
        lstm(torch.randn(5, 3, 7))


def test_h0_wrong_shape(lstm):
    h0, c0 = torch.zeros(1, 3, 6), torch.zeros(2, 3, 6)
    with pytest.raises(ValueError, match=r"h0 has shape \(1, 3, 6\), expected .* = \(2, 3, 6\)"):
        lstm(torch.randn(5, 3, 4), (h0, c0))


def test_hx_wrong_arity():
    gru = rnnkit.GRU(4, 6)
    with pytest.raises(ValueError, match="hx must hold 1 tensors"):
        gru(torch.randn(5, 3, 4), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6)))


@pytest.mark.parametrize("lengths,pattern", [
    ([5, 6, 2], r"lengths\[1\] = 6 is outside \[1, 5\]"),
    ([5, 0, 2], r"lengths\[1\] = 0 is outside \[1, 5\]"),
    ([5, 2], r"lengths has shape \(2,\), expected \(batch,\) = \(3,\)"),
])
def test_bad_lengths(lstm, lengths, pattern):
    with pytest.raises(ValueError, match=pattern):
        lstm(torch.randn(5, 3, 4), lengths=torch.tensor(lengths))


def test_float_lengths(lstm):
    with pytest.raises(TypeError, match="lengths must be integers"):
        lstm(torch.randn(5, 3, 4), lengths=torch.tensor([1.0, 2.0, 3.0]))


def test_non_float_input(lstm):
    with pytest.raises(TypeError, match="input must be floating point, got dtype torch.int64"):
        lstm(torch.ones(5, 3, 4, dtype=torch.long))


def test_dtype_mismatch(lstm):
    with pytest.raises(TypeError, match="input dtype torch.float64 does not match"):
        lstm(torch.randn(5, 3, 4, dtype=torch.float64))


def test_device_mismatch(lstm):
    x = torch.randn(5, 3, 4, device="meta")
    with pytest.raises(ValueError, match="input is on meta but the parameters are on cpu"):
        lstm(x)


def test_h0_device_mismatch(lstm):
    h0 = torch.zeros(2, 3, 6, device="meta")
    with pytest.raises(ValueError, match="h0 is on meta"):
        lstm(torch.randn(5, 3, 4), (h0, torch.zeros(2, 3, 6)))


def test_not_a_tensor(lstm):
    with pytest.raises(TypeError, match="input must be a torch.Tensor or PackedSequence, got list"):
        lstm([[1.0]])


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        rnnkit.GRU(4, 6, num_layers=0)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\]"):
        rnnkit.GRU(4, 6, dropout=2)
    with pytest.raises(ValueError, match="backend must be one of"):
        rnnkit.GRU(4, 6, backend="cuda")
    with pytest.raises(ValueError, match="backend='torch' needs a torch.nn configuration"):
        rnnkit.LSTM(4, 6, peephole=True, backend="torch")(torch.randn(2, 1, 4))
