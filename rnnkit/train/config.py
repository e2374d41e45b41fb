"""Run configuration: plain frozen dataclasses, validated once at the edge (CLI
flags, a TOML file, a checkpoint), plus the named presets.

A run has three parts, laid out as the TOML file is:

* ``[train]``: the loop's options (:class:`TrainConfig`) and the task's own
  (its ``Options`` dataclass, e.g. :class:`rnnkit.tasks.lm.LMOptions`), side by side;
* ``[model]``: the options of the model the task trains, declared once by that
  model's config dataclass (e.g. :class:`rnnkit.models.LMConfig`), minus the
  fields the data decides (vocabulary size).
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..options import option, parse_options, require
from .task import Task

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class TrainConfig:
    """How the loop trains, whatever the task."""

    task: str = option("lm", "what to learn: lm (language model), adding (the adding problem), forecast, "
                             "seq_digits, copy_memory or reber (embedded Reber grammar)")
    batch_size: int = option(32, "examples (or parallel streams) per update, global over all processes")
    bptt: int = option(64, "truncated BPTT: steps backpropagated through (k2), for tasks that stream")
    bptt_k1: int | None = option(None, "truncated BPTT: steps per update (k1, default: --bptt)")
    epochs: int = option(10, "passes over the training data")
    max_steps: int | None = option(None, "stop after this many updates")
    max_minutes: float | None = option(None, "stop after this much wall time")
    optimizer: str = option("adam", "sgd or adam")
    lr: float = option(2e-3, "learning rate")
    lr_decay: float = option(1.0, "multiply lr by this each epoch after lr_decay_start (Zaremba)")
    lr_decay_start: int = option(0, "lr of epoch e (1-based) = lr * lr_decay ** max(0, e - lr_decay_start)")
    weight_decay: float = option(0.0, "L2 penalty of the optimiser")
    clip_norm: float | None = option(5.0, "clip the global gradient norm to this (null: off)")
    clip_value: float | None = option(None, "clip each gradient element to [-v, v]")
    eval_every: int | None = option(None, "also evaluate every N updates (as well as each epoch)")
    patience: int | None = option(None, "early stopping: epochs without a better validation metric")
    target: float | None = option(None, "stop once a validation reaches this value of the task's selection "
                                        "metric (e.g. adding MSE 0.01): the run's `steps` is then steps to solve")
    seed: int = option(0, "random seed (a CPU run is bit-reproducible)")
    device: str = option("cpu", "cpu or cuda[:N]")
    amp: bool = option(False, "bf16 autocast (CUDA only)")
    log_every: int = option(50, "write a training line to metrics.jsonl every N updates")
    out: str = option("runs/lm", "run folder: checkpoints, best weights, metrics.jsonl (one run per folder)")
    progress: bool = option(True, "show a progress bar")
    checkpoint_every: int | None = option(None, "also save a resumable checkpoint every N updates")
    checkpoint_minutes: float | None = option(10.0, "also save a resumable checkpoint every M minutes")
    on_nonfinite: str = option("stop", "a NaN/inf loss or gradient: stop (an error) or skip the batch")
    diagnose_every: int | None = option(None, "log gradient-through-time norms and spectral radii to "
                                              "metrics.jsonl every N updates (rnnkit.diagnostics)")

    def __post_init__(self) -> None:
        positive_or_none = ("max_steps", "max_minutes", "eval_every", "patience", "checkpoint_every",
                            "checkpoint_minutes", "clip_norm", "clip_value", "diagnose_every")
        checks = [(getattr(self, k) is None or getattr(self, k) > 0, f"{k} must be > 0 or null, got {getattr(self, k)}")
                  for k in positive_or_none]
        checks += [
            (self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}"),
            (self.bptt > 0, f"bptt must be > 0, got {self.bptt}"),
            (self.bptt_k1 is None or 0 < self.bptt_k1 <= self.bptt,
             f"bptt_k1 must be in [1, bptt={self.bptt}], got {self.bptt_k1}"),
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.optimizer in ("sgd", "adam"), f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1], got {self.lr_decay}"),
            (self.lr_decay_start >= 0, f"lr_decay_start must be >= 0, got {self.lr_decay_start}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, 2**63 - 1], got {self.seed}"),
            (self.log_every > 0, f"log_every must be > 0, got {self.log_every}"),
            (self.out.strip() != "", "out must name a folder, got an empty string"),
            (self.target is None or math.isfinite(self.target), f"target must be a finite number or null, got {self.target}"),
            (self.on_nonfinite in ("stop", "skip"), f"on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}"),
        ]
        require(checks, "config: [train]")
        check_device(self.device)


def check_device(device: str) -> None:
    """A device string that names a device this machine has, or a ConfigError."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"config: [train] device {device!r} is not a device; use cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config: [train] device {device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"config: [train] device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"config: [train] device {device!r} is not supported; use cpu or cuda[:N]")


@dataclass(frozen=True)
class RunConfig:
    """One run: the loop's options, the task's options and the model's options."""

    train: TrainConfig
    task: Any                   # the task's Options dataclass
    model: dict[str, Any]       # options of the task's model (see Task.model)

    @property
    def task_cls(self) -> type[Task]:
        from ..tasks import TASKS

        return TASKS[self.train.task]

    def make_task(self) -> Task:
        return self.task_cls(self.task, self.model)

    def to_dict(self) -> dict[str, Any]:
        """The TOML layout: ``{"train": {loop and task keys}, "model": {...}}``."""
        return {"train": {**dataclasses.asdict(self.train), **dataclasses.asdict(self.task)},
                "model": dict(self.model)}


# Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization", section 4.1:
# SGD lr 1, init U(-r, r), batch 20, clip norm 5 (10 large), lr decay after some epochs.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "char-small": {  # the demo: minutes on 2 CPU cores
        "train": {"batch_size": 32, "bptt": 100, "epochs": 50, "optimizer": "adam", "lr": 3e-3,
                  "clip_norm": 1.0, "max_minutes": 4.0, "eval_every": 250, "log_every": 20},
        "model": {"cell": "lstm", "embedding_dim": 48, "hidden_size": 256, "num_layers": 1},
    },
    "ptb-small": {
        "train": {"data": "ptb", "sum_over_time": True, "batch_size": 20, "bptt": 20, "epochs": 13, "optimizer": "sgd", "lr": 1.0,
                  "lr_decay": 0.5, "lr_decay_start": 4, "clip_norm": 5.0, "log_every": 200},
        "model": {"cell": "lstm", "embedding_dim": 200, "hidden_size": 200, "num_layers": 2,
                  "dropout": 0.0, "init_range": 0.1},
    },
    "ptb-medium": {
        "train": {"data": "ptb", "sum_over_time": True, "batch_size": 20, "bptt": 35, "epochs": 39, "optimizer": "sgd", "lr": 1.0,
                  "lr_decay": 1 / 1.2, "lr_decay_start": 6, "clip_norm": 5.0, "log_every": 200},
        "model": {"cell": "lstm", "embedding_dim": 650, "hidden_size": 650, "num_layers": 2,
                  "dropout": 0.5, "init_range": 0.05},
    },
    "ptb-large": {
        "train": {"data": "ptb", "sum_over_time": True, "batch_size": 20, "bptt": 35, "epochs": 55, "optimizer": "sgd", "lr": 1.0,
                  "lr_decay": 1 / 1.15, "lr_decay_start": 14, "clip_norm": 10.0, "log_every": 200},
        "model": {"cell": "lstm", "embedding_dim": 1500, "hidden_size": 1500, "num_layers": 2,
                  "dropout": 0.65, "init_range": 0.04},
    },
    "shakespeare-char": {  # char-rnn style 2-layer LSTM
        # batch 32: on a CPU the cost per character hardly depends on the batch, so a
        # smaller one buys twice the updates per epoch; Adam's lr decays from epoch 3
        "train": {"data": "tinyshakespeare", "batch_size": 32, "bptt": 100, "epochs": 20, "optimizer": "adam",
                  "lr": 2e-3, "lr_decay": 0.85, "lr_decay_start": 2, "clip_norm": 1.0, "patience": 3,
                  "log_every": 50},
        "model": {"cell": "lstm", "embedding_dim": 64, "hidden_size": 512, "num_layers": 2, "dropout": 0.2},
    },
    # the same network regularised as AWD-LSTM regularises (Merity et al. 2018): locked
    # dropout around and between the layers and DropConnect on W_hh, all on PyTorch's kernel;
    # lr x 0.85 per epoch from the third (valid 1.326 after 30 epochs; x 0.9: 1.3425 after 11)
    "shakespeare-char-reg": {
        "train": {"data": "tinyshakespeare", "batch_size": 32, "bptt": 100, "epochs": 30, "optimizer": "adam",
                  "lr": 2e-3, "lr_decay": 0.85, "lr_decay_start": 3, "clip_norm": 1.0, "patience": 4,
                  "log_every": 50},
        "model": {"cell": "lstm", "embedding_dim": 64, "hidden_size": 512, "num_layers": 2, "input_dropout": 0.1,
                  "hidden_dropout": 0.25, "output_dropout": 0.25, "weight_drop": 0.2},
    },
    # AWD-LSTM-style word model sized for a CPU (Merity et al. 2018 regularisers; tied
    # embedding and softmax, Press & Wolf 2017); Zaremba's SGD schedule, lr decay from epoch 6
    "ptb-awd": {
        "train": {"data": "ptb", "sum_over_time": True, "batch_size": 20, "bptt": 35, "epochs": 40,
                  "optimizer": "sgd", "lr": 1.0, "lr_decay": 0.7, "lr_decay_start": 6, "clip_norm": 5.0,
                  "log_every": 200},
        "model": {"cell": "lstm", "embedding_dim": 400, "hidden_size": 400, "num_layers": 2, "tie_weights": True,
                  "init_range": 0.1, "embedding_dropout": 0.05, "input_dropout": 0.3, "hidden_dropout": 0.25,
                  "output_dropout": 0.4, "weight_drop": 0.25, "ar": 1.0, "tar": 1.0},
    },
}


