"""Padding never leaks (issue 11): with ``lengths=``, whatever the padded steps of the
input hold (NaN, +-inf, huge garbage), on every path a custom layer can take (the
reference scan, the native C kernels, the minGRU/minLSTM
parallel scans in both formulations; torch.nn's own kernel packs the batch, so it
never reads them):

* padded outputs are exactly 0 (as ``pad_packed_sequence`` gives) and everything is finite;
* every gradient is finite, ``x.grad`` is 0 at padded steps, and all outputs, final
  states and gradients are *exactly* those of the same layer with zeros in the padding,
  also when the gradient arriving at the padded outputs is garbage (torch.nn ignores it);
* and those equal the reference scan's (``backend="scan"``), forward and backward.

The Triton kernels get the same property in tests/kernels/triton/test_triton.py (they
need the interpreter subprocess there).

Property tests (hypothesis) over shapes, lengths (a full-length row and a padded one
always, length-1 rows often), directions, depth and padding contents;
``RNNKIT_FUZZ=1`` runs 10x the examples.
"""
import math
import os

import pytest
import torch
from torch import Tensor
from hypothesis import given, settings, strategies as st

import rnnkit
from rnnkit.cells.min_rnn import MinGRUCell
from rnnkit.kernels import find
from rnnkit.kernels import linear_scan as ps
from rnnkit.kernels.cpu import gru as cpu_gru, lstm as cpu_lstm, native


def examples(n: int) -> int:
    """Hypothesis examples per test: ``n``, or ``10 n`` with ``RNNKIT_FUZZ`` set."""
    return n * (10 if os.environ.get("RNNKIT_FUZZ") else 1)


I, H = 3, 4
f64 = torch.float64


class _SubclassedMinGRU(MinGRUCell):
    """Not minGRU itself: the parallel scan takes the general ``coefficients`` form."""


LAYERS = {
    "lstm_peephole": lambda **kw: rnnkit.LSTM(I, H, peephole=True, **kw),
    "lstm_layer_norm": lambda **kw: rnnkit.LSTM(I, H, layer_norm=True, **kw),
    "lstm_all_proj": lambda **kw: rnnkit.LSTM(I, H, peephole=True, layer_norm=True, proj_size=2, **kw),
    "gru_reset_before": lambda **kw: rnnkit.GRU(I, H, variant="reset_before", **kw),
    "gru_simplified": lambda **kw: rnnkit.GRU(I, H, variant="simplified", **kw),
    "mingru": lambda **kw: rnnkit.MinGRU(I, H, **kw),
    "minlstm": lambda **kw: rnnkit.MinLSTM(I, H, **kw),
    "mingru_linear_candidate": lambda **kw: rnnkit.MinGRU(I, H, positive=False, **kw),
    "mingru_subclass": lambda **kw: rnnkit.Recurrent(_SubclassedMinGRU, I, H, **kw),
}
FUSED_CPU = ("lstm_peephole", "lstm_layer_norm", "lstm_all_proj", "gru_reset_before", "gru_simplified")
MIN = ("mingru", "minlstm", "mingru_linear_candidate", "mingru_subclass")
CASES = ([(n, "scan") for n in LAYERS]
         + [(n, "native") for n in FUSED_CPU]
         + [(n, p) for n in MIN for p in ("linear", "log") if (n, p) != ("mingru_linear_candidate", "log")])

GARBAGE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 1e300, "-huge": -1e300}


def _select_path(path: str, mp: pytest.MonkeyPatch) -> None:
    """Make the layers' dispatch take ``path`` (the kernel paths need backend="auto")."""
    if path == "native" and native.library() is None:
        pytest.skip("no C compiler: the native kernels cannot be built")
    elif path in ("linear", "log"):
        mp.setattr(ps, "choose_method", lambda cell, device: path)


def _expected_kernel(name: str, path: str):
    return cpu_lstm.KERNEL if name.startswith("lstm") else cpu_gru.KERNEL


def _layer(name: str, path: str, seed: int, **kw):
    torch.manual_seed(seed)
    layer = LAYERS[name](backend="scan" if path == "scan" else "auto", batch_first=True, dtype=f64, **kw)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    expected = "scan" if path == "scan" else "kernel"
    assert layer.path == expected, (name, path, layer.path)
    if path == "native":
        cell = layer.cells[0]
        probe = torch.empty(1, 1, I, dtype=f64)
        assert find(cell, probe, layer._params(0, 0)) is _expected_kernel(name, path)
    return layer


