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
MAX_DEPTH = 64          # deeper metadata is refused (a crafted file would hit Python's recursion limit)
MAX_HEADER = 100 * 2**20  # safetensors' own header limit; larger is refused before parsing


class SaveError(CheckpointError, OSError):
    """A checkpoint could not be written (disk full, permissions); the previous file is intact."""


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


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor], depth: int = 0) -> Any:
    """Rebuild what :func:`_flatten` stored. The header is untrusted: a reference to a
    missing tensor, a malformed node or absurd nesting is a ValueError (see :func:`load`)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"metadata nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, list):
        raise ValueError("a bare list in the metadata (lists are stored as {'__list__': ...})")
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        name = obj["__tensor__"]
        if not isinstance(name, str) or name not in tensors:
            raise ValueError(f"the metadata refers to a tensor that is not in the file: {str(name)[:80]!r}")
        return tensors[name]
    if "__dict__" in obj:
        items = obj["__dict__"]
        if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 and isinstance(i[0], (str, int))
                                                  and not isinstance(i[0], bool) for i in items):
            raise ValueError("a malformed '__dict__' node in the metadata")
        return {k: _unflatten(v, tensors, depth + 1) for k, v in items}
    for kind, make in (("__tuple__", tuple), ("__list__", list)):
        if kind in obj:
            if not isinstance(obj[kind], list):
                raise ValueError(f"a malformed {kind!r} node in the metadata")
            return make(_unflatten(v, tensors, depth + 1) for v in obj[kind])
    return {k: _unflatten(v, tensors, depth + 1) for k, v in obj.items()}


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested dict of tensors and JSON values atomically as safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    # tied weights share storage; safetensors refuses shared tensors, so store copies
    tensors = {k: v.clone() for k, v in tensors.items()}
    header = {"format": FORMAT, "state": json.dumps(skeleton)}
    try:
        atomic_write_bytes(path, st_save(tensors, metadata=header))
    except OSError as e:
        raise SaveError(f"cannot save {path}: {e.strerror or e} (the previous file there, if any, is intact)") from None


def load(path: str | Path) -> dict[str, Any]:
    """Load what :func:`save` wrote; CheckpointError for missing, truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    try:
        meta = _read_metadata(data)
        tensors = st_load(data)
    except (SafetensorError, ValueError, RecursionError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or not a safetensors file ({_short(e)})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an rnnkit checkpoint "
                              f"(format {_short(meta.get('format'))!r}, expected {FORMAT!r})")
    try:
        return _unflatten(json.loads(meta.get("state", "")), tensors)
    except (ValueError, RecursionError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has malformed metadata ({_short(e)})") from None


def _short(value: Any, limit: int = 200) -> str:
    """What an error may quote of untrusted content: at most ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def _read_metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n <= 0 or n > MAX_HEADER or 8 + n > len(data):
        raise ValueError("header length out of range")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("the header's __metadata__ is not a table of strings")
    return meta
