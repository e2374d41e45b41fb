"""Language modelling (the first task): next-token cross-entropy over long streams
with truncated BPTT, reported as perplexity (words) or bits per character."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import EOS, PAD, UNK, Vocab, load_corpus
from ..data.tokenize import tokenize
from ..errors import CheckpointError, ConfigError, DataError
from ..models.feedback import capture_outputs
from ..options import option, require
from ..train.metrics import loss_metrics
from ..train.task import Plan, StepOutput
from .feedback import FeedbackOptions, FeedbackTask, unwrap
from ..train.tbptt import StreamWindows, Window, stream_windows

EVAL_STREAMS = 10   # evaluation batch: streams carried in parallel (state flows through each)


@dataclass(frozen=True)
class LMOptions(FeedbackOptions):
    data: str | None = option(None, "registered dataset (see `rnnkit data list`) or a text file/folder; "
                                    "default: the embedded stdlib corpus")
    data_dir: str | None = option(None, "where datasets are looked up (else $RNNKIT_DATA, else ~/.cache/rnnkit)")
    level: str | None = option(None, "char or word tokens (default: the dataset's)")
    min_freq: int = option(1, "vocabulary: drop tokens seen fewer times in train")
    max_vocab: int | None = option(None, "vocabulary: keep at most this many tokens")
    sum_over_time: bool = option(False, "Zaremba's objective: batch-mean loss summed over the window's steps "
                                        "(so lr 1 / clip 5 mean what the paper says)")

    def __post_init__(self) -> None:
        checks = [
(self.level in (None, "char", "word"), f"level must be 'char' or 'word', got {self.level!r}"),
                  (self.min_freq >= 1, f"min_freq must be >= 1, got {self.min_freq}"),
                  (self.max_vocab is None or self.max_vocab >= 1, f"max_vocab must be >= 1, got {self.max_vocab}"),
                  (self.data != "" and self.data_dir != "", "data and data_dir must not be empty strings")]
        require(checks, "config: [train]")
        super().__post_init__()


@dataclass
class LMData:
    """A tokenised corpus: ``train/valid/test`` are 1-D id tensors ``(N,)``."""

    name: str
    level: str
    vocab: Vocab
    train: Tensor
    valid: Tensor
    test: Tensor


def prepare_lm_data(options: LMOptions, vocab: Vocab | None = None) -> LMData:
    """Load the corpus, build the vocabulary from the training split (or reuse
    ``vocab``), encode. Words never seen in training become ``<unk>``."""
    corpus = load_corpus(options.data, options.data_dir, options.level)
    tokens = {split: tokenize(corpus.split(split), corpus.level) for split in ("train", "valid", "test")}
    for split, toks in tokens.items():
        if len(toks) < 2:
            raise DataError(f"corpus {corpus.name!r}: the {split} split has {len(toks)} tokens; "
                            "a language model needs at least 2")
    if vocab is None:
        vocab = Vocab.build(tokens["train"], min_freq=options.min_freq, max_size=options.max_vocab)
    ids = {split: vocab.encode_tensor(toks) for split, toks in tokens.items()}
    return LMData(corpus.name, corpus.level, vocab, ids["train"], ids["valid"], ids["test"])


class LanguageModelTask(FeedbackTask):
    """Next-token prediction on a corpus; the state is carried across windows."""

    name = "lm"
    Options = LMOptions
    model = "language_model"
    model_placeholders = {"vocab_size": 2}
    select = ("nll", "min")
    carries_state = True
    count_key = "tokens"

    def __init__(self, options: LMOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.vocab: Vocab | None = None
        self.level: str | None = options.level
        self.data: LMData | None = None

    # --- data ---------------------------------------------------------------------
    def prepare(self) -> None:
        self.data = prepare_lm_data(self.options, vocab=self.vocab)
        if self.level is not None and self.data.level != self.level:
            raise CheckpointError(f"the model was trained on {self.level} tokens but corpus "
                                  f"{self.data.name!r} is {self.data.level}-level")
        self.vocab, self.level = self.data.vocab, self.data.level

    def split_ids(self, split: str) -> Tensor:
        return getattr(self.data, split)

    def batches(self, plan: Plan) -> StreamWindows:
        streams, windows = stream_windows(self.split_ids(plan.split), plan, EVAL_STREAMS)
        return StreamWindows(streams.to(plan.device), windows)

    def model_fields(self) -> dict[str, Any]:
        if self.vocab is None:
            raise RuntimeError("LanguageModelTask: prepare() or load_state_dict() first")
        return {"vocab_size": len(self.vocab)}

    # --- one window ---------------------------------------------------------------
    def step(self, model: nn.Module, batch: tuple[Window, Tensor, Tensor], state: Any = None) -> StepOutput:
        w, x, y = batch
        feedback = self.feedback(x) if model.training else None
        carry = None
        if model.training and w.carry_at < x.shape[1]:  # k1 < k2: the next window starts k1 steps in
            if feedback is not None:
                raise ConfigError(f"regime {self.options.regime!r} needs bptt_k1 = bptt (windows that overlap "
                                  "would be fed back twice)")
            with torch.no_grad():
                _, carry = model(x[:, :w.carry_at], state)
        professor = model.training and self.options.regime == "professor"
        with capture_outputs(unwrap(model).rnn) if professor else nullcontext() as taught:
            logits, new_state = model(x, state, feedback=feedback)
        s = w.score_from - w.start
        scored = y[:, s:]
        flat = logits[:, s:].reshape(-1, logits.shape[-1]).float()
        if model.training:
            loss = F.cross_entropy(flat, scored.reshape(-1))
            nll = loss.detach().double() * scored.numel()  # exact: metrics() gives loss.item() back
            penalty = getattr(unwrap(model), "activation_penalty", None)  # AR/TAR (Merity et al. 2018)
            if penalty is not None and feedback is None:
                loss = loss + penalty
            if self.options.sum_over_time:  # the batch mean summed over the scored steps (Zaremba)
                loss = loss * scored.shape[1]
        else:
            nll = F.cross_entropy(flat, scored.reshape(-1), reduction="sum")
            loss = nll / scored.numel()
        out = StepOutput(loss, {"nll": nll.item(), "tokens": scored.numel()}, carry if carry is not None else new_state)
        if professor:
            self.professor(model, x, state, taught.sequence(), out)
        return out

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        tokens = int(sums["tokens"])
        nll = sums["nll"] / tokens
        return {"loss": nll, **loss_metrics(nll, self.level or "word"), "tokens": tokens}

    def describe(self, m: dict[str, float]) -> str:
        if self.level == "char":
            return f"{m['nll'] / math.log(2):.3f} bits/char"
        return f"ppl {m['ppl']:.1f}"

    # --- what it learned from data ------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_dict() if self.vocab is not None else None, "level": self.level}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The vocabulary and token level a checkpoint declares, checked against each other."""
        if not isinstance(state, dict) or not isinstance(state.get("vocab"), dict):
            raise CheckpointError("the checkpoint has no vocabulary for its language model")
        level = state.get("level")
        if level not in ("char", "word"):
            raise CheckpointError(f"the checkpoint's level must be 'char' or 'word', got {str(level)[:40]!r}")
        try:
            vocab = Vocab.from_dict(state["vocab"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"the checkpoint's vocabulary is malformed ({str(e)[:200]})") from None
        tokens = [t for t in vocab.itos if t not in (PAD, UNK, EOS)]
        if not all(isinstance(t, str) and t for t in tokens):
            raise CheckpointError("the checkpoint's vocabulary has empty or non-text tokens")
        if level == "char" and any(len(t) != 1 for t in tokens):
            raise CheckpointError("the checkpoint says level 'char' but its vocabulary has multi-character tokens")
        if level == "word" and any(c.isspace() for t in tokens for c in t):
            raise CheckpointError("the checkpoint says level 'word' but its vocabulary has whitespace tokens "
                                  "(a character vocabulary?)")
        self.vocab, self.level = vocab, level

    def export(self, directory) -> None:
        if self.vocab is not None:
            self.vocab.save(directory / "vocab.json")

    # --- decoding -----------------------------------------------------------------
    def summary(self) -> str:
        d = self.data
        return (f"corpus {d.name} ({d.level}): {len(d.train):,} train / {len(d.valid):,} valid / "
                f"{len(d.test):,} test tokens, vocabulary {len(d.vocab):,}")

    def baseline(self, order: int = 5) -> dict[str, Any]:
        """A Kneser-Ney n-gram model fitted on the same training split, for comparison."""
        from ..baselines.ngram import KneserNeyLM

        kn = KneserNeyLM(order=order, vocab_size=len(self.vocab)).fit(self.data.train.numpy())
        return {"name": f"{order}-gram Kneser-Ney", "order": order, "valid": kn.evaluate(self.data.valid.numpy()),
                "test": kn.evaluate(self.data.test.numpy())}

    def start_id(self) -> int:
        """Where a sample starts without a prime: a new line (chars) or sentence (words)."""
        return self.vocab.stoi.get("\n", self.vocab.eos_id) if self.level == "char" else self.vocab.eos_id

    def encode_prime(self, text: str) -> Tensor:
        return self.vocab.encode_tensor(tokenize(text, "char") if self.level == "char" else text.split())

    def join(self, ids: list[int]) -> str:
        tokens = self.vocab.decode(ids)
        if self.level == "char":
            return "".join(tokens)
        return " ".join(t if t != "<eos>" else "\n" for t in tokens).replace(" \n ", "\n")
