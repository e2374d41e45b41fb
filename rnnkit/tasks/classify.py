"""Sequence classification (many-to-one): a label per sequence, cross-entropy, accuracy.

Datasets (``--dataset``):

* ``dna_motif`` (generated, no files): random A/C/G/T sequences, half with a planted
  motif at a random position; the others are checked to contain it nowhere. A model
  reading raw symbols must find it wherever it is.
* ``sst`` (Stanford Sentiment Treebank, ``$RNNKIT_DATA/sst``): each tree's sentence
  and its root label; ``--granularity sst5`` (very negative .. very positive) or
  ``sst2`` (negative / positive, neutral sentences dropped, as is standard).
* ``fsdd`` (Free Spoken Digit Dataset, ``$RNNKIT_DATA/fsdd``): spoken digits 0-9 as
  log-mel features ``(T, n_mels)`` (25 ms windows, 10 ms hop; :mod:`rnnkit.data.audio`),
  the model reading vectors, not ids. The official split (test: takes 0-4) or, with
  ``--heldout-speaker NAME``, all of one speaker as test (:mod:`rnnkit.data.fsdd`);
  ``--spec-augment`` masks time and frequency bands of training inputs, ``--speed-perturb S``
  time-stretches them by a factor in [1 - S, 1 + S]; ``--feature-norm`` standardises each
  mel channel of an utterance (``channel``) or the utterance as a whole (``utterance``).

Batches hold sequences of similar length (bucketed, shuffled per epoch from the run's
seed), padded, with their lengths: the model stops at each length.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import pad_batch
from ..data.registry import resolve
from ..data.vocab import Vocab
from ..data.fsdd import pad_features, spec_augment_batch
from ..errors import CheckpointError, ConfigError
from ..options import option, require
from ..train.task import Panel, Plan, StepOutput, Task
from .examples import length_buckets

DATASETS = ("dna_motif", "sst", "fsdd")
BASES = "ACGT"
FEATURE_NORMS = ("channel", "utterance")


@dataclass(frozen=True)
class ClassifyOptions:
    dataset: str = option("dna_motif", "what to classify: " + ", ".join(DATASETS))
    data_dir: str | None = option(None, "folder holding the dataset files (default $RNNKIT_DATA)")
    granularity: str = option("sst2", "sst: sst5 (five classes) or sst2 (binary, neutral dropped)")
    level: str = option("word", "sst: read words, or characters (the sentence as one string of characters)")
    lowercase: bool = option(True, "sst: lowercase the words")
    min_freq: int = option(1, "sst: keep words seen at least this often in training (others -> <unk>)")
    seq_len: int = option(100, "dna_motif: sequence length")
    motif: str = option("TATAATGC", "dna_motif: the planted motif (A/C/G/T)")
    train_size: int = option(8_000, "dna_motif: training sequences")
    valid_size: int = option(1_000, "dna_motif: validation sequences")
    test_size: int = option(2_000, "dna_motif: test sequences")
    data_seed: int = option(1234, "dna_motif: seed of the generated splits")
    heldout_speaker: str = option("", "fsdd: test on this speaker, train on the others ('' = official split)")
    spec_augment: bool = option(False, "fsdd: SpecAugment (2 time masks of 5 frames, 2 of 5 mel channels) "
                                "on training inputs")
    speed_perturb: float = option(0.0, "fsdd: stretch each training input in time by a factor drawn uniformly "
                                  "from [1 - s, 1 + s] (0 = off); speaking-rate augmentation")
    feature_norm: str = option("channel", "fsdd: per-utterance standardisation of the log-mels: channel (each "
                               "channel over time) or utterance (one mean and std: keeps the spectral shape)")
    n_mels: int = option(40, "fsdd: log-mel channels (25 ms windows, 10 ms hop)")
    feature_cache: str = option("~/.cache/rnnkit/features", "fsdd: folder of cached log-mel features ('' = none)")

    def __post_init__(self) -> None:
        checks = [(self.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {self.dataset!r}"),
                  (self.level in ("word", "char"), f"level must be word or char, got {self.level!r}"),
                  (self.granularity in ("sst2", "sst5"), f"granularity must be sst2 or sst5, got {self.granularity!r}"),
                  (self.min_freq >= 1, f"min_freq must be >= 1, got {self.min_freq}"),
                  (self.motif != "" and set(self.motif) <= set(BASES), f"motif must be A/C/G/T letters, got {self.motif!r}"),
                  (len(self.motif) <= self.seq_len, f"motif ({len(self.motif)}) longer than seq_len {self.seq_len}"),
                  (self.n_mels >= 1, f"n_mels must be >= 1, got {self.n_mels}"),
                  (not self.heldout_speaker or self.dataset == "fsdd", "heldout_speaker applies to dataset fsdd only"),
                  (not self.spec_augment or self.dataset == "fsdd", "spec_augment applies to dataset fsdd only"),
                  (self.feature_norm in FEATURE_NORMS,
                   f"feature_norm must be one of {FEATURE_NORMS}, got {self.feature_norm!r}"),
                  (0.0 <= self.speed_perturb < 1.0, f"speed_perturb must be in [0, 1), got {self.speed_perturb}"),
                  (not self.speed_perturb or self.dataset == "fsdd", "speed_perturb applies to dataset fsdd only")]
        checks += [(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
                   for k in ("seq_len", "train_size", "valid_size", "test_size")]
        require(checks, "config: [train]")


def dna_motif(n: int, seq_len: int, motif: str, generator: torch.Generator) -> tuple[list[list[int]], list[int]]:
    """``n`` sequences of base ids (A=0 C=1 G=2 T=3) and labels: 1 = the motif planted at a
    uniformly random position, 0 = the motif nowhere (rows that hold it by chance are redrawn)."""
    m = torch.tensor([BASES.index(b) for b in motif])
    x = torch.randint(0, 4, (n, seq_len), generator=generator)
    y = torch.arange(n) % 2
    y = y[torch.randperm(n, generator=generator)]
    windows = x.unfold(1, len(motif), 1)                                   # (n, positions, k)
    while True:                                                            # negatives: redraw chance hits
        hit = (windows == m).all(-1).any(-1) & (y == 0)
        if not hit.any():
            break
        x[hit] = torch.randint(0, 4, (int(hit.sum()), seq_len), generator=generator)
        windows = x.unfold(1, len(motif), 1)
    pos = torch.randint(0, seq_len - len(motif) + 1, (n,), generator=generator)
    for i in torch.nonzero(y).flatten().tolist():
        x[i, pos[i]:pos[i] + len(motif)] = m
    return x.tolist(), y.tolist()



def stretch_batch(x: Tensor, lengths: Tensor, max_stretch: float,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Time-stretch each row's real frames of ``x`` ``(B, T, C)`` by its own factor drawn
    uniformly from ``[1 - max_stretch, 1 + max_stretch]`` (linear interpolation between
    frames, ends kept), re-padded: ``(x' (B, T', C), lengths' (B,))``. A faster or slower
    speaker gives about the same frames, stretched; cheaper than resampling the audio."""
    factors = 1 + max_stretch * (2 * torch.rand(len(lengths), generator=generator) - 1)
    rows = []
    for row, n, f in zip(x, lengths.tolist(), factors.tolist()):
        size = max(2, round(n * f)) if n > 1 else 1
        frames = row[:n].T.unsqueeze(0)                                       # (1, C, n)
        rows.append(F.interpolate(frames, size=size, mode="linear", align_corners=True)[0].T if n > 1
                    else frames[0].T)
    out, new = pad_features(rows)
    return out.to(x.device), new.to(lengths.device)


