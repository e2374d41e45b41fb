"""The ``rnnkit`` command line: train, sample, eval, ngram, data, bench.

Errors a user can fix (bad flags, configs, corpora, checkpoints) print one line
and exit with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import time
from pathlib import Path

import torch

from .errors import ConfigError, RnnkitError
from .models.language_model import CELLS

# flag -> (section, key, type, help): the CLI overrides of the config, all optional
_OVERRIDES = {
    "data": ("train", "data", str, "registered dataset (see `rnnkit data list`) or a text file/folder; "
                                   "default: the embedded stdlib corpus"),
    "data_dir": ("train", "data_dir", str, "where datasets are looked up (else $RNNKIT_DATA, else ~/.cache/rnnkit)"),
    "level": ("train", "level", str, "char or word tokens (default: the dataset's)"),
    "batch_size": ("train", "batch_size", int, "parallel streams per update (global, over all processes)"),
    "bptt": ("train", "bptt", int, "k2: steps backpropagated through"),
    "bptt_k1": ("train", "bptt_k1", int, "k1: steps per update (default: --bptt)"),
    "epochs": ("train", "epochs", int, "passes over the training stream"),
    "max_steps": ("train", "max_steps", int, "stop after this many updates"),
    "max_minutes": ("train", "max_minutes", float, "stop after this much wall time"),
    "optimizer": ("train", "optimizer", str, "sgd or adam"),
    "lr": ("train", "lr", float, "learning rate"),
    "clip_norm": ("train", "clip_norm", float, "clip the global gradient norm to this"),
    "clip_value": ("train", "clip_value", float, "clip each gradient element to [-v, v]"),
    "patience": ("train", "patience", int, "early stopping: epochs without a better validation loss"),
    "seed": ("train", "seed", int, "random seed (a CPU run is bit-reproducible)"),
    "device": ("train", "device", str, "cpu or cuda[:N]"),
    "out": ("train", "out", str, "run folder: checkpoint, best weights, vocab, metrics.jsonl"),
    "eval_every": ("train", "eval_every", int, "also evaluate every N updates"),
    "cell": ("model", "cell", str, "one of " + ", ".join(CELLS)),
    "input": ("model", "input", str, "embedding, onehot or hashing"),
    "embedding_dim": ("model", "embedding_dim", int, "input embedding size"),
    "hidden_size": ("model", "hidden_size", int, "recurrent state size"),
    "num_layers": ("model", "num_layers", int, "stacked recurrent layers"),
    "dropout": ("model", "dropout", float, "dropout on non-recurrent connections (Zaremba 2014)"),
}


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a language model",
                       description="Train a recurrent language model. Settings come from --preset, then "
                                   "--config (TOML with [train] and [model] tables), then flags.")
    p.add_argument("--preset", help="char-small (the demo), ptb-small, ptb-medium, ptb-large, shakespeare-char")
    p.add_argument("--config", help="TOML file with [train] and [model] tables")
    p.add_argument("--text", help="a plain text file or folder of text files to train on (same as --data PATH)")
    for flag, (_, _, typ, text) in _OVERRIDES.items():
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ, default=None, help=text)
    p.add_argument("--amp", action="store_true", default=None, help="bf16 autocast (CUDA)")
    p.add_argument("--tie-weights", action="store_true", default=None, help="share the embedding and softmax weights")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-baseline", action="store_true", help="skip the Kneser-Ney n-gram baseline")
    p.add_argument("--ngram-order", type=int, default=5, help="order of the Kneser-Ney baseline")
    p.add_argument("--samples", type=int, default=2, help="samples to print per temperature at the end")
    p.add_argument("--experiment", help="also write results/EXPERIMENT.json")


def _run_train(args) -> int:
    from .baselines.ngram import KneserNeyLM
    from .results import REFERENCES, write_result
    from .train.config import build_config, load_toml
    from .train.distributed import init_from_env, shutdown
    from .train.lm_data import prepare_lm_data
    from .train.trainer import CHECKPOINT, LMTrainer

    overrides: dict[str, dict] = {"train": {}, "model": {}}
    for flag, (section, key, _, _) in _OVERRIDES.items():
        if getattr(args, flag) is not None:
            overrides[section][key] = getattr(args, flag)
    if args.text is not None:
        overrides["train"]["data"] = args.text
    if args.amp:
        overrides["train"]["amp"] = True
    if args.tie_weights:
        overrides["model"]["tie_weights"] = True
    if args.no_progress:
        overrides["train"]["progress"] = False
    if args.experiment is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.experiment):
        raise ConfigError(f"--experiment must be a plain name (letters, digits, '.', '_', '-'), got {args.experiment!r}")
    cfg = build_config(args.preset, load_toml(args.config) if args.config else None, overrides)
    ctx = init_from_env(cfg.train.device)
    say = print if ctx.is_main else (lambda *a, **k: None)
    t0 = time.perf_counter()
    try:
        data = prepare_lm_data(cfg.train)
        say(f"corpus {data.name} ({data.level}): {len(data.train):,} train / {len(data.valid):,} valid / "
            f"{len(data.test):,} test tokens, vocabulary {len(data.vocab):,}")
        baseline = None
        if not args.no_baseline and ctx.is_main:
            kn = KneserNeyLM(order=args.ngram_order, vocab_size=len(data.vocab)).fit(data.train.numpy())
            baseline = {"order": args.ngram_order, "valid": kn.evaluate(data.valid.numpy()),
                        "test": kn.evaluate(data.test.numpy())}
            say(f"{args.ngram_order}-gram Kneser-Ney baseline: valid {_describe(baseline['valid'], data.level)}")
        trainer = LMTrainer(cfg, data, ctx)
        if args.resume:
            trainer.resume()
            say(f"resumed from {trainer.out / CHECKPOINT} at step {trainer.progress.step}")
        n_params = sum(p.numel() for p in trainer.model.parameters())
        say(f"model: {cfg.model.cell} {cfg.model.num_layers}x{cfg.model.hidden_size}, {n_params:,} parameters, "
            f"path={trainer.model.rnn.path}, {ctx.world_size} process(es)")
        result = trainer.fit()
    finally:
        shutdown(ctx)
    if not ctx.is_main:
        return 0
    wall = time.perf_counter() - t0
    say(f"\nstopped by {result['stopped_by']} after {result['steps']} updates ({result['train_seconds'] / 60:.1f} min)")
    say(f"{'model':<28} valid {_describe(result['valid'], data.level)}   test {_describe(result['test'], data.level)}")
    if baseline is not None:
        say(f"{str(args.ngram_order) + '-gram Kneser-Ney':<28} valid {_describe(baseline['valid'], data.level)}   "
            f"test {_describe(baseline['test'], data.level)}")
    out = Path(cfg.train.out)
    if args.samples > 0:
        _print_samples(out / "best.safetensors", args.samples, cfg.train.seed)
    say(f"\ncheckpoint: {out / CHECKPOINT}   best weights: {out / 'best.safetensors'}")
    say(f"continue with:  rnnkit sample {shlex.quote(str(out / 'best.safetensors'))} --length 300 --temperature 0.8")
    if args.experiment:
        metrics = {"valid": result["valid"], "test": result["test"], "steps": result["steps"],
                   "epochs_completed": result["epochs_completed"], "stopped_by": result["stopped_by"],
                   "train_seconds": result["train_seconds"], "ngram": baseline}
        ref = None
        if args.preset in REFERENCES:
            what, key, value, source = REFERENCES[args.preset]
            ref = {"what": what, "metric": key, "value": value, "source": source,
                   "baseline_metric": "ngram." + key}
        path = write_result(args.experiment, metrics, seed=cfg.train.seed, wall_seconds=wall,
                            config=cfg.to_dict(), reference=ref)
        say(f"wrote {path}")
    return 0


def _describe(m: dict, level: str) -> str:
    if level == "char":
        return f"{m['nll'] / math.log(2):.3f} bits/char"
    return f"ppl {m['ppl']:.1f}"


def _print_samples(path: Path, n: int, seed: int) -> None:
    from .generate import sample
    from .train.trainer import load_model

    model, vocab, state = load_model(path)
    g = torch.Generator().manual_seed(seed)
    level = state.get("level", "char")
    start = vocab.stoi.get("\n", vocab.eos_id) if level == "char" else vocab.eos_id
    for temperature in (0.5, 1.0):
        print(f"\n--- samples at temperature {temperature} ---")
        seqs = sample(model, batch_size=n, max_new_tokens=300 if level == "char" else 60, start_id=start,
                      temperature=temperature, forbid=[vocab.unk_id, vocab.pad_id], generator=g)
        for s in seqs:
            print(_join(vocab.decode(s), level).rstrip() + ("\n" if level == "char" else ""))


def _join(tokens: list[str], level: str) -> str:
    if level == "char":
        return "".join(tokens)
    return " ".join(t if t != "<eos>" else "\n" for t in tokens).replace(" \n ", "\n")


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="sample text from a trained model")
    p.add_argument("checkpoint", help="best.safetensors or checkpoint.safetensors")
    p.add_argument("--prime", default=None, help="text to condition on")
    p.add_argument("--length", type=int, default=300, help="tokens to generate")
    p.add_argument("--num", type=int, default=1, help="number of samples")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--allow-unk", action="store_true", help="let <unk> be sampled")
    p.add_argument("--stop-at-eos", action="store_true", help="end a sample at <eos>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def _run_sample(args) -> int:
    from .data.tokenize import tokenize
    from .generate import sample
    from .train.trainer import load_model

    model, vocab, state = load_model(args.checkpoint, args.device)
    level = state.get("level", "char")
    prime = None
    if args.prime:
        prime = vocab.encode_tensor(tokenize(args.prime, level) if level == "char" else args.prime.split())
        prime = prime.unsqueeze(0).to(args.device)
    start = vocab.stoi.get("\n", vocab.eos_id) if level == "char" else vocab.eos_id
    forbid = [vocab.pad_id] + ([] if args.allow_unk else [vocab.unk_id])
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    seqs = sample(model, prime=prime, batch_size=args.num, max_new_tokens=args.length, start_id=start,
                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                  forbid=forbid, eos_id=vocab.eos_id if args.stop_at_eos else None, generator=g)
    for s in seqs:
        print((args.prime or "") + ("" if level == "char" else " ") + _join(vocab.decode(s), level))
        if args.num > 1:
            print("-" * 40)
    return 0


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model on a corpus split")
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, help="dataset name or text path (default: the default corpus)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--bptt", type=int, default=64)
    p.add_argument("--device", default="cpu")


def _run_eval(args) -> int:
    from .train.config import TrainConfig
    from .train.lm_data import prepare_lm_data
    from .train.trainer import LMTrainer, load_model

    model, vocab, state = load_model(args.checkpoint, args.device)
    cfg = TrainConfig(data=args.data, data_dir=args.data_dir, level=state.get("level"), bptt=args.bptt,
                      device=args.device, progress=False)
    data = prepare_lm_data(cfg, vocab=vocab)
    trainer = LMTrainer.__new__(LMTrainer)  # evaluation only: no optimizer, no streams
    trainer.model, trainer.cfg, trainer.data, trainer.device = model, cfg, data, torch.device(args.device)
    trainer._autocast = lambda: torch.autocast("cpu", enabled=False)
    m = trainer.evaluate(getattr(data, args.split))
    print(f"{data.name} {args.split}: {_describe(m, data.level)} (nll {m['nll']:.4f} nats/token over {m['tokens']:,} tokens)")
    return 0


def _ngram_parser(sub) -> None:
    p = sub.add_parser("ngram", help="Kneser-Ney n-gram baseline on a corpus")
    p.add_argument("--data", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--level", default=None, choices=["char", "word"])
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--discounts", default="modified", choices=["modified", "single"])


def _run_ngram(args) -> int:
    from .baselines.ngram import KneserNeyLM
    from .train.config import TrainConfig
    from .train.lm_data import prepare_lm_data

    data = prepare_lm_data(TrainConfig(data=args.data, data_dir=args.data_dir, level=args.level))
    t0 = time.perf_counter()
    kn = KneserNeyLM(order=args.order, vocab_size=len(data.vocab), discounts=args.discounts).fit(data.train.numpy())
    for split in ("valid", "test"):
        m = kn.evaluate(getattr(data, split).numpy())
        print(f"{args.order}-gram KN ({args.discounts}) on {data.name} {split}: {_describe(m, data.level)} "
              f"(nll {m['nll']:.4f})")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _data_parser(sub) -> None:
    p = sub.add_parser("data", help="list or check the registered datasets")
    p.add_argument("action", choices=["list", "check"])
    p.add_argument("names", nargs="*")
    p.add_argument("--data-dir", default=None)


def _run_data(args) -> int:
    from .data import DATASETS, check, data_dir

    root = data_dir(args.data_dir)
    names = args.names or sorted(DATASETS)
    if args.action == "list":
        print(f"data directory: {root}  (set RNNKIT_DATA or --data-dir)")
        for name in names:
            spec = DATASETS[name]
            print(f"{name:<16} {spec.level:<5} {spec.description}")
        return 0
    bad = 0
    for name in names:
        for split, path, status in check(name, root):
            print(f"{name:<16} {split:<6} {status:<8} {path}")
            bad += status != "ok"
    return 1 if bad else 0


def _bench_parser(sub) -> None:
    from .bench import add_arguments

    p = sub.add_parser("bench", help="time every layer against torch.nn.LSTM",
                       description="Time of every layer/variant as a ratio to torch.nn.LSTM of the same size, "
                                   "measured in the same run, over a grid of sizes, modes and dtypes.")
    add_arguments(p)


def _run_bench(args) -> int:
    from .bench import run

    run(args, args.command_line)
    return 0


COMMANDS = {"train": (_train_parser, _run_train), "sample": (_sample_parser, _run_sample),
            "eval": (_eval_parser, _run_eval), "ngram": (_ngram_parser, _run_ngram),
            "data": (_data_parser, _run_data), "bench": (_bench_parser, _run_bench)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent sequence models: train, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = "rnnkit " + shlex.join(argv)  # recorded with results and benchmarks
    try:
        return COMMANDS[args.command][1](args)
    except RnnkitError as e:
        print(f"rnnkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (a checkpoint was saved if training had started)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
