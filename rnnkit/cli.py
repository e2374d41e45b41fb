"""The ``rnnkit`` command line: train, sample, eval, ngram, data, bench.

Errors a user can fix (bad flags, configs, corpora, checkpoints) print one line
and exit with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import sys
import time
from pathlib import Path

from .errors import ConfigError, RnnkitError


#: one line per subcommand (``rnnkit --help``); each parser is built only when its command runs,
#: so ``rnnkit data list`` does not import the models and kernels ``rnnkit train`` needs
HELP = {
    "train": "train a model (a language model by default; --task adding ...)",
    "sample": "sample text from a trained model",
    "eval": "evaluate a trained model on a split of its task's data",
    "ngram": "Kneser-Ney n-gram baseline on a corpus",
    "translate": "translate raw text (one sentence per line) with a trained encoder-decoder",
    "tag": "tag raw text (one sentence per line) with a trained tagger: NER or POS",
    "transcribe": "transcribe spoken digits in WAV files with a trained CTC model (--task transcribe)",
    "diagnose": "gradient diagnostics of a trained recurrent model (vanishing/exploding gradients)",
    "plot": "plot the curves of one or several runs (metrics.jsonl) to a PNG",
    "report": "one self-contained HTML report of one or several runs",
    "data": "list or check the registered datasets",
    "bench": "time every layer against torch.nn.LSTM",
    "export": "export a trained model to ONNX (whole-sequence or one-step graph)",
}


def _option_sources():
    """(section, dataclass, excluded fields) of every option ``rnnkit train`` accepts:
    the loop's, every task's and every task model's, each declared once."""
    from .models import MODELS
    from .tasks import TASKS
    from .train.config import TrainConfig

    yield "train", TrainConfig, ()
    for task in TASKS.values():
        yield "train", task.Options, ()
        yield "model", MODELS[task.model].config, tuple(task.model_placeholders)


def _option_flags() -> dict[str, tuple[str, str, type, str]]:
    """dest -> (section, key, type, help) for every option flag."""
    from .options import option_help, option_types

    flags: dict[str, tuple[str, str, type, str]] = {}
    for section, cls, exclude in _option_sources():
        for f in dataclasses.fields(cls):
            if f.name in exclude or f.name in flags:
                continue
            typ = next(t for t in option_types(cls, f.name) if t is not type(None))
            flags[f.name] = (section, f.name, typ, option_help(cls, f.name))
    return flags


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help=HELP["train"],
                       description="Train a recurrent model on a task. Settings come from the task's defaults, "
                                   "--preset, --config (TOML with [train] and [model] tables), then flags.")
    p.add_argument("--preset", help="char-small (the demo), ptb-small, ptb-medium, ptb-large, ptb-awd, "
                   "shakespeare-char, shakespeare-char-reg")
    p.add_argument("--config", help="TOML file with [train] and [model] tables")
    p.add_argument("--text", help="a plain text file or folder of text files to train on (same as --data PATH)")
    for dest, (_, _, typ, text) in _option_flags().items():
        flag = "--" + dest.replace("_", "-")
        if typ is bool:
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(flag, dest=dest, type=typ, default=None, help=text)
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in OUT (its checkpoints, best weights "
                                                             "and metrics) with a new one")
    p.add_argument("--no-baseline", action="store_true", help="skip the task's baseline (LM: Kneser-Ney n-gram)")
    p.add_argument("--ngram-order", type=int, default=5, help="order of the Kneser-Ney baseline")
    p.add_argument("--samples", type=int, default=2, help="LM: samples to print per temperature at the end")
    p.add_argument("--experiment", help="also write results/EXPERIMENT.json")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log scalars (and singular-value histograms of the recurrent matrices when "
                        "--diagnose-every runs) to OUT/tensorboard for TensorBoard (needs: pip install tensorboard)")


