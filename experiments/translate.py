"""Multi30k German->English with an attention encoder-decoder through the one loop; test
BLEU (sacrebleu, detokenised) with greedy decoding and with beam search on the same
model, and an attention heat map of one test sentence.

    RNNKIT_DATA=../shared/data python experiments/translate.py --minutes 25

Writes results/multi30k-attention.json and docs/plots/multi30k_attention.png.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from rnnkit.results import git_commit, write_result  # noqa: E402
from rnnkit.tasks.translate import attention_heatmap, translate_split  # noqa: E402
from rnnkit.train.config import build_config  # noqa: E402
from rnnkit.train.loop import Loop  # noqa: E402
from rnnkit.train.metrics import MetricsLog  # noqa: E402
from rnnkit.train.saved import load_model  # noqa: E402


def main() -> int:
    git_commit()  # the commit this run starts from: write_result records it at the end
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=25.0, help="training budget")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/multi30k-attention")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="score the finished run in --out (its best weights) without training")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.evaluate_only:   # a finished run: its best weights and final metrics
        loaded = load_model(Path(args.out) / "best.safetensors", args.device)
        task, model, cfg = loaded.task, loaded.model, loaded.state["run"]
        task.prepare()
        result = next(r for r in MetricsLog(Path(args.out) / "metrics.jsonl").read() if r.get("split") == "final")
    else:
        cfg = build_config(None, {"train": {"task": "translate", "epochs": args.epochs, "max_minutes": args.minutes,
                                            "device": args.device, "seed": args.seed, "progress": False,
                                            "out": args.out},
                                  "model": {"cell": args.cell, "hidden_size": args.hidden_size,
                                            "embedding_dim": args.hidden_size, "dropout": 0.3}})
        task = cfg.make_task()
        task.prepare()
        loop = Loop(cfg, task)
        loop.open(overwrite=True)
        result = loop.fit()
        model = loop.model
        model.load_state_dict(loop.best_state)
        cfg = cfg.to_dict()
    greedy, _ = translate_split(task, model, "test", beam=1)
    beam, hyps = translate_split(task, model, "test", beam=args.beam)
    Path("docs/plots").mkdir(parents=True, exist_ok=True)
    example = attention_heatmap(task, model.cpu(), task.raw["test"][0][0], "docs/plots/multi30k_attention.png")
    import sacrebleu

    bleu = sacrebleu.BLEU()
    bleu.corpus_score(hyps, [[t for _, t in task.raw["test"]]])
    metrics = {"test": {**result["test"], "bleu": beam, "bleu_greedy": greedy, "bleu_beam": beam, "beam": args.beam},
               "valid": result["valid"], "steps": result["steps"], "epochs_completed": result["epochs_completed"],
               "train_seconds": result["train_seconds"], "sacrebleu_signature": str(bleu.get_signature()),
               "example": {"source": task.raw["test"][0][0], "reference": task.raw["test"][0][1], "output": example}}
    path = write_result("multi30k-attention", metrics, seed=args.seed, wall_seconds=time.perf_counter() - t0,
                        config=cfg,
                        reference={"what": "test BLEU (beam)", "metric": "test.bleu", "value": 30.0,
                                   "source": "issue target (>= 30, sacrebleu detokenised)"},
                        extra={"plots": {"attention, test sentence 1": "plots/multi30k_attention.png"}})
    print(f"test BLEU greedy {greedy:.2f}, beam {args.beam} {beam:.2f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
