"""PyTorch's own test data for its recurrent modules, run against rnnkit's classes.

``torch.testing._internal.common_modules.module_db`` holds, for torch.nn.RNN/LSTM/GRU and
RNNCell/LSTMCell/GRUCell, the samples PyTorch's test_modules.py runs (``module_inputs_func``:
constructor and forward arguments, with a reference function for the unbatched forms) and
the mistakes it must refuse (``module_error_inputs_func``: exception type and message
regex). Each sample is run on CPU in float32 and float64, training and eval, on the torch.nn
module and on the rnnkit class with the same constructor arguments and a copy of its
weights: same outputs, same gradients (input and every parameter), the sample's reference
function agreeing on the rnnkit module too, and for error samples the same exception type
and torch's message regex (rnnkit prefixes the public class name).

One deliberate difference shows up here: torch's data builds ``RNNCell(10, 20, 'relu')``
(meaning ``nonlinearity='relu'``, but the third argument is ``bias``); torch.nn.RNNCell
takes the string as a truthy bias, rnnkit refuses it (README, "Deliberate differences").
For those samples the test checks that refusal and then the forward error with ``bias=True``,
which is what torch.nn ran.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
import unittest

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import rnnkit
from rnnkit.errors import RnnkitError

RNNKIT = {nn.RNN: rnnkit.RNN, nn.LSTM: rnnkit.LSTM, nn.GRU: rnnkit.GRU,
          nn.RNNCell: rnnkit.RNNCell, nn.LSTMCell: rnnkit.LSTMCell, nn.GRUCell: rnnkit.GRUCell}
NAMES = {cls.__name__: cls for cls in RNNKIT}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@functools.cache
def common_modules():
    """``torch.testing._internal.common_modules``, imported without its side effects on
    the rest of the session: it needs ``expecttest`` (a test-only package; a stub does, it
    only subclasses unittest.TestCase at import) and it freezes torch.backends flags."""
    frozen = torch.backends.flags_frozen()
    stub = None
    if importlib.util.find_spec("expecttest") is None:
        stub = sys.modules["expecttest"] = types.ModuleType("expecttest")
        stub.TestCase, stub.ACCEPT = unittest.TestCase, False
    try:
        module = importlib.import_module("torch.testing._internal.common_modules")
    except ImportError as e:  # a torch build without its testing package
        pytest.skip(f"torch.testing._internal.common_modules unavailable: {e}")
    finally:
        if stub is not None:
            sys.modules.pop("expecttest", None)
        if not frozen:  # common_utils calls torch.backends.disable_global_flags() at import
            setattr(torch.backends, "__allow_nonbracketed_mutation_flag", True)
    return module


def module_info(torch_cls):
    infos = [m for m in common_modules().module_db if m.module_cls is torch_cls]
    assert len(infos) == 1, f"module_db has {len(infos)} entries for {torch_cls.__name__}"
    return infos[0]


def _clone(value):
    """The forward arguments again, as fresh leaves (a PackedSequence keeps its indices)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, PackedSequence):
        return value._replace(data=_clone(value.data))
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    return value


def _leaves(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, PackedSequence):
        return [value.data]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _leaves(v)]
    return []


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, PackedSequence):
        return [t for t in out if t is not None]
    return [t for o in out for t in _flat(o)]


def _build(cls, sample, dtype):
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    return cls(*args, **kwargs).to(dtype)


def _run(module, forward_input):
    """Outputs and the gradients of a fixed random weighting of them wrt every input
    leaf that requires grad and every parameter."""
    args, kwargs = _clone(forward_input.args), _clone(forward_input.kwargs)
    out = module(*args, **kwargs)
    gen = torch.Generator().manual_seed(0)
    outs = [t for t in _flat(out) if t.is_floating_point()]
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outs)
    leaves = [t for t in _leaves((args, kwargs)) if t.requires_grad] + list(module.parameters())
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return _flat(out), [g for g in grads if g is not None]


def _tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", sorted(NAMES))
def test_module_inputs_match_torch(name, dtype, training):
    torch_cls, dtype = NAMES[name], DTYPES[dtype]
    info = module_info(torch_cls)
    samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=training,
                                      with_packed_sequence=True)
    assert samples
    for i, sample in enumerate(samples):
        torch.manual_seed(i)
        ref = _build(torch_cls, sample, dtype).train(training)
        ours = _build(RNNKIT[torch_cls], sample, dtype).train(training)
        assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
        ours.load_state_dict(ref.state_dict())
        (out_ref, grads_ref), (out_ours, grads_ours) = _run(ref, sample.forward_input), _run(ours, sample.forward_input)
        where = f"{name} sample {i}: {sample.constructor_input.kwargs or sample.constructor_input.args}"
        assert len(out_ours) == len(out_ref) and len(grads_ours) == len(grads_ref), where
        for a, b in zip(out_ours + grads_ours, out_ref + grads_ref):
            torch.testing.assert_close(a, b, **_tol(dtype), msg=lambda m: f"{where}: {m}")
        packed = any(isinstance(a, PackedSequence) for a in sample.forward_input.args)
        if sample.reference_fn is not None and not packed:  # test_modules' check: unbatched == batched of one
            args, kwargs = _clone(sample.forward_input.args), _clone(sample.forward_input.kwargs)
            with torch.no_grad():
                want = sample.reference_fn(ours, *args, **kwargs)  # it passes the parameters itself
                got = ours(*_clone(sample.forward_input.args), **_clone(sample.forward_input.kwargs))
            for a, b in zip(_flat(got), _flat(want), strict=True):
                torch.testing.assert_close(a, b, **_tol(dtype), msg=lambda m: f"{where} (reference_fn): {m}")


def _raise_of(sample, cls, dtype, constructor_args=None):
    """Construct (and for forward errors, call) ``cls`` as the error sample says."""
    error_on = common_modules().ModuleErrorEnum
    mi = sample.module_error_input
    args = mi.constructor_input.args if constructor_args is None else constructor_args
    m = cls(*args, **mi.constructor_input.kwargs)
    if sample.error_on == error_on.FORWARD_ERROR:
        m.to(dtype)(*mi.forward_input.args, **mi.forward_input.kwargs)


def _torch_bias_string(sample) -> bool:
    """torch's cell error data passing the nonlinearity where ``bias`` goes (see module doc)."""
    args = sample.module_error_input.constructor_input.args
    return len(args) > 2 and isinstance(args[2], str)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", sorted(NAMES))
def test_module_error_inputs_match_torch(name, dtype):
    torch_cls, dtype = NAMES[name], DTYPES[dtype]
    info = module_info(torch_cls)
    samples = info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False, training=True)
    assert samples
    for i, sample in enumerate(samples):
        where = f"{name} error sample {i} ({sample.error_regex!r})"
        with pytest.raises(sample.error_type, match=sample.error_regex):  # torch.nn itself, as a check
            _raise_of(sample, torch_cls, dtype)
        constructor_args = None
        if _torch_bias_string(sample):  # deliberate difference: refused, then as torch.nn ran it
            args = sample.module_error_input.constructor_input.args
            with pytest.raises(TypeError, match="bias should be of type bool, got: str"):
                _raise_of(sample, RNNKIT[torch_cls], dtype)
            constructor_args = (*args[:2], True, *args[3:])
        with pytest.raises(sample.error_type, match=sample.error_regex) as e:
            _raise_of(sample, RNNKIT[torch_cls], dtype, constructor_args)
        assert isinstance(e.value, RnnkitError), f"{where}: {e.value!r}"
        assert str(e.value).startswith(f"{RNNKIT[torch_cls].__name__}: "), f"{where}: {e.value}"