def _overrides(args) -> dict[str, dict]:
    """The flags given, as config overrides; a flag of another task is an error here."""
    from .tasks import TASKS
    from .train.config import TrainConfig

    flags = _option_flags()
    given = {dest: getattr(args, dest) for dest in flags if getattr(args, dest) is not None}
    if args.text is not None:
        given["data"] = args.text
    task = given.get("task")
    if task is not None and task not in TASKS:
        raise ConfigError(f"--task must be one of {sorted(TASKS)}, got {task!r}")
    overrides: dict[str, dict] = {"train": {}, "model": {}}
    for dest, value in given.items():
        overrides[flags[dest][0]][dest] = value
    if task is not None:  # name the flags that belong to another task (the config check names keys)
        from .models import MODELS

        cls = TASKS[task]
        model_keys = {f.name for f in dataclasses.fields(MODELS[cls.model].config)}
        ours = {f.name for f in dataclasses.fields(TrainConfig)} | cls.option_names() | model_keys
        foreign = sorted(d for d in given if d not in ours)
        if foreign:
            raise ConfigError(f"--{foreign[0].replace('_', '-')} is not an option of task {task!r}")
    return overrides


def _run_train(args) -> int:
    from .train.config import build_config, load_toml
    from .train.distributed import init_from_env, shutdown
    from .train.loop import Loop

    if args.experiment is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.experiment):
        raise ConfigError(f"--experiment must be a plain name (letters, digits, '.', '_', '-'), got {args.experiment!r}")
    if args.ngram_order < 1 or args.samples < 0:
        raise ConfigError("--ngram-order must be >= 1 and --samples >= 0")
    if args.experiment is not None:
        from .results import git_commit

        git_commit()  # the commit this run starts from: write_result records it at the end
    cfg = build_config(args.preset, load_toml(args.config) if args.config else None, _overrides(args))
    ctx = init_from_env(cfg.train.device)
    say = print if ctx.is_main else (lambda *a, **k: None)
    t0 = time.perf_counter()
    loop = None
    try:
        task = cfg.make_task()
        task.prepare()
        say(task.summary())
        loop = Loop(cfg, task, ctx, tensorboard=args.tensorboard)
        changed = loop.open(resume=args.resume, overwrite=args.overwrite)
        loop.record_info(commands=[args.command_line])
        if args.resume:
            say(f"resumed from {loop.rundir.checkpoint} at step {loop.progress.step}")
            for line in changed:
                say(f"  changed on resume: {line}")
        baseline = None
        if not args.no_baseline and ctx.is_main:
            baseline = task.baseline(args.ngram_order)
            if baseline is not None:
                say(f"{baseline['name']} baseline: valid {task.describe(baseline['valid'])}")
            loop.record_info(baseline=baseline)
        say(f"{_describe_model(task, cfg.model, loop.model)}, {ctx.world_size} process(es)")
        result = loop.fit()
    finally:
        if loop is not None:
            loop.close()
        shutdown(ctx)
    if not ctx.is_main:
        return 0
    wall = time.perf_counter() - t0
    say(f"\nstopped by {result['stopped_by']} after {result['steps']} updates ({result['train_seconds'] / 60:.1f} min)")
    say(f"{'model':<28} valid {task.describe(result['valid'])}   test {task.describe(result['test'])}")
    if baseline is not None:
        say(f"{baseline['name']:<28} valid {task.describe(baseline['valid'])}   test {task.describe(baseline['test'])}")
    if args.samples > 0 and hasattr(task, "join"):
        with loop.best_weights() as model:
            _print_samples(model.eval(), task, args.samples, cfg.train.seed)
    say(f"\ncheckpoint: {loop.rundir.checkpoint}   best weights: {loop.rundir.best}")
    if hasattr(task, "join"):
        say(f"continue with:  rnnkit sample {shlex.quote(str(loop.rundir.best))} --length 300 --temperature 0.8")
    if args.experiment:
        _write_result(args, cfg, result, baseline, wall)
    return 0


def _write_result(args, cfg, result: dict, baseline: dict | None, wall: float) -> None:
    from .results import REFERENCES, write_result

    metrics = {k: result[k] for k in ("valid", "test", "steps", "epochs_completed", "stopped_by", "train_seconds")}
    metrics["baseline"] = baseline
    ref = None
    key = args.preset if args.preset in REFERENCES else args.experiment
    if key in REFERENCES:
        what, metric, value, source = REFERENCES[key]
        ref = {"what": what, "metric": metric, "value": value, "source": source,
               "baseline_metric": "baseline." + metric}
    path = write_result(args.experiment, metrics, seed=cfg.train.seed, wall_seconds=wall,
                        config=cfg.to_dict(), reference=ref, command=args.command_line)
    print(f"wrote {path}")


