"""The embedded Reber grammar (Cleeremans et al. 1989; Hochreiter & Schmidhuber 1997).

A Reber string is a walk through this automaton, each branch taken with probability
1/2 (``BTXSE``, ``BPVVE``, ``BTSSXXTVVE``...)::

    start -B-> 1      1 -T-> 2   1 -P-> 3      2 -S-> 2   2 -X-> 4
    3 -T-> 3   3 -V-> 5      4 -X-> 3   4 -S-> 6      5 -P-> 4   5 -V-> 6      6 -E-> end

An embedded string is ``B T <Reber string> T E`` or ``B P <Reber string> P E``: the
second-to-last symbol repeats the second, across the whole inner string, which is
what a short-memory model cannot do. The task is next-symbol prediction; strings
are padded to the batch's longest with :data:`PAD`, which the loss ignores.

Metrics: ``nll`` per predicted symbol and ``accuracy``, the classic criterion: the
fraction of strings where, at every step, the symbols given probability above
``prob_threshold`` are exactly the legal next symbols (the model predicts the
grammar). Every legal symbol above it is not enough: at the second-to-last step
the legal set is one symbol, and a model that forgot the branch and says T or P
at 1/2 each would pass (a 5-gram scores 100% that way). ``step_accuracy`` is the
same per step. The best possible ``nll`` is the grammar's entropy, ``ln 2`` per
binary choice: ``entropy`` in the metrics of :meth:`ReberTask.baseline`.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..options import option, require
from ..train.task import Plan, StepOutput, Task
from .examples import example_order

SYMBOLS = "BTPSXVE"
PAD = len(SYMBOLS)        # padding id, ignored by the loss
VOCAB = len(SYMBOLS) + 1
SPLIT_OFFSET = {"train": 0, "valid": 1, "test": 2}
EVAL_BATCH = 500

#: the Reber automaton: state -> {symbol: next state}; "end" accepts
REBER: dict[Any, dict[str, Any]] = {
    "start": {"B": 1},
    1: {"T": 2, "P": 3},
    2: {"S": 2, "X": 4},
    3: {"T": 3, "V": 5},
    4: {"X": 3, "S": 6},
    5: {"P": 4, "V": 6},
    6: {"E": "end"},
    "end": {},
}


def _embedded() -> dict[Any, dict[str, Any]]:
    """The embedded grammar as one deterministic automaton: a copy of :data:`REBER`
    per branch (T or P), so the state remembers the branch."""
    table: dict[Any, dict[str, Any]] = {"start": {"B": "branch"}, "branch": {"T": ("T", "start"), "P": ("P", "start")}}
    for b in "TP":
        for state, moves in REBER.items():
            table[(b, state)] = {s: (b, nxt) for s, nxt in moves.items()}
        table[(b, "end")] = {b: "last"}
    table["last"] = {"E": "end"}
    table["end"] = {}
    return table


EMBEDDED = _embedded()
STATES = list(EMBEDDED)
STATE_ID = {s: i for i, s in enumerate(STATES)}
#: LEGAL[state id] = bool mask over ids of the symbols that may follow
LEGAL = torch.tensor([[sym in EMBEDDED[s] for sym in SYMBOLS] + [False] for s in STATES])


def walk(table: dict[Any, dict[str, Any]], rng: random.Random) -> tuple[str, list[Any]]:
    """A random string of ``table`` (uniform over the moves of each state) and the
    state after each symbol."""
    state, out, states = "start", [], []
    while table[state]:
        symbol = rng.choice(sorted(table[state]))
        state = table[state][symbol]
        out.append(symbol)
        states.append(state)
    return "".join(out), states


def accepts(string: str, table: dict[Any, dict[str, Any]] = EMBEDDED) -> bool:
    """Whether ``table`` (default: the embedded grammar) generates ``string``."""
    state = "start"
    for symbol in string:
        if symbol not in table[state]:
            return False
        state = table[state][symbol]
    return state == "end"


def embedded_reber(n: int, seed: int) -> tuple[list[str], list[list[int]]]:
    """``n`` embedded Reber strings and, per string, the state id after each symbol."""
    rng = random.Random(seed)
    strings, states = [], []
    for _ in range(n):
        s, st = walk(EMBEDDED, rng)
        strings.append(s)
        states.append([STATE_ID[x] for x in st])
    return strings, states


@dataclass(frozen=True)
class ReberOptions:
    train_size: int = option(5_000, "embedded Reber: training strings")
    valid_size: int = option(1_000, "embedded Reber: validation strings")
    test_size: int = option(5_000, "embedded Reber: test strings")
    data_seed: int = option(1234, "embedded Reber: seed of the generated splits")
    prob_threshold: float = option(0.3, "embedded Reber: a symbol counts as predicted above this "
                                        "probability (accuracy: predicted = legal at every step)")

    def __post_init__(self) -> None:
        checks = [(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
                  for k in ("train_size", "valid_size", "test_size")]
        checks.append((0 < self.prob_threshold < 0.5,
                       f"prob_threshold must be in (0, 0.5) (two legal symbols must both pass), "
                       f"got {self.prob_threshold}"))
        require(checks, "config: [train]")


@dataclass
class ReberSplit:
    """Padded ids ``(N, L)`` of whole strings, states after each symbol ``(N, L)``
    (padding: the end state) and lengths ``(N,)``."""

    ids: Tensor
    states: Tensor
    lengths: Tensor

    @classmethod
    def build(cls, strings: list[str], states: list[list[int]]) -> "ReberSplit":
        longest = max(map(len, strings))
        ids = torch.full((len(strings), longest), PAD, dtype=torch.long)
        st = torch.full((len(strings), longest), STATE_ID["end"], dtype=torch.long)
        for i, (s, q) in enumerate(zip(strings, states)):
            ids[i, :len(s)] = torch.tensor([SYMBOLS.index(c) for c in s])
            st[i, :len(s)] = torch.tensor(q)
        return cls(ids, st, torch.tensor([len(s) for s in strings]))


class StringBatches(Sequence):
    """Batches ``(x, y, legal)`` of strings picked by row indices, cut to the batch's
    longest: inputs ``x = s[:-1]``, targets ``y = s[1:]`` (both PAD past the end) and the
    mask of legal next symbols ``(B, L-1, V)``."""

    def __init__(self, split: ReberSplit, index: Tensor, batch_size: int, device: torch.device) -> None:
        self.split, self.index, self.batch_size, self.device = split, index, batch_size, device

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        rows = self.index[i * self.batch_size:(i + 1) * self.batch_size]
        longest = int(self.split.lengths[rows].max())
        ids = self.split.ids[rows, :longest]
        legal = LEGAL[self.split.states[rows, :longest - 1]]  # what may follow each input symbol
        x, y = ids[:, :-1], ids[:, 1:]
        x = x.masked_fill(y == PAD, PAD)  # the final E is never an input: the same x whatever the batch
        return x.to(self.device), y.to(self.device), legal.to(self.device)


class ReberTask(Task):
    """Next-symbol prediction on embedded Reber strings; nll and the grammar criterion."""

    name = "reber"
    Options = ReberOptions
    model = "language_model"
    model_placeholders = {"vocab_size": VOCAB}
    # nll, the objective: once the grammar is learned (accuracy 100%) several models tie
    # on accuracy, and nll still ranks them by how close they are to the grammar's odds.
    select = ("nll", "min")
    count_key = "strings"
    train_defaults = {"out": "runs/reber"}

    def __init__(self, options: ReberOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.splits: dict[str, ReberSplit] = {}

    def prepare(self) -> None:
        o = self.options
        sizes = {"train": o.train_size, "valid": o.valid_size, "test": o.test_size}
        for split, n in sizes.items():
            self.splits[split] = ReberSplit.build(*embedded_reber(n, o.data_seed * 3 + SPLIT_OFFSET[split]))

    def model_fields(self) -> dict[str, Any]:
        return {"vocab_size": VOCAB}

    def batches(self, plan: Plan) -> StringBatches:
        data = self.splits[plan.split]
        index, size = example_order(len(data.lengths), plan, EVAL_BATCH)
        return StringBatches(data, index, size, plan.device)

    def step(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], state: Any = None) -> StepOutput:
        x, y, legal = batch
        logits, _ = model(x)  # causal: the padding after a string cannot change its predictions
        flat = logits.reshape(-1, logits.shape[-1]).float()
        real = y != PAD
        count = int(real.sum())
        nll = F.cross_entropy(flat, y.reshape(-1), ignore_index=PAD, reduction="sum")
        loss = nll / count
        return StepOutput(loss, {"nll": nll.item(), "symbols": count, **self.grammar_stats(logits, legal, real)})

    def grammar_stats(self, logits: Tensor, legal: Tensor, real: Tensor) -> dict[str, float]:
        """Steps (and strings whose every step is one) where the symbols with probability
        above the threshold are exactly the legal next symbols."""
        probs = logits.detach().float().softmax(-1)
        ok = ((probs > self.options.prob_threshold) == legal).all(-1) | ~real  # (B, L)
        return {"steps_ok": int((ok & real).sum()), "strings_ok": int(ok.all(1).sum()), "strings": real.shape[0]}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        nll = sums["nll"] / sums["symbols"]
        return {"loss": nll, "nll": nll, "accuracy": sums["strings_ok"] / sums["strings"],
                "step_accuracy": sums["steps_ok"] / sums["symbols"], "strings": int(sums["strings"]),
                "tokens": int(sums["symbols"])}  # `rnnkit eval` reports nll per token with this count

    def describe(self, m: dict[str, float]) -> str:
        return f"nll {m['nll']:.4f}/symbol, strings predicted {m['accuracy']:.1%}"

    def summary(self) -> str:
        o = self.options
        mean = float(self.splits["train"].lengths.float().mean())
        return (f"embedded Reber grammar: {o.train_size:,} train / {o.valid_size:,} valid / {o.test_size:,} test "
                f"strings, mean length {mean:.1f} (data seed {o.data_seed})")

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """An n-gram of ``order`` symbols (counts from the training strings, backing off to
        the longest context seen, add-0.01 smoothed): it learns the inner grammar's local
        rules but not the embedded dependency when the inner string is longer than its
        context. ``entropy`` is the grammar's own (the best achievable nll)."""
        n = max(1, order)
        counts: dict[tuple[int, ...], Tensor] = defaultdict(lambda: torch.zeros(VOCAB, dtype=torch.float64))
        train = self.splits["train"]
        for row, length in zip(train.ids.tolist(), train.lengths.tolist()):
            for t in range(1, length):
                for k in range(n):  # contexts of 0 .. n-1 symbols
                    counts[tuple(row[max(0, t - k):t])][row[t]] += 1

        def predict(row: list[int], t: int) -> Tensor:
            for k in range(min(n - 1, t), -1, -1):
                c = counts.get(tuple(row[t - k:t]))
                if c is not None:
                    break
            p = c + 0.01
            p[PAD] = 0.0
            return p / p.sum()

        def score(split: str) -> dict[str, float]:
            data = self.splits[split]
            longest = int(data.lengths.max())
            probs = torch.zeros(len(data.lengths), longest - 1, VOCAB, dtype=torch.float64)
            for i, (row, length) in enumerate(zip(data.ids.tolist(), data.lengths.tolist())):
                for t in range(1, length):
                    probs[i, t - 1] = predict(row, t)
            y = data.ids[:, 1:]
            real = y != PAD
            nll = -(probs.clamp_min(1e-300).log().gather(-1, y.clamp_max(VOCAB - 1).unsqueeze(-1)).squeeze(-1)
                    * real).sum()
            stats = {"nll": float(nll), "symbols": int(real.sum()),
                     **self.grammar_stats(probs.log(), LEGAL[data.states[:, :-1]], real)}
            m = self.metrics(stats)
            choices = (LEGAL[data.states[:, :-1]].sum(-1) == 2) & real
            m["entropy"] = float(choices.sum()) * math.log(2) / stats["symbols"]
            return m
        return {"name": f"{n}-gram", "order": n, "valid": score("valid"), "test": score("test")}
