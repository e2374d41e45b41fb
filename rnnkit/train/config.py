"""Training configuration: plain frozen dataclasses, validated once at the edge
(CLI flags or a TOML file), plus the named presets."""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models.language_model import LMConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class TrainConfig:
    """How to train a language model. Model fields live in :class:`ModelSpec`."""

    data: str | None = None          # registered dataset, a text file/folder, or None = default corpus
    data_dir: str | None = None
    level: str | None = None         # "char" or "word"; default from the dataset
    min_freq: int = 1
    max_vocab: int | None = None
    batch_size: int = 32             # global batch (number of parallel streams)
    bptt: int = 64                   # k2: steps backpropagated through
    bptt_k1: int | None = None       # k1: steps per update (default = bptt)
    epochs: int = 10
    max_steps: int | None = None     # stop after this many updates
    max_minutes: float | None = None # stop after this much wall time (the demo's budget)
    optimizer: str = "adam"          # "sgd" or "adam"
    lr: float = 2e-3
    lr_decay: float = 1.0            # multiply lr by this each epoch after lr_decay_start (Zaremba)
    lr_decay_start: int = 0          # lr of epoch e (1-based) = lr * lr_decay ** max(0, e - lr_decay_start)
    weight_decay: float = 0.0
    clip_norm: float | None = 5.0    # clip the global gradient norm (None: off)
    sum_over_time: bool = False      # Zaremba's objective: batch-mean loss summed over the k steps
                                     # (= token mean * k), so lr 1 / clip 5 mean what the paper says
    clip_value: float | None = None  # clip each gradient element to [-v, v]
    eval_every: int | None = None    # evaluate every N updates as well as each epoch
    patience: int | None = None      # early stopping: epochs without validation improvement
    seed: int = 0
    device: str = "cpu"
    amp: bool = False                # bf16 autocast (CUDA only)
    log_every: int = 50
    out: str = "runs/lm"
    progress: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """The architecture fields of :class:`LMConfig`, without the vocab size,
    which only the data determines."""

    cell: str = "lstm"
    input: str = "embedding"
    embedding_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False
    init: str = "torch"
    init_range: float | None = None
    forget_bias: float | None = None
    hash_buckets: int = 0
    num_hashes: int = 2

    def build(self, vocab_size: int) -> LMConfig:
        return LMConfig(vocab_size=vocab_size, **dataclasses.asdict(self))


@dataclass(frozen=True)
class RunConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelSpec = field(default_factory=ModelSpec)

    def to_dict(self) -> dict:
        return {"train": dataclasses.asdict(self.train), "model": dataclasses.asdict(self.model)}


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
}


def _check_type(section: str, key: str, value: Any) -> Any:
    """Value coerced to the field's type, or a ConfigError naming the key."""
    hint = typing.get_type_hints(TrainConfig if section == "train" else ModelSpec)[key]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is not type(None) and isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"config: [{section}] {key} must be {names}, got {type(value).__name__} {value!r}")


def build_config(preset: str | None = None, file: dict | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Preset, then config file, then CLI overrides; every key and type checked."""
    merged: dict[str, dict[str, Any]] = {"train": {}, "model": {}}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        for s, vals in PRESETS[preset].items():
            merged[s].update(vals)
    for layer in (file or {}), (overrides or {}):
        for section, vals in layer.items():
            if section not in merged:
                raise ConfigError(f"config: unknown section [{section}]; expected [train] and [model]")
            if not isinstance(vals, dict):
                raise ConfigError(f"config: [{section}] must be a table, got {type(vals).__name__}")
            merged[section].update(vals)
    out = {}
    for section, cls in (("train", TrainConfig), ("model", ModelSpec)):
        known = {f.name for f in fields(cls)}
        for key in merged[section]:
            if key not in known:
                raise ConfigError(f"config: unknown key {key!r} in [{section}]; known keys: {', '.join(sorted(known))}")
        vals = {k: _check_type(section, k, v) for k, v in merged[section].items()}
        out[section] = cls(**vals)
    cfg = RunConfig(out["train"], out["model"])
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    t = cfg.train
    checks = [
        (t.batch_size > 0, f"batch_size must be > 0, got {t.batch_size}"),
        (t.bptt > 0, f"bptt must be > 0, got {t.bptt}"),
        (t.bptt_k1 is None or 0 < t.bptt_k1 <= t.bptt, f"bptt_k1 must be in [1, bptt={t.bptt}], got {t.bptt_k1}"),
        (t.epochs > 0, f"epochs must be > 0, got {t.epochs}"),
        (t.optimizer in ("sgd", "adam"), f"optimizer must be 'sgd' or 'adam', got {t.optimizer!r}"),
        (t.lr > 0, f"lr must be > 0, got {t.lr}"),
        (0 < t.lr_decay <= 1, f"lr_decay must be in (0, 1], got {t.lr_decay}"),
        (t.clip_norm is None or t.clip_norm > 0, f"clip_norm must be > 0 or null, got {t.clip_norm}"),
        (t.clip_value is None or t.clip_value > 0, f"clip_value must be > 0 or null, got {t.clip_value}"),
        (t.level in (None, "char", "word"), f"level must be 'char' or 'word', got {t.level!r}"),
        (t.log_every > 0, f"log_every must be > 0, got {t.log_every}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"config: [train] {msg}")
    cfg.model.build(vocab_size=1)  # model fields are checked by LMConfig itself


def load_toml(path: str | Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
