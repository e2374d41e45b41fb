"""Sequence tagging (many-to-many, one tag per word): named entities and parts of speech.

Datasets (``--dataset``, files under ``$RNNKIT_DATA``):

* ``conll2003``: CoNLL-2003 English NER (``word POS chunk NER`` columns, IOB1 tags),
  converted to ``--tag-scheme`` (BIO or IOBES) for training; entity precision, recall
  and F1 come from ``seqeval``'s span extraction (micro-averaged over entities, exact
  span and type match), token accuracy beside them.
* ``ud-ewt``: Universal Dependencies English-EWT, the ``--field`` column (UPOS by
  default); token accuracy.
* ``conll`` / ``conllu``: your own files, ``train``, ``valid`` and ``test`` ``.txt``
  (CoNLL columns: the word first, the tag last; entity tags in ``--source-scheme``) or
  ``.conllu`` in ``--data-dir``.

Batches hold sentences of similar length: ``(words (B, T), chars (B, T, L), tags (B, T),
mask (B, T))``. The loss is the CRF's (or the softmax's) negative log-likelihood per
sentence, as Lample et al. 2016 train.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.conll import CONLLU_FIELDS, Sentence, convert_scheme, read_conll, read_conllu
from ..data.registry import resolve
from ..errors import CheckpointError, DataError
from ..models.tagger import PAD, UNK, build_indices, encode_batch
from ..nn.crf import SCHEMES
from ..options import option, require
from ..train.task import Plan, StepOutput, Task
from .examples import GroupBatches, length_buckets

DATASETS = ("conll2003", "ud-ewt", "conll", "conllu")
SPLITS = ("train", "valid", "test")
TAG_SCHEMES = ("BIO", "IOBES")
MAX_WORD_LEN = 20   # characters per word the char encoder reads (longer words: their first 20)


@dataclass(frozen=True)
class TagOptions:
    dataset: str = option("conll2003", "what to tag: " + ", ".join(DATASETS))
    data_dir: str | None = option(None, "folder holding the dataset files (default $RNNKIT_DATA)")
    tag_scheme: str = option("IOBES", "entity tags trained as BIO or IOBES (converted from --source-scheme)")
    source_scheme: str = option("IOB1", "conll: the scheme of the files' entity tags (CoNLL-2003's is IOB1)")
    entities: bool = option(True, "conll: the tags are entity tags (scored by entity F1); else plain labels")
    field: str = option("upos", "ud-ewt: the CoNLL-U column to predict: " + ", ".join(CONLLU_FIELDS))
    min_count: int = option(1, "words seen fewer times in training become <unk>")
    lowercase: bool = option(True, "look words up lowercased (characters keep their case)")

    def __post_init__(self) -> None:
        require([(self.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {self.dataset!r}"),
                 (self.tag_scheme in TAG_SCHEMES, f"tag_scheme must be one of {TAG_SCHEMES}, got {self.tag_scheme!r}"),
                 (self.source_scheme in SCHEMES, f"source_scheme must be one of {SCHEMES}, got {self.source_scheme!r}"),
                 (self.dataset not in ("conll", "conllu") or self.data_dir is not None,
                  f"dataset {self.dataset!r} reads your files: give --data-dir (train/valid/test files in it)"),
                 (self.field in CONLLU_FIELDS, f"field must be one of {CONLLU_FIELDS}, got {self.field!r}"),
                 (self.min_count >= 1, f"min_count must be >= 1, got {self.min_count}")], "config: [train]")

    @property
    def scores_entities(self) -> bool:
        return self.dataset == "conll2003" or (self.dataset == "conll" and self.entities)


def split_files(options: TagOptions) -> dict[str, Path]:
    """The three files: a registered dataset's (checked by sha256), or yours in ``data_dir``."""
    if options.dataset in ("conll", "conllu"):
        suffix = ".txt" if options.dataset == "conll" else ".conllu"
        files = {split: Path(options.data_dir) / f"{split}{suffix}" for split in SPLITS}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise DataError(f"dataset {options.dataset!r} needs train, valid and test{suffix} in {options.data_dir}; "
                            f"missing: {', '.join(missing)}")
        return files
    return resolve(options.dataset, options.data_dir)