def _merge(preset: str | None, file: dict | None, overrides: dict | None) -> dict[str, dict[str, Any]]:
    """Preset, then config file, then CLI overrides, as ``{"train": ..., "model": ...}``."""
    merged: dict[str, dict[str, Any]] = {"train": {}, "model": {}}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        for section, vals in PRESETS[preset].items():
            merged[section].update(vals)
    for layer in (file or {}), (overrides or {}):
        if not isinstance(layer, dict):
            raise ConfigError(f"config: expected tables [train] and [model], got {type(layer).__name__}")
        for section, vals in layer.items():
            if section not in merged:
                raise ConfigError(f"config: unknown section [{section}]; expected [train] and [model]")
            if not isinstance(vals, dict):
                raise ConfigError(f"config: [{section}] must be a table, got {type(vals).__name__}")
            merged[section].update(vals)
    return merged


def build_config(preset: str | None = None, file: dict | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Task defaults, preset, config file, CLI overrides; every key and type checked."""
    from ..tasks import TASKS

    merged = _merge(preset, file, overrides)
    task_name = merged["train"].get("task", "lm")
    if task_name not in TASKS:
        raise ConfigError(f"config: [train] task must be one of {sorted(TASKS)}, got {task_name!r}")
    preset_task = PRESETS.get(preset or "", {}).get("train", {}).get("task", "lm")
    if preset is not None and preset_task != task_name:
        raise ConfigError(f"preset {preset!r} is for task {preset_task!r}, not {task_name!r}")
    task_cls = TASKS[task_name]
    train_vals = {**getattr(task_cls, "train_defaults", {}), **merged["train"]}
    loop_keys = {f.name for f in fields(TrainConfig)}
    task_keys = task_cls.option_names()
    for key in train_vals:
        if key not in loop_keys | task_keys:
            raise ConfigError(f"config: unknown key {key!r} in [train] for task {task_name!r}; known keys: "
                              f"{', '.join(sorted(loop_keys | task_keys))}")
    loop = parse_options("train", TrainConfig, {k: v for k, v in train_vals.items() if k in loop_keys})
    opts = parse_options("train", task_cls.Options, {k: v for k, v in train_vals.items() if k in task_keys})
    model = model_options(task_cls, merged["model"])
    return RunConfig(TrainConfig(**loop), task_cls.Options(**opts), model)


def model_options(task_cls: type[Task], values: dict[str, Any]) -> dict[str, Any]:
    """The ``[model]`` table checked against the task's model config (which runs its
    own validation with placeholders for the fields only the data decides)."""
    from ..models import MODELS

    config_cls = MODELS[task_cls.model].config
    derived = tuple(task_cls.model_placeholders)
    vals = parse_options("model", config_cls, values, exclude=derived)
    full = dataclasses.asdict(config_cls(**vals, **task_cls.model_placeholders))  # validates
    return {k: v for k, v in full.items() if k not in derived}


#: options a resumed run may change: budgets, schedules, logging, where it runs
RESUMABLE_CHANGES = {"epochs", "max_steps", "max_minutes", "patience", "eval_every", "log_every", "progress",
                     "checkpoint_every", "checkpoint_minutes", "device", "amp", "out", "on_nonfinite", "lr",
                     "lr_decay", "lr_decay_start", "clip_norm", "clip_value", "weight_decay", "diagnose_every"}


def compare_runs(stored: dict[str, Any], new: RunConfig) -> tuple[list[str], list[str]]:
    """``(incompatible, allowed)`` differences between a checkpoint's run config and
    ``new``, each as ``"[section] key: old -> new"``. Keys the stored run does not
    have (options added since) are not compared."""
    incompatible, allowed = [], []
    ours = new.to_dict()
    for section in ("train", "model"):
        theirs = stored.get(section) if isinstance(stored.get(section), dict) else {}
        for key, value in ours[section].items():
            if key not in theirs or _same(theirs[key], value):
                continue
            line = f"[{section}] {key}: {theirs[key]!r} -> {value!r}"
            (allowed if section == "train" and key in RESUMABLE_CHANGES else incompatible).append(line)
    return incompatible, allowed


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
