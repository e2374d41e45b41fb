"""What a run saves, and loading it back for ``sample``/``eval`` or a resume.

Two kinds of file, both :mod:`checkpoint` containers (safetensors + JSON header):

* a **model** file (``best.safetensors``): task name, run config, model config,
  the task's data-derived state (vocabulary...) and the weights;
* a **training** checkpoint (``checkpoint.safetensors``): the same plus optimiser,
  progress, carried recurrent state and RNG states, for a bit-exact resume.

Files from before the generic loop (kinds ``lm-model``/``lm-train``) are upgraded
on load, so old checkpoints keep working.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..options import parse_options
from . import checkpoint
from .task import Task

MODEL, TRAIN = "model", "train"


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of any rnnkit version in today's layout."""
    kind = state.get("kind")
    if kind not in ("lm-model", "lm-train"):
        return state
    new = {k: v for k, v in state.items() if k not in ("lm_config", "vocab", "level", "hidden")}
    new.update(kind=MODEL if kind == "lm-model" else TRAIN, task="lm", model_config=state.get("lm_config"),
               task_state={"vocab": state.get("vocab"), "level": state.get("level")}, state=state.get("hidden"))
    if isinstance(state.get("run"), dict):
        run = state["run"]
        new["run"] = {"train": {**(run.get("train") or {}), "task": "lm"}, "model": run.get("model") or {}}
    if isinstance(state.get("progress"), dict):
        p = dict(state["progress"])
        p["batch"], p["best"] = p.pop("window", 0), p.pop("best_valid", None)
        new["progress"] = p
    return new


def read(path: str | Path, kinds: tuple[str, ...] = (MODEL, TRAIN)) -> dict[str, Any]:
    """A checkpoint's contents, upgraded; CheckpointError if it is not of ``kinds``."""
    state = checkpoint.load(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an rnnkit model or training checkpoint")
    state = upgrade(state)
    if state.get("kind") not in kinds:
        raise CheckpointError(f"{path} is not an rnnkit {' or '.join(kinds)} checkpoint (kind={state.get('kind')!r})")
    problem = _layout_problem(state)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return state


def _layout_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's layout (entries and their types), if anything:
    its header is untrusted, and later code may then rely on the types."""
    tables = ("model_config", "task_state", "model") + (("optimizer", "progress", "rng") if state["kind"] == TRAIN else ())
    for key in ("task",) + tables:
        if key not in state:
            return f"it has no {key!r} entry"
    if not isinstance(state["task"], str):
        return "its 'task' entry is not a name"
    for key in tables:
        if not isinstance(state[key], dict):
            return f"its {key!r} entry is not a table"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        return "its weights are not a table of named tensors"
    run = state.get("run", {})
    if not isinstance(run, dict) or not all(isinstance(run.get(s, {}), dict) for s in ("train", "model")):
        return "its 'run' entry is not a table of [train] and [model] tables"
    if state["kind"] == TRAIN and not isinstance(state["rng"].get("torch"), torch.Tensor):
        return "its RNG state is missing"
    return None


@dataclass
class Loaded:
    """A model rebuilt from a file, with the task that gives its data meaning."""

    model: nn.Module
    task: Task
    state: dict[str, Any]


def task_from_state(state: dict[str, Any], overrides: dict[str, Any] | None = None, path: Any = "") -> Task:
    """The task a checkpoint was trained for: its stored options (plus ``overrides``)
    and its data-derived state; no data is loaded."""
    from ..tasks import TASKS

    name = state["task"]
    if name not in TASKS:
        raise CheckpointError(f"{path}: unknown task {name!r}; this rnnkit knows {sorted(TASKS)}")
    cls = TASKS[name]
    stored = {k: v for k, v in state.get("run", {}).get("train", {}).items() if k in cls.option_names()}
    foreign = sorted(set(overrides or {}) - cls.option_names())
    if foreign:  # e.g. --data for a task that generates its data
        raise ConfigError(", ".join("--" + k.replace("_", "-") for k in foreign) + f" {'does' if len(foreign) == 1 else 'do'} not apply to task {name!r}")
    try:
        options = cls.Options(**parse_options("train", cls.Options, {**stored, **(overrides or {})}))
        model_cfg = state["model_config"]
        if not isinstance(model_cfg, dict):
            raise ConfigError(f"model_config must be a table, got {type(model_cfg).__name__}")
        from ..models import MODELS

        # every stored field typed as its dataclass declares, the data-derived ones included
        parse_options("model", MODELS[cls.model].config, model_cfg)
        task = cls(options, {k: v for k, v in model_cfg.items() if k not in cls.model_placeholders})
        task.load_state_dict(state["task_state"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return task


def _same_config(config, stored: dict) -> bool:
    """``config`` is the stored one: equal on every stored field, and every field a newer
    rnnkit added since (absent from an older checkpoint) at its default, so older
    checkpoints keep loading and mean what they meant."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    current = dataclasses.asdict(config)
    if any(k not in current for k in stored):
        return False
    return all(current[k] == stored[k] if k in stored else current[k] == defaults[k] for k in current)


def build_model(task: Task, state: dict[str, Any], path: Any = "") -> nn.Module:
    """The model the checkpoint describes, with its weights. Shapes and dtypes are
    checked on a meta-device copy first, so a hostile config (a huge hidden size)
    costs nothing before it is refused."""
    try:
        config = task.model_config()
        if not _same_config(config, state["model_config"]):
            raise ConfigError("the model config disagrees with the task's data (e.g. vocabulary size)")
        from ..models import MODELS

        with torch.device("meta"):
            expected = MODELS[task.model].build(config).state_dict()
    except (ConfigError, TypeError, RuntimeError, OverflowError, ValueError) as e:
        raise CheckpointError(f"{path}: the stored model config is invalid ({str(e)[:200]})") from None
    weights = state["model"]
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: the weights entry is not a table of tensors")
    problems = [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    for k, want in expected.items():
        got = weights.get(k)
        if isinstance(got, torch.Tensor) and (got.shape != want.shape or got.dtype != want.dtype):
            problems.append(f"{k} is {got.dtype} {tuple(got.shape)}, expected {want.dtype} {tuple(want.shape)}")
        elif k in weights and not isinstance(got, torch.Tensor):
            problems.append(f"{k} is not a tensor")
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the stored architecture: " + "; ".join(problems[:5]))
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: weights contain NaN or inf ({', '.join(bad[:3])}): the run that saved "
                              "them diverged; use an earlier checkpoint")
    try:
        model = MODELS[task.model].build(config)
    except (RuntimeError, OverflowError, ValueError) as e:  # values a meta-device build does not check
        raise CheckpointError(f"{path}: the stored model config is invalid ({str(e)[:200]})") from None
    model.load_state_dict(weights)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu",
               overrides: dict[str, Any] | None = None) -> Loaded:
    """Rebuild the model saved at ``path`` (a model file or a training checkpoint), in eval mode."""
    state = read(path)
    task = task_from_state(state, overrides, path)
    model = build_model(task, state, path)
    return Loaded(model.to(device).eval(), task, state)


def model_record(task: Task, model: nn.Module, run: dict[str, Any]) -> dict[str, Any]:
    """The contents of a model file."""
    return {"kind": MODEL, "task": task.name, "run": run, "model_config": dataclasses.asdict(task.model_config()),
            "task_state": task.state_dict(), "model": model.state_dict()}
