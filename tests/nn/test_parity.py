"""rnnkit layers against torch.nn with the same state_dict: outputs, final states
and every parameter gradient, on the fused path and with the reference scan forced."""
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit

T, B, I, H, P = 6, 4, 5, 7, 3
LENGTHS = torch.tensor([6, 2, 5, 1])

CONFIGS = {
    "rnn_tanh": (rnnkit.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnkit.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnkit.LSTM, nn.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, nn.LSTM, {"proj_size": P}),
    "gru": (rnnkit.GRU, nn.GRU, {}),
}


def _as_tuple(h):
    return h if isinstance(h, tuple) else (h,)


def _run(module, x, inputs, batch_first):
    """Run on 'full' (no padding), 'lengths' (padded + lengths=) or 'packed' input;
    return padded time-major outputs and the final state tuple."""
    if inputs == "full":
        out, h = module(x)
    elif inputs == "lengths" and isinstance(module, rnnkit.Recurrent):
        out, h = module(x, lengths=LENGTHS)
    else:  # torch.nn reference for 'lengths', and both for 'packed'
        packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
        out, h = module(packed)
        assert isinstance(out, nn.utils.rnn.PackedSequence)
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    if batch_first:
        out = out.transpose(0, 1)
    return out, _as_tuple(h)


@pytest.mark.parametrize("backend", ["auto", "scan"])
@pytest.mark.parametrize("inputs", ["full", "lengths", "packed"])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias",
                         list(itertools.product([1, 2], [False, True], [False, True], [True, False])))
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_torch_nn(config, num_layers, bidirectional, batch_first, bias, inputs, backend):
    ours_cls, torch_cls, kw = CONFIGS[config]
    torch.manual_seed(0)
    ref = torch_cls(I, H, num_layers=num_layers, bias=bias, batch_first=batch_first,
                    bidirectional=bidirectional, **kw)
    ours = ours_cls(I, H, num_layers=num_layers, bias=bias, batch_first=batch_first,
                    bidirectional=bidirectional, backend=backend, **kw)
    ours.load_state_dict(ref.state_dict())
    assert ours.path == ("torch" if backend == "auto" else "scan")
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]

    x = torch.randn((B, T, I) if batch_first else (T, B, I))
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, h_ref = _run(ref, x_ref, inputs, batch_first)
    out_ours, h_ours = _run(ours, x_ours, inputs, batch_first)
    torch.testing.assert_close(out_ours, out_ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(h_ours, h_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    # a loss touching outputs and every final state, so all gradients are exercised
    w = torch.randn_like(out_ref)
    loss = lambda out, h: (out * w).sum() + sum((s ** 2).sum() for s in h)
    loss(out_ref, h_ref).backward()
    loss(out_ours, h_ours).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_hx_and_unbatched_match_torch_nn(config):
    ours_cls, torch_cls, kw = CONFIGS[config]
    torch.manual_seed(1)
    ref = torch_cls(I, H, num_layers=2, bidirectional=True, **kw)
    for backend in ("auto", "scan"):
        ours = rnnkit.from_torch(ref, backend=backend)
        sizes = [P if kw.get("proj_size") else H] + ([H] if torch_cls is nn.LSTM else [])
        hx = tuple(torch.randn(4, B, s) for s in sizes)
        hx_arg = hx if len(hx) > 1 else hx[0]
        x = torch.randn(T, B, I)
        for args in ((x, hx_arg), (x[:, 0], tuple(h[:, 0] for h in hx) if len(hx) > 1 else hx[0][:, 0])):
            out_ref, h_ref = ref(*args)
            out_ours, h_ours = ours(*args)
            torch.testing.assert_close(out_ours, out_ref, atol=1e-5, rtol=1e-5)
            for a, b in zip(_as_tuple(h_ours), _as_tuple(h_ref), strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_packed_output_keeps_callers_packing():
    torch.manual_seed(2)
    ref = nn.LSTM(I, H)
    ours = rnnkit.from_torch(ref, backend="scan")
    x = torch.randn(T, B, I)
    sorted_lengths = torch.tensor([6, 5, 5, 2])  # enforce_sorted=True, with a tie
    packed = pack_padded_sequence(x, sorted_lengths)
    out_ref, _ = ref(packed)
    out_ours, _ = ours(packed)
    assert out_ours.sorted_indices is None and torch.equal(out_ours.batch_sizes, out_ref.batch_sizes)
    torch.testing.assert_close(out_ours.data, out_ref.data, atol=1e-5, rtol=1e-5)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(3)
    layer = rnnkit.GRU(I, H, num_layers=2, dropout=0.5, backend="scan")
    x = torch.randn(T, B, I)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    assert torch.equal(a, b)
    layer.train()
    c, _ = layer(x)
    assert not torch.allclose(a, c)
