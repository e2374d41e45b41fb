"""Spoken-digit classification on FSDD through the one loop (``--task classify --dataset fsdd``):
a BiGRU over 40 log-mel channels (optionally frames stacked, utterance-level standardisation,
speed perturbation), mean-pooled, with SpecAugment. One run on the official split (test:
takes 0-4 of every speaker) and one per held-out speaker (train on five speakers, test on
the sixth).

    OMP_NUM_THREADS=1 RNNKIT_DATA=../shared/data python experiments/fsdd.py
    (the defaults: the recorded result's --frame-stack 3 --speed-perturb 0.15 --feature-norm utterance
    --epochs 60 --minutes 6 --lr-decay 0.94 --heldout-epochs 30 --heldout-minutes 2 --threads 1)

Writes results/fsdd-digits.json: ``metrics.test`` is the official split's, and
``metrics.heldout`` the test accuracy per held-out speaker (with their mean).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import rnnkit.tasks  # noqa: E402,F401  (first: the task registry imports the layers in order)
from rnnkit.results import REFERENCES, git_commit, write_result  # noqa: E402
from rnnkit.train.config import build_config  # noqa: E402
from rnnkit.train.loop import fresh_run  # noqa: E402

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def train(args, heldout: str, epochs: int, minutes: float) -> tuple[dict, dict]:
    """One run; ``heldout`` '' = the official split. Returns (loop result, run config)."""
    out = f"{args.out}-{heldout or 'official'}"
    cfg = build_config(None, {"train": {"task": "classify", "dataset": "fsdd", "heldout_speaker": heldout,
                                        "spec_augment": True, "feature_cache": args.feature_cache,
                                        "speed_perturb": args.speed_perturb,
                                        "feature_norm": args.feature_norm, "weight_decay": args.weight_decay,
                                        "epochs": epochs, "batch_size": 32, "lr": args.lr,
                                        "lr_decay": args.lr_decay, "lr_decay_start": 5,
                                        "max_minutes": minutes, "seed": args.seed, "progress": False,
                                        "out": out},
                              "model": {"cell": args.cell, "hidden_size": args.hidden_size, "pooling": args.pooling,
                                        "num_layers": args.num_layers, "dropout": args.dropout,
                                        "frame_stack": args.frame_stack}})
    with fresh_run(cfg) as loop:
        task = loop.task
        print(task.summary(), flush=True)
        result = loop.fit()
    print(f"  {heldout or 'official'}: test {task.describe(result['test'])}", flush=True)
    return result, cfg.to_dict()


def main() -> int:
    git_commit()  # the commit this run starts from: write_result records it at the end
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--minutes", type=float, default=6.0, help="training budget of the official-split run")
    ap.add_argument("--heldout-epochs", type=int, default=30, help="epochs per held-out speaker")
    ap.add_argument("--heldout-minutes", type=float, default=2.0, help="training budget per held-out speaker")
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-decay", type=float, default=0.94, help="per epoch after the fifth")
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--pooling", default="mean", help="last, mean, max or attention")
    ap.add_argument("--speed-perturb", type=float, default=0.15, help="time-stretch training inputs by up to this")
    ap.add_argument("--feature-norm", default="utterance", help="channel or utterance standardisation")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--frame-stack", type=int, default=3, help="consecutive log-mel frames per recurrent step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speakers", default=",".join(SPEAKERS), help="held-out speakers to run ('' = none)")
    ap.add_argument("--feature-cache", default="runs/features")
    ap.add_argument("--out", default="runs/fsdd-digits")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result, cfg = train(args, "", args.epochs, args.minutes)
    heldout = {}
    for speaker in [s for s in args.speakers.split(",") if s]:
        r, _ = train(args, speaker, args.heldout_epochs, args.heldout_minutes)
        heldout[speaker] = {"accuracy": r["test"]["accuracy"], "loss": r["test"]["loss"],
                            "valid_accuracy": r["valid"]["accuracy"], "epochs_completed": r["epochs_completed"]}
    if heldout:
        heldout["mean_accuracy"] = sum(v["accuracy"] for v in heldout.values()) / len(heldout)
    metrics = {k: result[k] for k in ("valid", "test", "steps", "epochs_completed", "stopped_by", "train_seconds")}
    metrics["heldout"] = heldout
    what, metric, value, source = REFERENCES["fsdd-digits"]
    path = write_result("fsdd-digits", metrics, seed=args.seed, wall_seconds=time.perf_counter() - t0, config=cfg,
                        reference={"what": what, "metric": metric, "value": value, "source": source},
                        command="python experiments/fsdd.py " + " ".join(sys.argv[1:]),
                        extra={"notes": ["speaker-held-out test accuracy (train on five speakers, test on the "
                                         "sixth): " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in
                                                                heldout.items() if k != "mean_accuracy")
                                         + (f"; mean {heldout['mean_accuracy']:.3f}" if heldout else "")]})
    print(f"official test accuracy {result['test']['accuracy']:.4f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
