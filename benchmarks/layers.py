"""Time of every rnnkit layer and variant as a ratio to torch.nn.LSTM of the same
size, measured in the same run (default: B32 T100 I64, H 128 and 512, forward+backward).

    python benchmarks/layers.py [--device cuda] [--grid full] [--modes forward inference]
                                [--dtypes float32 bfloat16] [--out docs/benchmarks/layers_cpu.json]

Same flags as ``rnnkit bench``; then ``python benchmarks/report.py`` renders docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from rnnkit.bench import add_arguments, run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap, out="docs/benchmarks/layers_cpu.json")
    run(ap.parse_args(argv), "python " + shlex.join(sys.argv))


if __name__ == "__main__":
    main()
