"""Timing recurrent layers against torch.nn.LSTM of the same size, in one run.

Machines are noisy, so every figure is a ratio to the reference measured in the
same process, interleaved round by round, taking medians.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

import rnnkit
from rnnkit.errors import ConfigError

#: name -> factory(input_size, hidden_size) of every layer and variant we time.
VARIANTS: dict[str, Callable[[int, int], nn.Module]] = {
    "torch.nn.LSTM": lambda i, h: nn.LSTM(i, h, batch_first=True),
    "torch.nn.GRU": lambda i, h: nn.GRU(i, h, batch_first=True),
    "torch.nn.RNN(tanh)": lambda i, h: nn.RNN(i, h, batch_first=True),
    "torch.nn.LSTM(proj_size=H/2)": lambda i, h: nn.LSTM(i, h, batch_first=True, proj_size=h // 2),
    "rnnkit.LSTM": lambda i, h: rnnkit.LSTM(i, h, batch_first=True),
    "rnnkit.LSTM(proj_size=H/2)": lambda i, h: rnnkit.LSTM(i, h, batch_first=True, proj_size=h // 2),
    "rnnkit.GRU": lambda i, h: rnnkit.GRU(i, h, batch_first=True),
    "rnnkit.RNN(tanh)": lambda i, h: rnnkit.RNN(i, h, batch_first=True),
    "rnnkit.RNN(relu, IRNN)": lambda i, h: rnnkit.RNN(i, h, batch_first=True, nonlinearity="relu", init="identity"),
    "rnnkit.LSTM(peephole)": lambda i, h: rnnkit.LSTM(i, h, batch_first=True, peephole=True),
    "rnnkit.LSTM(layer_norm)": lambda i, h: rnnkit.LSTM(i, h, batch_first=True, layer_norm=True),
    "rnnkit.GRU(reset_before)": lambda i, h: rnnkit.GRU(i, h, batch_first=True, variant="reset_before"),
    "rnnkit.GRU(simplified)": lambda i, h: rnnkit.GRU(i, h, batch_first=True, variant="simplified"),
    "rnnkit.LSTM(scan)": lambda i, h: rnnkit.LSTM(i, h, batch_first=True, backend="scan"),
}
REFERENCE = "torch.nn.LSTM"
#: standard rnnkit configurations and the torch.nn module they must match in speed.
TWINS = {"rnnkit.LSTM": "torch.nn.LSTM", "rnnkit.GRU": "torch.nn.GRU",
         "rnnkit.RNN(tanh)": "torch.nn.RNN(tanh)", "rnnkit.LSTM(proj_size=H/2)": "torch.nn.LSTM(proj_size=H/2)"}


#: the grid of the kernels issue; the default run is its first cell, B32 T100 H{128,512}.
FULL_GRID = {"batch": [1, 8, 64, 256], "steps": [100, 1000], "hidden": [128, 256, 512, 1024]}
MODES = ("forward", "forward+backward", "inference")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Row:
    variant: str
    path: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    mode: str
    ms: float
    ratio: float
    tokens_per_s: float
    ratio_to_twin: float | None = None  # vs the torch.nn module computing the same thing
    dtype: str = "float32"


@dataclass(frozen=True)
class Case:
    """One point of the grid: every variant is timed on it against the reference."""
    batch: int
    steps: int
    input_size: int
    hidden: int
    mode: str
    dtype: str = "float32"


def _step_fn(module: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    """forward: training-mode forward without autograd; forward+backward: one BPTT;
    inference: eval mode under inference_mode (dropout off, no autograd state)."""
    if mode == "forward":
        def run():
            with torch.no_grad():
                module(x)
    elif mode == "inference":
        module.eval()

        def run():
            with torch.inference_mode():
                module(x)
    else:
        def run():
            out, _ = module(x)
            out.float().sum().backward()
    return run


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def _prepare(name: str, case: Case, dev: torch.device) -> tuple[Callable[[], None], str]:
    torch.manual_seed(0)
    dtype = DTYPES[case.dtype]
    module = VARIANTS[name](case.input_size, case.hidden).to(dev, dtype)
    x = torch.randn(case.batch, case.steps, case.input_size, device=dev, dtype=dtype,
                    requires_grad=case.mode == "forward+backward")
    return _step_fn(module, x, case.mode), getattr(module, "path", "torch")


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2,
                device: torch.device | str = "cpu", settle: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` rounds after ``warmup``, all
    functions every round in a rotating order: drifts in machine load hit every one
    alike and no function always runs right after the same other.

    ``settle`` untimed calls of a function right before its timed one measure it in the
    steady state of a loop calling it back to back (a training loop), its memory warm in
    cache; with 0, each timed call follows another function's (cold)."""
    device = torch.device(device)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for _ in range(settle):
                fns[name]()
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def time_case(case: Case, variants: list[str], device: str = "cpu", repeats: int = 7,
              warmup: int = 2, settle: int = 0) -> list[Row]:
    """Median wall time of each variant on one case, interleaved with the reference
    each round (in a rotating order) so drifts in machine load hit every variant alike;
    each timed call after ``settle`` untimed ones of the same variant (see :func:`interleaved`)."""
    dev = torch.device(device)
    names = [REFERENCE] + [v for v in variants if v != REFERENCE]
    fns = {name: _prepare(name, case, dev) for name in names}
    times = interleaved({name: fn for name, (fn, _) in fns.items()}, repeats, warmup, dev, settle)
    ref = statistics.median(times[REFERENCE])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        twin = TWINS.get(name)
        to_twin = med / statistics.median(times[twin]) if twin in times else None
        rows.append(Row(name, fns[name][1], case.batch, case.steps, case.input_size, case.hidden,
                        case.mode, med * 1e3, med / ref, case.batch * case.steps / med, to_twin, case.dtype))
    return rows


