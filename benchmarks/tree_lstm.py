"""Training step (forward + backward of a loss at every node) of a TreeSentimentClassifier
with the BinaryTreeLSTM cell on CPU: the level-batched evaluation against the naive
recursion (one node at a time), same weights, same batch, in the same run,
interleaved round by round (rotating order), medians.

The batch is the first ``--trees`` (64) trees of SST dev.txt (``$RNNKIT_DATA/sst/dev.txt``,
else ``/work/shared/data/sst/dev.txt``); without it, random binary trees of SST-like
sizes (5-50 leaves). Hidden size 150 and embeddings of 300 as in Tai et al. (2015).
Packing the batch (:func:`batch_trees`, plain Python) is done once, outside the timing,
as a data loader would. ``--threads 1`` pins one thread; 0 keeps torch's default.

    python benchmarks/tree_lstm.py [--repeats 5] [--threads 1] [--out PATH]

``speedup`` = naive median time / level-batched median time.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shlex
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from rnnkit.atomic import atomic_write_text
from rnnkit.bench import environment, interleaved
from rnnkit.data.trees import IGNORE_LABEL, Tree, batch_trees, leaves, read_trees
from rnnkit.models.tree_lstm import TreeSentimentClassifier


def _isa_flags() -> dict:
    """The SIMD flags and torch's CPU capability, recorded as benchmarks/jordan.py does (its helper)."""
    spec = importlib.util.spec_from_file_location("_rnnkit_bench_jordan", Path(__file__).with_name("jordan.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.isa_flags()


BATCHED, NAIVE = "level-batched", "naive recursion"


def sst_dev_path() -> Path | None:
    for root in (os.environ.get("RNNKIT_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if root and (Path(root) / "sst" / "dev.txt").is_file():
            return Path(root) / "sst" / "dev.txt"
    return None


def random_binary_tree(rng: random.Random, size: int) -> Tree:
    if size == 1:
        return Tree(rng.randrange(5), [], f"w{rng.randrange(5000)}")
    left = rng.randint(1, size - 1)
    return Tree(rng.randrange(5), [random_binary_tree(rng, left), random_binary_tree(rng, size - left)])


def load_trees(n: int) -> tuple[list[Tree], str]:
    path = sst_dev_path()
    if path is not None:
        trees = read_trees(path)[:n]
        if len(trees) == n:
            return trees, str(path)
    rng = random.Random(0)
    return [random_binary_tree(rng, rng.randint(5, 50)) for _ in range(n)], "random binary trees, 5-50 leaves"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", type=int, default=64)
    ap.add_argument("--embedding-dim", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0: torch's default")
    ap.add_argument("--out", default="docs/benchmarks/tree_lstm_cpu.json")
    args = ap.parse_args(argv)
    for name in ("trees", "embedding_dim", "hidden", "repeats"):
        if getattr(args, name) < 1:
            sys.exit(f"tree_lstm: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        sys.exit(f"tree_lstm: --warmup must be >= 0, got {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)

    trees, source = load_trees(args.trees)
    vocab: dict[str, int] = {}
    for tree in trees:
        for w in leaves(tree):
            vocab.setdefault(w, len(vocab))
    batch = batch_trees(trees, vocab.__getitem__)
    torch.manual_seed(0)
    model = TreeSentimentClassifier(len(vocab), args.embedding_dim, args.hidden, 5, cell="binary")
    labels_post = batch.labels[batch.postorder]

    def batched() -> None:
        model.zero_grad(set_to_none=True)
        logits, _ = model(batch)
        F.cross_entropy(logits, batch.labels, ignore_index=IGNORE_LABEL).backward()

    def naive() -> None:
        model.zero_grad(set_to_none=True)
        logits = model.naive_forward(trees, vocab.__getitem__)
        F.cross_entropy(logits, labels_post, ignore_index=IGNORE_LABEL).backward()

    with torch.no_grad():  # the two compute the same thing
        diff = (model(batch)[0][batch.postorder] - model.naive_forward(trees, vocab.__getitem__)).abs().max().item()
    load_before = os.getloadavg()
    times = interleaved({BATCHED: batched, NAIVE: naive}, args.repeats, args.warmup)
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = sorted(n / b for n, b in zip(times[NAIVE], times[BATCHED]))
    speedup = med[NAIVE] / med[BATCHED]

    print(f"{batch.num_trees} trees ({source}), {batch.num_nodes} nodes, {batch.num_leaves} leaves, "
          f"depth {batch.depth}; E{args.embedding_dim} H{args.hidden}, threads {torch.get_num_threads()}\n")
    print("| variant | ms (median) | min..max ms | nodes/s |\n|---|---|---|---|")
    for name in (BATCHED, NAIVE):
        ts = times[name]
        print(f"| {name} | {med[name] * 1e3:.2f} | {min(ts) * 1e3:.2f}..{max(ts) * 1e3:.2f} | "
              f"{batch.num_nodes / med[name]:,.0f} |")
    print(f"\nspeedup {speedup:.1f}x (per round {paired[0]:.1f}..{paired[-1]:.1f}x; max |logit difference| "
          f"{diff:.1e}; load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs)")

    env = environment("cpu") | _isa_flags() | {"load_average_1min": f"{load_before[0]:.2f} -> {load_after[0]:.2f}"}
    data = {"environment": env, "command": "python " + shlex.join(sys.argv),
            "task": "forward + backward, cross-entropy at every node, BinaryTreeLSTM classifier (5 classes)",
            "speedup": speedup, "speedup_per_round": {"min": paired[0], "median": statistics.median(paired),
                                                      "max": paired[-1]},
            "batched_ms": med[BATCHED] * 1e3, "naive_ms": med[NAIVE] * 1e3,
            "hidden_size": args.hidden, "embedding_dim": args.embedding_dim, "cell": "binary",
            "trees": batch.num_trees, "nodes": batch.num_nodes, "leaves": batch.num_leaves, "levels": batch.depth,
            "source": source, "max_abs_logit_difference": diff, "repeats": args.repeats, "warmup": args.warmup,
            "rounds_ms": {name: [t * 1e3 for t in ts] for name, ts in times.items()}}
    atomic_write_text(args.out, json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
