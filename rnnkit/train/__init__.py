"""Training: the one loop (:mod:`.loop`), the Task interface (:mod:`.task`), run
configuration (:mod:`.config`), run folders (:mod:`.rundir`), checkpoints
(:mod:`.checkpoint`, :mod:`.saved`), truncated BPTT windows (:mod:`.tbptt`) and
torchrun/DDP (:mod:`.distributed`). Names load on first use, so importing one
submodule does not import them all."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Loop": "loop", "Progress": "loop", "evaluate": "loop",
    "Task": "task", "StepOutput": "task", "Plan": "task", "Panel": "task",
    "TrainConfig": "config", "RunConfig": "config", "build_config": "config", "PRESETS": "config",
    "load_model": "saved", "RunDir": "rundir", "tbptt_windows": "tbptt", "Window": "tbptt",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
