"""Timing recurrent layers against torch.nn.LSTM of the same size, in one run.

Machines are noisy, so every figure is a ratio to the reference measured in the
same process, interleaved round by round, taking medians.
"""
from __future__ import annotations

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

import rnnkit

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


def _step_fn(module: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    if mode == "forward":
        def run():
            with torch.no_grad():
                module(x)
    else:
        def run():
            out, _ = module(x)
            out.sum().backward()
    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_grid(batch: int, steps: int, input_size: int, hidden_sizes: list[int], modes: list[str],
              variants: list[str], device: str = "cpu", repeats: int = 7, warmup: int = 2) -> list[Row]:
    """Median wall time of each variant, interleaved with the reference each round."""
    dev = torch.device(device)
    rows = []
    for hidden in hidden_sizes:
        for mode in modes:
            names = [REFERENCE] + [v for v in variants if v != REFERENCE]
            fns = {}
            for name in names:
                torch.manual_seed(0)
                module = VARIANTS[name](input_size, hidden).to(dev)
                x = torch.randn(batch, steps, input_size, device=dev, requires_grad=mode != "forward")
                fns[name] = (_step_fn(module, x, mode), getattr(module, "path", "torch"))
            times: dict[str, list[float]] = {n: [] for n in names}
            for r in range(warmup + repeats):
                for name in names:
                    _sync(dev)
                    t0 = time.perf_counter()
                    fns[name][0]()
                    _sync(dev)
                    if r >= warmup:
                        times[name].append(time.perf_counter() - t0)
            ref = statistics.median(times[REFERENCE])
            for name in names:
                med = statistics.median(times[name])
                twin = TWINS.get(name)
                to_twin = med / statistics.median(times[twin]) if twin in times else None
                rows.append(Row(name, fns[name][1], batch, steps, input_size, hidden, mode,
                                med * 1e3, med / ref, batch * steps / med, to_twin))
    return rows


def environment(device: str = "cpu") -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                           text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["git_commit"] = None
    return env


def markdown_table(rows: list[Row]) -> str:
    lines = ["| variant | path | B | T | H | mode | ms | ratio to torch.nn.LSTM | ratio to torch.nn twin | tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        twin = f"{r.ratio_to_twin:.3f}x" if r.ratio_to_twin is not None else ""
        lines.append(f"| {r.variant} | {r.path} | {r.batch} | {r.steps} | {r.hidden_size} | {r.mode} | "
                     f"{r.ms:.2f} | {r.ratio:.2f}x | {twin} | {r.tokens_per_s:,.0f} |")
    return "\n".join(lines)


def write_json(path: str | Path, rows: list[Row], env: dict, command: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"environment": env, "command": command,
                               "rows": [asdict(r) for r in rows]}, indent=2))
    os.replace(tmp, path)
