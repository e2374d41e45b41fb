"""The Triton kernels (rnnkit.kernels.triton) on CPU tensors through the Triton
interpreter, beyond the registry-driven float32 parity checks (tests/kernels/
test_kernel_parity.py, whose ``triton`` cases the interpreter subprocess here runs too):
bfloat16 against a float32 reference; which cells and inputs they take;
padding that never leaks (NaN/inf/garbage in the padded steps, a property test) and
second derivatives (double backward) equal to the reference scan's (issue 11).

When TRITON_INTERPRET is read: Triton (3.9 here) decides compiled vs interpreted in
each ``@triton.jit`` decorator, and ``triton.language``'s own jitted helpers
(``tl.sigmoid``, ``tl.sum``, ...) are decorated when ``triton`` is imported. So the
variable must be set before ``import triton``, which in a test session may already
have happened, and setting it process-wide would also send the other test files' CPU
tensors to the interpreter. Hence: unless this process was started with it (checked
on ``tl.sigmoid`` itself), every test here is skipped and
:func:`test_in_interpreter_subprocess` runs this file (and the parity file's Triton
cases) in a fresh interpreter with ``TRITON_INTERPRET=1``, where they run.
"""
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

pytest.importorskip("triton")

import rnnkit  # noqa: E402
from rnnkit.cells import GRUCell, LSTMCell  # noqa: E402
from rnnkit import kernels  # noqa: E402
from rnnkit.kernels import find  # noqa: E402
from rnnkit.kernels import triton as triton_cells  # noqa: E402
from rnnkit.kernels.cpu import lstm as cpu_lstm, native as cpu_native  # noqa: E402
from rnnkit.nn.scan import scan  # noqa: E402
from kernel_checks import (assert_layer_runs_kernel_and_matches_scan, assert_same_with_the_same_draws,  # noqa: E402
                           outputs_and_grads, random_cell, triton_interpreted)

_SUBPROCESS_FLAG = "RNNKIT_TRITON_TEST_SUBPROCESS"


INTERPRETED = triton_interpreted()
ROOT = Path(__file__).resolve().parents[3]
in_interpreter = pytest.mark.skipif(not INTERPRETED, reason="runs in test_in_interpreter_subprocess")


@pytest.mark.skipif(INTERPRETED, reason="this process is the interpreter one")
def test_in_interpreter_subprocess():
    """This file again, and the registry-driven parity checks of the Triton kernels, in a
    fresh interpreter started with TRITON_INTERPRET=1; all pass, none skip."""
    assert not os.environ.get(_SUBPROCESS_FLAG), "TRITON_INTERPRET=1 did not make Triton interpret"
    env = {**os.environ, "TRITON_INTERPRET": "1", _SUBPROCESS_FLAG: "1"}
    parity = str(ROOT / "tests" / "kernels" / "test_kernel_parity.py")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, parity,
                          "-k", "triton and not test_in_interpreter_subprocess"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary
    print(f"interpreter subprocess: {summary}")


