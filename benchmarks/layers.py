"""Forward+backward time of every rnnkit layer and variant as a ratio to
torch.nn.LSTM, measured in the same run (B32 T100 I64, H 128 and 512 by default).

    python benchmarks/layers.py [--device cpu] [--hidden 128 512] [--out docs/benchmarks/layers_cpu.json]
"""
from __future__ import annotations

import argparse
import shlex
import sys

from rnnkit.bench import VARIANTS, environment, markdown_table, time_grid, write_json


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--modes", nargs="+", default=["forward+backward"], choices=["forward", "forward+backward"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="docs/benchmarks/layers_cpu.json")
    args = ap.parse_args(argv)
    rows = time_grid(args.batch, args.steps, args.input_size, args.hidden, args.modes, args.variants,
                     args.device, args.repeats)
    print(markdown_table(rows))
    write_json(args.out, rows, environment(args.device), "python " + shlex.join(sys.argv))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
