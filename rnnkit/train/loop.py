"""The training loop: one for every task.

The loop owns what does not depend on the problem: optimiser and learning-rate
schedule, clipping, mixed precision, DDP through torchrun, stop conditions
(epochs, updates, minutes, patience, a target metric), signals, periodic resumable checkpoints,
the metrics log, the progress bar and evaluation. Everything problem-specific is
the :class:`~rnnkit.train.task.Task`'s. Recurrent state carried from one batch to
the next (truncated BPTT) is the loop's too: a task with ``carries_state`` gets
the previous batch's state, detached, and the checkpoint stores it.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import CheckpointError, ConfigError, TrainingDiverged
from . import checkpoint, saved
from .config import RunConfig, compare_runs
from .distributed import DistContext, all_reduce_mean, any_rank
from .metrics import MetricsLog, TensorBoardLog
from .rundir import EVALUATIONS_FORMAT, METRICS_FORMAT, RUN_FORMAT, RunDir
from .task import Clock, Plan, Task
from .tbptt import detach_state

MAX_CONSECUTIVE_SKIPS = 10
#: what each optimiser keeps per parameter (checked on resume)
OPTIMIZER_STATE = {torch.optim.Adam: ("step", "exp_avg", "exp_avg_sq"), torch.optim.SGD: ()}


@dataclass
class Progress:
    """Where training stands; all of it goes into the checkpoint."""

    step: int = 0
    epoch: int = 1
    batch: int = 0                  # index of the next batch in this epoch
    best: float | None = None       # best validation value of the task's selection metric
    bad_epochs: int = 0
    elapsed: float = 0.0            # training seconds so far, across resumes
    skipped: int = 0                # batches skipped for a non-finite loss or gradient
    seen: float = 0.0               # the task's count_key units trained on (tokens...), across resumes

    @classmethod
    def from_dict(cls, d: Any) -> "Progress":
        """From a checkpoint (untrusted): every field of its declared type, counters >= 0."""
        if not isinstance(d, dict):
            raise TypeError(f"progress must be a table, got {type(d).__name__}")
        p = cls(**d)
        ints = ("step", "epoch", "batch", "bad_epochs", "skipped")
        if not all(isinstance(getattr(p, k), int) and not isinstance(getattr(p, k), bool) and getattr(p, k) >= 0
                   for k in ints):
            raise ValueError(f"progress counters must be integers >= 0: {dataclasses.asdict(p)}")
        if not isinstance(p.elapsed, (int, float)) or not (p.best is None or isinstance(p.best, (int, float))):
            raise ValueError("progress times and best value must be numbers")
        if isinstance(p.seen, bool) or not isinstance(p.seen, (int, float)) or not p.seen >= 0:
            raise ValueError(f"progress count seen must be a number >= 0, got {p.seen!r}")
        return p


def _sum_into(sums: dict[str, float], stats: dict[str, float]) -> None:
    for k, v in stats.items():
        sums[k] = sums.get(k, 0.0) + v


def _autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, split: str, *, bptt: int = 64, device: str | torch.device = "cpu",
             amp: bool = False) -> dict[str, float]:
    """The task's metrics of ``model`` on a whole split (state carried if the task streams)."""
    device = torch.device(device)
    model.eval()
    sums: dict[str, float] = {}
    state = None
    for batch in task.batches(Plan(split=split, bptt=bptt, device=device)):
        with _autocast(device, amp):
            out = task.step(model, batch, state)
        state = detach_state(out.state) if task.carries_state else None
        _sum_into(sums, out.stats)
    return task.metrics(sums)


