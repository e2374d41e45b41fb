"""Input validation for recurrent layers, in one place. Every error names the
argument and states what was expected and what was given."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def check_input(name: str, x: Tensor, input_size: int, batch_first: bool, param: Tensor) -> None:
    """``x`` must be a float tensor ``(T, B, I)`` / ``(B, T, I)`` / unbatched ``(T, I)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a torch.Tensor or PackedSequence, got {type(x).__name__}")
    layout = "(batch, seq, input_size)" if batch_first else "(seq, batch, input_size)"
    if x.dim() not in (2, 3):
        raise ValueError(f"{name}: input must be 3-D {layout} or 2-D (seq, input_size), "
                         f"got {x.dim()}-D input of shape {tuple(x.shape)}")
    if x.shape[-1] != input_size:
        raise ValueError(f"{name}: input has shape {tuple(x.shape)} with {x.shape[-1]} features, "
                         f"expected input_size={input_size}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: input must be floating point, got dtype {x.dtype}")
    if x.dtype != param.dtype:
        raise TypeError(f"{name}: input dtype {x.dtype} does not match the parameters' dtype {param.dtype}")
    check_device(name, "input", x, param)
    if 0 in x.shape[:-1]:
        raise ValueError(f"{name}: input has an empty time or batch dimension: shape {tuple(x.shape)}")


def check_device(name: str, arg: str, t: Tensor, param: Tensor) -> None:
    if t.device != param.device:
        raise ValueError(f"{name}: {arg} is on {t.device} but the parameters are on {param.device}; "
                         f"move one with .to(device)")


def check_state(name: str, hx: Sequence[Tensor], state_names: Sequence[str],
                expected: Sequence[tuple[int, ...]], param: Tensor) -> None:
    """Each initial state tensor must have its expected shape, dtype and device."""
    if len(hx) != len(state_names):
        raise ValueError(f"{name}: hx must hold {len(state_names)} tensors "
                         f"({', '.join(n + '0' for n in state_names)}), got {len(hx)}")
    for arg, t, shape in zip(state_names, hx, expected):
        arg = f"{arg}0"
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {arg} must be a Tensor, got {type(t).__name__}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name}: {arg} has shape {tuple(t.shape)}, expected "
                             f"(num_layers * num_directions, batch, size) = {tuple(shape)}")
        if t.dtype != param.dtype:
            raise TypeError(f"{name}: {arg} has dtype {t.dtype}, expected {param.dtype}")
        check_device(name, arg, t, param)


def check_lengths(name: str, lengths, batch: int, steps: int) -> Tensor:
    """Lengths as a CPU int64 tensor ``(B,)``; each in ``[1, T]``."""
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name}: lengths must be a 1-D integer tensor or list, got {type(lengths).__name__}") from e
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{name}: lengths must be integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{name}: lengths has shape {tuple(lengths.shape)}, expected (batch,) = ({batch},)")
    lengths = lengths.to("cpu", torch.int64)
    bad = (lengths < 1) | (lengths > steps)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name}: lengths[{i}] = {int(lengths[i])} is outside [1, {steps}] "
                         f"(every sequence needs at least one step and at most seq_len={steps})")
    return lengths