def _print_samples(model, task, n: int, seed: int) -> None:
    import torch

    from .generate import sample

    g = torch.Generator().manual_seed(seed)
    vocab, char = task.vocab, task.level == "char"
    for temperature in (0.5, 1.0):
        print(f"\n--- samples at temperature {temperature} ---")
        seqs = sample(model, batch_size=n, max_new_tokens=300 if char else 60, start_id=task.start_id(),
                      temperature=temperature, forbid=[vocab.unk_id, vocab.pad_id], generator=g)
        for s in seqs:
            print(printable(task.join(s).rstrip()) + ("\n" if char else ""))


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help=HELP["sample"])
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


def _load_for(task: str, noun: str, path: str, device: str):
    """The saved model at ``path`` on ``device``, refused unless its task is ``task``
    (``noun``: what the command needs, for the error)."""
    from .train.config import check_device
    from .train.saved import load_model

    check_device(device)
    loaded = load_model(path, device)
    if loaded.task.name != task:
        raise ConfigError(f"{path} is a {loaded.task.name!r} model, not {noun} (train with --task {task})")
    return loaded


def _load_lm(path: str, device: str, overrides: dict | None = None):
    from .train.config import check_device
    from .train.saved import load_model

    check_device(device)
    loaded = load_model(path, device, overrides)
    if loaded.task.name != "lm":
        raise ConfigError(f"{path} is a model of task {loaded.task.name!r}; this command needs a language model")
    return loaded


def _run_sample(args) -> int:
    import torch

    from .generate import sample

    loaded = _load_lm(args.checkpoint, args.device)
    task, model = loaded.task, loaded.model
    prime = task.encode_prime(args.prime).unsqueeze(0).to(args.device) if args.prime else None
    forbid = [task.vocab.pad_id] + ([] if args.allow_unk else [task.vocab.unk_id])
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    seqs = sample(model, prime=prime, batch_size=args.num, max_new_tokens=args.length, start_id=task.start_id(),
                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                  forbid=forbid, eos_id=task.vocab.eos_id if args.stop_at_eos else None, generator=g)
    for s in seqs:
        print(printable((args.prime or "") + ("" if task.level == "char" else " ") + task.join(s)))
        if args.num > 1:
            print("-" * 40)
    return 0


def _add_data_arguments(p, data_default: str, split_default: str) -> None:
    """The data a saved model is run on (``eval``, ``diagnose``)."""
    p.add_argument("--data", default=None, help=f"LM: dataset name or text path (default: {data_default})")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default=split_default, choices=["train", "valid", "test"])


def _load_with_data(args, device: str):
    """The saved model, its task's options overridden by --data/--data-dir where given."""
    from .train.saved import load_model

    overrides = {k: v for k, v in (("data", args.data), ("data_dir", args.data_dir)) if v is not None}
    return load_model(args.checkpoint, device, overrides)


def _describe_model(task, options: dict, model) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    rnn = getattr(model, "rnn", None)
    if rnn is None:   # not a recurrent stack (an echo state network, a tree network)
        fields = ", ".join(f"{k}={v}" for k, v in options.items())
        return f"model: {task.model} ({fields}), {n_params:,} trained parameters"
    return (f"model: {options.get('cell')} {options.get('num_layers')}x{options.get('hidden_size')}, "
            f"{n_params:,} parameters, path={getattr(rnn, 'path', '?')}")


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help=HELP["eval"])
    p.add_argument("checkpoint")
    _add_data_arguments(p, data_default="the embedded default corpus", split_default="test")
    p.add_argument("--bptt", type=int, default=64, help="LM: window of the state-carrying evaluation")
    p.add_argument("--device", default="cpu")
    p.add_argument("--free-running", action="store_true",
                   help="LM: also run closed loop (exposure bias): samples scored by a Kneser-Ney model of the "
                        "training split, by horizon, and their distinct-n diversity")
    p.add_argument("--samples", type=int, default=64, help="--free-running: number of samples")
    p.add_argument("--length", type=int, default=100, help="--free-running: tokens per sample")
    p.add_argument("--seed", type=int, default=0, help="--free-running: sampling seed")
    p.add_argument("--plot", default=None, help="--free-running: write the NLL-by-horizon curve as a PNG here")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")