#: pointers holding input-dtype data (the rest are float32, the mask bool), per kernel argument name
_IO_POINTERS = {"xp_ptr", "hp_ptr", "h_prev_ptr", "h_ptr", "dy_ptr", "dhg_ptr", "da_ptr", "dhp_ptr", "p_ptr",
                "pn_ptr", "rh_ptr", "y_ptr", "drh_ptr", "w_ci_ptr", "w_cf_ptr", "w_co_ptr", "g_h_ptr", "g_c_ptr",
                "b_c_ptr"}


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="needs the compiled (not interpreted) kernels")
def test_kernels_compile_for_nvidia_targets(tmp_path, monkeypatch):
    """Every step kernel, in every flag combination the loops launch, in float32 and
    bfloat16, through Triton's whole NVIDIA pipeline to a cubin for sm_80 and sm_90 (no
    GPU needed): what the interpreter cannot check (typing, constexpr scoping, lowering)."""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction
    from rnnkit.kernels.triton import gru as triton_gru, lstm as triton_lstm
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    flags = [dict(zip(("PEEP", "LN", "MASK"), f)) for f in itertools.product([False, True], repeat=3) if any(f[:2])]
    kernels = [(triton_lstm._lstm_forward_step, flags), (triton_lstm._lstm_backward_step, flags)]
    kernels += [(k, [dict(MASK=m) for m in (False, True)])
                for k in (triton_gru._gru_simplified_forward_step, triton_gru._gru_rb_update,
                          triton_gru._gru_simplified_backward_step, triton_gru._gru_rb_backward_zn,
                          triton_gru._gru_rb_backward_r)]
    kernels += [(k, [{}]) for k in (triton_gru._gru_rb_gates,)]
    for (kernel, variants), io, cc in itertools.product(kernels, ["*fp32", "*bf16"], [80, 90]):
        assert isinstance(kernel, JITFunction), kernel
        for consts in variants:
            consts = {**consts, "BLOCK_H": 64, **({"SPLIT": io != "*fp32"} if "SPLIT" in kernel.arg_names else {})}
            signature = {name: _arg_type(name, consts, io) for name in kernel.arg_names}
            triton_compile(ASTSource(kernel, signature, constexprs=consts), target=GPUTarget("cuda", cc, 32),
                           options={"num_warps": 2, "enable_fp_fusion": True})


def _arg_type(name: str, consts: dict, io: str) -> str:
    """Triton signature type of a step kernel's argument, from its name (the kernels' convention)."""
    if name in consts:
        return "constexpr"
    if name == "m_ptr":
        return "*i1"
    if name.endswith("_ptr"):
        return io if name in _IO_POINTERS else "*fp32"
    return "fp32" if name == "eps" else "i32"


CONFIGS = {
    "lstm_peephole": lambda i, h, **kw: LSTMCell(i, h, peephole=True, **kw),
    "lstm_layer_norm": lambda i, h, **kw: LSTMCell(i, h, layer_norm=True, **kw),
    "lstm_peephole_layer_norm": lambda i, h, **kw: LSTMCell(i, h, peephole=True, layer_norm=True, **kw),
    "gru_reset_before": lambda i, h, **kw: GRUCell(i, h, variant="reset_before", **kw),
    "gru_simplified": lambda i, h, **kw: GRUCell(i, h, variant="simplified", **kw),
}
NO_BIAS = {
    "lstm_peephole_no_bias": lambda i, h, **kw: LSTMCell(i, h, bias=False, peephole=True, **kw),
    "lstm_layer_norm_no_bias": lambda i, h, **kw: LSTMCell(i, h, bias=False, layer_norm=True, **kw),
    "gru_reset_before_no_bias": lambda i, h, **kw: GRUCell(i, h, bias=False, variant="reset_before", **kw),
    "gru_simplified_no_bias": lambda i, h, **kw: GRUCell(i, h, bias=False, variant="simplified", **kw),
}
ALL = CONFIGS | NO_BIAS
T, B, I, H = 5, 3, 4, 6  # H = 6: the kernels' blocks are 8 lanes wide, so lane masking is exercised
LENGTHS = [5, 2, 4]


def _cell(name, dtype=torch.float32, seed=0):
    return random_cell(ALL[name], I, H, dtype, seed)


def _inputs(cell, dtype, masked):
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    state = tuple(torch.randn(B, n, dtype=dtype, requires_grad=True) for n in cell.state_sizes())
    mask = (torch.arange(T).unsqueeze(1) < torch.tensor(LENGTHS).unsqueeze(0)).unsqueeze(-1) if masked else None
    return x, state, mask


def _names(cell):
    return (["y", *cell.state_names],
            ["x", *(f"{s}0" for s in cell.state_names), *(n for n, _ in cell.named_parameters())])


def _assert_all_close(names, got, want, **tol):
    for n, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{n}: {m}")


def _takes(cell, x):
    """Whether the registry hands ``cell`` on ``x`` to a Triton kernel."""
    kernel = find(cell, x, cell.own_params())
    return kernel is not None and kernel.backend == "triton"


