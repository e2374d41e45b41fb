"""Kneser-Ney n-gram baseline on Penn Treebank: perplexity and timings.

Word level: fit an order-n modified-KN model on ptb.train.txt (each line
whitespace-split plus one ``<eos>``, ids from a vocabulary built on train) and
score ptb.test.txt. The literature value for KN5 on this split is ~141
(Mikolov et al. 2011). Character level: fit on the first ``--char-count``
characters of the raw train file and score the raw test file, to time the
model on a small-vocabulary, long stream.

Usage::

    python benchmarks/ngram_ptb.py [--order 5] [--data-dir /work/shared/data/ptb]

Prints a table and writes ``results/ngram_ptb.json``
(keys: metrics, command, seconds).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so it runs from a checkout without `pip install -e .`

from rnnkit.baselines import KneserNeyLM  # noqa: E402


def read_words(path: Path) -> list[str]:
    """Whitespace tokens of every line, each line followed by ``<eos>``."""
    words: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            words.extend(line.split())
            words.append("<eos>")
    return words


def run(name: str, order: int, train: np.ndarray, test: np.ndarray, vocab: int, discounts: str) -> dict:
    """Fit and evaluate one model; returns its metrics and timings."""
    t0 = time.perf_counter()
    lm = KneserNeyLM(order=order, vocab_size=vocab, discounts=discounts).fit(train)  # type: ignore[arg-type]
    t1 = time.perf_counter()
    res = lm.evaluate(test)
    t2 = time.perf_counter()
    return {
        "name": name,
        "order": order,
        "discounts": discounts,
        "vocab_size": vocab,
        "train_tokens": int(train.size),
        "test_tokens": res["tokens"],
        "test_ppl": res["ppl"],
        "test_nll": res["nll"],
        "test_bits_per_token": res["bits_per_token"],
        "fit_s": t1 - t0,
        "eval_s": t2 - t1,
        "total_s": t2 - t0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/ptb"))
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--char-count", type=int, default=2_000_000, help="train characters for the char run")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "ngram_ptb.json")
    args = ap.parse_args(argv)
    start = time.perf_counter()

    train_w = read_words(args.data_dir / "ptb.train.txt")
    test_w = read_words(args.data_dir / "ptb.test.txt")
    vocab: dict[str, int] = {}
    for w in train_w:
        vocab.setdefault(w, len(vocab))
    unk = vocab["<unk>"]  # PTB test has no OOVs, but map defensively
    w_train = np.array([vocab[w] for w in train_w], dtype=np.int64)
    w_test = np.array([vocab.get(w, unk) for w in test_w], dtype=np.int64)

    text_train = (args.data_dir / "ptb.train.txt").read_text(encoding="utf-8")[: args.char_count]
    text_test = (args.data_dir / "ptb.test.txt").read_text(encoding="utf-8")
    chars = {c: i for i, c in enumerate(sorted(set(text_train) | set(text_test)))}
    c_train = np.array([chars[c] for c in text_train], dtype=np.int64)
    c_test = np.array([chars[c] for c in text_test], dtype=np.int64)

    rows = [
        run("ptb-word", args.order, w_train, w_test, len(vocab), "modified"),
        run("ptb-word", args.order, w_train, w_test, len(vocab), "single"),
        run("ptb-char", args.order, c_train, c_test, len(chars), "modified"),
    ]

    header = (
        f"{'data':<9} {'n':>2} {'disc':<8} {'V':>6} {'train':>9} {'test':>7} "
        f"{'ppl':>8} {'bpt':>6} {'fit s':>6} {'eval s':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['name']:<9} {r['order']:>2} {r['discounts']:<8} {r['vocab_size']:>6} {r['train_tokens']:>9} "
            f"{r['test_tokens']:>7} {r['test_ppl']:>8.2f} {r['test_bits_per_token']:>6.3f} "
            f"{r['fit_s']:>6.2f} {r['eval_s']:>6.2f}"
        )

    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "metrics": rows,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "seconds": seconds,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({seconds:.1f} s total)")


if __name__ == "__main__":
    main()
