"""Translation (encoder–decoder): Multi30k German→English by default.

Word vocabularies from the training split only (``--min-freq``), case kept, punctuation
split. Training is teacher-forced cross-entropy per sentence. Evaluation decodes every
sentence greedily and scores the *detokenised* output against the raw reference lines
with ``sacrebleu`` (its default: 13a tokenisation, mixed case, exponential smoothing);
each sentence adds its n-gram statistics, so corpus BLEU is exact across batches and
processes. :func:`translate_split` decodes with beam search for the final report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..data.batching import pad_batch
from ..data.parallel import detokenize, read_parallel, tokenize
from ..data.registry import resolve
from ..data.vocab import Vocab
from ..errors import CheckpointError
from ..models.beam import beam_search, greedy_decode
from ..models.seq2seq import sequence_nll, shift_right
from ..options import option, require
from ..train.task import Plan, StepOutput, Task
from .examples import GroupBatches, length_buckets

MAX_ORDER = 4


@dataclass(frozen=True)
class TranslateOptions:
    data_dir: str | None = option(None, "folder holding multi30k/ (default $RNNKIT_DATA)")
    source: str = option("de", "source language: de or en")
    min_freq: int = option(2, "words seen fewer times in training become <unk>")
    max_train_len: int = option(60, "training pairs with a side longer than this (tokens) are left out")
    decode_len: int = option(80, "longest output when decoding (tokens)")

    def __post_init__(self) -> None:
        require([(self.source in ("de", "en"), f"source must be de or en, got {self.source!r}"),
                 (self.min_freq >= 1, f"min_freq must be >= 1, got {self.min_freq}"),
                 (self.max_train_len >= 1 and self.decode_len >= 1, "max_train_len and decode_len must be >= 1")],
                "config: [train]")

    @property
    def target(self) -> str:
        return "en" if self.source == "de" else "de"


def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)   # sentence statistics only; the corpus score is computed from their sums


def bleu_stats(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """sacrebleu's additive statistics of each sentence, summed."""
    bleu = _bleu()
    out = {f"bleu_correct_{n}": 0.0 for n in range(MAX_ORDER)} | {f"bleu_total_{n}": 0.0 for n in range(MAX_ORDER)}
    out |= {"bleu_sys_len": 0.0, "bleu_ref_len": 0.0}
    for h, r in zip(hypotheses, references):
        s = bleu.sentence_score(h, [r])
        for n in range(MAX_ORDER):
            out[f"bleu_correct_{n}"] += s.counts[n]
            out[f"bleu_total_{n}"] += s.totals[n]
        out["bleu_sys_len"] += s.sys_len
        out["bleu_ref_len"] += s.ref_len
    return out


def corpus_bleu(sums: dict[str, float]) -> float:
    """Corpus BLEU from summed statistics: equal to ``sacrebleu.corpus_bleu`` on the sentences."""
    from sacrebleu.metrics import BLEU

    return BLEU.compute_bleu([int(sums[f"bleu_correct_{n}"]) for n in range(MAX_ORDER)],
                             [int(sums[f"bleu_total_{n}"]) for n in range(MAX_ORDER)],
                             int(sums["bleu_sys_len"]), int(sums["bleu_ref_len"]), smooth_method="exp").score


