"""Sequential and permuted 8x8 digits (64 steps, one pixel per step): LSTM and IRNN
(ReLU + identity recurrent init, Le et al. 2015) through the one loop.

    python experiments/seq_digits.py       # a few minutes on 2 CPU cores

Writes results/seq-digits.json with metrics.<model>.test.accuracy for
lstm, irnn, lstm_permuted, irnn_permuted (fractions).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from rnnkit.results import git_commit, write_result  # noqa: E402
from rnnkit.train.config import build_config  # noqa: E402
from rnnkit.train.loop import Loop  # noqa: E402

MODELS = {
    "lstm": ({"lr": 3e-3}, {"cell": "lstm", "hidden_size": 128}),
    "irnn": ({"lr": 1e-3}, {"cell": "rnn_relu", "init": "identity", "hidden_size": 128}),
}


def main() -> int:
    git_commit()  # the commit this run starts from: write_result records it at the end
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="runs/seq-digits")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    metrics, configs = {}, {}
    for permuted in (False, True):
        for name, (train, model) in MODELS.items():
            key = name + ("_permuted" if permuted else "")
            cfg = build_config(None, {"train": {"task": "seq_digits", "permuted": permuted, "epochs": args.epochs,
                                                "seed": args.seed, "progress": False, "out": f"{args.runs}/{key}",
                                                **train}, "model": model})
            task = cfg.make_task()
            task.prepare()
            loop = Loop(cfg, task)
            loop.open(overwrite=True)
            t = time.perf_counter()
            result = loop.fit()
            metrics[key] = {"valid": result["valid"], "test": result["test"], "steps": result["steps"],
                            "epochs_completed": result["epochs_completed"], "seconds": time.perf_counter() - t}
            configs[key] = cfg.to_dict()
            print(key, f"test accuracy {result['test']['accuracy']:.4f}", f"({metrics[key]['seconds']:.0f} s)",
                  flush=True)
    path = write_result("seq-digits", metrics, seed=args.seed, wall_seconds=time.perf_counter() - t0, config=configs,
                        reference={"what": "LSTM test accuracy", "metric": "lstm.test.accuracy", "value": 0.90,
                                   "source": "issue target (>= 0.90); IRNN and permuted beside it"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
