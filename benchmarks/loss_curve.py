"""Record (or check) the first N training losses of a preset, through the CLI.

Used to prove a refactor of the training loop changes no number:

    python benchmarks/loss_curve.py --preset char-small --steps 200 --out docs/benchmarks/curve_char-small.json
    python benchmarks/loss_curve.py --preset char-small --steps 200 --compare docs/benchmarks/curve_char-small.json

Each update's loss (mean nats per target token) comes from ``metrics.jsonl`` with
``log_every = 1``; ``--compare`` exits 1 if any differs by more than ``--tol``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rnnkit.bench import environment  # noqa: E402
from rnnkit.cli import main as cli_main  # noqa: E402
from rnnkit.results import git_commit  # noqa: E402


def record(preset: str, steps: int, seed: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "curve.toml"
        cfg.write_text(f"[train]\nlog_every = 1\nmax_minutes = 600.0\nseed = {seed}\n")
        out = Path(tmp) / "run"
        rc = cli_main(["train", "--preset", preset, "--config", str(cfg), "--max-steps", str(steps),
                       "--out", str(out), "--no-baseline", "--samples", "0", "--no-progress"])
        if rc != 0:
            raise SystemExit(f"training failed with status {rc}")
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("split") == "train"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the curve here")
    ap.add_argument("--compare", help="check against a curve written by --out")
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    t0 = time.perf_counter()
    losses = record(args.preset, args.steps, args.seed)
    wall = time.perf_counter() - t0
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "preset": args.preset, "steps": args.steps, "seed": args.seed, "losses": losses,
            "command": " ".join(sys.argv), "git_commit": git_commit(), "wall_seconds": wall,
            "environment": environment()}, indent=1) + "\n")
        print(f"wrote {len(losses)} losses to {args.out} ({wall:.0f} s)")
    if args.compare:
        ref = json.loads(Path(args.compare).read_text())["losses"]
        if len(ref) != len(losses):
            print(f"different lengths: {len(ref)} recorded vs {len(losses)} now")
            return 1
        worst = max(abs(a - b) for a, b in zip(ref, losses))
        print(f"{args.preset}: {len(losses)} updates, max |loss - recorded| = {worst:.3g} (tol {args.tol:g})")
        return 0 if worst <= args.tol else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