def _run_eval(args) -> int:
    from .train.config import check_device
    from .train.loop import evaluate

    if args.bptt < 1:
        raise ConfigError(f"--bptt must be >= 1, got {args.bptt}")
    check_device(args.device)
    loaded = _load_with_data(args, args.device)
    task = loaded.task
    if args.data is None and task.name == "lm":  # the default corpus unless told otherwise, as before
        task.options = dataclasses.replace(task.options, data=None, data_dir=args.data_dir)
    task.prepare()
    m = evaluate(task, loaded.model, args.split, bptt=args.bptt, device=args.device)
    name = getattr(getattr(task, "data", None), "name", task.name)
    extra = f" (nll {m['nll']:.4f} nats/token over {m['tokens']:,} tokens)" if "tokens" in m and "nll" in m else ""
    print(f"{name} {args.split}: {task.describe(m)}{extra}")
    report: dict = {"split": args.split, "teacher_forced": m}
    if args.free_running:
        report["free_running"] = _free_running(args, task, loaded.model)
    if args.json:
        from .atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


def _free_running(args, task, model) -> dict:
    from .exposure_bias import DEFAULT_HORIZONS, plot_horizon, series_free_running, text_free_running

    if task.name not in ("lm", "forecast"):
        raise ConfigError(f"--free-running needs a task whose model feeds back (lm, forecast), not {task.name!r}")
    if args.samples < 1 or args.length < max(DEFAULT_HORIZONS):
        raise ConfigError(f"--samples must be >= 1 and --length >= {max(DEFAULT_HORIZONS)}")
    label = Path(args.checkpoint).name
    if task.name == "forecast":
        fr = series_free_running(task, model, split=args.split, starts=args.samples)
        at = ", ".join(f"h={h}: {v:.4g}" for h, v in fr["mse_at"].items())
        print(f"free running ({fr['starts']} start points, {fr['warmup']} true values read): MSE by horizon {at}")
        curve, ylabel = fr["mse_curve"], "squared error (standardised)"
    else:
        fr = text_free_running(task, model, samples=args.samples, length=args.length, seed=args.seed)
        at = ", ".join(f"h={h}: {v:.3f}" for h, v in fr["reference_nll_at"].items())
        print(f"free running ({fr['samples']} samples x {fr['length']} tokens): reference NLL "
              f"{fr['reference_nll']:.3f} nats/token ({at}); distinct-2 {fr['distinct_2']:.3f}")
        curve, ylabel = fr["reference_nll_curve"], "reference NLL (nats)"
    if args.plot:
        print(f"wrote {plot_horizon({label: curve}, args.plot, ylabel=ylabel)}")
    return fr


def _tag_parser(sub) -> None:
    p = sub.add_parser("tag", help=HELP["tag"],
                       description="Reads one sentence per line (words separated by spaces) and prints CoNLL "
                                   "columns: a word and its tag per line, a blank line after each sentence.")
    p.add_argument("checkpoint", help="best.safetensors of a run of --task tag")
    p.add_argument("input", nargs="?", default="-", help="a text file (default: standard input)")
    p.add_argument("--device", default="cpu")


def _run_tag(args) -> int:
    from .data.text import read_text_file

    loaded = _load_for("tag", "a tagger", args.checkpoint, args.device)
    text = sys.stdin.read() if args.input == "-" else read_text_file(args.input)
    sentences = [line.split() for line in text.splitlines() if line.strip()]
    for words, tags in zip(sentences, loaded.task.tag(loaded.model, sentences)):
        print("\n".join(f"{w} {t}" for w, t in zip(words, tags)) + "\n")
    return 0