def grid(batches: list[int], steps: list[int], input_size: int, hidden_sizes: list[int],
         modes: list[str], dtypes: list[str] = ("float32",)) -> list[Case]:
    """Every combination, validated: one clear error for a bad size, mode or dtype."""
    for label, values in (("batch", batches), ("steps", steps), ("hidden", hidden_sizes), ("input_size", [input_size])):
        if not values or any(v < 1 for v in values):
            raise ConfigError(f"bench: {label} sizes must be positive integers, got {list(values)}")
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"bench: unknown mode {m!r}; expected one of {', '.join(MODES)}")
    for d in dtypes:
        if d not in DTYPES:
            raise ConfigError(f"bench: unknown dtype {d!r}; expected one of {', '.join(DTYPES)}")
    return [Case(b, t, input_size, h, m, d) for d in dtypes for b in batches for t in steps
            for h in hidden_sizes for m in modes]


def time_grid(batch: int | list[int], steps: int | list[int], input_size: int, hidden_sizes: list[int],
              modes: list[str], variants: list[str], device: str = "cpu", repeats: int = 7, warmup: int = 2,
              dtypes: list[str] = ("float32",), progress: bool = False, settle: int = 0) -> list[Row]:
    """All rows of the grid, case by case (a progress bar when ``progress``)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"bench: unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    cases = grid(_as_list(batch), _as_list(steps), input_size, hidden_sizes, modes, dtypes)
    rows: list[Row] = []
    for case in tqdm(cases, desc="bench", disable=not progress, unit="case"):
        rows += time_case(case, variants, device, repeats, warmup, settle)
    return rows


def _as_list(v: int | list[int]) -> list[int]:
    return [v] if isinstance(v, int) else list(v)


def _cpu_model() -> str | None:
    """The CPU's model name where the OS says it (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


#: the CPU features that decide which kernels run (oneDNN/MKL's and the C loops' vector width)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "amx_tile", "amx_bf16", "avx_vnni", "asimd", "sve")


