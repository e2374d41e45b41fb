"""Argument and input validation for recurrent layers, in one place. Every error
names the layer the user built (``RNN``, not its ``ElmanCell``) and the argument, and
states what was expected and what was given.

The exception types are torch.nn's for the same mistake (:mod:`rnnkit.errors`): a bad
constructor value is a ValueError and a bad type a TypeError, as ``torch.nn.RNNBase``
raises them; a wrong shape is a :class:`~rnnkit.errors.ShapeError` (RuntimeError and
ValueError), a wrong dtype a :class:`~rnnkit.errors.DtypeError`, a wrong device a
:class:`~rnnkit.errors.DeviceError`. Where torch.nn's message is part of its tested
contract (``torch.testing._internal.common_modules``) it appears verbatim after the
layer's name.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor

from ..cells.base import check_bool, check_int
from ..errors import ArgumentError, DeviceError, DtypeError, ShapeError


def check_layer_args(name: str, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                     bidirectional) -> None:
    """torch.nn.RNNBase's constructor checks, in its order and with its messages; plus
    ``bidirectional`` checked like ``bias`` (torch.nn takes any truthy value there)."""
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ArgumentError(f"{name}: dropout must be a number in [0, 1] (the probability of an "
                            f"element being zeroed), got {dropout!r}")
    check_bool(name, "bias", bias)
    check_bool(name, "batch_first", batch_first)
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        check_int(name, arg, value)
        if value <= 0:
            raise ArgumentError(f"{name}: {arg} must be greater than zero, got {value}")
    check_int(name, "num_layers", num_layers)
    if num_layers <= 0:
        raise ArgumentError(f"{name}: num_layers must be greater than zero, got {num_layers} "
                            "(num_layers must be a positive int: the number of stacked layers)")
    check_bool(name, "bidirectional", bidirectional)


def check_input(name: str, x: Tensor, input_size: int, batch_first: bool, param: Tensor,
                packed: bool = False) -> None:
    """``x`` must be a float tensor ``(T, B, I)`` / ``(B, T, I)`` / unbatched ``(T, I)``
    with ``T > 0`` (``B = 0`` is fine: empty outputs, as torch.nn)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a torch.Tensor or PackedSequence, got {type(x).__name__}")
    layout = "(batch, seq, input_size)" if batch_first else "(seq, batch, input_size)"
    if x.dim() not in (2, 3):
        raise ShapeError(f"{name}: input must be 3-D {layout} or 2-D (seq, input_size), "
                         f"got {x.dim()}-D input of shape {tuple(x.shape)}")
    if x.shape[-1] != input_size:
        raise ShapeError(f"{name}: input has shape {tuple(x.shape)} with {x.shape[-1]} features, "
                         f"expected input_size={input_size}")
    if not x.is_floating_point():
        raise DtypeError(f"{name}: input must be floating point, got dtype {x.dtype}")
    if x.dtype != param.dtype and not torch._C._is_any_autocast_enabled():  # as torch.nn
        raise DtypeError(f"{name}: RNN input dtype {x.dtype} does not match weight dtype {param.dtype}. "
                         f"Convert input: input.to({param.dtype}), or convert model: model.to({x.dtype})")
    check_device(name, "input", x, param)
    time_dim = 1 if batch_first and x.dim() == 3 else 0
    if not packed and x.shape[time_dim] == 0:
        raise ShapeError(f"{name}: Expected sequence length to be larger than 0 in RNN: "
                         f"input of shape {tuple(x.shape)} has no time steps")


def check_device(name: str, arg: str, t: Tensor, param: Tensor) -> None:
    if t.device != param.device:
        raise DeviceError(f"{name}: {arg} is on {t.device} but the parameters are on {param.device}; "
                          f"move one with .to(device)")


def check_state(name: str, hx: Sequence[Tensor], state_names: Sequence[str],
                expected: Sequence[tuple[int, ...]], param: Tensor) -> None:
    """Each initial state tensor must have its expected shape, dtype and device."""
    if len(hx) != len(state_names):
        raise ShapeError(f"{name}: hx must hold {len(state_names)} tensors "
                         f"({', '.join(n + '0' for n in state_names)}), got {len(hx)}")
    for arg, t, shape in zip(state_names, hx, expected):
        arg = f"{arg}0"
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {arg} must be a Tensor, got {type(t).__name__}")
        if tuple(t.shape) != tuple(shape):
            raise ShapeError(f"{name}: {arg} has shape {tuple(t.shape)}, expected "
                             f"(num_layers * num_directions, batch, size) = {tuple(shape)}")
        if t.dtype != param.dtype and not torch._C._is_any_autocast_enabled():
            raise DtypeError(f"{name}: {arg} has dtype {t.dtype}, expected {param.dtype}")
        check_device(name, arg, t, param)


def check_lengths(name: str, lengths, batch: int, steps: int) -> Tensor:
    """Lengths as a CPU int64 tensor ``(B,)``; each in ``[1, T]``."""
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name}: lengths must be a 1-D integer tensor or list, got {type(lengths).__name__}") from e
        if lengths.numel() == 0:  # [] for an empty batch: as_tensor makes it float
            lengths = lengths.long()
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise DtypeError(f"{name}: lengths must be integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ShapeError(f"{name}: lengths has shape {tuple(lengths.shape)}, expected (batch,) = ({batch},)")
    lengths = lengths.to("cpu", torch.int64)
    bad = (lengths < 1) | (lengths > steps)
    if torch.compiler.is_compiling():  # a Python branch on values would break the graph: checked as an op
        # a constant message: formatting seq_len into it would fix the sequence length in the graph
        torch._assert_async(~bad.any(), f"{name}: lengths must be in [1, seq_len]")
    elif bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ShapeError(f"{name}: lengths[{i}] = {int(lengths[i])} is outside [1, {steps}] "
                         f"(every sequence needs at least one step and at most seq_len={steps})")
    return lengths