def _translate_parser(sub) -> None:
    p = sub.add_parser("translate", help=HELP["translate"])
    p.add_argument("checkpoint", help="best.safetensors of a run of --task translate")
    p.add_argument("input", nargs="?", default="-", help="a text file (default: standard input)")
    p.add_argument("--beam", type=int, default=5, help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="score / length ** this (0: none)")
    p.add_argument("--device", default="cpu")


def _run_translate(args) -> int:
    from .data.text import read_text_file

    if args.beam < 1:
        raise ConfigError(f"--beam must be >= 1, got {args.beam}")
    loaded = _load_for("translate", "a translator", args.checkpoint, args.device)
    text = sys.stdin.read() if args.input == "-" else read_text_file(args.input)
    lines = [line for line in text.splitlines() if line.strip()]
    for out in loaded.task.translate(loaded.model, lines, args.beam, args.length_penalty):
        print(out)
    return 0


def _transcribe_parser(sub) -> None:
    p = sub.add_parser("transcribe", help=HELP["transcribe"],
                       description="Prints the digit string heard in each mono PCM WAV file (any rate: resampled "
                                   "to the model's), one line per file, in order.")
    p.add_argument("checkpoint", help="best.safetensors of a run of --task transcribe")
    p.add_argument("files", nargs="+", metavar="FILE.wav")
    p.add_argument("--beam", type=int, default=8, help="prefix beam search width (0: best path, greedy)")
    p.add_argument("--device", default="cpu")


def _run_transcribe(args) -> int:
    from .data.audio import read_wav, resample

    if args.beam < 0:
        raise ConfigError(f"--beam must be >= 0, got {args.beam}")
    loaded = _load_for("transcribe", "a transcriber", args.checkpoint, args.device)
    rate = loaded.task.settings().rate
    samples = []
    for path in args.files:
        x, sr = read_wav(path)
        samples.append(x if sr == rate else resample(x, sr, rate, name=path))
    for out in loaded.task.transcribe(loaded.model, samples, args.beam or None):
        print(out)
    return 0


def _diagnose_parser(sub) -> None:
    p = sub.add_parser("diagnose", help=HELP["diagnose"],
                       description="Gradient norm through time, Jacobian norms, spectral radius and singular values "
                                   "per gate, hidden-state saturation, on the first batch of a split.")
    p.add_argument("checkpoint", help="a run folder (its best weights, and the snapshots --diagnose-every logged "
                                      "during training), or best.safetensors / checkpoint.safetensors of any task")
    _add_data_arguments(p, data_default="the one it was trained on", split_default="valid")
    p.add_argument("--steps", type=int, default=100, help="time steps to follow back (LM/forecast window)")
    p.add_argument("--rows", type=int, default=8, help="sequences of the batch to use")
    p.add_argument("--plot-dir", default=None, help="write gradient_through_time.png, singular_values.png, "
                                                    "saturation.png here (and, for a run folder trained with "
                                                    "--diagnose-every, gradient_over_training.png and "
                                                    "spectral_radius_over_training.png)")
    p.add_argument("--json", default=None, help="write the whole report as JSON here")


def _run_diagnose(args) -> int:
    from .diagnostics import batch_inputs, diagnose, plot, plot_training
    from .train.metrics import MetricsLog
    from .train.rundir import RunDir
    from .train.task import Plan

    if args.steps < 1 or args.rows < 1:
        raise ConfigError("--steps and --rows must be >= 1")
    run = RunDir(args.checkpoint) if Path(args.checkpoint).is_dir() else None
    if run is not None:
        if not run.best.exists():
            raise ConfigError(f"{args.checkpoint}: a folder, but not a run (no {run.best.name} in it)")
        args.checkpoint = str(run.best)
    loaded = _load_with_data(args, "cpu")
    loaded.task.prepare()
    batch = loaded.task.batches(Plan(split=args.split, bptt=args.steps, batch_size=args.rows))[0]
    report = diagnose(loaded.model, batch_inputs(batch)[:args.rows])
    g = report["gradient_through_time"]
    print(f"gradient through time (L = sum of h_T), {len(g)} steps: ||dL/dh_T|| {g[-1]:.3g}, "
          + ", ".join(f"{k} back {g[-1 - k]:.3g}" for k in (1, 10, 50, len(g) - 1) if k < len(g)))
    for row in report["spectral"]:
        radius = "" if row["spectral_radius"] is None else f"radius {row['spectral_radius']:.3f}, "
        print(f"  {row['matrix']} gate {row['gate']}/{row['gates']}: {radius}singular values "
              + ", ".join(f"{v:.3f}" for v in row["singular_values"]))
    sat = report["saturation"]
    print(f"hidden states: {100 * sat['saturated_fraction']:.1f}% with |h| > {sat['threshold']}")
    if args.plot_dir:
        for path in plot(report, args.plot_dir, Path(args.checkpoint).name):
            print(f"wrote {path}")
        logged = MetricsLog(run.metrics).read() if run is not None else []
        if any(r.get("split") == "diagnose" for r in logged):
            for path in plot_training(logged, args.plot_dir, run.path.name):
                print(f"wrote {path}")
    if args.json:
        from .atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


