"""Checkpoints: one safetensors file holding every tensor (weights, optimizer
moments, RNG states, the carried hidden state) with the rest as JSON in its
header. Loading never executes code; writing is atomic (temp file, fsync, rename),
so an interrupted save leaves the previous checkpoint intact."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..atomic import atomic_write_bytes
from ..errors import CheckpointError

FORMAT = "rnnkit-checkpoint-1"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of a nested structure into ``tensors``; leave JSON behind."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"cannot store dict with non-str/int keys at {prefix}")
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        kind = "__tuple__" if isinstance(obj, tuple) else "__list__"
        return {kind: [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__list__" in obj:
            return [_unflatten(v, tensors) for v in obj["__list__"]]
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    return obj


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested dict of tensors and JSON values atomically as safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    # tied weights share storage; safetensors refuses shared tensors, so store copies
    tensors = {k: v.clone() for k, v in tensors.items()}
    header = {"format": FORMAT, "state": json.dumps(skeleton)}
    atomic_write_bytes(path, st_save(tensors, metadata=header))


def load(path: str | Path) -> dict[str, Any]:
    """Load what :func:`save` wrote; CheckpointError for missing, truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        meta = _read_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or not a safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an rnnkit checkpoint "
                              f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    return _unflatten(json.loads(meta["state"]), tensors)


def _read_metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("header length out of range")
    return json.loads(data[8:8 + n]).get("__metadata__", {}) or {}
