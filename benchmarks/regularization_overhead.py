"""What recurrent regularisation costs on the fused paths (issue 16: <= 1.15x).

Each regularised layer is timed against the same layer without regularisation,
forward+backward in training mode, interleaved in one process (ratio of medians), at
B32 T100 H{128, 512}. The masks are drawn by the layer each call, so their cost counts.
Writes a JSON with the machine (CPU model, ISA flags) beside the table.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys

import torch

import rnnkit
from rnnkit.atomic import atomic_write_text
from rnnkit.bench import environment, interleaved

CELLS = {
    "LSTM": {}, "LSTM(peephole)": {"peephole": True}, "LSTM(layer_norm)": {"layer_norm": True},
}
REGS = {
    "recurrent_dropout=0.25": {"recurrent_dropout": 0.25},
    "zoneout(h=0.05, c=0.5)": {"zoneout": {"h": 0.05, "c": 0.5}},
    "recurrent_dropout=0.25 + zoneout + weight_drop=0.5": {"recurrent_dropout": 0.25, "weight_drop": 0.5,
                                                           "zoneout": {"h": 0.05, "c": 0.5}},
    "weight_drop=0.5 + locked dropout": {"weight_drop": 0.5, "input_dropout": 0.2, "output_dropout": 0.2},
}


def _step(layer, x):
    """One forward+backward of ``layer`` on ``x``, as a no-argument function to time."""
    def run() -> None:
        y, _ = layer(x)
        y.sum().backward()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="docs/benchmarks/regularization_overhead.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print("| cell | regularisation | H | path | plain ms | regularised ms | ratio |\n|---|---|---|---|---|---|---|")
    for H in args.hidden:
        x = torch.randn(args.batch, args.steps, H)
        for cname, ckw in CELLS.items():
            for rname, rkw in REGS.items():
                torch.manual_seed(0)
                plain = rnnkit.LSTM(H, H, batch_first=True, **ckw)
                reg = rnnkit.LSTM(H, H, batch_first=True, **ckw, **rkw)
                reg.load_state_dict(plain.state_dict())
                times = interleaved({"plain": _step(plain, x), "reg": _step(reg, x)}, args.repeats, warmup=1)
                p, q = statistics.median(times["plain"]), statistics.median(times["reg"])
                rows.append({"cell": cname, "regularization": rname, "batch": args.batch, "steps": args.steps,
                             "hidden": H, "path_plain": plain.path, "path_regularized": reg.path,
                             "plain_ms": 1e3 * p, "regularized_ms": 1e3 * q, "ratio": q / p})
                print(f"| {cname} | {rname} | {H} | {plain.path}->{reg.path} | {1e3 * p:.1f} | {1e3 * q:.1f} "
                      f"| {q / p:.2f}x |", flush=True)
    doc = {"command": "python " + shlex.join(sys.argv), "environment": environment(), "rows": rows}
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