class TranslateTask(Task):
    """Batches ``(src (B, S), src_lengths (B,), tgt (B, T), references)``: targets end in
    ``<eos>``; ``references`` are the raw target lines the output is scored against."""

    name = "translate"
    Options = TranslateOptions
    model = "seq2seq"
    model_placeholders = {"src_vocab_size": 4, "tgt_vocab_size": 4}
    select = ("bleu", "max")
    count_key = "sentences"
    train_defaults = {"out": "runs/translate", "batch_size": 64, "lr": 1e-3, "epochs": 10, "clip_norm": 1.0}
    eval_batch = 128

    def __init__(self, options: TranslateOptions, model_options: dict[str, Any]) -> None:
        super().__init__(options, model_options)
        self.src_vocab: Vocab | None = None
        self.tgt_vocab: Vocab | None = None
        self.raw: dict[str, list[tuple[str, str]]] = {}
        self.ids: dict[str, tuple[list[list[int]], list[list[int]]]] = {}

    def prepare(self) -> None:
        o = self.options
        files = resolve("multi30k", o.data_dir)
        self.raw = {split: read_parallel(files[f"{split}.{o.source}"], files[f"{split}.{o.target}"])
                    for split in ("train", "valid", "test")}
        tokens = {split: [(tokenize(s), tokenize(t)) for s, t in pairs] for split, pairs in self.raw.items()}
        if self.src_vocab is None:
            self.src_vocab = Vocab.build((w for s, _ in tokens["train"] for w in s), min_freq=o.min_freq)
            self.tgt_vocab = Vocab.build((w for _, t in tokens["train"] for w in t), min_freq=o.min_freq)
        eos = self.src_vocab.eos_id
        for split, pairs in tokens.items():
            if split == "train":
                pairs = [(s, t) for s, t in pairs if max(len(s), len(t)) <= o.max_train_len]
            self.ids[split] = ([self.src_vocab.encode(s) + [eos] for s, _ in pairs],
                               [self.tgt_vocab.encode(t) + [eos] for _, t in pairs])

    def model_fields(self) -> dict[str, Any]:
        if self.src_vocab is None:
            return dict(self.model_placeholders)
        return {"src_vocab_size": len(self.src_vocab), "tgt_vocab_size": len(self.tgt_vocab)}

    def batches(self, plan: Plan) -> GroupBatches:
        src, tgt = self.ids[plan.split]
        groups = length_buckets([len(s) for s in src], plan, self.eval_batch)
        references = [t for _, t in self.raw[plan.split]] if plan.split != "train" else None

        def make_batch(rows: list[int]) -> tuple[Tensor, Tensor, Tensor, list[str] | None]:
            src_batch, lengths = pad_batch([src[j] for j in rows], 0)
            tgt_batch, _ = pad_batch([tgt[j] for j in rows], 0)
            refs = [references[j] for j in rows] if references is not None else None
            return src_batch.to(plan.device), lengths, tgt_batch.to(plan.device), refs

        return GroupBatches(groups, make_batch)

    def step(self, model: nn.Module, batch: tuple[Tensor, ...], state: Any = None) -> StepOutput:
        src, lengths, tgt, references = batch
        pad, eos = self.tgt_vocab.pad_id, self.tgt_vocab.eos_id
        nll = sequence_nll(model(src, lengths, shift_right(tgt, eos, pad)), tgt, pad)
        stats = {"nll": nll.item(), "tokens": int(tgt.ne(pad).sum()), "sentences": len(src)}
        if not model.training:
            hyps = greedy_decode(model, src, lengths, self.options.decode_len, eos)
            stats |= bleu_stats([self.detokenize(h) for h in hyps], references)
        return StepOutput(nll / len(src), stats)

    def detokenize(self, ids: list[int]) -> str:
        return detokenize(self.tgt_vocab.decode(ids))

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        nll = sums["nll"] / sums["tokens"]
        out = {"loss": sums["nll"] / sums["sentences"], "nll_per_token": nll, "sentences": int(sums["sentences"])}
        if "bleu_sys_len" in sums:
            out["bleu"] = corpus_bleu(sums)
        return out

    def describe(self, m: dict[str, float]) -> str:
        bleu = f"BLEU {m['bleu']:.2f}, " if "bleu" in m else ""
        return f"{bleu}nll {m['nll_per_token']:.3f}/token"

    def summary(self) -> str:
        n = {k: len(v[0]) for k, v in self.ids.items()}
        o = self.options
        return (f"multi30k {o.source}->{o.target}: {n['train']:,} train pairs (<= {o.max_train_len} tokens) / "
                f"{n['valid']:,} valid / {n['test']:,} test; vocabularies {len(self.src_vocab):,} / {len(self.tgt_vocab):,}")

    def state_dict(self) -> dict[str, Any]:
        return {"src_vocab": self.src_vocab.to_dict() if self.src_vocab else None,
                "tgt_vocab": self.tgt_vocab.to_dict() if self.tgt_vocab else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in ("src_vocab", "tgt_vocab")):
            raise CheckpointError("the checkpoint has no source and target vocabularies")
        self.src_vocab, self.tgt_vocab = Vocab.from_dict(state["src_vocab"]), Vocab.from_dict(state["tgt_vocab"])

    # --- using a trained model ----------------------------------------------------
    def encode_sources(self, lines: list[str]) -> list[list[int]]:
        return [self.src_vocab.encode(tokenize(line)) + [self.src_vocab.eos_id] for line in lines]

    @torch.no_grad()
    def translate(self, model: nn.Module, lines: list[str], beam: int = 5, length_penalty: float = 1.0,
                  batch_size: int = 64) -> list[str]:
        """Detokenised translations of raw source lines (greedy when ``beam == 1``)."""
        model.eval()
        device = next(model.parameters()).device
        ids = self.encode_sources(lines)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[str] = [""] * len(ids)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            src, lengths = pad_batch([ids[i] for i in rows], self.src_vocab.pad_id)
            hyps = beam_search(model, src.to(device), lengths, self.options.decode_len, self.tgt_vocab.eos_id,
                               beam=beam, length_penalty=length_penalty)
            for i, h in zip(rows, hyps):
                out[i] = self.detokenize(h)
        return out

    @torch.no_grad()
    def panels(self, model: nn.Module, sentences: int = 3) -> list:
        """The first validation sentences with their reference and the model's greedy
        translation, and the attention weights while it writes the first one (when the
        model attends)."""
        from ..train.task import Panel

        device = next(model.parameters()).device
        pairs = self.raw["valid"][:sentences]
        eos, pad = self.tgt_vocab.eos_id, self.tgt_vocab.pad_id
        ids = self.encode_sources([s for s, _ in pairs])
        src, lengths = pad_batch(ids, self.src_vocab.pad_id)
        hyps = greedy_decode(model, src.to(device), lengths, self.options.decode_len, eos)
        lines = [f"source:    {s}\nreference: {t}\nmodel:     {self.detokenize(h)}\n" for (s, t), h in zip(pairs, hyps)]
        panels = [Panel.text("first validation sentences (greedy decoding)", lines)]
        first = torch.tensor([ids[0]], device=device)
        tgt_in = shift_right(torch.tensor([hyps[0] + [eos]], device=device), eos, pad)
        weights = model.attention_map(first, torch.tensor([len(ids[0])]), tgt_in)[0].float().cpu()   # (T, S)
        if weights.abs().sum() > 0:   # a model without attention gives zeros
            panels.append(Panel.heatmap("attention while translating the first sentence", weights,
                                        x_labels=self.src_vocab.decode(ids[0]),
                                        y_labels=self.tgt_vocab.decode(hyps[0]) + ["<eos>"],
                                        xlabel="source", ylabel="output"))
        return panels


