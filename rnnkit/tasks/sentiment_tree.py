"""Sentiment over parse trees (Stanford Sentiment Treebank) with recursive networks:
a label at every node, the Tree-LSTM or recursive net evaluated level by level.

Trained on the five fine-grained classes at every node (Tai et al. 2015, Socher et al.
2013); scored at the root: ``sst5_accuracy`` (five classes) and ``sst2_accuracy``
(negative vs positive on the sentences that are not neutral, the model's mass on
{0, 1} against {3, 4}), with ``node_accuracy`` over all phrases beside them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..data.registry import resolve
from ..data.trees import Tree, batch_trees, leaves, read_trees
from ..data.vocab import Vocab
from ..errors import CheckpointError
from ..options import option, require
from ..train.task import Plan, StepOutput, Task
from .examples import GroupBatches, example_order

CLASSES = 5


@dataclass(frozen=True)
class SentimentTreeOptions:
    data_dir: str | None = option(None, "folder holding sst/{train,dev,test}.txt (default $RNNKIT_DATA)")
    lowercase: bool = option(True, "lowercase the words")
    min_freq: int = option(1, "words seen fewer times in training become <unk>")

    def __post_init__(self) -> None:
        require([(self.min_freq >= 1, f"min_freq must be >= 1, got {self.min_freq}")], "config: [train]")


class SentimentTreeTask(Task):
    """Batches are lists of trees, packed level by level by the model's input (a TreeBatch)."""

    name = "sentiment_tree"
    Options = SentimentTreeOptions
    model = "tree_classifier"
    model_placeholders = {"vocab_size": 2, "num_classes": CLASSES}
    select = ("sst5_accuracy", "max")
    count_key = "trees"
    train_defaults = {"out": "runs/sentiment_tree", "batch_size": 25, "lr": 2e-3, "epochs": 10,
                      "weight_decay": 0.0}
    eval_batch = 256

    def __init__(self, options: SentimentTreeOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.vocab: Vocab | None = None
        self.splits: dict[str, list[Tree]] = {}

    def prepare(self) -> None:
        self.splits = {split: read_trees(path) for split, path in resolve("sst", self.options.data_dir).items()}
        if self.vocab is None:
            self.vocab = Vocab.build((self._word(w) for t in self.splits["train"] for w in leaves(t)),
                                     min_freq=self.options.min_freq)

    def _word(self, w: str) -> str:
        return w.lower() if self.options.lowercase else w

    def word_id(self, w: str) -> int:
        return self.vocab.stoi.get(self._word(w), self.vocab.unk_id)

    def model_fields(self) -> dict[str, Any]:
        return {"vocab_size": len(self.vocab) if self.vocab is not None else 2, "num_classes": CLASSES}

    def batches(self, plan: Plan) -> GroupBatches:
        trees = self.splits[plan.split]
        index, size = example_order(len(trees), plan, self.eval_batch)
        groups = [chunk.tolist() for chunk in index.split(size)]
        return GroupBatches(groups, lambda rows: batch_trees([trees[j] for j in rows], self.word_id).to(plan.device))

    def step(self, model: nn.Module, batch, state: Any = None) -> StepOutput:
        logits, roots = model(batch)
        labels = batch.labels
        nll = F.cross_entropy(logits.float(), labels, reduction="sum")
        stats = {"nll": nll.item(), "nodes": len(labels), "trees": len(roots)}
        if not model.training:
            stats.update(self._score(logits.detach(), labels, roots))
        return StepOutput(nll / len(roots), stats)

    @staticmethod
    def _score(logits: Tensor, labels: Tensor, roots: Tensor) -> dict[str, int]:
        root_logits, root_labels = logits[roots], labels[roots]
        p = root_logits.softmax(-1)
        polar = root_labels != 2
        positive = p[:, 3:].sum(-1) > p[:, :2].sum(-1)
        return {"node_correct": int((logits.argmax(-1) == labels).sum()),
                "root_correct": int((root_logits.argmax(-1) == root_labels).sum()),
                "binary_correct": int((positive == (root_labels > 2))[polar].sum()), "binary_trees": int(polar.sum())}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = {"loss": sums["nll"] / sums["trees"], "trees": int(sums["trees"])}
        if "root_correct" in sums:
            out.update(sst5_accuracy=sums["root_correct"] / sums["trees"],
                       sst2_accuracy=sums["binary_correct"] / max(sums["binary_trees"], 1),
                       node_accuracy=sums["node_correct"] / sums["nodes"])
        return out

    def describe(self, m: dict[str, float]) -> str:
        if "sst5_accuracy" not in m:
            return f"loss {m['loss']:.4f} per tree"
        return (f"root SST-5 {m['sst5_accuracy']:.2%}, SST-2 {m['sst2_accuracy']:.2%}, "
                f"all nodes {m['node_accuracy']:.2%}")

    def summary(self) -> str:
        n = {k: len(v) for k, v in self.splits.items()}
        return (f"SST trees: {n['train']:,} train / {n['valid']:,} valid / {n['test']:,} test, "
                f"vocabulary {len(self.vocab):,}")

    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_dict() if self.vocab is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("vocab"), dict):
            raise CheckpointError("the checkpoint has no vocabulary for its tree classifier")
        self.vocab = Vocab.from_dict(state["vocab"])

    def export(self, directory) -> None:
        if self.vocab is not None:
            self.vocab.save(directory / "vocab.json")

