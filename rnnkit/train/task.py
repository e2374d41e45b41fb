"""The Task interface: everything the training loop does not own.

The loop (:mod:`rnnkit.train.loop`) owns optimisation, clipping, precision,
processes, stopping, checkpoints, logging and evaluation order. A task owns what
is specific to a problem:

=====================  =====================================================
``Options``            its options (a dataclass; the ``[train]`` keys it adds)
``model``              the registered model it trains (:data:`rnnkit.models.MODELS`)
``prepare()``          load or generate its data
``model_fields()``     model-config fields only the data decides (vocab size...)
``batches()``          its batches for a split, epoch, rank and world size
``step()``             one batch's loss and additive statistics
``metrics()``          statistics summed over batches -> metrics
``select``             which metric picks the best model, and its direction
``state_dict()``       what it learned from data (vocabulary, scaler), as JSON
``closed_form_step()`` optional: feed one batch to a model fitted in closed form
=====================  =====================================================

A model with ``closed_form = True`` (an echo state network's ridge readout) is not
trained by an optimiser: the loop calls its ``begin_fit()``, the task's
:meth:`Task.closed_form_step` on every training batch, then its ``solve()``, and
evaluates, saves and reports it like any other run.

Statistics are sums (nll, token counts, squared error, correct...) so they add
across batches and processes; only :meth:`Task.metrics` divides. This is
fairseq's "summed logging outputs" and OpenNMT's explicit normalisation.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class StepOutput:
    """What :meth:`Task.step` returns for one batch."""

    loss: Tensor                   # scalar the loop back-propagates into the model (already normalised)
    stats: dict[str, float]        # additive sums for :meth:`Task.metrics`
    state: Any = None              # recurrent state for the next batch (tasks that carry state)
    aux_losses: dict[str, Tensor] = field(default_factory=dict)  # per auxiliary module, into it alone


@dataclass(frozen=True)
class Clock:
    """Where training stands, for tasks whose behaviour follows a schedule (scheduled
    sampling): the loop sets ``task.clock`` before each update. ``step`` counts the
    updates already done; deterministic functions of it resume exactly."""

    step: int = 0
    seed: int = 0
    rank: int = 0

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """Random numbers that depend only on (seed, step, rank): the same after a resume."""
        return torch.Generator(device=device).manual_seed((self.seed * 2654435761 + self.step * 40503 + self.rank)
                                                          % 2**63)


@dataclass(frozen=True)
class Plan:
    """How the loop wants a split cut: the task turns this into batches."""

    split: str
    epoch: int = 1
    rank: int = 0
    world_size: int = 1
    batch_size: int = 32             # global: summed over processes
    bptt: int = 64                   # truncated BPTT window (tasks that stream)
    bptt_k1: int | None = None
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class Task(ABC):
    """Base class of a trainable problem. Subclasses are small: see :mod:`rnnkit.tasks`."""

    name: ClassVar[str]
    Options: ClassVar[type]                     # dataclass of the task's options
    model: ClassVar[str]                        # key in rnnkit.models.MODELS
    model_placeholders: ClassVar[dict[str, Any]] = {}   # values for model_fields() before data exists
    select: ClassVar[tuple[str, str]] = ("loss", "min")  # (metric, "min" or "max") for the best model
    carries_state: ClassVar[bool] = False       # TBPTT: each train batch continues the previous one
    count_key: ClassVar[str] = "examples"       # the statistic throughput is reported in
    eval_splits: ClassVar[tuple[str, ...]] = ("valid", "test")
    train_defaults: ClassVar[dict[str, Any]] = {}        # the task's own defaults for [train] loop keys

    def __init__(self, options: Any, model_options: dict[str, Any]) -> None:
        self.options = options
        self.model_options = dict(model_options)
        self.clock = Clock()

    # --- data ---------------------------------------------------------------------
    @abstractmethod
    def prepare(self) -> None:
        """Load or generate the data (after :meth:`load_state_dict`, if any)."""

    @abstractmethod
    def batches(self, plan: Plan) -> Sequence[Any]:
        """The batches of ``plan.split`` for this process. Indexable, so a resumed
        run continues at the batch it stopped at."""

    # --- model --------------------------------------------------------------------
    def model_fields(self) -> dict[str, Any]:
        """Model-config fields the data decides (e.g. ``vocab_size``)."""
        return {}

    def model_config(self):
        from ..models import MODELS

        config_cls = MODELS[self.model].config
        return config_cls(**self.model_options, **self.model_fields())

    def build_model(self) -> nn.Module:
        from ..models import MODELS

        return MODELS[self.model].build(self.model_config())

    # --- one batch ----------------------------------------------------------------
    @abstractmethod
    def step(self, model: nn.Module, batch: Any, state: Any = None) -> StepOutput:
        """Loss and statistics of one batch; ``model.training`` says which phase."""

    @abstractmethod
    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from statistics summed over batches (and processes). Must include
        ``"loss"``, the mean objective, which the loop logs and shows."""

    def describe(self, metrics: dict[str, float]) -> str:
        """One human-readable line for a split's metrics."""
        key = self.select[0]
        return f"{key} {metrics[key]:.4f}"

    # --- optional capabilities ------------------------------------------------------
    def auxiliary(self, model: nn.Module) -> dict[str, nn.Module]:
        """Optional: extra trainable modules with their own optimisers (a GAN-style
        discriminator). The loop optimises each on its ``aux_losses`` entry only, the
        model on ``loss`` only, and checkpoints both."""
        return {}

    def train_log(self, stats: dict[str, float]) -> dict[str, float]:
        """Optional: extra figures for a training line of metrics.jsonl (e.g. a
        discriminator's accuracy), from one batch's statistics."""
        return {}

    def closed_form_step(self, model: nn.Module, batch: Any, state: Any = None) -> Any:
        """Optional: add one training batch to a closed-form model's statistics (its
        ``accumulate``); returns the state carried to the next batch."""
        from ..errors import ConfigError

        raise ConfigError(f"task {self.name!r} cannot fit a model in closed form")

    def summary(self) -> str:
        """One line about the prepared data, printed when training starts."""
        return f"task {self.name}"

    def baseline(self, order: int = 5) -> dict[str, Any] | None:
        """Optional: a simple reference fitted on the same data (an n-gram model of
        ``order``, a constant predictor...) as ``{"name", "valid", "test"}`` metrics."""
        return None

    # --- what the task learned from data -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state saved in every checkpoint (vocabulary, label map, scaler)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (before :meth:`prepare`, which then reuses it)."""

    def export(self, directory) -> None:
        """Optional: write human-readable side files (e.g. ``vocab.json``) next to the weights."""

    @classmethod
    def option_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls.Options)}