def translate_split(task: TranslateTask, model: nn.Module, split: str, beam: int, length_penalty: float = 1.0):
    """``(BLEU, hypotheses)`` of a split decoded with beam search (``beam=1``: greedy)."""
    import sacrebleu

    hyps = task.translate(model, [s for s, _ in task.raw[split]], beam, length_penalty)
    return sacrebleu.corpus_bleu(hyps, [[t for _, t in task.raw[split]]]).score, hyps


def attention_heatmap(task: TranslateTask, model: nn.Module, source: str, path, beam: int = 5):
    """PNG of the attention weights while the model writes its translation of ``source``
    (rows: output tokens, columns: source tokens); returns the translation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    src_ids = task.encode_sources([source])[0]
    src = torch.tensor([src_ids])
    hyp = beam_search(model, src, torch.tensor([len(src_ids)]), task.options.decode_len, task.tgt_vocab.eos_id, beam)[0]
    tgt_in = shift_right(torch.tensor([hyp + [task.tgt_vocab.eos_id]]), task.tgt_vocab.eos_id, task.tgt_vocab.pad_id)
    weights = model.attention_map(src, torch.tensor([len(src_ids)]), tgt_in)[0]      # (T, S)
    fig, ax = plt.subplots(figsize=(0.45 * len(src_ids) + 2, 0.4 * len(hyp) + 2), dpi=120)
    ax.imshow(weights.numpy(), cmap="Greys", vmin=0, vmax=1)
    ax.set_xticks(range(len(src_ids)), task.src_vocab.decode(src_ids), rotation=70)
    ax.set_yticks(range(len(hyp) + 1), task.tgt_vocab.decode(hyp) + ["<eos>"])
    ax.set(xlabel="source", ylabel="output", title="attention")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return task.detokenize(hyp)
