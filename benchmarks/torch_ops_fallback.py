"""Is the torch-ops CPU kernel (the fallback when no C compiler is found) worth keeping?

Times it against the reference scan it falls back from, forward+backward, interleaved in
one process (ratios of medians), for every custom cell with a fused CPU kernel. Run with
``RNNKIT_NATIVE=0`` set by this script itself, so "kernel" means the torch-ops kernel.
Writes a JSON with the machine (CPU model, ISA flags) beside the table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ["RNNKIT_NATIVE"] = "0"  # before rnnkit loads: the fused path is the torch-ops one

import torch  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.bench import environment, interleaved  # noqa: E402

CELLS = {
    "LSTM(peephole)": (rnnkit.LSTM, {"peephole": True}),
    "LSTM(layer_norm)": (rnnkit.LSTM, {"layer_norm": True}),
    "GRU(reset_before)": (rnnkit.GRU, {"variant": "reset_before"}),
    "GRU(simplified)": (rnnkit.GRU, {"variant": "simplified"}),
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
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="docs/benchmarks/torch_ops_fallback.json")
    args = ap.parse_args()
    rows = []
    for H in args.hidden:
        for name, (cls, kw) in CELLS.items():
            torch.manual_seed(0)
            kernel = cls(H, H, batch_first=True, **kw)
            ref = cls(H, H, batch_first=True, backend="scan", **kw)
            ref.load_state_dict(kernel.state_dict())
            assert kernel.path == "kernel" and ref.path == "scan", (kernel.path, ref.path)
            x = torch.randn(args.batch, args.steps, H)
            times = interleaved({"kernel": _step(kernel, x), "scan": _step(ref, x)}, args.repeats, warmup=1)
            k, s = statistics.median(times["kernel"]), statistics.median(times["scan"])
            rows.append({"cell": name, "batch": args.batch, "steps": args.steps, "hidden": H,
                         "torch_ops_ms": 1e3 * k, "scan_ms": 1e3 * s, "speedup": s / k})
            print(f"| {name} | H{H} | torch-ops {1e3 * k:.1f} ms | scan {1e3 * s:.1f} ms | {s / k:.2f}x |", flush=True)
    doc = {"command": "python benchmarks/torch_ops_fallback.py", "machine": environment(), "rows": rows}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