class ClassifyTask(Task):
    """One label per sequence; batches ``(ids (B, T), lengths (B,), labels (B,))``."""

    name = "classify"
    Options = ClassifyOptions
    model = "sequence_classifier"
    model_placeholders = {"num_classes": 2, "vocab_size": 4}
    select = ("accuracy", "max")
    count_key = "sequences"
    train_defaults = {"out": "runs/classify", "lr": 2e-3, "epochs": 10}
    eval_batch = 256

    def __init__(self, options: ClassifyOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.vocab: Vocab | None = None
        self.labels: list[str] = []
        self.splits: dict[str, tuple[list[list[int]], list[int]]] = {}

    # --- data ---------------------------------------------------------------------
    def prepare(self) -> None:
        o = self.options
        if o.dataset == "dna_motif":
            self.labels = ["no motif", "motif"]
            for offset, split in enumerate(("train", "valid", "test")):
                g = torch.Generator().manual_seed(o.data_seed * 3 + offset)
                self.splits[split] = dna_motif(getattr(o, f"{split}_size"), o.seq_len, o.motif, g)
            return
        if o.dataset == "fsdd":
            self._prepare_fsdd()
            return
        self._prepare_sst()

    def _prepare_fsdd(self) -> None:
        from ..data import fsdd
        from ..data.audio import FeatureSettings, standardize

        o = self.options
        files = resolve("fsdd", o.data_dir)
        splits = fsdd.split_recordings(fsdd.read_recordings(files["recordings"]), o.heldout_speaker)
        settings = FeatureSettings(n_mels=o.n_mels, normalize=o.feature_norm == "channel")
        cache = Path(o.feature_cache).expanduser() if o.feature_cache else None
        self.labels = [str(d) for d in range(10)]
        norm = standardize if o.feature_norm == "utterance" else (lambda f: f)
        self.splits = {split: ([norm(f) for f in fsdd.features(recs, settings, cache)], [r.digit for r in recs])
                       for split, recs in splits.items()}

    def _prepare_sst(self) -> None:
        from ..data.trees import leaves, read_trees, sst2_label

        o = self.options
        files = resolve("sst", o.data_dir)
        self.labels = ["negative", "positive"] if o.granularity == "sst2" else \
            ["very negative", "negative", "neutral", "positive", "very positive"]
        sentences: dict[str, tuple[list[list[str]], list[int]]] = {}
        for split, path in files.items():
            words, labels = [], []
            for tree in read_trees(path):
                label = sst2_label(tree.label) if o.granularity == "sst2" else tree.label
                if label is None:
                    continue
                tokens = [w.lower() if o.lowercase else w for w in leaves(tree)]
                words.append(tokens if o.level == "word" else list(" ".join(tokens)))
                labels.append(label)
            sentences[split] = (words, labels)
        if self.vocab is None:
            self.vocab = Vocab.build((w for s in sentences["train"][0] for w in s), min_freq=o.min_freq)
        self.splits = {split: ([self.vocab.encode(s) for s in words], labels)
                       for split, (words, labels) in sentences.items()}

    def model_fields(self) -> dict[str, Any]:
        if self.options.dataset == "fsdd":   # log-mel vectors in, not ids
            return {"num_classes": 10, "vocab_size": 0, "input": "features", "input_size": self.options.n_mels}
        vocab = len(self.vocab) if self.vocab is not None else len(BASES)
        return {"num_classes": len(self.labels) or 2, "vocab_size": vocab}

    def model_config(self):
        from ..models import MODELS

        fields = self.model_fields()
        given = self.model_options.get("input", "embedding")
        # the run config always holds the default 'embedding': only another id encoding is a conflict
        if "input" in fields and given not in ("embedding", fields["input"]):
            raise ConfigError(f"dataset {self.options.dataset!r} gives feature vectors: the model input must be "
                              f"'features', got {given!r}")
        return MODELS[self.model].config(**{**self.model_options, **fields})

    def batches(self, plan: Plan) -> list[tuple[Tensor, Tensor, Tensor]]:
        ids, labels = self.splits[plan.split]
        groups = length_buckets([len(s) for s in ids], plan, self.eval_batch)
        pad = self.vocab.pad_id if self.vocab is not None else 0
        out = []
        for g in groups:
            x, n = pad_features([ids[i] for i in g]) if self.options.dataset == "fsdd" else \
                pad_batch([ids[i] for i in g], pad)
            out.append((x.to(plan.device), n, torch.tensor([labels[i] for i in g], device=plan.device)))
        return out

    # --- one batch ----------------------------------------------------------------
    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], state: Any = None) -> StepOutput:
        x, lengths, y = batch
        if model.training and (self.options.speed_perturb or self.options.spec_augment):
            g = self.clock.generator()                 # one stream: stretch and masks drawn independently
            if self.options.speed_perturb:
                x, lengths = stretch_batch(x, lengths, self.options.speed_perturb, g)
            if self.options.spec_augment:
                x = spec_augment_batch(x, lengths, g)
        logits = model(x, lengths).float()
        nll = F.cross_entropy(logits, y, reduction="sum")
        correct = int((logits.argmax(-1) == y).sum())
        return StepOutput(nll / len(y), {"nll": nll.item(), "correct": correct, "sequences": len(y)})

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = sums["sequences"]
        return {"loss": sums["nll"] / n, "accuracy": sums["correct"] / n, "sequences": int(n)}

    def describe(self, m: dict[str, float]) -> str:
        return f"accuracy {m['accuracy']:.2%} (loss {m['loss']:.4f})"

    def summary(self) -> str:
        n = {k: len(v[1]) for k, v in self.splits.items()}
        o = self.options
        what = o.dataset + (f" ({o.granularity})" if o.dataset == "sst" else "") + \
            (f" (held-out speaker {o.heldout_speaker})" if o.heldout_speaker else "")
        vocab = f", vocabulary {len(self.vocab):,}" if self.vocab is not None else ""
        return (f"classify {what}: {n['train']:,} train / {n['valid']:,} valid / {n['test']:,} test sequences, "
                f"{len(self.labels)} classes{vocab}")

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """The majority class of the training split."""
        train = self.splits["train"][1]
        major = max(set(train), key=train.count)

        def majority(split: str) -> dict[str, float]:
            y = self.splits[split][1]
            return self.metrics({"nll": float("nan"), "correct": sum(v == major for v in y), "sequences": len(y)})
        return {"name": f"majority class ({self.labels[major]})", "valid": majority("valid"), "test": majority("test")}

    def panels(self, model: nn.Module, limit: int = 2000) -> list[Panel]:
        """The confusion matrix on (up to ``limit`` sequences of) the validation split:
        rows the true class, columns the predicted one."""
        k = len(self.labels)
        counts = torch.zeros(k, k, dtype=torch.long)
        device = next(model.parameters()).device
        seen = 0
        for x, lengths, y in self.batches(Plan(split="valid", batch_size=self.eval_batch, device=device)):
            pred = model(x, lengths).argmax(-1)
            counts += torch.bincount((y * k + pred).cpu(), minlength=k * k).view(k, k)
            seen += len(y)
            if seen >= limit:
                break
        return [Panel.heatmap(f"confusion matrix ({seen:,} validation sequences)", counts, x_labels=self.labels,
                              y_labels=self.labels, xlabel="predicted", ylabel="true")]

    # --- what the task learned from data -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_dict() if self.vocab is not None else None, "labels": list(self.labels)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("labels"), list):
            raise CheckpointError("the checkpoint has no label list for its classifier")
        self.labels = [str(v) for v in state["labels"]]
        self.vocab = Vocab.from_dict(state["vocab"]) if state.get("vocab") is not None else None

    def export(self, directory) -> None:
        if self.vocab is not None:
            self.vocab.save(directory / "vocab.json")
