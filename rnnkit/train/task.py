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
``samples()``          optional: text the model generates now (run report)
``panels()``           optional: what the task shows of its model now (run report)
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


@dataclass(frozen=True)
class Panel:
    """One thing a task shows of its model at an evaluation (:meth:`Task.panels`): plain
    data, written to ``evaluations.jsonl`` and drawn by ``rnnkit report``, so a task
    needs no plotting code. Build one with a constructor of its kind:

    * :meth:`text`: lines shown as they are (translations, copied sequences);
    * :meth:`table`: columns and rows (per-entity F1, predictions next to targets);
    * :meth:`heatmap`: a matrix with optional row/column labels (attention, a confusion
      matrix, a piano roll);
    * :meth:`lines`: curves over a shared x (a forecast next to the truth).
    """

    kind: str
    title: str
    data: dict[str, Any]

    KINDS: ClassVar[tuple[str, ...]] = ("text", "table", "heatmap", "lines")

    @classmethod
    def text(cls, title: str, lines: Sequence[str]) -> "Panel":
        return cls("text", title, {"lines": [str(line) for line in lines]})

    @classmethod
    def table(cls, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> "Panel":
        return cls("table", title, {"columns": [str(c) for c in columns], "rows": [list(map(_plain, r)) for r in rows]})

    @classmethod
    def heatmap(cls, title: str, matrix, x_labels: Sequence[str] | None = None, y_labels: Sequence[str] | None = None,
                xlabel: str = "", ylabel: str = "") -> "Panel":
        rows = matrix.tolist() if hasattr(matrix, "tolist") else [list(r) for r in matrix]
        return cls("heatmap", title, {"matrix": [[float(v) for v in r] for r in rows],
                                      "x_labels": None if x_labels is None else [str(v) for v in x_labels],
                                      "y_labels": None if y_labels is None else [str(v) for v in y_labels],
                                      "xlabel": xlabel, "ylabel": ylabel})

    @classmethod
    def lines(cls, title: str, x: Sequence[float], series: dict[str, Sequence[float]], xlabel: str = "",
              ylabel: str = "") -> "Panel":
        """``series`` name -> y at each ``x`` (None where a curve has no value)."""
        return cls("lines", title, {"x": [float(v) for v in x],
                                    "series": {str(k): [None if v is None else float(v) for v in ys]
                                               for k, ys in series.items()},
                                    "xlabel": xlabel, "ylabel": ylabel})

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, **self.data}


def _plain(value: Any) -> Any:
    """A table cell as JSON: numbers and text stay, tensors/arrays become numbers."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


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

    def samples(self, model: nn.Module, generator: torch.Generator) -> list[str]:
        """Optional: a few texts ``model`` (in eval mode, no gradients) generates now; the
        loop records them at every validation (``evaluations.jsonl``) for the run report.
        By default a task that decodes tokens to text (``vocab``, ``start_id()`` and
        ``join()``, as a language model: the same test as ``rnnkit train --samples``)
        gives two samples at temperature 0.8 from ``generator`` (never the global random
        state, so training is unchanged); any other task gives none."""
        if not all(hasattr(self, a) for a in ("vocab", "start_id", "join")) or getattr(self, "vocab", None) is None:
            return []
        from ..generate import sample

        char = getattr(self, "level", None) == "char"
        forbid = [i for i in (getattr(self.vocab, "unk_id", None), getattr(self.vocab, "pad_id", None))
                  if i is not None]
        seqs = sample(model, batch_size=2, max_new_tokens=200 if char else 50, start_id=self.start_id(),
                      temperature=0.8, forbid=forbid, generator=generator)
        return [self.join(s) for s in seqs]

    def panels(self, model: nn.Module) -> list[Panel]:
        """Optional: what this task shows of ``model`` (in eval mode, no gradients) at a
        validation: attention maps, a confusion matrix, a forecast next to the truth...
        Recorded in ``evaluations.jsonl`` and drawn by ``rnnkit report``. Keep it cheap
        (one batch of the validation split) and draw no global random numbers. The
        default shows nothing."""
        return []

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