class Loop:
    """Trains ``task``'s model as ``run`` says. Typical use::

        task = run.make_task(); task.prepare()
        loop = Loop(run, task)
        loop.open(resume=False)        # claim the run folder (or continue its checkpoint)
        result = loop.fit()            # final valid/test metrics of the best weights
    """

    def __init__(self, run: RunConfig, task: Task, ctx: DistContext = DistContext(), *,
                 tensorboard: bool = False) -> None:
        self.run, self.cfg, self.task, self.ctx = run, run.train, task, ctx
        self.tensorboard = tensorboard   # mirror the metrics log into OUT/tensorboard
        self.device = torch.device(self.cfg.device)
        if self.cfg.batch_size % ctx.world_size:
            raise ConfigError(f"batch_size={self.cfg.batch_size} must be divisible by the "
                              f"{ctx.world_size} processes")
        torch.manual_seed(self.cfg.seed)
        try:
            self.model = task.build_model().to(self.device)
        except (RuntimeError, MemoryError, OverflowError, TypeError, ValueError) as e:  # sizes past what fits
            raise ConfigError(f"cannot build the {task.model} with these options: {str(e)[:200]}") from None
        self.net: nn.Module = self.model
        if ctx.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.local_rank] if self.device.type == "cuda" else None)
        self.closed_form = bool(getattr(self.model, "closed_form", False))
        if self.closed_form and ctx.enabled:
            raise ConfigError(f"the {task.model} is fitted in closed form in one process; drop torchrun")
        self.optimizer = self._make_optimizer(self.model.parameters())
        self.aux = nn.ModuleDict(task.auxiliary(self.model)).to(self.device)
        if len(self.aux) and ctx.enabled:
            raise ConfigError(f"task {task.name!r} with auxiliary modules ({', '.join(self.aux)}) runs in one "
                              "process only; drop torchrun")
        self.aux_optimizers = {name: self._make_optimizer(m.parameters()) for name, m in self.aux.items()}
        self.progress = Progress()
        self.state: Any = None                       # recurrent state carried to the next batch
        self.best_state: dict[str, torch.Tensor] | None = None
        self.rundir = RunDir(self.cfg.out)
        self.log = MetricsLog(None)
        self.evaluations = MetricsLog(None)   # samples and task panels per validation (main process)
        self._opened = False
        self._stop = False
        self._skips_in_a_row = 0
        self._last_stats: dict[str, float] = {}

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        groups = [{"params": list(params)}]   # a group, so a closed-form model (no parameters) gets an empty one
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return torch.optim.Adam(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def lr_for_epoch(self, epoch: int) -> float:
        """Zaremba et al.: constant for ``lr_decay_start`` epochs, then times ``lr_decay`` per epoch."""
        return self.cfg.lr * self.cfg.lr_decay ** max(0, epoch - self.cfg.lr_decay_start)

    def plan(self, split: str) -> Plan:
        c = self.cfg
        return Plan(split=split, epoch=self.progress.epoch, rank=self.ctx.rank, world_size=self.ctx.world_size,
                    batch_size=c.batch_size, bptt=c.bptt, bptt_k1=c.bptt_k1, seed=c.seed, device=self.device)

    # --- the run folder ---------------------------------------------------------------
    def open(self, *, resume: bool = False, overwrite: bool = False) -> list[str]:
        """Claim the run folder (main process only writes). With ``resume``, continue its
        checkpoint and return the allowed option changes; incompatible ones are an error."""
        if self.ctx.is_main:
            self.rundir.open(resume=resume, overwrite=overwrite)
            mirror = TensorBoardLog(self.rundir.tensorboard) if self.tensorboard else None
            self.log = MetricsLog(self.rundir.metrics, mirror)
            self.evaluations = MetricsLog(self.rundir.evaluations)
        self._opened = True
        changed = self.resume() if resume else []
        if self.ctx.is_main:   # after the resume's checks: a refused resume changes nothing
            from .. import __version__

            self.rundir.update_info(format=RUN_FORMAT, rnnkit=__version__, task=self.task.name,
                                    select=list(self.task.select), count_key=self.task.count_key,
                                    config=self.run.to_dict(),
                                    formats={"metrics.jsonl": METRICS_FORMAT, "evaluations.jsonl": EVALUATIONS_FORMAT})
        if self.ctx.is_main and not resume:
            self.task.export(self.rundir.path)
        return changed

    def record_info(self, **fields: Any) -> None:
        """Add ``fields`` (the command line, the task's baseline) to the run's ``run.json``."""
        if self.ctx.is_main and self._opened:
            self.rundir.update_info(**fields)

    def close(self) -> None:
        if self.log.mirror is not None:
            self.log.mirror.close()
        self.rundir.close()

    # --- one update -------------------------------------------------------------------
    def train_step(self, batch: Any) -> tuple[float, float, float] | None:
        """One update; returns (mean loss, gradient norm before clipping, this process's
        count of the task's unit, e.g. tokens), or None
        when a non-finite batch was skipped (``on_nonfinite = "skip"``)."""
        self.net.train()
        self.task.clock = Clock(self.progress.step, self.cfg.seed, self.ctx.rank)
        with _autocast(self.device, self.cfg.amp):
            out = self.task.step(self.net, batch, self.state if self.task.carries_state else None)
        loss = self.task.metrics(out.stats)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if out.aux_losses:
            self._aux_backward(out)
        else:
            out.loss.backward()
        norm = self._clip()
        aux_finite = all(math.isfinite(float(v.detach())) for v in out.aux_losses.values())
        if not (math.isfinite(loss) and math.isfinite(norm) and aux_finite):
            return self._non_finite(loss if aux_finite else math.nan, norm)
        for name, opt in self.aux_optimizers.items():
            opt.step()
        self._skips_in_a_row = 0
        try:
            self.optimizer.step()
        except RuntimeError as e:  # e.g. Adam's lr / bias correction overflows float32
            if "overflow" not in str(e):
                raise
            raise TrainingDiverged(f"training diverged at step {self.progress.step + 1}: the optimiser's update "
                                   f"overflowed ({e}); lower --lr") from None
        if self.task.carries_state:
            self.state = detach_state(out.state)
        self._last_stats = out.stats
        return loss, norm, out.stats.get(self.task.count_key, 0.0)

    def _aux_backward(self, out) -> None:
        """Each loss into its own parameters only: the model's into the model, each
        auxiliary module's into that module (``backward(inputs=...)``)."""
        for opt in self.aux_optimizers.values():
            opt.zero_grad(set_to_none=True)
        out.loss.backward(inputs=list(self.model.parameters()), retain_graph=True)
        for name, aux_loss in out.aux_losses.items():
            params = list(self.aux[name].parameters())
            aux_loss.backward(inputs=params, retain_graph=True)
            if self.cfg.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_norm)

    def _clip(self) -> float:
        """Clip as configured; return the global gradient norm *before* clipping, so
        explosions show in the log even when clipping hides them from the weights."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.clip_value is not None:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
            torch.nn.utils.clip_grad_value_(params, self.cfg.clip_value)
            return float(norm)
        max_norm = self.cfg.clip_norm if self.cfg.clip_norm is not None else math.inf
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _non_finite(self, loss: float, norm: float) -> None:
        """Never apply a NaN/inf update: stop with an error, or skip the batch."""
        p = self.progress
        step = p.step + 1
        self.optimizer.zero_grad(set_to_none=True)
        self.log.write(split="nonfinite", step=step, epoch=p.epoch, loss=loss, grad_norm=norm,
                       action=self.cfg.on_nonfinite)
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        if self.cfg.on_nonfinite == "skip":
            p.skipped += 1
            self._skips_in_a_row += 1
            self.state = None  # a poisoned state would poison every batch after it
            if self._skips_in_a_row < MAX_CONSECUTIVE_SKIPS:
                return None
            what = f"{what}, {MAX_CONSECUTIVE_SKIPS} batches in a row"
        lr = self.optimizer.param_groups[0]["lr"]
        raise TrainingDiverged(
            f"training diverged at step {step} (epoch {p.epoch}): {what}; this update was not applied and "
            f"no weights of it were saved. Likely cause: the learning rate ({lr:g}) is too high or the "
            f"gradients exploded: lower --lr, set --clip-norm, or pass --on-nonfinite skip")

    # --- evaluation -------------------------------------------------------------------
    def evaluate(self, split: str) -> dict[str, float]:
        return evaluate(self.task, self.model, split, bptt=self.cfg.bptt, device=self.device, amp=self.cfg.amp)

    def _better(self, value: float, than: float | None, or_equal: bool = False) -> bool:
        if not math.isfinite(value):
            return False   # a NaN or inf validation never becomes the best model
        if than is None:
            return True
        minimise = self.task.select[1] == "min"
        if or_equal and value == than:
            return True
        return value < than if minimise else value > than

    def _reached(self, m: dict[str, float]) -> bool:
        """Whether a validation met ``--target`` (the selection metric at or past it)."""
        target = self.cfg.target
        return target is not None and self._better(m[self.task.select[0]], target, or_equal=True)

    def _validate(self) -> dict[str, float]:
        """Evaluate on valid, log it, and keep the best weights (in memory and on disk)."""
        m = self.evaluate("valid")
        p = self.progress
        elapsed = time.perf_counter() - self._t_start if hasattr(self, "_t_start") else p.elapsed
        self.log.write(split="valid", step=p.step, epoch=p.epoch,
                       **{"time": elapsed, f"{self.task.count_key}_seen": p.seen, **m})
        self._record_evaluation()
        value = m[self.task.select[0]]
        if self._better(value, p.best):
            p.best = value
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.save_model(self.rundir.best)
        return m

    def _record_evaluation(self) -> None:
        """The task's samples and panels of the model as it is now, one line of
        ``evaluations.jsonl`` (main process). Sampling uses its own generator and the
        model is in eval mode, so training draws the same random numbers with or without
        it. A failing panel is recorded as an error; it does not stop training."""
        if self.evaluations.path is None:
            return
        p = self.progress
        mode = self.model.training
        self.model.eval()
        record: dict[str, Any] = {"format": EVALUATIONS_FORMAT, "step": p.step, "epoch": p.epoch}
        try:
            with torch.no_grad():
                g = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + p.step)
                record["samples"] = list(self.task.samples(self.model, g))
                record["panels"] = [panel.to_dict() for panel in self.task.panels(self.model)]
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            record.update(samples=record.get("samples", []), panels=[],
                          error=f"{type(e).__name__}: {str(e)[:300]}")
        finally:
            self.model.train(mode)
        self.evaluations.write(**record)

    # --- the loop ---------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until the epochs, ``max_steps``, ``max_minutes`` or early stopping end it;
        then evaluate the best weights on valid and test. Returns the final metrics."""
        if not self._opened:
            self.open()
        cfg, p = self.cfg, self.progress
        self._t_start = time.perf_counter() - p.elapsed
        self._last_save = time.monotonic()
        stopped = None
        self._stop = False
        try:
            if self.closed_form:
                return self._fit_closed_form()
            with _stop_on_signals(self):
                while p.epoch <= cfg.epochs and stopped is None:
                    stopped = self._run_epoch()
                    if stopped is None:
                        stopped = self._end_epoch()
            self.save_checkpoint()
            if stopped == "interrupted":  # Ctrl-C or a scheduler's SIGTERM: the work done is saved
                raise KeyboardInterrupt(f"training interrupted at step {p.step}; checkpoint saved")
            return self._final(stopped or "epochs")
        finally:
            self.close()  # the run is over (or failed): another process may take the folder

    def _fit_closed_form(self) -> dict[str, Any]:
        """A closed-form model: one pass over the training batches accumulates its
        statistics, one solve replaces the optimiser's updates; then validation, best
        weights, checkpoint and final metrics as for any run."""
        p = self.progress
        batches = self.task.batches(self.plan("train"))
        self.model.begin_fit()
        state = None
        for i in tqdm(range(len(batches)), desc="closed-form fit", leave=False,
                      disable=not (self.cfg.progress and self.ctx.is_main), dynamic_ncols=True):
            state = self.task.closed_form_step(self.model, batches[i], state)
        self.model.solve()
        p.step, p.batch = 1, 0   # one solve: one update
        self._validate()
        p.epoch += 1
        self.save_checkpoint()
        return self._final("closed_form")

    def _run_epoch(self) -> str | None:
        cfg, p = self.cfg, self.progress
        for opt in (self.optimizer, *self.aux_optimizers.values()):
            for group in opt.param_groups:
                group["lr"] = self.lr_for_epoch(p.epoch)
        batches = self.task.batches(self.plan("train"))
        bar = tqdm(total=len(batches), initial=p.batch, desc=f"epoch {p.epoch}/{cfg.epochs}",
                   disable=not (cfg.progress and self.ctx.is_main), dynamic_ncols=True, leave=False)
        rate_key = f"{self.task.count_key}_per_s"
        count, t0, loss_sum, n = 0.0, time.perf_counter(), 0.0, 0
        with bar:
            while p.batch < len(batches):
                if cfg.diagnose_every and (p.step + 1) % cfg.diagnose_every == 0 and self.ctx.is_main:
                    self._diagnose(batches[p.batch])
                done = self.train_step(batches[p.batch])
                p.batch += 1
                p.step += 1
                bar.update(1)
                if done is not None:
                    loss, norm, local_count = done
                    loss = all_reduce_mean(loss, self.ctx, self.device)
                    loss_sum, n = loss_sum + loss, n + 1
                    count += local_count * self.ctx.world_size
                    p.seen += local_count * self.ctx.world_size
                    rate = count / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{loss:.4g}", **{rate_key.replace("_per_s", "/s"): f"{rate:,.0f}"})
                    if p.step % cfg.log_every == 0:
                        self.log.write(split="train", step=p.step, epoch=p.epoch, loss=loss, grad_norm=norm,
                                       lr=self.optimizer.param_groups[0]["lr"], **{rate_key: rate},
                                       mean_loss=loss_sum / n, time=time.perf_counter() - self._t_start,
                                       **{f"{self.task.count_key}_seen": p.seen},
                                       **self.task.train_log(self._last_stats))
                        loss_sum, n = 0.0, 0
                if cfg.eval_every and p.step % cfg.eval_every == 0 and self._reached(self._validate()):
                    return "target"
                if any_rank(self._stop, self.ctx, self.device):
                    return "interrupted"
                if cfg.max_steps is not None and p.step >= cfg.max_steps:
                    return "max_steps"
                if cfg.max_minutes is not None and any_rank(
                        time.perf_counter() - self._t_start > 60 * cfg.max_minutes, self.ctx, self.device):
                    return "max_minutes"
                self._periodic_checkpoint()
        return None

    def _diagnose(self, batch: Any) -> None:
        """Gradient through time and spectral radii before this update, logged (no RNG
        is drawn and the model's mode is restored, so training is unchanged)."""
        from ..diagnostics import batch_inputs, training_snapshot

        snapshot = training_snapshot(self.model, batch_inputs(batch))
        step = self.progress.step + 1
        self.log.write(split="diagnose", step=step, epoch=self.progress.epoch, **snapshot)
        if self.log.mirror is not None:   # TensorBoard: every singular value of each recurrent matrix
            from ..diagnostics import spectral_report

            for row in spectral_report(self.model, top=None):
                self.log.mirror.histogram(f"singular_values/{row['matrix']}:{row['gate']}", row["singular_values"],
                                          step)

    def _periodic_checkpoint(self) -> None:
        """A resumable checkpoint every ``checkpoint_every`` updates and/or minutes, so a
        killed or preempted run loses at most that much."""
        c = self.cfg
        due = (c.checkpoint_every is not None and self.progress.step % c.checkpoint_every == 0) or \
              (c.checkpoint_minutes is not None and time.monotonic() - self._last_save >= 60 * c.checkpoint_minutes)
        if due:
            self.save_checkpoint()

    def _end_epoch(self) -> str | None:
        p = self.progress
        m = self._validate()
        improved = self._better(m[self.task.select[0]], p.best, or_equal=True)
        p.bad_epochs = 0 if improved else p.bad_epochs + 1
        p.epoch, p.batch, self.state = p.epoch + 1, 0, None  # fresh state each epoch
        self.save_checkpoint()
        if self._reached(m):
            return "target"
        if self.cfg.patience is not None and p.bad_epochs >= self.cfg.patience:
            return "early_stopping"
        return None

    def _final(self, reason: str) -> dict[str, Any]:
        if self.best_state is None:
            self._validate()
        if self.best_state is None:
            raise TrainingDiverged(f"no finite validation {self.task.select[0]} in {self.progress.step} updates: "
                                   "there are no weights worth keeping (lower --lr or set --clip-norm)")
        with self.best_weights():
            results = {split: self.evaluate(split) for split in self.task.eval_splits}
        p = self.progress
        result = {"stopped_by": reason, "steps": p.step, "epochs_completed": p.epoch - 1,
                  "train_seconds": p.elapsed, **results}
        self.log.write(split="final", **result)
        return result

    @contextmanager
    def best_weights(self) -> Iterator[nn.Module]:
        """The model with the best validation weights loaded, restored afterwards."""
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.best_state)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(current)

    # --- persistence ------------------------------------------------------------------
    def save_model(self, path) -> None:
        """Weights and what rebuilds the model (task, configs, vocabulary)."""
        if self.ctx.is_main:
            checkpoint.save(path, saved.model_record(self.task, self.model, self.run.to_dict()))

    def save_checkpoint(self, path=None) -> None:
        """Everything needed to continue bit-exactly; atomic (see :mod:`checkpoint`)."""
        if hasattr(self, "_t_start"):
            self.progress.elapsed = time.perf_counter() - self._t_start
        self._last_save = time.monotonic()
        if not self.ctx.is_main:
            return
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        record = saved.model_record(self.task, self.model, self.run.to_dict())
        record.update(kind=saved.TRAIN, optimizer=self.optimizer.state_dict(),
                      progress=dataclasses.asdict(self.progress), state=self.state, rng=rng)
        if len(self.aux):
            record["aux"] = {name: {"module": m.state_dict(), "optimizer": self.aux_optimizers[name].state_dict()}
                             for name, m in self.aux.items()}
        checkpoint.save(path or self.rundir.checkpoint, record)

    def resume(self, path=None) -> list[str]:
        """Continue from a checkpoint written by :meth:`save_checkpoint` (or by the
        pre-loop ``LMTrainer``). Returns the allowed option changes."""
        path = path or self.rundir.checkpoint
        state = saved.read(path, kinds=(saved.TRAIN,))
        incompatible, allowed = compare_runs(state.get("run") or {}, self.run)
        if incompatible:
            raise ConfigError(f"cannot resume {path} with a different configuration: " + "; ".join(incompatible)
                              + " (keep those options, or start a new run with another --out or --overwrite)")
        if state["task_state"] != self.task.state_dict():
            raise CheckpointError(f"{path} was trained on different {self.task.name} data: its "
                                  f"{'/'.join(str(k)[:20] for k in state['task_state'])} differ from what this data gives")
        model = saved.build_model(self.task, state, path)
        self.model.load_state_dict(model.state_dict())
        try:  # the rest is untrusted too: a malformed entry is one clear error, not a traceback
            self._load_optimizer(self.optimizer, state["optimizer"])
            for name, module in self.aux.items():
                saved_aux = state["aux"][name]
                module.load_state_dict(saved_aux["module"])
                self._load_optimizer(self.aux_optimizers[name], saved_aux["optimizer"])
            self.progress = Progress.from_dict(state["progress"])
            self.state = _to_device(state.get("state"), self.device)
            torch.set_rng_state(state["rng"]["torch"])
            if "cuda" in state["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"{path}: the optimiser, progress, state or RNG entry is malformed "
                                  f"({str(e)[:200]})") from None
        self._check_carried_state(path)
        if self.rundir.best.is_file():
            self.best_state = saved.read(self.rundir.best, kinds=(saved.MODEL,))["model"]
        removed = self.log.truncate(self.progress.step)
        self.evaluations.truncate(self.progress.step)
        self.log.write(split="resume", step=self.progress.step, changed=allowed, dropped_log_lines=removed)
        return allowed

    def _check_carried_state(self, path) -> None:
        """A resumed recurrent state must be tensors the model accepts for the next batch:
        tried with one forward in eval mode (no dropout, so no random numbers are used)."""
        if self.state is None:
            return
        tensors = self.state if isinstance(self.state, (tuple, list)) else (self.state,)
        problem = None
        if not self.task.carries_state or not all(isinstance(t, torch.Tensor) for t in tensors):
            problem = "it is not a tensor or tuple of tensors of a task that carries state"
        elif not all(t.is_floating_point() and torch.isfinite(t).all() for t in tensors):
            problem = "it is not finite floating point"
        else:
            batches = self.task.batches(self.plan("train"))
            try:
                with torch.no_grad():
                    self.model.eval()
                    self.task.step(self.model, batches[self.progress.batch], self.state)
            except (RuntimeError, TypeError, ValueError, IndexError) as e:
                problem = f"the model refuses it ({str(e)[:150]})"
        if problem:
            raise CheckpointError(f"{path}: the carried recurrent state does not fit: {problem}")

    def _load_optimizer(self, optimizer: torch.optim.Optimizer, saved_state: dict) -> None:
        """The optimiser's moments from a checkpoint; its hyper-parameters from this run's
        config (a resume may change the weight decay, say). Every moment must match its
        parameter's shape, or the first step would fail (or broadcast) far from the cause."""
        settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(saved_state)
        for group, mine in zip(optimizer.param_groups, settings):
            params = group["params"]
            group.clear()
            group.update(params=params, **mine)
        required = OPTIMIZER_STATE.get(type(optimizer), ())
        for group in optimizer.param_groups:
            for param in group["params"]:
                entry = optimizer.state.get(param)
                if entry is None:
                    continue
                if not isinstance(entry, dict) or not all(k in entry for k in required) or \
                        not all(isinstance(entry[k], torch.Tensor) for k in required if k != "step"):
                    raise ValueError(f"optimiser state lacks tensors {required}")
                step = entry.get("step", 0)
                step = float(step) if isinstance(step, (torch.Tensor, int, float)) and not isinstance(step, bool) \
                    and (not isinstance(step, torch.Tensor) or step.numel() == 1) else -1.0
                if not (0 <= step <= 2**53 and step == int(step)):
                    raise ValueError(f"optimiser step count must be a whole number >= 0, got {entry.get('step')!r}")
                for key, value in entry.items():
                    if key != "step" and isinstance(value, torch.Tensor) and value.shape != param.shape:
                        raise ValueError(f"optimiser {key} of shape {tuple(value.shape)} for a parameter "
                                         f"of shape {tuple(param.shape)}")
                    if key != "step" and not isinstance(value, (torch.Tensor, type(None))):
                        raise ValueError(f"optimiser {key} is not a tensor")


def _to_device(state: Any, device: torch.device) -> Any:
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(_to_device(s, device) for s in state)
    return state.to(device)


@contextmanager
def _stop_on_signals(loop: Loop):
    """On Ctrl-C or SIGTERM (schedulers, ``kill``), finish the current update, save a
    checkpoint and stop, so a resume is exact; a second Ctrl-C interrupts at once.
    Only the main thread may install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if loop._stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        loop._stop = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def fresh_run(run: RunConfig) -> Iterator[Loop]:
    """One run of ``run`` from scratch, as experiment scripts do it: its task made and
    prepared (``loop.task``), the run directory opened (overwritten), closed afterwards
    whatever happens. ``with fresh_run(cfg) as loop: result = loop.fit()``."""
    task = run.make_task()
    task.prepare()
    loop = Loop(run, task)
    loop.open(overwrite=True)
    try:
        yield loop
    finally:
        loop.close()