def _isa_flags() -> list[str] | None:
    """Which of :data:`ISA_FLAGS` the CPU has (Linux ``/proc/cpuinfo``), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return None


#: environment variables that make oneDNN, MKL, ATen or rnnkit's C loops use less than the CPU has
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
                     "RNNKIT_NATIVE_CFLAGS")


def environment(device: str = "cpu") -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "processor": _cpu_model() or platform.processor() or platform.machine(),
           "isa_flags": _isa_flags(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "device": device}
    # what caps the ISA a run used below the CPU's own (an AVX2 run on an AVX-512 machine)
    env["isa_caps"] = {v: os.environ[v] for v in ISA_CAP_VARIABLES if os.environ.get(v)}
    if device.startswith("cuda") and torch.cuda.is_available():
        env |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    else:  # which CPU kernels the custom cells got: compiled C loops, or the torch-ops fallback
        from .kernels.cpu import native
        lib = native.library()
        env["cpu_kernels"] = "native" if lib is not None else "torch-ops"
        env["native_library"] = None if lib is None else Path(lib._name).name
        if lib is not None:  # the packed GEMM's panel width (two of the vectors it was built with)
            env["native_panel_floats"] = native.panel_width(torch.float32)
            env["native_gemm"] = os.environ.get("RNNKIT_GEMM", "auto")
            env["native_gemm_choices"] = {f"{k[0]} B{k[1]} N{k[2]} K{k[3]} threads{k[4]}": v  # per-shape timing
                                          for k, v in native.gemm_choices().items()}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                           text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["git_commit"] = None
    return env


def markdown_table(rows: list[Row]) -> str:
    lines = ["| variant | path | B | T | H | dtype | mode | ms | ratio to torch.nn.LSTM | ratio to torch.nn twin | tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        twin = f"{r.ratio_to_twin:.3f}x" if r.ratio_to_twin is not None else ""
        lines.append(f"| {r.variant} | {r.path} | {r.batch} | {r.steps} | {r.hidden_size} | {r.dtype} | {r.mode} | "
                     f"{r.ms:.2f} | {r.ratio:.2f}x | {twin} | {r.tokens_per_s:,.0f} |")
    return "\n".join(lines)


def write_json(path: str | Path, rows: list[Row], env: dict, command: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"environment": env, "command": command,
                               "rows": [asdict(r) for r in rows]}, indent=2))
    os.replace(tmp, path)


def add_arguments(p: argparse.ArgumentParser, out: str | None = None) -> None:
    """The flags shared by ``rnnkit bench`` and ``benchmarks/layers.py``."""
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--grid", choices=["default", "full"], default="default",
                   help="full: B {1,8,64,256} x T {100,1000} x H {128,256,512,1024} (overrides sizes)")
    p.add_argument("--batch", type=int, nargs="+", default=[32])
    p.add_argument("--steps", type=int, nargs="+", default=[100])
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    p.add_argument("--modes", nargs="+", default=["forward+backward"], choices=MODES)
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=list(DTYPES))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--settle", type=int, default=0,
                   help="untimed calls of a variant right before each timed one: 0 (default) times each call "
                        "right after another variant's (caches cold), 1 the steady state of a training loop")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 on a machine shared with other jobs)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                   help="default: all of " + ", ".join(VARIANTS))
    p.add_argument("--out", default=out, help="write the rows as JSON here")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace, command: str) -> list[Row]:
    """Time the grid the flags describe, print the table, write JSON if asked."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"bench: --device {args.device} but CUDA is not available on this machine")
    if args.threads < 0:
        raise ConfigError(f"bench: --threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.settle < 0:
        raise ConfigError(f"bench: --settle must be >= 0, got {args.settle}")
    if args.threads:
        torch.set_num_threads(args.threads)  # before anything is timed: environment() records it
    sizes = FULL_GRID if args.grid == "full" else {"batch": args.batch, "steps": args.steps, "hidden": args.hidden}
    rows = time_grid(sizes["batch"], sizes["steps"], args.input_size, sizes["hidden"], args.modes, args.variants,
                     args.device, args.repeats, dtypes=args.dtypes, progress=not args.no_progress,
                     settle=args.settle)
    print(markdown_table(rows))
    if args.out:
        write_json(args.out, rows, environment(args.device) | {"settle": args.settle}, command)
        print(f"\nwrote {args.out}")
    return rows
