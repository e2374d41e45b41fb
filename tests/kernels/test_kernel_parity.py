"""Every registered kernel against the reference scan, on every sample configuration it
declares (``Kernel.samples``): outputs, final states and the gradients wrt the input,
the initial state and every parameter in float32 (1e-5), by gradcheck in float64, with
and without a length mask, forward and reverse; padded outputs exactly 0; parameter
gradients alone and no-grad inference. A new kernel gets all of this by registering.

Kernels that cannot run here are skipped with the reason (no C compiler for the CPU
ones); the Triton ones run in tests/kernels/triton/test_triton.py's interpreter
subprocess, which runs this file's ``triton`` cases too.
"""
import pytest
import torch
from torch.autograd import gradcheck

from rnnkit import kernels
from rnnkit.nn.scan import scan
from kernel_checks import (assert_parameter_grads_and_inference_match_scan, outputs_and_grads, random_cell,
                           triton_interpreted)

INTERPRETED = triton_interpreted()
T, B, I, H = 5, 3, 4, 6  # H = 6: not a multiple of any vector or block width
LENGTHS = [5, 2, 4]

CASES = [pytest.param(k, s, reverse, masked, id=f"{k.name}-{s.name}-{'rev' if reverse else 'fwd'}"
                      f"{'-masked' if masked else ''}")
         for k in kernels.registered() for s in k.samples for reverse, masked in s.cases]
FLOAT64 = [case for case in CASES if torch.float64 in case.values[1].dtypes]
FIRST_SAMPLES = [pytest.param(k, k.samples[0], id=k.name) for k in kernels.registered() if k.samples]

#: full (not fast-mode) gradcheck on these, the configurations with every feature at once
FULL_GRADCHECK = {("lstm_all_proj", True, True), ("lstm_layer_norm_no_bias", False, True),
                  ("gru_reset_before", True, True), ("gru_simplified_no_bias", True, False),
                  ("mingru_subclass_linear_candidate", True, True)}


def _runnable(kernel):
    """Skip a kernel that cannot run in this process, saying why."""
    available = kernel.available()
    if available is not True:
        pytest.skip(f"{kernel.name}: {available}")
    if kernel.backend == "triton" and not INTERPRETED:
        pytest.skip("runs in tests/kernels/triton/test_triton.py's interpreter subprocess")


def _inputs(cell, dtype, masked, t=T, b=B, lengths=LENGTHS):
    x = torch.randn(t, b, cell.input_size, dtype=dtype, requires_grad=True)
    state = tuple(torch.randn(b, n, dtype=dtype, requires_grad=True) for n in cell.state_sizes())
    mask = (torch.arange(t).unsqueeze(1) < torch.tensor(lengths).unsqueeze(0)).unsqueeze(-1) if masked else None
    return x, state, mask


def _taken(kernel, cell, x, state, mask):
    """The kernel must take its own sample (a refusing ``match`` would otherwise skip the checks)."""
    verdict = kernel.verdict(cell, x, cell.own_params(), state, mask)
    assert verdict is True, f"{kernel.name} refused its own sample: {verdict}"


@pytest.mark.parametrize("kernel,sample,reverse,masked", CASES)
def test_float32_matches_reference_scan(kernel, sample, reverse, masked):
    _runnable(kernel)
    cell = random_cell(sample.make, I, H, torch.float32)
    x, state, mask = _inputs(cell, torch.float32, masked)
    _taken(kernel, cell, x, state, mask)
    ref_outs, ref_grads = outputs_and_grads(scan, cell, x, state, mask, reverse)
    outs, grads = outputs_and_grads(kernel, cell, x, state, mask, reverse)
    names = ["y", *cell.state_names]
    for n, a, b in zip(names, outs, ref_outs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"{n}: {m}")
    names = ["x", *(f"{s}0" for s in cell.state_names), *(n for n, _ in cell.named_parameters())]
    for n, a, b in zip(names, grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"d{n}: {m}")
    if masked:  # padded steps: zero output (the carried state is checked through the finals)
        assert torch.count_nonzero(outs[0][~mask.squeeze(-1)]) == 0


@pytest.mark.parametrize("kernel,sample,reverse,masked", FLOAT64)
def test_gradcheck_float64(kernel, sample, reverse, masked):
    _runnable(kernel)
    cell = random_cell(sample.make, 2, 4, torch.float64)
    x, state, mask = _inputs(cell, torch.float64, masked, t=3, b=2, lengths=[3, 1])
    _taken(kernel, cell, x, state, mask)
    names = [n for n, _ in cell.named_parameters()]

    def fn(x, *args):
        p = cell.own_params()
        for n, v in zip(names, args[len(state):]):
            setattr(p, n, v)
        y, final = kernel(cell, p, x, tuple(args[:len(state)]), mask, reverse=reverse)
        return (y, *final)

    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    fast = (sample.name, reverse, masked) not in FULL_GRADCHECK  # fast mode: random projections of J
    assert gradcheck(fn, (x, *state, *params), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast)


@pytest.mark.parametrize("kernel,sample", FIRST_SAMPLES)
def test_only_parameters_need_grad_and_inference(kernel, sample):
    _runnable(kernel)
    cell = random_cell(sample.make, 3, 4, torch.float32)
    x = torch.randn(5, 2, 3)  # no grad wrt x or the state: only the parameters
    _taken(kernel, cell, x, cell.init_state(2), None)
    assert_parameter_grads_and_inference_match_scan(kernel, cell, x, cell.init_state(2))