def _kernel(cell, x):
    """The Triton kernel for ``cell`` on ``x`` (asserted to be one)."""
    assert _takes(cell, x), kernels.explain(cell, x, cell.own_params())
    return find(cell, x, cell.own_params())


@in_interpreter
@pytest.mark.parametrize("name", ["lstm_peephole_layer_norm", "gru_reset_before", "gru_simplified"])
def test_bfloat16_close_to_float32_reference(name):
    """bf16 storage, float32 state and arithmetic: against the reference in float32 on
    the same (bf16-representable) numbers, to bf16 tolerances; dtypes preserved."""
    cell = _cell(name, torch.bfloat16)
    x, state, mask = _inputs(cell, torch.bfloat16, masked=True)
    kernel = _kernel(cell, x)
    assert kernel is not None
    outs, grads = outputs_and_grads(kernel, cell, x, state, mask, True)
    assert all(t.dtype == torch.bfloat16 for t in (*outs, *grads))
    ref_cell = _cell(name, torch.float32)
    ref_cell.load_state_dict({k: v.float() for k, v in cell.state_dict().items()})
    x32 = x.detach().float().requires_grad_()
    state32 = tuple(s.detach().float().requires_grad_() for s in state)
    ref_outs, ref_grads = outputs_and_grads(scan, ref_cell, x32, state32, mask, True)
    out_names, grad_names = _names(cell)
    _assert_all_close(out_names, [o.float() for o in outs], ref_outs, atol=2e-2, rtol=2e-2)
    _assert_all_close([f"d{n}" for n in grad_names], [g.float() for g in grads], ref_grads, atol=5e-2, rtol=5e-2)


@in_interpreter
def test_match_covers_exactly_the_supported_cells(monkeypatch):
    x = torch.randn(3, 2, 4)
    covered = [LSTMCell(4, 6, peephole=True), LSTMCell(4, 6, layer_norm=True),
               GRUCell(4, 6, variant="reset_before"), GRUCell(4, 6, variant="simplified")]
    for cell in covered:
        # the kernels win over the CPU ones when both could run (interpreter only, on CPU)
        assert _takes(cell, x)
        assert _takes(cell.bfloat16(), x.bfloat16())
    # torch.nn's own kernels, or not done here (projection): the next kernel or the reference
    for cell in (LSTMCell(4, 6), LSTMCell(4, 6, peephole=True, proj_size=2), GRUCell(4, 6)):
        assert not _takes(cell, x)
    cell = LSTMCell(4, 6, peephole=True)
    for dtype in (torch.float16, torch.float64):
        assert not _takes(cell.to(dtype), x.to(dtype))
    cell = LSTMCell(4, 6, peephole=True)
    assert not _takes(cell, x.bfloat16())  # dtypes differ

    class Custom(GRUCell):  # a subclass may change recur(): the reference must run
        pass

    sub = Custom(4, 6, variant="simplified")
    assert not _takes(sub, x)
    with monkeypatch.context() as m:
        m.setattr(torch.jit, "is_tracing", lambda: True)
        assert not _takes(cell, x)
    with monkeypatch.context() as m:
        m.setattr(triton_cells, "triton_available", lambda: False)
        assert not _takes(cell, x)
        assert "triton is not installed" in dict(kernels.explain(cell, x, cell.own_params()))["triton.lstm"]
    with monkeypatch.context() as m:  # CPU tensors without the interpreter: the CPU kernels
        m.delenv("TRITON_INTERPRET")
        assert not _takes(cell, x)
        assert find(cell, x, cell.own_params()) is (cpu_lstm.KERNEL if cpu_native.library() else None)