def _ngram_parser(sub) -> None:
    p = sub.add_parser("ngram", help=HELP["ngram"])
    p.add_argument("--data", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--level", default=None, choices=["char", "word"])
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--discounts", default="modified", choices=["modified", "single"])


def _describe_lm(m: dict, level: str) -> str:
    return f"{m['bits_per_token']:.3f} bits/char" if level == "char" else f"ppl {m['ppl']:.1f}"


def _run_ngram(args) -> int:
    from .baselines.ngram import KneserNeyLM
    from .tasks.lm import LMOptions, prepare_lm_data

    if args.order < 1:
        raise ConfigError(f"--order must be >= 1, got {args.order}")
    data = prepare_lm_data(LMOptions(data=args.data, data_dir=args.data_dir, level=args.level))
    t0 = time.perf_counter()
    kn = KneserNeyLM(order=args.order, vocab_size=len(data.vocab), discounts=args.discounts).fit(data.train.numpy())
    for split in ("valid", "test"):
        m = kn.evaluate(getattr(data, split).numpy())
        print(f"{args.order}-gram KN ({args.discounts}) on {data.name} {split}: {_describe_lm(m, data.level)} "
              f"(nll {m['nll']:.4f})")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _data_parser(sub) -> None:
    p = sub.add_parser("data", help=HELP["data"])
    p.add_argument("action", choices=["list", "check"])
    p.add_argument("names", nargs="*")
    p.add_argument("--data-dir", default=None)


def _run_data(args) -> int:
    from .data import DATASETS, check, data_dir

    root = data_dir(args.data_dir)
    names = args.names or sorted(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ConfigError(f"unknown dataset {unknown[0]!r}; registered: {', '.join(sorted(DATASETS))}")
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

    p = sub.add_parser("bench", help=HELP["bench"],
                       description="Time of every layer/variant as a ratio to torch.nn.LSTM of the same size, "
                                   "measured in the same run, over a grid of sizes, modes and dtypes.")
    add_arguments(p)


def _run_bench(args) -> int:
    from .bench import run

    run(args, args.command_line)
    return 0


def _plot_parser(sub) -> None:
    p = sub.add_parser("plot", help=HELP["plot"],
                       description="Curves from the runs' metrics.jsonl: the metric for train and valid (and the "
                                   "task's baseline as a line), and the learning-rate schedule. No display needed.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (rnnkit train --out)")
    p.add_argument("--metric", default="loss",
                   help="KEY (every split that logs it) or SPLIT.KEY, e.g. valid.nll (default: loss)")
    p.add_argument("--x", default="step", choices=["step", "time", "tokens"],
                   help="x axis: updates, training seconds, or the task's unit seen (tokens, sequences...)")
    p.add_argument("-o", "--output", required=True, help="the PNG to write")


def _run_plot(args) -> int:
    from .report.plots import save_curves
    from .report.rundata import load_runs

    runs = load_runs(args.runs)
    print(f"wrote {save_curves(runs, args.output, metric=args.metric, x=args.x)}")
    for run in runs:   # after the figure, so that an error stays one line
        for note in run.notes:
            print(f"note: {run.name}: {note}", file=sys.stderr)
    return 0


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help=HELP["report"],
                       description="A self-contained HTML file (no network needed to view it): each run's config "
                                   "and command, final metrics next to the baseline, curves, samples and the task's "
                                   "panels at each evaluation, gradient diagnostics, and a comparison table.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (rnnkit train --out)")
    p.add_argument("-o", "--output", required=True, help="the HTML file to write")
    p.add_argument("--evaluations", type=int, default=4,
                   help="evaluations whose panels are drawn per run (spread over the run, the last included)")


def _run_report(args) -> int:
    from .report.html import write_report
    from .report.rundata import load_runs

    if args.evaluations < 1:
        raise ConfigError(f"--evaluations must be >= 1, got {args.evaluations}")
    print(f"wrote {write_report(load_runs(args.runs), args.output, evaluations=args.evaluations)}")
    return 0


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help=HELP["export"],
                       description="Write a trained language model as an ONNX graph: token ids, lengths and the "
                                   "recurrent state in; logits and the final state out; dynamic batch and time. "
                                   "Needs the export extra (pip install 'rnnkit[export]').")
    p.add_argument("checkpoint", help="best.safetensors or checkpoint.safetensors")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="the export format (default: onnx)")
    p.add_argument("-o", "--output", default=None, help="the file to write (default: CHECKPOINT with .onnx, "
                                                        "or .step.onnx for --mode step)")
    p.add_argument("--mode", default="sequence", choices=["sequence", "step"],
                   help="sequence: a whole (padded) sequence per call; step: one time step, for streaming")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")


