"""Per-step latency of streaming inference on CPU (issue 17): one stream (batch 1; ``--batch
N``: N independent streams stepped together), one step at a time, the state carried, under
``torch.no_grad``, for each hidden size:

* ``torch.nn.LSTMCell loop`` — ``h, c = cell(x_t, (h, c))``, the usual hand loop;
* ``torch.nn.LSTM per step`` — ``out, (h, c) = lstm(x_t[None, None], (h, c))``;
* ``rnnkit.LSTM.step`` — ``y, state = layer.step(x_t, state)`` (:mod:`rnnkit.nn.streaming`);
* ``rnnkit.LSTM.step (grad on)`` — the same with autograd recording (ATen's fused cell);
* ``rnnkit.LSTM forward per step`` — ``layer(x_t[None], state)``, the generic forward;
* the GRU and Elman RNN against their ``torch.nn`` cell loops, and the peephole and
  layer-norm LSTMs and minGRU (no torch.nn twin) for scale;
* ``onnxruntime <cell> step`` — the same layers exported as one-step ONNX graphs
  (:func:`rnnkit.export.export_onnx`, ``mode="step"``) run in an ONNX Runtime session
  with torch's thread count (idle workers not spinning), the state fed back each step (the LSTM and GRU as ONNX's
  fused operators, the peephole LSTM and minGRU as primitive ops); skipped when
  onnxruntime is not installed.

Every function runs a block of steps; all run once per round in a rotating order
(:func:`rnnkit.bench.interleaved`), and the medians over rounds are reported, with the
per-round paired ratio to the twin torch.nn cell loop. ``step_latency_ratio`` is
rnnkit's LSTM step over the ``torch.nn.LSTMCell`` loop at B1 H256 (target <= 0.5).
Input size = hidden size. ``--threads 1`` (default) for a machine shared with other jobs;
``--threads 2`` on a 2-core machine lets the C step split a GEMV's rows over both cores'
caches (and torch's and ONNX Runtime's GEMVs use both too).

    python benchmarks/streaming.py [--hidden 128 256 512] [--batch 1] [--repeats 31] [--steps 200] [--out PATH]
                                   [--threads 1] [--no-onnx]
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import rnnkit
from rnnkit.atomic import atomic_write_text
from rnnkit.bench import environment, interleaved

TARGET = 0.5  # the acceptance: rnnkit step <= 0.5x the torch.nn.LSTMCell loop at B1 H256


def cell_loop(cell: nn.Module, xs: torch.Tensor, lstm: bool) -> Callable[[], None]:
    def run() -> None:
        h = torch.zeros(xs.shape[1], cell.hidden_size)
        s = (h, torch.zeros_like(h)) if lstm else h
        for x in xs:
            s = cell(x, s)
    return run


def torch_layer_per_step(layer: nn.Module, xs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        s = None
        for x in xs:
            _, s = layer(x.unsqueeze(0), s)
    return run


def rnnkit_step(layer: rnnkit.Recurrent, xs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        s = layer.init_state(xs.shape[1])
        for x in xs:
            _, s = layer.step(x, s)
    return run


def rnnkit_step_grad(layer: rnnkit.Recurrent, xs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.enable_grad():
            s = layer.init_state(xs.shape[1])
            for x in xs:
                _, s = layer.step(x, s)
    return run


def rnnkit_forward_per_step(layer: rnnkit.Recurrent, xs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        s = None
        for x in xs:
            _, s = layer(x.unsqueeze(0), s)
    return run


def onnxruntime_step(layer: rnnkit.Recurrent, xs: torch.Tensor, folder: Path) -> Callable[[], None]:
    """``layer`` exported as a one-step graph, run in a session with torch's threads: one
    ``session.run`` per step, the state outputs fed back as the next inputs."""
    import onnxruntime as ort

    from rnnkit.export import export_onnx

    path = export_onnx(layer, folder / f"{id(layer)}.onnx", mode="step")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1  # as torch's
    # ONNX Runtime's idle workers spin by default, taking the cores from whatever runs next
    # (torch.nn.LSTMCell's 2-thread GEMV: 54 -> 240 us a step); here they sleep
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [f"{s}0" for s in layer.cells[0].state_names]
    steps = [x.numpy() for x in xs]
    init = layer.init_state(xs.shape[1])
    init = [s.detach().numpy() for s in (init if isinstance(init, tuple) else (init,))]

    def run() -> None:
        state = init
        for x in steps:
            _, *state = session.run(None, {"x": x, **dict(zip(names, state))})
    return run


def _onnxruntime_version() -> str | None:
    try:
        import onnx  # noqa: F401  (the export builds the graph with it)
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def variants(H: int, steps: int, batch: int = 1,
             onnx_folder: Path | None = None) -> dict[str, tuple[str, str | None, Callable[[], None]]]:
    """name -> (cell, twin variant name or None, function running ``steps`` steps)."""
    torch.manual_seed(0)
    xs = torch.randn(steps, batch, H)
    lstm_cell, gru_cell, rnn_cell = nn.LSTMCell(H, H), nn.GRUCell(H, H), nn.RNNCell(H, H)
    lstm = nn.LSTM(H, H)
    ours_lstm, ours_gru, ours_rnn = rnnkit.LSTM(H, H).eval(), rnnkit.GRU(H, H).eval(), rnnkit.RNN(H, H).eval()
    ours_lstm.load_state_dict(lstm.state_dict())
    out = {
        "torch.nn.LSTMCell loop": ("lstm", None, cell_loop(lstm_cell, xs, True)),
        "torch.nn.LSTM per step": ("lstm", "torch.nn.LSTMCell loop", torch_layer_per_step(lstm, xs)),
        "rnnkit.LSTM.step": ("lstm", "torch.nn.LSTMCell loop", rnnkit_step(ours_lstm, xs)),
        "rnnkit.LSTM.step (grad on)": ("lstm", "torch.nn.LSTMCell loop", rnnkit_step_grad(ours_lstm, xs)),
        "rnnkit.LSTM forward per step": ("lstm", "torch.nn.LSTMCell loop", rnnkit_forward_per_step(ours_lstm, xs)),
        "torch.nn.GRUCell loop": ("gru", None, cell_loop(gru_cell, xs, False)),
        "rnnkit.GRU.step": ("gru", "torch.nn.GRUCell loop", rnnkit_step(ours_gru, xs)),
        "torch.nn.RNNCell loop": ("rnn_tanh", None, cell_loop(rnn_cell, xs, False)),
        "rnnkit.RNN.step": ("rnn_tanh", "torch.nn.RNNCell loop", rnnkit_step(ours_rnn, xs)),
    }
    for name, layer in (("lstm_peephole", rnnkit.LSTM(H, H, peephole=True)),
                        ("lstm_layer_norm", rnnkit.LSTM(H, H, layer_norm=True)),
                        ("mingru", rnnkit.MinGRU(H, H))):
        out[f"rnnkit {name} step"] = (name, "torch.nn.LSTMCell loop", rnnkit_step(layer.eval(), xs))
    if onnx_folder is not None:  # the exported layers, each against its torch.nn twin (custom cells: LSTMCell)
        for name, layer, twin in (("lstm", ours_lstm, "torch.nn.LSTMCell loop"),
                                  ("gru", ours_gru, "torch.nn.GRUCell loop"),
                                  ("lstm_peephole", rnnkit.LSTM(H, H, peephole=True).eval(), "torch.nn.LSTMCell loop"),
                                  ("mingru", rnnkit.MinGRU(H, H).eval(), "torch.nn.LSTMCell loop")):
            out[f"onnxruntime {name} step"] = (name, twin, onnxruntime_step(layer, xs, onnx_folder))
    return out


def measure(hidden: list[int], repeats: int, steps: int, batch: int = 1,
            onnx_folder: Path | None = None) -> tuple[list[dict], dict]:
    rows, ratios = [], {}
    for H in hidden:
        vs = variants(H, steps, batch, onnx_folder)
        with torch.no_grad():
            times = interleaved({n: f for n, (_, _, f) in vs.items()}, repeats=repeats, warmup=3)
        us = {n: [t / steps * 1e6 for t in ts] for n, ts in times.items()}
        for name, (cell, twin, _) in vs.items():
            paired = [a / b for a, b in zip(us[name], us[twin])] if twin else None
            rows.append({"variant": name, "cell": cell, "batch": batch, "hidden_size": H, "input_size": H,
                         "us_per_step": statistics.median(us[name]), "us_min": min(us[name]),
                         "us_max": max(us[name]), "twin": twin,
                         "ratio_to_twin": statistics.median(paired) if paired else None,
                         "ratio_to_twin_iqr": (statistics.quantiles(paired, n=4)[0], statistics.quantiles(paired, n=4)[2])
                         if paired and len(paired) > 1 else None})
        ratios[H] = next(r["ratio_to_twin"] for r in rows if r["hidden_size"] == H and r["variant"] == "rnnkit.LSTM.step")
    return rows, ratios


def table(rows: list[dict]) -> str:
    lines = ["| H | variant | us/step (median) | min | ratio to torch.nn cell loop (paired median) |",
             "|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio_to_twin']:.2f}x" if r["ratio_to_twin"] is not None else ""
        lines.append(f"| {r['hidden_size']} | {r['variant']} | {r['us_per_step']:.1f} | {r['us_min']:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--repeats", type=int, default=31)
    p.add_argument("--steps", type=int, default=200, help="steps per timed block")
    p.add_argument("--batch", type=int, default=1, help="independent streams stepped together")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="docs/benchmarks/streaming_cpu.json")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime rows")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ort_version = None if args.no_onnx else _onnxruntime_version()
    with tempfile.TemporaryDirectory() as folder:
        rows, ratios = measure(args.hidden, args.repeats, args.steps, args.batch, Path(folder) if ort_version else None)
    print(table(rows))
    ratio = ratios.get(256) if args.batch == 1 else None  # the acceptance's figure is one stream's
    if ratio is not None:
        print(f"\nstep_latency_ratio (rnnkit.LSTM.step / torch.nn.LSTMCell loop, B1 H256): {ratio:.2f} "
              f"(target <= {TARGET})")
    result = {"environment": environment(), "command": "python " + shlex.join(sys.argv),
              "batch": args.batch, "steps_per_block": args.steps, "repeats": args.repeats, "grad": "torch.no_grad",
              "step_latency_ratio": ratio, "step_latency_ratio_target": TARGET,
              "step_latency_ratio_by_hidden": {str(h): r for h, r in ratios.items()},  # at this batch
              "onnxruntime": None if ort_version is None else {
                  "version": ort_version, "session_threads": torch.get_num_threads(), "allow_spinning": False,
                  "graph": "rnnkit.export.export_onnx(mode='step')",
                  "variants": sorted({r["variant"] for r in rows if r["variant"].startswith("onnxruntime")})},
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