def test_import_does_not_import_triton():
    """``import rnnkit`` and matching CPU tensors must not import triton (it is slow to
    import and may be missing): checked in a fresh interpreter."""
    code = ("import sys, torch, rnnkit\n"
            "from rnnkit.kernels import find\n"
            "cell = rnnkit.cells.LSTMCell(3, 4, peephole=True)\n"
            "find(cell, torch.randn(2, 1, 3), cell.own_params())\n"
            "assert 'triton' not in sys.modules, 'triton imported'\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


LAYERS = {
    "lstm_peephole_layer_norm": lambda **kw: rnnkit.LSTM(3, 5, peephole=True, layer_norm=True, **kw),
    "gru_reset_before": lambda **kw: rnnkit.GRU(3, 5, variant="reset_before", **kw),
}


@in_interpreter
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_runs_triton_kernel_and_matches_scan(name):
    """Two layers, bidirectional, ragged lengths: through the layer's dispatch."""
    assert_layer_runs_kernel_and_matches_scan(LAYERS[name], torch.randn(3, 4, 3), torch.tensor([4, 1, 3]))


# --- issue 11: padding never leaks; double backward ---------------------------------------

def examples(n: int) -> int:
    """Hypothesis examples per test: ``n``, or ``10 n`` with ``RNNKIT_FUZZ`` set."""
    return n * (10 if os.environ.get("RNNKIT_FUZZ") else 1)


GARBAGE = (math.nan, math.inf, -math.inf, 3e38, -3e38)


def _kernel_run(kernel, cell, x, state, mask, reverse, grads):
    """Outputs, final states and the gradients of ``<outputs, grads>`` wrt x, the state
    and every parameter."""
    x = x.detach().clone().requires_grad_()
    state = tuple(s.detach().clone().requires_grad_() for s in state)
    y, final = kernel(cell, cell.own_params(), x, state, mask, reverse=reverse)
    outs = (y, *final)
    inputs = [x, *state, *cell.parameters()]
    return outs, torch.autograd.grad(outs, inputs, grads)


@in_interpreter
@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(max_examples=examples(4), deadline=None)
@given(data=st.data())
def test_padding_never_leaks(name, data):
    """NaN / inf / huge garbage in the padded steps of x and in the gradient arriving at
    the padded outputs: padded outputs exactly 0, x.grad 0 there, everything finite and
    exactly what zero padding gives, and that equal to the reference scan."""
    steps = data.draw(st.integers(2, 4), label="T")
    batch = data.draw(st.integers(2, 3), label="B")
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch), label="lengths")
    full = data.draw(st.integers(0, batch - 1), label="full row")
    lengths[full] = steps
    lengths[(full + 1) % batch] = data.draw(st.integers(1, steps - 1), label="a padded row")
    reverse = data.draw(st.booleans(), label="reverse")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    cell = _cell(name, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    pad = torch.arange(steps)[:, None] >= torch.tensor(lengths)[None, :]  # (T, B)
    mask = ~pad.unsqueeze(-1)
    x = torch.randn(steps, batch, I, generator=gen).masked_fill(pad[..., None], 0.0)
    state = tuple(torch.randn(batch, n, generator=gen) for n in cell.state_sizes())
    grads = [torch.randn(steps, batch, H, generator=gen).masked_fill(pad[..., None], 0.0),
             *(torch.randn(batch, n, generator=gen) for n in cell.state_sizes())]

    def dirty(t):
        fill = torch.tensor(GARBAGE)[torch.randint(len(GARBAGE), t.shape, generator=gen)]
        return torch.where(pad[..., None], fill, t)

    kernel = _kernel(cell, x)
    assert kernel is not None
    clean = _kernel_run(kernel, cell, x, state, mask, reverse, grads)
    got = _kernel_run(kernel, cell, dirty(x), state, mask, reverse, [dirty(grads[0]), *grads[1:]])
    ref = _kernel_run(scan, cell, x, state, mask, reverse, grads)
    y = got[0][0]
    assert torch.equal(y[pad], torch.zeros_like(y[pad])), "padded outputs are not exactly 0"
    assert all(torch.isfinite(t).all() for t in (*got[0], *got[1])), "non-finite output or gradient"
    assert torch.equal(got[1][0][pad], torch.zeros_like(got[1][0][pad])), "x.grad at padded steps"
    out_names, grad_names = _names(cell)
    _assert_all_close(out_names, got[0], clean[0], atol=0, rtol=0)
    _assert_all_close([f"d{n}" for n in grad_names], got[1], clean[1], atol=0, rtol=0)
    _assert_all_close(out_names, clean[0], ref[0], atol=1e-5, rtol=1e-5)
    _assert_all_close([f"d{n}" for n in grad_names], clean[1], ref[1], atol=1e-5, rtol=1e-5)


def _second_order(kernel, cell, x, state, mask, reverse):
    """First-order gradients of a random weighting of the outputs, taken with
    create_graph=True, and the gradients of a random weighting of those."""
    x = x.detach().clone().requires_grad_()
    state = tuple(s.detach().clone().requires_grad_() for s in state)
    inputs = [x, *state, *cell.parameters()]
    y, final = kernel(cell, cell.own_params(), x, state, mask, reverse=reverse)
    gen = torch.Generator().manual_seed(11)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in (y, *final))
    first = torch.autograd.grad(loss, inputs, create_graph=True)
    penalty = sum((g * torch.randn(g.shape, generator=gen)).sum() for g in first)
    second = torch.autograd.grad(penalty, inputs, allow_unused=True, materialize_grads=True)
    return first, second


