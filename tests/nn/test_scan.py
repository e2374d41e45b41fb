"""The generic scan on custom cells: equals a hand loop of the cell's reference
step, and masks padded steps exactly."""
import pytest
import torch

import rnnkit
from rnnkit.cells import JordanCell

CUSTOM = {
    "lstm_peephole_ln": lambda **kw: rnnkit.LSTM(3, 5, peephole=True, layer_norm=True, **kw),
    "lstm_peephole_proj": lambda **kw: rnnkit.LSTM(3, 5, peephole=True, proj_size=2, **kw),
    "gru_reset_before": lambda **kw: rnnkit.GRU(3, 5, variant="reset_before", **kw),
    "gru_simplified": lambda **kw: rnnkit.GRU(3, 5, variant="simplified", **kw),
    "jordan": lambda **kw: rnnkit.Recurrent(JordanCell, 3, 5, output_size=2, **kw),
}


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_scan_equals_hand_loop_of_reference_step(name):
    torch.manual_seed(0)
    layer = CUSTOM[name](num_layers=2, bidirectional=True)
    x = torch.randn(6, 2, 3)
    out, _ = layer(x)

    inp = x
    for k, cell in enumerate(layer.cells):
        ys = []
        for d in range(2):
            p = layer._params(k, d)
            state = cell.init_state(2)
            seq = [None] * 6
            for t in (range(5, -1, -1) if d else range(6)):
                seq[t], state = cell.step(inp[t], state, p)
            ys.append(torch.stack(seq))
        inp = torch.cat(ys, -1)
    torch.testing.assert_close(out, inp, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_lengths_equal_running_each_sequence_alone(name):
    # 1e-5 as for torch.nn parity: a batch of 3 and a batch of 1 take different
    # GEMM blockings, so float32 rounding differs by a few ulps across CPUs.
    torch.manual_seed(1)
    layer = CUSTOM[name](num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 7, 3)
    lengths = torch.tensor([7, 2, 4])
    out, h = layer(x, lengths=lengths)
    h = h if isinstance(h, tuple) else (h,)
    for b, n in enumerate(lengths.tolist()):
        out_b, h_b = layer(x[b:b + 1, :n])
        h_b = h_b if isinstance(h_b, tuple) else (h_b,)
        torch.testing.assert_close(out[b:b + 1, :n], out_b, atol=1e-5, rtol=1e-5)
        assert torch.count_nonzero(out[b, n:]) == 0
        for s, s_b in zip(h, h_b):
            torch.testing.assert_close(s[:, b:b + 1], s_b, atol=1e-5, rtol=1e-5)


def test_packed_sequence_on_custom_cell():
    torch.manual_seed(2)
    layer = rnnkit.LSTM(3, 5, layer_norm=True)
    x = torch.randn(7, 3, 3)
    lengths = torch.tensor([3, 7, 5])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_p, (h_p, c_p) = layer(packed)
    out_l, (h_l, c_l) = layer(x, lengths=lengths)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, total_length=7)
    torch.testing.assert_close(padded, out_l)
    torch.testing.assert_close(h_p, h_l)
