"""One trainer for recurrent language models: full or truncated BPTT, clipping,
SGD with Zaremba's decay or Adam, evaluation, early stopping, checkpoints that
resume bit-exactly, and DDP through torchrun."""
from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import Vocab, batchify, shard_streams
from ..errors import CheckpointError, ConfigError
from ..models.language_model import LanguageModel, LMConfig
from . import checkpoint
from .config import RunConfig
from .distributed import DistContext, all_reduce_mean, any_rank
from .lm_data import LMData
from .metrics import MetricsLog, loss_metrics

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"


@dataclass
class Progress:
    """Where training stands; all of it goes into the checkpoint."""

    step: int = 0
    epoch: int = 1
    window: int = 0                 # index of the next TBPTT window in this epoch
    best_valid: float = math.inf
    bad_epochs: int = 0
    elapsed: float = 0.0            # training seconds so far, across resumes


@dataclass(frozen=True)
class Window:
    """One update: inputs ``[start, end)``, loss on targets from ``score_from``,
    state to carry taken after ``carry_at`` steps (TBPTT(k1, k2))."""

    start: int
    end: int
    score_from: int
    carry_at: int


def tbptt_windows(length: int, k1: int, k2: int) -> list[Window]:
    """Windows over a stream of ``length`` tokens for TBPTT(k1, k2) (Williams & Peng 1990):
    every k1 steps, backpropagate through the last k2. Each target is scored exactly
    once; with k1 == k2 this is the usual split into consecutive chunks."""
    windows, j = [], 0
    while True:
        start = j * k1
        end = min(start + k2, length - 1)
        score_from = start if j == 0 else start + k2 - k1
        if score_from >= end:
            return windows
        windows.append(Window(start, end, score_from, min(k1, end - start)))
        j += 1


