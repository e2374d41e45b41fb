"""The CPU kernels' inference projection into a reused per-thread buffer
(rnnkit/kernels/cpu/common.py: inference_projection): results equal the reference scan's
on the plain path, call after call (the buffer is overwritten), in and out of inference
mode, and a forward that a backward follows never uses it."""
import pytest
import torch

import rnnkit
from rnnkit.kernels.cpu import common
from rnnkit.kernels.cpu.common import available

pytestmark = pytest.mark.skipif(available() is not True, reason="no native library (no C compiler)")

LAYERS = {
    "lstm_layer_norm": lambda **kw: rnnkit.LSTM(5, 6, num_layers=2, layer_norm=True, bidirectional=True, **kw),
    "lstm_peephole": lambda **kw: rnnkit.LSTM(5, 6, peephole=True, **kw),
    "gru_reset_before": lambda **kw: rnnkit.GRU(5, 6, variant="reset_before", num_layers=2, **kw),
}


@pytest.fixture(autouse=True)
def every_projection_in_the_workspace(monkeypatch):
    monkeypatch.setattr(common, "WORKSPACE_MIN_BYTES", 0)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inference_through_the_workspace_equals_the_reference(name):
    torch.manual_seed(0)
    fast = LAYERS[name]()
    slow = LAYERS[name](backend="scan")
    slow.load_state_dict(fast.state_dict())
    assert (fast.path, slow.path) == ("kernel", "scan")
    common._WORKSPACE.buf = None
    for T, B in ((7, 3), (4, 2), (9, 5)):  # other sizes: the buffer is reused, grown, sliced
        x = torch.randn(T, B, 5)
        lengths = torch.randint(1, T + 1, (B,))
        with torch.no_grad():
            want, want_n = slow(x, lengths=lengths)
            got, got_n = fast(x, lengths=lengths)
        with torch.inference_mode():
            again, _ = fast(x, lengths=lengths)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_n, want_n, atol=1e-5, rtol=1e-5)  # c_n from the two-step C
        torch.testing.assert_close(again, want, atol=1e-5, rtol=1e-5)
    assert getattr(common._WORKSPACE, "buf", None) is not None and not common._WORKSPACE.buf.is_inference()


def test_a_forward_with_a_backward_to_follow_does_not_use_it():
    torch.manual_seed(0)
    layer = LAYERS["lstm_peephole"]()
    common._WORKSPACE.buf = marker = torch.full((10_000,), 7.0)
    y, _ = layer(torch.randn(4, 2, 5))
    y.sum().backward()
    assert torch.equal(marker, torch.full((10_000,), 7.0)) and common._WORKSPACE.buf is marker