def _run_export(args) -> int:
    from .export.onnx import DEFAULT_OPSET, export_onnx, require_onnx

    require_onnx()  # before loading the model: the one-line install hint, not a late ImportError
    loaded = _load_lm(args.checkpoint, "cpu")
    suffix = ".onnx" if args.mode == "sequence" else ".step.onnx"
    out = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(suffix)
    path = export_onnx(loaded.model, out, mode=args.mode, opset=DEFAULT_OPSET if args.opset is None else args.opset)
    print(f"wrote {path} ({args.mode} graph, {path.stat().st_size:,} bytes)")
    return 0


COMMANDS = {"train": (_train_parser, _run_train), "sample": (_sample_parser, _run_sample),
            "eval": (_eval_parser, _run_eval), "diagnose": (_diagnose_parser, _run_diagnose),
            "tag": (_tag_parser, _run_tag), "translate": (_translate_parser, _run_translate),
            "transcribe": (_transcribe_parser, _run_transcribe),
            "ngram": (_ngram_parser, _run_ngram), "plot": (_plot_parser, _run_plot),
            "report": (_report_parser, _run_report),
            "data": (_data_parser, _run_data), "bench": (_bench_parser, _run_bench),
            "export": (_export_parser, _run_export)}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that subcommand's arguments are built."""
    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent sequence models: train, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _) in COMMANDS.items():
        if command in (None, name):
            add(sub)
        else:
            sub.add_parser(name, help=HELP[name])
    return parser


MAX_ERROR_CHARS = 600


def _one_line(message: str) -> str:
    """An error as one bounded, printable line: messages may quote untrusted files."""
    message = printable(" ".join(message.split()), keep="")
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + f"... ({len(message):,} characters)"
    return message


def printable(text: str, keep: str = "\n\t") -> str:
    """``text`` with control and format characters (terminal escape sequences, bidi
    overrides) shown as ``\\xNN`` escapes, except those in ``keep``: a model's tokens
    or a file's contents must not drive the user's terminal."""
    import unicodedata

    return "".join(c if c in keep or unicodedata.category(c) not in ("Cc", "Cf")
                   else c.encode("unicode_escape").decode("ascii") for c in text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    args.command_line = "rnnkit " + shlex.join(argv)  # recorded with results and benchmarks
    try:
        return COMMANDS[args.command][1](args)
    except RnnkitError as e:
        print(f"rnnkit {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's, not ours: disk full, permissions, a vanished file
        where = f" ({_one_line(str(e.filename))})" if e.filename else ""
        print(f"rnnkit {args.command}: error: {_one_line(e.strerror or str(e))}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (a checkpoint was saved if training had started)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