@in_interpreter
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_double_backward_equals_reference_scan(name):
    """create_graph=True through the Triton kernels: the first- and second-order gradients
    (a gradient penalty's) equal the reference scan's (masked, reverse; float32, so by
    comparison rather than gradgradcheck, which needs float64)."""
    cell = _cell(name)
    x, state, mask = _inputs(cell, torch.float32, masked=True)
    kernel = _kernel(cell, x)
    assert kernel is not None
    got, want = _second_order(kernel, cell, x, state, mask, True), _second_order(scan, cell, x, state, mask, True)
    _, grad_names = _names(cell)
    for order, a, b in zip(("first", "second"), got, want):
        _assert_all_close([f"{order}-order d{n}" for n in grad_names], a, b, atol=1e-4, rtol=1e-4)


@in_interpreter
@pytest.mark.parametrize("cell_kw", [{"peephole": True}, {"layer_norm": True}, {"peephole": True, "layer_norm": True}])
@pytest.mark.parametrize("reg", [{"recurrent_dropout": 0.3}, {"zoneout": {"c": 0.5, "h": 0.2}},
                                 {"recurrent_dropout": 0.3, "zoneout": 0.3}])
@pytest.mark.parametrize("training", [True, False])
def test_regularised_lstm_kernel_matches_the_reference_with_the_same_masks(cell_kw, reg, training):
    """Recurrent dropout and zoneout inside the Triton LSTM kernel (issue 16): the same
    draws (same seed) give the reference scan's outputs and every gradient, with lengths
    and both directions."""
    torch.manual_seed(1)
    fast = rnnkit.LSTM(4, 6, backend="triton", bidirectional=True, **cell_kw, **reg).train(training)
    ref = rnnkit.LSTM(4, 6, backend="scan", bidirectional=True, **cell_kw, **reg).train(training)
    ref.load_state_dict(fast.state_dict())
    assert fast.path == "kernel" and ref.path == "scan"
    x = torch.randn(7, 3, 4, requires_grad=True)
    assert_same_with_the_same_draws(fast, ref, x, torch.tensor([7, 3, 5]))


@in_interpreter
@pytest.mark.parametrize("variant", ["reset_before", "simplified"])
@pytest.mark.parametrize("reg", [{"recurrent_dropout": 0.3}, {"zoneout": 0.3}, {"recurrent_dropout": 0.4, "zoneout": 0.2}])
@pytest.mark.parametrize("training", [True, False])
def test_regularised_gru_kernels_match_the_reference_with_the_same_masks(variant, reg, training):
    torch.manual_seed(1)
    fast = rnnkit.GRU(4, 6, backend="triton", bidirectional=True, variant=variant, **reg).train(training)
    ref = rnnkit.GRU(4, 6, backend="scan", bidirectional=True, variant=variant, **reg).train(training)
    ref.load_state_dict(fast.state_dict())
    assert fast.path == "kernel" and ref.path == "scan"
    x = torch.randn(7, 3, 4, requires_grad=True)
    assert_same_with_the_same_draws(fast, ref, x, torch.tensor([7, 3, 5]))
