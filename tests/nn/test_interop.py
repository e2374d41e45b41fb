import pytest
import torch
from torch import nn

import rnnkit


@pytest.mark.parametrize("torch_cls,kw", [(nn.LSTM, {"proj_size": 3}), (nn.LSTM, {}), (nn.GRU, {}),
                                          (nn.RNN, {"nonlinearity": "relu"})])
def test_state_dict_round_trip_both_ways(torch_cls, kw):
    torch.manual_seed(0)
    ref = torch_cls(4, 6, num_layers=2, bidirectional=True, batch_first=True, **kw)
    ours = rnnkit.from_torch(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=0, rtol=0)

    # the reverse: rnnkit weights loaded into torch.nn unchanged
    fresh = type(ours)(4, 6, num_layers=2, bidirectional=True, batch_first=True, **kw)
    back = torch_cls(4, 6, num_layers=2, bidirectional=True, batch_first=True, **kw)
    back.load_state_dict(fresh.state_dict())
    torch.testing.assert_close(back(x)[0], fresh(x)[0], atol=0, rtol=0)
    converted = fresh.to_torch()
    assert type(converted) is torch_cls
    torch.testing.assert_close(converted(x)[0], fresh(x)[0], atol=0, rtol=0)


def test_custom_configurations_do_not_convert():
    with pytest.raises(ValueError, match="no torch.nn equivalent"):
        rnnkit.LSTM(4, 6, peephole=True).to_torch()
    with pytest.raises(ValueError, match="no torch.nn equivalent"):
        rnnkit.GRU(4, 6, learn_initial_state=True).to_torch()
    with pytest.raises(TypeError, match="expected torch.nn.RNN, LSTM or GRU"):
        rnnkit.from_torch(nn.Linear(2, 2))


def test_fused_flag_reports_path():
    assert rnnkit.LSTM(4, 6).fused and rnnkit.LSTM(4, 6).path == "torch"
    assert rnnkit.LSTM(4, 6, backend="scan").path == "scan"
    assert not rnnkit.LSTM(4, 6, layer_norm=True).fused
    assert not rnnkit.GRU(4, 6, variant="reset_before").fused
    assert rnnkit.RNN(4, 6, nonlinearity="relu", init="identity").fused


def test_dtype_and_device_moves_keep_working():
    m = rnnkit.LSTM(4, 6, peephole=True).double()
    out, _ = m(torch.randn(3, 2, 4, dtype=torch.float64))
    assert out.dtype == torch.float64