def _run(layer, x, lengths, h0, grad_out, grad_h):
    """Outputs, final states and the gradients of ``<out, grad_out> + <h_n, grad_h>``
    wrt the input, the initial state(s) and every parameter."""
    x = x.detach().clone().requires_grad_()
    h0 = tuple(s.detach().clone().requires_grad_() for s in h0)
    layer.zero_grad(set_to_none=True)
    out, h_n = layer(x, h0 if len(h0) > 1 else h0[0], lengths=lengths)
    h_n = h_n if isinstance(h_n, tuple) else (h_n,)
    torch.autograd.backward([out, *h_n], [grad_out, *grad_h])
    grads = {"x": x.grad, **{f"h0[{k}]": s.grad for k, s in enumerate(h0)},
             **{n: p.grad for n, p in layer.named_parameters()}}
    return {"out": out, **{f"h_n[{k}]": s for k, s in enumerate(h_n)}}, grads


def _dirty(t: Tensor, pad: Tensor, garbage: str, gen: torch.Generator) -> Tensor:
    """``t`` with its padded rows (``pad (B, T)``) overwritten by garbage."""
    t = t.clone()
    if garbage == "mixed":  # every kind at once, at random
        kinds = torch.tensor(list(GARBAGE.values()), dtype=t.dtype)
        fill = kinds[torch.randint(len(kinds), t.shape, generator=gen)]
    else:
        fill = torch.full_like(t, GARBAGE[garbage])
    t[pad] = fill[pad]
    return t


@pytest.mark.parametrize("name,path", CASES)
@settings(max_examples=examples(8), deadline=None)
@given(data=st.data())
def test_padding_never_leaks(name, path, data):
    T = data.draw(st.integers(2, 5), label="T")
    B = data.draw(st.integers(2, 4), label="B")
    lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths")
    full = data.draw(st.integers(0, B - 1), label="full row")
    lengths[full] = T
    shortest = 1 if data.draw(st.booleans(), label="a length-1 row") else data.draw(st.integers(1, T - 1))
    lengths[(full + 1) % B] = shortest  # always some padding
    num_layers = data.draw(st.sampled_from([1, 2]), label="num_layers")
    bidirectional = data.draw(st.booleans(), label="bidirectional")
    garbage = data.draw(st.sampled_from([*GARBAGE, "mixed"]), label="garbage")
    seed = data.draw(st.integers(0, 2**16), label="seed")

    lengths = torch.tensor(lengths)
    pad = torch.arange(T)[None, :] >= lengths[:, None]  # (B, T): padded steps
    kw = dict(num_layers=num_layers, bidirectional=bidirectional)
    gen = torch.Generator().manual_seed(seed)
    D = 2 if bidirectional else 1
    ref_layer = _layer(name, "scan", seed, **kw)
    x = torch.randn(B, T, I, dtype=f64, generator=gen).masked_fill(pad[..., None], 0.0)
    h0 = tuple(torch.randn(num_layers * D, B, n, dtype=f64, generator=gen) for n in ref_layer._state_sizes())
    grad_out = torch.randn(B, T, D * ref_layer.cells[-1].output_size, dtype=f64, generator=gen)
    grad_out = grad_out.masked_fill(pad[..., None], 0.0)
    grad_h = tuple(torch.randn_like(s) for s in h0)

    with pytest.MonkeyPatch.context() as mp:
        _select_path(path, mp)
        layer = _layer(name, path, seed, **kw)
        clean_outs, clean_grads = _run(layer, x, lengths, h0, grad_out, grad_h)
        dirty_outs, dirty_grads = _run(layer, _dirty(x, pad, garbage, gen), lengths, h0,
                                       _dirty(grad_out, pad, garbage, gen), grad_h)
    ref_outs, ref_grads = _run(ref_layer, x, lengths, h0, grad_out, grad_h)

    out = dirty_outs["out"]
    assert torch.isfinite(out).all(), f"non-finite outputs: {out}"
    assert torch.equal(out[pad], torch.zeros_like(out[pad])), "padded outputs are not exactly 0"
    for key, g in dirty_grads.items():
        assert torch.isfinite(g).all(), f"d{key} is not finite"
    assert torch.equal(dirty_grads["x"][pad], torch.zeros_like(dirty_grads["x"][pad])), "x.grad at padded steps"
    for key in clean_outs:
        torch.testing.assert_close(dirty_outs[key], clean_outs[key], atol=0, rtol=0,
                                   msg=lambda m: f"{key} differs from zero padding: {m}")
    for key in clean_grads:
        torch.testing.assert_close(dirty_grads[key], clean_grads[key], atol=0, rtol=0,
                                   msg=lambda m: f"d{key} differs from zero padding: {m}")
    for key in ref_outs:
        torch.testing.assert_close(clean_outs[key], ref_outs[key], atol=1e-9, rtol=1e-7,
                                   msg=lambda m: f"{key} differs from the reference scan: {m}")
    assert clean_grads.keys() == ref_grads.keys()
    for key in ref_grads:
        torch.testing.assert_close(clean_grads[key], ref_grads[key], atol=1e-9, rtol=1e-7,
                                   msg=lambda m: f"d{key} differs from the reference scan: {m}")