def read_split(options: TagOptions, path) -> list[Sentence]:
    if options.dataset in ("ud-ewt", "conllu"):
        return read_conllu(path, options.field)
    source = "IOB1" if options.dataset == "conll2003" else options.source_scheme
    sentences = read_conll(path)
    if not options.scores_entities:
        return sentences
    return [Sentence(s.words, convert_scheme(s.tags, source, options.tag_scheme)) for s in sentences]


def entity_counts(gold: list[list[str]], pred: list[list[str]]) -> dict[str, int]:
    """True positives, predicted and gold entities as seqeval finds them (exact span and
    type); sums of these give seqeval's micro-averaged precision, recall and F1."""
    from seqeval.metrics.sequence_labeling import get_entities

    tp = n_pred = n_gold = 0
    for g, p in zip(gold, pred):
        gs, ps = set(get_entities(g)), set(get_entities(p))
        tp, n_pred, n_gold = tp + len(gs & ps), n_pred + len(ps), n_gold + len(gs)
    return {"tp": tp, "pred_entities": n_pred, "gold_entities": n_gold}


class TagTask(Task):
    """A tag per word; batches ``(words, chars, tags, mask)``."""

    name = "tag"
    Options = TagOptions
    model = "sequence_tagger"
    model_placeholders = {"vocab_size": 2, "num_tags": 2, "char_vocab_size": 2, "tag_names": ""}
    select = ("f1", "max")
    count_key = "sentences"
    train_defaults = {"out": "runs/tag", "batch_size": 10, "lr": 1e-3, "epochs": 20, "clip_norm": 5.0}
    eval_batch = 256

    def __init__(self, options: TagOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        if not options.scores_entities:
            self.select = ("accuracy", "max")
        self.words: dict[str, int] | None = None
        self.chars: dict[str, int] | None = None
        self.tags: dict[str, int] | None = None
        self.splits: dict[str, list[Sentence]] = {}

    def prepare(self) -> None:
        files = split_files(self.options)
        self.splits = {split: read_split(self.options, path) for split, path in files.items()}
        if self.words is None:
            self.words, self.chars, self.tags = build_indices(self.splits["train"], self.options.min_count,
                                                              self.options.lowercase)
        known = set(self.tags)
        for split in ("valid", "test"):   # a tag training never saw cannot be predicted: drop nothing, map it
            for s in self.splits[split]:
                s.tags[:] = [t if t in known else ("O" if "O" in known else next(iter(known))) for t in s.tags]

    @property
    def tag_names(self) -> list[str]:
        return sorted(self.tags, key=self.tags.get)

    def model_fields(self) -> dict[str, Any]:
        if self.words is None:
            return dict(self.model_placeholders)
        return {"vocab_size": len(self.words), "num_tags": len(self.tags), "char_vocab_size": len(self.chars),
                "tag_names": " ".join(self.tag_names)}

    def batches(self, plan: Plan) -> GroupBatches:
        sentences = self.splits[plan.split]
        groups = length_buckets([len(s) for s in sentences], plan, self.eval_batch)
        return GroupBatches(groups, lambda rows: self.encode([sentences[j] for j in rows], plan.device))

    def step(self, model: nn.Module, batch: tuple[Tensor, ...], state: Any = None) -> StepOutput:
        words, chars, tags, mask = batch
        nll = model.loss(words, chars, tags, mask)
        stats = {"nll": nll.item(), "sentences": len(words), "tokens": int(mask.sum())}
        if not model.training:
            stats.update(self._score(model.decode(words, chars, mask), tags, mask))
        return StepOutput(nll / len(words), stats)

    def _score(self, pred: Tensor, tags: Tensor, mask: Tensor) -> dict[str, int]:
        stats = {"correct": int(((pred == tags) & mask).sum())}
        if self.options.scores_entities:
            names = self.tag_names
            rows = [(row[m].tolist(), gold[m].tolist()) for row, gold, m in zip(pred, tags, mask)]
            stats.update(entity_counts([[names[i] for i in g] for _, g in rows], [[names[i] for i in p] for p, _ in rows]))
        return stats

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = {"loss": sums["nll"] / sums["sentences"], "sentences": int(sums["sentences"]),
               "tokens": int(sums["tokens"])}
        if "correct" in sums:
            out["accuracy"] = sums["correct"] / sums["tokens"]
        if "tp" in sums:
            p = sums["tp"] / sums["pred_entities"] if sums["pred_entities"] else 0.0
            r = sums["tp"] / sums["gold_entities"] if sums["gold_entities"] else 0.0
            out.update(precision=p, recall=r, f1=2 * p * r / (p + r) if p + r else 0.0)
        return out

    def describe(self, m: dict[str, float]) -> str:
        if "f1" in m:
            return f"entity F1 {m['f1']:.2%} (P {m['precision']:.2%}, R {m['recall']:.2%}), token accuracy {m['accuracy']:.2%}"
        if "accuracy" in m:
            return f"token accuracy {m['accuracy']:.2%}"
        return f"loss {m['loss']:.4f} per sentence"

    def summary(self) -> str:
        n = {k: len(v) for k, v in self.splits.items()}
        return (f"tag {self.options.dataset}: {n['train']:,} train / {n['valid']:,} valid / {n['test']:,} test "
                f"sentences, {len(self.words):,} words, {len(self.chars):,} characters, tags {' '.join(self.tag_names)}")

    def encode(self, sentences: list[Sentence], device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
        """Sentences -> ``(words, chars, tags, mask)`` with this task's indices."""
        b = encode_batch(sentences, self.words, self.chars, self.tags, device, max_word_len=MAX_WORD_LEN)
        return b["words"], b["chars"], b["tags"], b["mask"]

    @torch.no_grad()
    def tag(self, model: nn.Module, sentences: list[list[str]], batch_size: int = 64) -> list[list[str]]:
        """Tag raw tokenised sentences with a trained model (eval mode, Viterbi with a CRF)."""
        model.eval()
        device = next(model.parameters()).device
        out = []
        names = self.tag_names
        for i in range(0, len(sentences), batch_size):
            chunk = [Sentence(list(words), [names[0]] * len(words)) for words in sentences[i:i + batch_size]]
            words, chars, _, mask = self.encode(chunk, device)
            pred = model.decode(words, chars, mask)
            out += [[names[j] for j in row[m].tolist()] for row, m in zip(pred, mask)]
        return out

    @torch.no_grad()
    def panels(self, model: nn.Module, limit: int = 2000) -> list:
        """On up to ``limit`` validation sentences: precision, recall and F1 per entity type
        as seqeval reports them (the same spans as the entity F1); per-tag token accuracy
        for a task that scores no entities (POS)."""
        from ..train.task import Panel

        sentences = self.splits["valid"][:limit]
        device = next(model.parameters()).device
        names = self.tag_names
        gold, pred = [], []
        for i in range(0, len(sentences), self.eval_batch):
            words, chars, tags, mask = self.encode(sentences[i:i + self.eval_batch], device)
            for row, g, m in zip(model.decode(words, chars, mask), tags, mask):
                pred.append([names[j] for j in row[m].tolist()])
                gold.append([names[j] for j in g[m].tolist()])
        where = f"{len(sentences):,} validation sentences"
        if self.options.scores_entities:
            from seqeval.metrics import classification_report

            report = classification_report(gold, pred, output_dict=True, zero_division=0)
            rows = [[name, r["precision"], r["recall"], r["f1-score"], int(r["support"])] for name, r in report.items()]
            return [Panel.table(f"entities on {where} (seqeval)", ["entity", "precision", "recall", "F1", "support"],
                                rows)]
        counts: dict[str, list[int]] = {}
        for g, p in zip(gold, pred):
            for a, b in zip(g, p):
                n = counts.setdefault(a, [0, 0])
                n[0], n[1] = n[0] + 1, n[1] + (a == b)
        return [Panel.table(f"tags on {where}", ["tag", "tokens", "accuracy"],
                            [[t, n, c / n] for t, (n, c) in sorted(counts.items())])]

    # --- what the task learned from data -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"words": self.words, "chars": self.chars, "tags": self.tags}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ok = isinstance(state, dict) and all(isinstance(state.get(k), dict) for k in ("words", "chars", "tags"))
        if not ok or state["words"].get(PAD) != 0 or UNK not in state["words"] or not state["tags"]:
            raise CheckpointError("the checkpoint's tagger indices (words, chars, tags) are missing or malformed")
        if sorted(state["tags"].values()) != list(range(len(state["tags"]))):
            raise CheckpointError("the checkpoint's tag ids are not 0..K-1")
        self.words, self.chars, self.tags = state["words"], state["chars"], state["tags"]

