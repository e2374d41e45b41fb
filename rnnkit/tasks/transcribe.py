"""Connected-digit transcription with CTC on FSDD (``$RNNKIT_DATA/fsdd``).

Utterances: each joins 2-7 (``--min-digits`` .. ``--max-digits``) recordings of **one**
speaker, drawn with replacement from that speaker's recordings of the split, with
silence between them (uniform in ``[pause_ms / 2, 2 * pause_ms]``) and before and after
(uniform in ``[0, pause_ms]``); :func:`compose`. Training and validation utterances are made only of
training-side recordings (takes 5-9 for validation, the rest for training), test
utterances only of test recordings (:func:`rnnkit.data.fsdd.split_recordings`: the
official takes 0-4, or every take of ``--heldout-speaker``). Everything is drawn from
``torch.Generator(data_seed + split offset)``, so the utterances are the same in every run.

Features: 40 log-mel channels (25 ms / 10 ms, :mod:`rnnkit.data.audio`) of the joined
waveform, standardised per utterance. Model (:mod:`rnnkit.models.ctc`): a recurrent stack
with a linear layer to the ten digits and blank, trained with :class:`torch.nn.CTCLoss`.

Metrics: ``loss`` (CTC negative log-likelihood per utterance) and, on valid/test, word
and character error rates (jiwer, on the digits written as words, ``"three one four"``)
of best-path decoding (``wer_greedy``, ``cer_greedy``) and of prefix beam search of width
``--beam`` (``wer_beam``, ``cer_beam``); ``wer``/``cer`` are the beam search's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.audio import FeatureSettings, log_mel, normalize
from ..data.fsdd import (Recording, pad_features, read_recordings, spec_augment_batch, split_recordings,
                         waveforms)
from ..data.registry import resolve
from ..errors import CheckpointError
from ..models.ctc import BLANK
from ..models.ctc_decode import decode_batch
from ..options import option, require
from ..train.task import Panel, Plan, StepOutput, Task
from .examples import GroupBatches, length_buckets

#: label ``d + 1`` is digit ``d``; 0 is the CTC blank
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_OFFSET = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class TranscribeOptions:
    data_dir: str | None = option(None, "folder holding the dataset files (default $RNNKIT_DATA)")
    heldout_speaker: str = option("", "fsdd: test on this speaker, train on the others ('' = official split)")
    spec_augment: bool = option(False, "fsdd: SpecAugment (2 time masks of 5 frames, 2 of 5 mel channels) "
                                "on training inputs")
    n_mels: int = option(40, "fsdd: log-mel channels (25 ms windows, 10 ms hop)")
    min_digits: int = option(2, "transcribe: fewest recordings joined into one utterance")
    max_digits: int = option(7, "transcribe: most recordings joined into one utterance")
    pause_ms: float = option(100.0, "transcribe: pauses between digits are uniform in [pause_ms / 2, 2 * pause_ms]")
    train_utterances: int = option(6000, "transcribe: training utterances")
    valid_utterances: int = option(500, "transcribe: validation utterances")
    test_utterances: int = option(1000, "transcribe: test utterances")
    data_seed: int = option(1234, "transcribe: seed of the composed utterances")
    beam: int = option(8, "transcribe: width of the prefix beam search scored at evaluation")

    def __post_init__(self) -> None:
        checks = [(1 <= self.min_digits <= self.max_digits,
                   f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}"),
                  (self.pause_ms >= 0, f"pause_ms must be >= 0, got {self.pause_ms}"),
                  (self.n_mels >= 1, f"n_mels must be >= 1, got {self.n_mels}"),
                  (self.beam >= 1, f"beam must be >= 1, got {self.beam}")]
        checks += [(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
                   for k in ("train_utterances", "valid_utterances", "test_utterances")]
        require(checks, "config: [train]")


def compose(waves: list[Tensor], recordings: list[Recording], n: int, options: TranscribeOptions, rate: int,
            generator: torch.Generator) -> list[tuple[Tensor, list[int]]]:
    """``n`` utterances ``(samples (N,), digits)``, each of one speaker's recordings
    (``waves[i]`` is ``recordings[i]``) joined with silences (see the module docstring)."""
    by_speaker: dict[str, list[int]] = {}
    for i, r in enumerate(recordings):
        by_speaker.setdefault(r.speaker, []).append(i)
    speakers = sorted(by_speaker)
    pause = options.pause_ms * rate / 1000

    def silence(lo: float, hi: float) -> Tensor:
        return torch.zeros(int(lo + (hi - lo) * float(torch.rand((), generator=generator))))

    out = []
    for _ in range(n):
        pool = by_speaker[speakers[int(torch.randint(len(speakers), (), generator=generator))]]
        k = int(torch.randint(options.min_digits, options.max_digits + 1, (), generator=generator))
        picks = [pool[j] for j in torch.randint(len(pool), (k,), generator=generator).tolist()]
        parts = [silence(0, pause)]
        for j in picks:
            parts += [waves[j], silence(pause / 2, 2 * pause)]
        parts[-1] = silence(0, pause)
        out.append((torch.cat(parts), [recordings[j].digit for j in picks]))
    return out


def to_text(digits: list[int]) -> str:
    """Digits as the words jiwer scores: ``[3, 1] -> "three one"``."""
    return " ".join(WORDS[d] for d in digits)


class TranscribeTask(Task):
    """Digit strings from speech; batches ``(features (B, T, n_mels), lengths (B,), targets (sum L,),
    target_lengths (B,))`` with targets the labels ``digit + 1``."""

    name = "transcribe"
    Options = TranscribeOptions
    model = "ctc"
    model_placeholders = {"num_labels": 11, "input_size": 40}
    select = ("wer", "min")
    count_key = "utterances"
    train_defaults = {"out": "runs/transcribe", "lr": 2e-3, "epochs": 15}
    eval_batch = 64

    def __init__(self, options: TranscribeOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.splits: dict[str, list[tuple[Tensor, list[int]]]] = {}
        self.ctc = nn.CTCLoss(blank=BLANK, reduction="sum", zero_infinity=True)

    # --- data ---------------------------------------------------------------------
    def settings(self) -> FeatureSettings:
        return FeatureSettings(n_mels=self.options.n_mels)

    def features(self, samples: Tensor) -> Tensor:
        """``(N,)`` samples at the feature rate -> standardised log-mel ``(T, n_mels)``."""
        s = self.settings()
        return normalize(log_mel(samples, s.rate, s.n_mels, s.win_ms, s.hop_ms))

    def prepare(self) -> None:
        files = resolve("fsdd", self.options.data_dir)
        self.prepare_from(files["recordings"])

    def prepare_from(self, tar: str | Path) -> None:
        """Compose the utterances from the recordings in the tar at ``tar``."""
        o, rate = self.options, self.settings().rate
        splits = split_recordings(read_recordings(tar), o.heldout_speaker)
        for split, recs in splits.items():
            g = torch.Generator().manual_seed(o.data_seed * 3 + SPLIT_OFFSET[split])
            utterances = compose(waveforms(recs, rate), recs, getattr(o, f"{split}_utterances"), o, rate, g)
            self.splits[split] = [(self.features(x), digits) for x, digits in utterances]

    def model_fields(self) -> dict[str, Any]:
        return {"num_labels": len(WORDS) + 1, "input_size": self.options.n_mels}

    def batches(self, plan: Plan) -> GroupBatches:
        rows = self.splits[plan.split]
        groups = length_buckets([len(x) for x, _ in rows], plan, self.eval_batch)
        return GroupBatches(groups, lambda g: self.encode([rows[i] for i in g], plan.device))

    def encode(self, rows: list[tuple[Tensor, list[int]]], device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
        x, lengths = pad_features([f for f, _ in rows])
        targets = torch.tensor([d + 1 for _, digits in rows for d in digits], dtype=torch.long)
        target_lengths = torch.tensor([len(digits) for _, digits in rows], dtype=torch.long)
        return x.to(device), lengths, targets, target_lengths

    # --- one batch ----------------------------------------------------------------
    def step(self, model: nn.Module, batch: tuple[Tensor, ...], state: Any = None) -> StepOutput:
        x, lengths, targets, target_lengths = batch
        if model.training and self.options.spec_augment:
            x = spec_augment_batch(x, lengths, self.clock.generator())
        log_probs, out_lengths = model(x, lengths)                            # (B, T', C)
        nll = self.ctc(log_probs.transpose(0, 1), targets.to(log_probs.device), out_lengths, target_lengths)
        stats = {"nll": nll.item(), "utterances": len(lengths)}
        if not model.training:
            refs = [to_text(t) for t in self._split_targets(targets, target_lengths)]
            for how, beam in (("greedy", None), ("beam", self.options.beam)):
                hyps = [to_text([c - 1 for c in h]) for h in decode_batch(log_probs, out_lengths, beam)]
                stats.update({f"{how}_{k}": v for k, v in error_counts(refs, hyps).items()})
        return StepOutput(nll / len(lengths), stats)

    @staticmethod
    def _split_targets(targets: Tensor, target_lengths: Tensor) -> list[list[int]]:
        return [(t - 1).tolist() for t in torch.split(targets.cpu(), target_lengths.tolist())]

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = sums["utterances"]
        m = {"loss": sums["nll"] / n, "utterances": int(n)}
        if "greedy_word_errors" in sums:
            for how in ("greedy", "beam"):
                m[f"wer_{how}"] = sums[f"{how}_word_errors"] / sums[f"{how}_words"]
                m[f"cer_{how}"] = sums[f"{how}_char_errors"] / sums[f"{how}_chars"]
                m[f"utterance_error_{how}"] = sums[f"{how}_wrong_utterances"] / n
            m["wer"], m["cer"] = m["wer_beam"], m["cer_beam"]
        return m

    def describe(self, m: dict[str, float]) -> str:
        if "wer" not in m:
            return f"loss {m['loss']:.4f}"
        return (f"WER {m['wer_greedy']:.2%} greedy / {m['wer_beam']:.2%} beam, CER {m['cer_greedy']:.2%} / "
                f"{m['cer_beam']:.2%} (loss {m['loss']:.4f})")

    def summary(self) -> str:
        n = {k: len(v) for k, v in self.splits.items()}
        held = f", held-out speaker {self.options.heldout_speaker}" if self.options.heldout_speaker else ""
        return (f"transcribe fsdd{held}: {n['train']:,} train / {n['valid']:,} valid / {n['test']:,} test utterances "
                f"of {self.options.min_digits}-{self.options.max_digits} digits")

    @torch.no_grad()
    def panels(self, model: nn.Module, limit: int = 8) -> list[Panel]:
        """A few validation utterances: the reference next to the greedy and beam outputs."""
        rows = self.splits["valid"][:limit]
        device = next(model.parameters()).device
        x, lengths, targets, target_lengths = self.encode(rows, device)
        log_probs, out_lengths = model(x, lengths)
        greedy = decode_batch(log_probs, out_lengths)
        beam = decode_batch(log_probs, out_lengths, self.options.beam)
        table = [["".join(map(str, d)), "".join(str(c - 1) for c in g), "".join(str(c - 1) for c in b)]
                 for (_, d), g, b in zip(rows, greedy, beam)]
        return [Panel.table("validation utterances", ["reference", "greedy", f"beam {self.options.beam}"], table)]

    def transcribe(self, model: nn.Module, samples: list[Tensor], beam: int | None = None) -> list[str]:
        """Digit strings (``"314"``) of recordings already at the feature rate (``(N,)`` each)."""
        model.eval()
        device = next(model.parameters()).device
        x, lengths = pad_features([self.features(s) for s in samples])
        with torch.no_grad():
            log_probs, out_lengths = model(x.to(device), lengths)
        return ["".join(str(c - 1) for c in h) for h in decode_batch(log_probs, out_lengths, beam)]

    # --- what the task learned from data -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"labels": ["<blank>"] + list(WORDS)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("labels") != ["<blank>"] + list(WORDS):
            raise CheckpointError("the checkpoint's label list is not the ten digits and blank of a transcriber")


def error_counts(refs: list[str], hyps: list[str]) -> dict[str, int]:
    """Word and character edit counts (jiwer) and reference sizes: sums that add over
    batches, so the error rates are corpus-level."""
    import jiwer

    w = jiwer.process_words(refs, hyps)
    c = jiwer.process_characters(refs, hyps)
    return {"word_errors": w.substitutions + w.deletions + w.insertions,
            "words": w.substitutions + w.deletions + w.hits,
            "char_errors": c.substitutions + c.deletions + c.insertions,
            "chars": c.substitutions + c.deletions + c.hits,
            "wrong_utterances": sum(r != h for r, h in zip(refs, hyps))}
