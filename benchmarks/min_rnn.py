"""Training step (forward + backward) of rnnkit.MinGRU / MinLSTM (CPU or CUDA): the parallel
scan against the sequential mode, measured in the same run, interleaved round by
round, medians (B8 I64 H256, T 1024 and 4096 by default). ``--threads 1`` pins one
thread, for a machine shared with other jobs (OpenMP threads fighting other work for
cores make multi-threaded timings meaningless); 0 keeps torch's default.

    python benchmarks/min_rnn.py [--steps 1024 4096] [--threads 0] [--device cuda] [--out PATH]

Rows:

* ``parallel (linear)`` — the layer's default path on CPU (chunked linear-space scan);
* ``parallel (log)`` — the same layer with the log-space (Heinsen) scan forced;
* ``sequential (backend='scan')`` — the layer's sequential mode, the reference loop
  of :mod:`rnnkit.nn.scan`, one step after another;
* ``sequential (step loop)`` — the same steps as a plain Python loop of the cell's
  ``recur`` over ``xp.unbind(0)``, as a user would write it (a check that the
  reference loop adds nothing);
* ``torch.nn.GRU`` — PyTorch's fused GRU of the same size, for scale.

``speedup`` is the sequential mode's time over the row's; ``vs step loop`` the step
loop's time over the row's. A variant slower than ``--slow`` seconds is timed once.
"""
from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from rnnkit.bench import environment, sync, write_json
from rnnkit.kernels import linear_scan as parallel_scan
from rnnkit.nn.min_rnn import MinGRU, MinLSTM

SEQUENTIAL, STEP_LOOP = "sequential (backend='scan')", "sequential (step loop)"


@dataclass
class Row:
    layer: str
    variant: str
    path: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    ms: float
    speedup: float | None  # sequential mode's time / this row's
    vs_step_loop: float | None  # step loop's time / this row's
    tokens_per_s: float


@contextlib.contextmanager
def _forced_method(method: str | None):
    """Make the parallel-scan kernel use ``method`` (None: its own choice)."""
    original = parallel_scan.choose_method
    if method is not None:
        parallel_scan.choose_method = lambda cell, device: method
    try:
        yield
    finally:
        parallel_scan.choose_method = original


def _train_step(layer: nn.Module, x: torch.Tensor, method: str | None = None) -> Callable[[], None]:
    def run() -> None:
        with _forced_method(method):
            out, _ = layer(x)
        out.sum().backward()
    return run


def _step_loop(layer: MinGRU | MinLSTM, x: torch.Tensor) -> Callable[[], None]:
    """The sequential mode of a one-layer, one-direction layer, slicing with unbind."""
    cell, p = layer.cells[0], layer._params(0, 0)

    def run() -> None:
        xp = cell.project_input(x, p)
        h, outputs = x.new_zeros(x.shape[1], layer.hidden_size), []
        for xp_t in xp.unbind(0):
            h, _ = cell.recur(xp_t, (h,), p)
            outputs.append(h)
        torch.stack(outputs).sum().backward()
    return run


def _variants(layer_cls, input_size: int, hidden: int, x: torch.Tensor,
              with_sequential: bool) -> dict[str, tuple[Callable[[], None], str]]:
    torch.manual_seed(0)
    par = layer_cls(input_size, hidden).to(x.device)
    seq = layer_cls(input_size, hidden, backend="scan").to(x.device)
    seq.load_state_dict(par.state_dict())
    variants = {"parallel (linear)": (_train_step(par, x, "linear"), f"{par.path}:linear"),
                "parallel (log)": (_train_step(par, x, "log"), f"{par.path}:log"),
                STEP_LOOP: (_step_loop(seq, x), "step loop")}
    if with_sequential:
        variants[SEQUENTIAL] = (_train_step(seq, x), seq.path)
    return variants


def time_rows(steps: int, batch: int, input_size: int, hidden: int, layers: list[str],
              repeats: int, warmup: int, sequential_max_steps: int, slow: float,
              device: str = "cpu") -> list[Row]:
    dev = torch.device(device)
    x = torch.randn(steps, batch, input_size, device=dev)
    fns: dict[tuple[str, str], tuple[Callable[[], None], str]] = {}
    for name in layers:
        cls = {"MinGRU": MinGRU, "MinLSTM": MinLSTM}[name]
        for variant, fn in _variants(cls, input_size, hidden, x, steps <= sequential_max_steps).items():
            fns[(name, variant)] = fn
    torch.manual_seed(0)
    gru = nn.GRU(input_size, hidden).to(dev)
    fns[("torch.nn.GRU", "fused")] = (_train_step(gru, x), "torch")
    times: dict[tuple[str, str], list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for key, (fn, _) in fns.items():
            if times[key] and times[key][-1] > slow:
                continue  # one timing of a multi-second step is plenty
            sync(dev)
            t0 = time.perf_counter()
            fn()
            sync(dev)
            elapsed = time.perf_counter() - t0
            if r >= warmup or elapsed > slow:
                times[key].append(elapsed)
    rows = []
    for (name, variant), (_, path) in fns.items():
        med = statistics.median(times[(name, variant)])
        seq = times.get((name, SEQUENTIAL))
        loop = times.get((name, STEP_LOOP))
        rows.append(Row(name, variant, path, batch, steps, input_size, hidden, med * 1e3,
                        statistics.median(seq) / med if seq else None,
                        statistics.median(loop) / med if loop else None, batch * steps / med))
    return rows


def markdown_table(rows: list[Row]) -> str:
    lines = ["| layer | variant | path | T | B | H | ms | speedup vs sequential mode | vs step loop | tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        speed = f"{r.speedup:.2f}x" if r.speedup is not None else ""
        loop = f"{r.vs_step_loop:.2f}x" if r.vs_step_loop is not None else ""
        lines.append(f"| {r.layer} | {r.variant} | {r.path} | {r.steps} | {r.batch} | {r.hidden_size} | "
                     f"{r.ms:.1f} | {speed} | {loop} | {r.tokens_per_s:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", nargs="+", default=["MinGRU", "MinLSTM"], choices=["MinGRU", "MinLSTM"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0: torch's default")
    ap.add_argument("--sequential-max-steps", type=int, default=4096,
                    help="time the sequential mode only up to this T")
    ap.add_argument("--slow", type=float, default=5.0, help="seconds above which a variant is timed once")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--out", default=None, help="default: docs/benchmarks/min_rnn_<device type>.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"min_rnn: --device {args.device} but CUDA is not available on this machine")
    out = args.out or f"docs/benchmarks/min_rnn_{torch.device(args.device).type}.json"
    rows = [row for steps in args.steps
            for row in time_rows(steps, args.batch, args.input_size, args.hidden, args.layers,
                                 args.repeats, args.warmup, args.sequential_max_steps, args.slow, args.device)]
    print(markdown_table(rows))
    write_json(out, rows, environment(args.device), "python " + shlex.join(sys.argv))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
