"""Batches of independent examples (the synthetic and classification tasks): the row
order of a split for one process, and batches taken from tensors by it; and
:class:`GroupBatches`, batches built on demand from groups of example indices."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data.batching import bucket_indices
from ..train.task import Plan, Task


def example_order(n: int, plan: Plan, eval_batch: int) -> tuple[Tensor, int]:
    """``(row indices for this process, its batch size)``. Evaluation: every row in order.
    Training: a fresh shuffle each epoch (from the run's seed, the same in every
    process), whole global batches only, each process taking its slice of each."""
    if plan.split != "train":
        return torch.arange(n), eval_batch
    g = torch.Generator().manual_seed(plan.seed * 1_000_003 + plan.epoch)
    order = torch.randperm(n, generator=g)
    usable = n - n % plan.batch_size
    local = plan.batch_size // plan.world_size
    order = order[:usable].view(-1, plan.batch_size)[:, plan.rank * local:(plan.rank + 1) * local]
    return order.reshape(-1), local


def length_buckets(lengths: Sequence[int], plan: Plan, eval_batch: int) -> list[list[int]]:
    """Row indices per batch, rows of similar length together (little padding).
    Training: bucketed afresh each epoch from the run's seed, whole global batches only,
    each process taking its slice of each; evaluation: every row, by length."""
    if plan.split != "train":
        return bucket_indices(lengths, eval_batch, False)
    groups = bucket_indices(lengths, plan.batch_size, True, plan.seed * 1_000_003 + plan.epoch)
    local = plan.batch_size // plan.world_size
    return [g[plan.rank * local:(plan.rank + 1) * local] for g in groups if len(g) == plan.batch_size]


class GroupBatches(Sequence):
    """``make_batch(group)`` for each group of example indices, built only when asked for.

    Why: the loop goes through a split's batches once per epoch, by index (a resumed run
    starts mid-epoch), and needs ``len()`` for its progress; encoding, padding or packing
    every batch up front would cost memory and time for batches a resumed epoch skips.
    So this holds just the groups (e.g. from :func:`length_buckets`) and builds batch
    ``i`` afresh each time it is indexed: iterating again gives the same batches, in the
    groups' order. Any shuffling belongs to whoever made the groups; none happens here."""

    def __init__(self, groups: Sequence[Sequence[int]], make_batch: Callable[[Sequence[int]], Any]) -> None:
        self.groups, self.make_batch = groups, make_batch

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.make_batch(self.groups[i])


class IndexBatches(Sequence):
    """Batches of ``(x, y)`` taken from tensors by lists of row indices."""

    def __init__(self, x: Tensor, y: Tensor, index: Tensor, batch_size: int, device: torch.device) -> None:
        self.x, self.y, self.index, self.batch_size, self.device = x, y, index, batch_size, device

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        rows = self.index[i * self.batch_size:(i + 1) * self.batch_size]
        return self.x[rows].to(self.device), self.y[rows].to(self.device)


class ExampleTask(Task):
    """A task of independent ``(x, y)`` examples held in ``self.splits[split]``: batches
    by :func:`example_order`; model fields are the declared sizes (nothing data-derived)."""

    eval_batch = 1000

    def __init__(self, options: Any, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    def generate_splits(self, make: Callable[[int, torch.Generator], tuple[Tensor, Tensor]]) -> None:
        """Each split from its own generator seeded by the ``data_seed`` option, sized by
        ``train_size`` / ``valid_size`` / ``test_size``: the same seed, the same data."""
        o = self.options
        for offset, split in enumerate(("train", "valid", "test")):
            g = torch.Generator().manual_seed(o.data_seed * 3 + offset)
            self.splits[split] = make(getattr(o, f"{split}_size"), g)

    def model_fields(self) -> dict:
        return dict(self.model_placeholders)

    def batches(self, plan: Plan) -> IndexBatches:
        x, y = self.splits[plan.split]
        index, size = example_order(len(y), plan, self.eval_batch)
        return IndexBatches(x, y, index, size, plan.device)