class LMTrainer:
    """Trains a :class:`LanguageModel` on :class:`LMData` as the :class:`RunConfig` says."""

    def __init__(self, run: RunConfig, data: LMData, ctx: DistContext = DistContext()) -> None:
        self.run, self.cfg, self.data, self.ctx = run, run.train, data, ctx
        self.device = torch.device(self.cfg.device)
        if self.cfg.batch_size % ctx.world_size:
            raise ConfigError(f"batch_size={self.cfg.batch_size} must be divisible by the "
                              f"{ctx.world_size} processes")
        torch.manual_seed(self.cfg.seed)
        self.model = LanguageModel(run.model.build(len(data.vocab))).to(self.device)
        self.net: nn.Module = self.model
        if ctx.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.local_rank] if self.device.type == "cuda" else None)
        self.optimizer = self._make_optimizer()
        streams = batchify(data.train, self.cfg.batch_size)
        self.streams = shard_streams(streams, ctx.rank, ctx.world_size).to(self.device)
        k2 = self.cfg.bptt
        self.windows = tbptt_windows(self.streams.shape[1], self.cfg.bptt_k1 or k2, k2)
        self.progress = Progress()
        self.hidden: Any = None
        self.out = Path(self.cfg.out)
        self.log = MetricsLog(self.out / "metrics.jsonl" if ctx.is_main else None)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def lr_for_epoch(self, epoch: int) -> float:
        """Zaremba et al.: constant for ``lr_decay_start`` epochs, then times ``lr_decay`` per epoch."""
        return self.cfg.lr * self.cfg.lr_decay ** max(0, epoch - self.cfg.lr_decay_start)

    # --- one update ------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, w: Window) -> tuple[float, float]:
        """One TBPTT update; returns (mean loss in nats, gradient norm before clipping)."""
        self.net.train()
        x = self.streams[:, w.start:w.end]
        y = self.streams[:, w.start + 1:w.end + 1]
        carry = None
        if w.carry_at < x.shape[1]:  # k1 < k2: the next window starts k1 steps in
            with torch.no_grad(), self._autocast():
                _, carry = self.model(x[:, :w.carry_at], self.hidden)
        with self._autocast():
            logits, hidden = self.net(x, self.hidden)
            s = w.score_from - w.start
            loss = F.cross_entropy(logits[:, s:].reshape(-1, logits.shape[-1]).float(), y[:, s:].reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        (loss * (y.shape[1] - s) if self.cfg.sum_over_time else loss).backward()
        norm = self._clip()
        self.optimizer.step()
        self.hidden = LanguageModel.detach_state(carry if carry is not None else hidden)
        return loss.item(), norm

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

    # --- evaluation ------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, ids: Tensor, batch_size: int = 10) -> dict[str, float]:
        """Mean loss over ``ids`` with the state carried across chunks."""
        self.model.eval()
        streams = batchify(ids, max(1, min(batch_size, len(ids) // 2))).to(self.device)
        total, count, hidden = 0.0, 0, None
        for start in range(0, streams.shape[1] - 1, self.cfg.bptt):
            end = min(start + self.cfg.bptt, streams.shape[1] - 1)
            with self._autocast():
                logits, hidden = self.model(streams[:, start:end], hidden)
            y = streams[:, start + 1:end + 1]
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                     reduction="sum").item()
            count += y.numel()
        return {**loss_metrics(total / count, self.data.level), "tokens": count}

    # --- the loop --------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until the epochs, ``max_steps``, ``max_minutes`` or early stopping end it;
        then evaluate the best weights on valid and test. Returns the final metrics."""
        cfg, p = self.cfg, self.progress
        self._t_start = t_start = time.perf_counter() - p.elapsed
        stopped = None
        self._stop = False
        with _stop_on_signals(self):
            while p.epoch <= cfg.epochs and stopped is None:
                stopped = self._run_epoch(t_start)
                if stopped is None:
                    stopped = self._end_epoch()
        self.save_checkpoint()
        if stopped == "interrupted":  # Ctrl-C or a scheduler's SIGTERM: the work done is saved
            raise KeyboardInterrupt(f"training interrupted at step {p.step}; checkpoint saved")
        return self._final(stopped or "epochs")

    def _run_epoch(self, t_start: float) -> str | None:
        cfg, p = self.cfg, self.progress
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_for_epoch(p.epoch)
        bar = tqdm(total=len(self.windows), initial=p.window, desc=f"epoch {p.epoch}/{cfg.epochs}",
                   disable=not (cfg.progress and self.ctx.is_main), dynamic_ncols=True, leave=False)
        tokens, t0, loss_sum, n = 0, time.perf_counter(), 0.0, 0
        with bar:
            while p.window < len(self.windows):
                w = self.windows[p.window]
                loss, norm = self.train_step(w)
                p.window += 1
                p.step += 1
                loss = all_reduce_mean(loss, self.ctx, self.device)
                loss_sum, n = loss_sum + loss, n + 1
                tokens += (w.end - w.score_from) * self.cfg.batch_size
                tps = tokens / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{math.exp(min(loss, 50)):.1f}", tok_s=f"{tps:,.0f}")
                if p.step % cfg.log_every == 0:
                    self.log.write(split="train", step=p.step, epoch=p.epoch, loss=loss, grad_norm=norm,
                                   lr=self.optimizer.param_groups[0]["lr"], tokens_per_s=tps,
                                   mean_loss=loss_sum / n, time=time.perf_counter() - t_start)
                    loss_sum, n = 0.0, 0
                if cfg.eval_every and p.step % cfg.eval_every == 0:
                    self._validate()
                if any_rank(self._stop, self.ctx, self.device):
                    return "interrupted"
                if cfg.max_steps is not None and p.step >= cfg.max_steps:
                    return "max_steps"
                if cfg.max_minutes is not None and any_rank(
                        time.perf_counter() - t_start > 60 * cfg.max_minutes, self.ctx, self.device):
                    return "max_minutes"
        return None

    def _validate(self) -> dict[str, float]:
        """Evaluate on valid, log it, and keep the best weights."""
        m = self.evaluate(self.data.valid)
        p = self.progress
        self.log.write(split="valid", step=p.step, epoch=p.epoch, **m)
        if m["nll"] < p.best_valid:
            p.best_valid = m["nll"]
            self.save_model(self.out / BEST)
        return m

    def _end_epoch(self) -> str | None:
        p = self.progress
        m = self._validate()
        improved = m["nll"] <= p.best_valid
        p.bad_epochs = 0 if improved else p.bad_epochs + 1
        p.epoch, p.window, self.hidden = p.epoch + 1, 0, None  # fresh state each epoch
        self.save_checkpoint()
        if self.cfg.patience is not None and p.bad_epochs >= self.cfg.patience:
            return "early_stopping"
        return None

    def _final(self, reason: str) -> dict[str, Any]:
        if not (self.out / BEST).exists() or self.progress.best_valid == math.inf:
            self._validate()
        best = load_model(self.out / BEST, self.device)[0] if self.ctx.is_main else self.model
        current = self.model
        self.model = best
        try:
            valid, test = self.evaluate(self.data.valid), self.evaluate(self.data.test)
        finally:
            self.model = current
        result = {"stopped_by": reason, "steps": self.progress.step, "epochs_completed": self.progress.epoch - 1,
                  "train_seconds": self.progress.elapsed, "valid": valid, "test": test}
        self.log.write(split="final", **{k: v for k, v in result.items()})
        return result

    # --- persistence -----------------------------------------------------------------
    def save_model(self, path: Path) -> None:
        """Weights and what is needed to rebuild the model (config, vocabulary)."""
        if not self.ctx.is_main:
            return
        checkpoint.save(path, {"kind": "lm-model", "lm_config": self.model.config.to_dict(),
                               "vocab": self.data.vocab.to_dict(), "level": self.data.level,
                               "model": self.model.state_dict()})
        self.data.vocab.save(path.parent / "vocab.json")

    def save_checkpoint(self, path: Path | None = None) -> None:
        """Everything needed to continue bit-exactly; atomic (see :mod:`checkpoint`)."""
        if hasattr(self, "_t_start"):
            self.progress.elapsed = time.perf_counter() - self._t_start
        if not self.ctx.is_main:
            return
        path = path or self.out / CHECKPOINT
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint.save(path, {
            "kind": "lm-train", "run": self.run.to_dict(), "lm_config": self.model.config.to_dict(),
            "vocab": self.data.vocab.to_dict(), "level": self.data.level,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "progress": dataclasses.asdict(self.progress), "hidden": self.hidden, "rng": rng})

    def resume(self, path: Path | None = None) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` into this trainer."""
        path = path or self.out / CHECKPOINT
        state = checkpoint.load(path)
        if state.get("kind") != "lm-train":
            raise CheckpointError(f"{path} is not a training checkpoint (kind={state.get('kind')!r})")
        ours, theirs = self.model.config.to_dict(), state["lm_config"]
        if ours != theirs:
            diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
            raise CheckpointError(f"{path} was trained with a different architecture: "
                                  + ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items()))
        if Vocab.from_dict(state["vocab"]) != self.data.vocab:
            raise CheckpointError(f"{path} was trained with a different vocabulary than this corpus gives")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        hidden = state["hidden"]
        self.hidden = None if hidden is None else (
            tuple(h.to(self.device) for h in hidden) if isinstance(hidden, tuple) else hidden.to(self.device))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


@contextmanager
def _stop_on_signals(trainer: "LMTrainer"):
    """On Ctrl-C or SIGTERM (schedulers, ``kill``), finish the current update, save a
    checkpoint and stop, so a resume is exact; a second Ctrl-C interrupts at once.
    Only the main thread may install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if trainer._stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer._stop = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[LanguageModel, Vocab, dict]:
    """Rebuild a language model from a model or training checkpoint (no code is executed)."""
    state = checkpoint.load(path)
    if state.get("kind") not in ("lm-model", "lm-train"):
        raise CheckpointError(f"{path} is not an rnnkit language-model checkpoint")
    try:
        model = LanguageModel(LMConfig(**state["lm_config"]))
        model.load_state_dict(state["model"])
    except (TypeError, RuntimeError, ConfigError) as e:
        raise CheckpointError(f"{path}: weights do not fit the stored architecture ({e})") from None
    return model.to(device).eval(), Vocab.from_dict(state["vocab"]), state
