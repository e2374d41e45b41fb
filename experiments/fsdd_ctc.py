"""Connected-digit transcription with CTC on FSDD through the one loop (``--task transcribe``):
utterances of 2-7 digits of one speaker joined with short pauses; a BiGRU over 40 log-mel
channels (frames stacked by 3) and a linear layer to ten digits + blank. Test WER and CER
with best-path decoding and with prefix beam search, on seen speakers (the official split:
test utterances made of takes 0-4 only) and on one held-out speaker.

    OMP_NUM_THREADS=1 RNNKIT_DATA=../shared/data python experiments/fsdd_ctc.py --epochs 40 --minutes 18 --heldout jackson --heldout-minutes 10

Utterances (rnnkit/tasks/transcribe.py): 2-7 takes of one speaker joined with pauses uniform
in 50-200 ms (0-100 ms before and after), drawn from torch.Generator(3 * data_seed + split)
with data_seed 1234: training utterances only from training takes (10-49), validation from
takes 5-9, test from takes 0-4 (or, held out, from every take of that speaker).

Writes results/fsdd-ctc.json: ``metrics.test`` is the official split's (``wer`` = beam,
``wer_greedy``, ``wer_beam``, ``cer_*``), ``metrics.heldout`` the held-out speaker's.
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


def train(args, heldout: str, minutes: float) -> tuple[dict, dict]:
    """One run; ``heldout`` '' = the official split. Returns (loop result, run config)."""
    cfg = build_config(None, {"train": {"task": "transcribe", "heldout_speaker": heldout,
                                        "train_utterances": args.train_utterances, "beam": args.beam,
                                        "epochs": args.epochs, "batch_size": 32, "lr": args.lr,
                                        "lr_decay": args.lr_decay, "lr_decay_start": 5,
                                        "max_minutes": minutes, "seed": args.seed, "progress": False,
                                        "out": f"{args.out}-{heldout or 'official'}"},
                              "model": {"cell": args.cell, "hidden_size": args.hidden_size,
                                        "num_layers": args.num_layers, "frame_stack": 3, "dropout": 0.1}})
    with fresh_run(cfg) as loop:
        task = loop.task
        print(task.summary(), flush=True)
        result = loop.fit()
    print(f"  {heldout or 'official'}: test {task.describe(result['test'])}", flush=True)
    return result, cfg.to_dict()


def main() -> int:
    git_commit()  # the commit this run starts from: write_result records it at the end
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget of the official-split run")
    ap.add_argument("--heldout", default="jackson", help="speaker held out in the second run ('' = none)")
    ap.add_argument("--heldout-minutes", type=float, default=10.0)
    ap.add_argument("--train-utterances", type=int, default=4000)
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=1)
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-decay", type=float, default=0.9, help="per epoch after the fifth")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/fsdd-ctc")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result, cfg = train(args, "", args.minutes)
    metrics = {k: result[k] for k in ("valid", "test", "steps", "epochs_completed", "stopped_by", "train_seconds")}
    notes = []
    if args.heldout:
        r, _ = train(args, args.heldout, args.heldout_minutes)
        metrics["heldout"] = {"speaker": args.heldout, **r["test"], "epochs_completed": r["epochs_completed"]}
        notes.append(f"speaker held out ({args.heldout}: trained on the five others): test WER "
                     f"{r['test']['wer_greedy']:.3f} greedy / {r['test']['wer_beam']:.3f} beam {args.beam}")
    t = result["test"]
    notes.insert(0, f"seen speakers: test WER {t['wer_greedy']:.4f} greedy / {t['wer_beam']:.4f} beam {args.beam}, "
                    f"CER {t['cer_greedy']:.4f} / {t['cer_beam']:.4f}")
    what, metric, value, source = REFERENCES["fsdd-ctc"]
    path = write_result("fsdd-ctc", metrics, seed=args.seed, wall_seconds=time.perf_counter() - t0, config=cfg,
                        reference={"what": what, "metric": metric, "value": value, "source": source},
                        command="python experiments/fsdd_ctc.py " + " ".join(sys.argv[1:]), extra={"notes": notes})
    print("\n".join(notes) + f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
