"""Teacher-forced training step (forward + backward of an MSE loss) of rnnkit's JordanRNN
on CPU: the parallel pass against step-by-step loops computing the same thing, in
the same run, interleaved round by round (rotating order), medians
(B32 T256 I32 H256 O32 by default). ``--threads 1`` pins one thread, for a machine
shared with other jobs; 0 keeps torch's default.

    python benchmarks/jordan.py [--repeats 21] [--threads 0] [--settle 2] [--out PATH]

Rows (all compute ``mse(model(x, teacher_inputs(targets)), targets)`` and its gradients,
except the last):

* ``parallel`` — ``model(x, y_prev)``: the step over all ``B*T`` rows at once (3 GEMMs);
* ``step loop (model.step)`` — ``model.step(x[:, t], y_prev[:, t])`` for each ``t``, as
  a user would write it with the step-wise decoding contract;
* ``step loop (hoisted input GEMM)`` — the same loop with the input projection done once
  for all steps beforehand, the cell's ``recur`` per step: the fastest sequential form;
* ``closed loop (free running)`` — ``model(x)`` with no targets, feeding back its own
  outputs: a *different* computation (not teacher forced), for scale.

``speedup`` in a row is the parallel pass's advantage over it (row time / parallel time);
the top-level ``speedup`` is against the *faster* of the two teacher-forced step loops
(the conservative figure), with the per-round spread of the paired ratio as the noise.

Each timed call follows ``--settle`` untimed calls of the same variant: the steady state
of a training loop, which calls one of them back to back. The parallel pass streams
~20 MB of activations and their gradients; right after a different workload they are
out of cache and its first call is ~1.5 ms slower (the loops, bound by per-step
dispatch, hardly change). That cold figure is measured too (every variant's call
following another's) and recorded under ``cold``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from rnnkit.atomic import atomic_write_text
from rnnkit.bench import environment, interleaved
from rnnkit.models.jordan import JordanConfig, JordanRNN

PARALLEL = "parallel"
STEP_API, HOISTED, CLOSED = "step loop (model.step)", "step loop (hoisted input GEMM)", "closed loop (free running)"
TEACHER_FORCED_LOOPS = (STEP_API, HOISTED)
#: the /proc/cpuinfo flags that say which SIMD kernels BLAS and torch can use
ISA_PREFIXES = ("sse4", "avx", "fma", "f16c", "amx")


@dataclass
class Row:
    variant: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    output_size: int
    ms: float           # median
    ms_min: float
    ms_max: float
    speedup: float      # this row's median time / the parallel pass's
    tokens_per_s: float


def isa_flags() -> dict:
    """The CPU's SIMD flags (Linux) and the kernels torch picked for it."""
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = [f for f in line.split(":", 1)[1].split() if f.startswith(ISA_PREFIXES)]
                break
    except OSError:
        pass
    return {"isa_flags": " ".join(flags) or None, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _variants(model: JordanRNN, x: torch.Tensor, targets: torch.Tensor) -> dict[str, Callable[[], None]]:
    y_prev = model.teacher_inputs(targets)

    def train(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            F.mse_loss(forward(), targets).backward()
        return run

    def step_api() -> torch.Tensor:
        return torch.stack([model.step(x[:, t], y_prev[:, t])[0] for t in range(x.shape[1])], dim=1)

    def hoisted() -> torch.Tensor:
        cell, p = model.cell, model.cell.own_params()
        xp = cell.project_input(x, p)  # unbind, not xp[:, t]: each slice's backward would write a full (B, T, H)
        return torch.stack([cell.recur(xp_t, (y_t,), p)[0] for xp_t, y_t in zip(xp.unbind(1), y_prev.unbind(1))],
                           dim=1)

    return {PARALLEL: train(lambda: model(x, y_prev)), STEP_API: train(step_api),
            HOISTED: train(hoisted), CLOSED: train(lambda: model(x))}


def time_variants(batch: int, steps: int, input_size: int, hidden: int, output_size: int,
                  repeats: int, warmup: int, settle: int) -> tuple[list[Row], dict[str, list[float]]]:
    """Rows, and every timed round per variant (seconds)."""
    torch.manual_seed(0)
    model = JordanRNN(JordanConfig(input_size, output_size, hidden))
    x = torch.randn(batch, steps, input_size)
    targets = torch.randn(batch, steps, output_size)
    fns = _variants(model, x, targets)
    names = list(fns)
    times = interleaved(fns, repeats, warmup, settle=settle)
    par = statistics.median(times[PARALLEL])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        rows.append(Row(name, batch, steps, input_size, hidden, output_size, med * 1e3, min(times[name]) * 1e3,
                        max(times[name]) * 1e3, med / par, batch * steps / med))
    return rows, times


def summary(rows: list[Row], times: dict[str, list[float]]) -> dict:
    """The headline: the parallel pass against the faster teacher-forced step loop, with
    the per-round ratios (each round times every variant once) as the noise."""
    by_name = {r.variant: r for r in rows}
    baseline = min(TEACHER_FORCED_LOOPS, key=lambda n: by_name[n].ms)
    paired = sorted(s / p for s, p in zip(times[baseline], times[PARALLEL]))
    q = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [paired[0]] * 3
    return {"speedup": by_name[baseline].speedup, "speedup_baseline": baseline,
            "speedup_vs_step_api": by_name[STEP_API].speedup, "speedup_vs_hoisted_loop": by_name[HOISTED].speedup,
            "speedup_per_round": {"min": paired[0], "q1": q[0], "median": q[1], "q3": q[2], "max": paired[-1]},
            "parallel_ms": by_name[PARALLEL].ms, "step_by_step_ms": by_name[baseline].ms}


def markdown_table(rows: list[Row]) -> str:
    lines = ["| variant | B | T | I | H | O | ms (median) | min..max ms | parallel speedup over it | tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.variant} | {r.batch} | {r.steps} | {r.input_size} | {r.hidden_size} | {r.output_size} | "
                     f"{r.ms:.2f} | {r.ms_min:.2f}..{r.ms_max:.2f} | {r.speedup:.2f}x | {r.tokens_per_s:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--output-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--settle", type=int, default=2,
                    help="untimed calls of a variant right before each timed one (steady state); "
                         "the cold figure (0) is measured as well")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0: torch's default")
    ap.add_argument("--out", default="docs/benchmarks/jordan_cpu.json")
    args = ap.parse_args(argv)
    for name in ("batch", "steps", "input_size", "hidden", "output_size", "repeats"):
        if getattr(args, name) < 1:
            sys.exit(f"jordan: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("warmup", "settle"):
        if getattr(args, name) < 0:
            sys.exit(f"jordan: --{name} must be >= 0, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    sizes = (args.batch, args.steps, args.input_size, args.hidden, args.output_size, args.repeats, args.warmup)
    rows, times = time_variants(*sizes, settle=args.settle)
    cold_rows, cold_times = time_variants(*sizes, settle=0) if args.settle else (rows, times)
    load_after = os.getloadavg()
    head, cold = summary(rows, times), summary(cold_rows, cold_times)
    print(f"steady state ({args.settle} untimed calls before each timed one):\n{markdown_table(rows)}")
    print(f"\ncold (each call right after another variant's):\n{markdown_table(cold_rows)}")
    spread = head["speedup_per_round"]
    print(f"\nspeedup {head['speedup']:.2f}x (parallel vs {head['speedup_baseline']}; per round "
          f"{spread['min']:.2f}..{spread['max']:.2f}x, IQR {spread['q1']:.2f}..{spread['q3']:.2f}x), "
          f"cold {cold['speedup']:.2f}x; load average {load_before[0]:.2f} -> {load_after[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    env = environment("cpu") | isa_flags() | {
        "load_average_1min": f"{load_before[0]:.2f} -> {load_after[0]:.2f}"}
    data = {"environment": env, "command": "python " + shlex.join(sys.argv), **head,
            "repeats": args.repeats, "warmup": args.warmup, "settle": args.settle, "rows": [asdict(r) for r in rows],
            "rounds_ms": {name: [t * 1e3 for t in ts] for name, ts in times.items()},
            "cold": {**cold, "rows": [asdict(r) for r in cold_rows]}}
    atomic_write_text(args.out, json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
