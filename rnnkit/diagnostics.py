"""See why a recurrent network does or does not learn long-range dependencies.

For a model whose recurrent stack is ``model.rnn`` (every rnnkit model):

* :func:`gradient_through_time`: ``||dL/dh_t||`` for each step t of a sequence, with L a
  loss on the last step only, so the curve shows how the gradient decays (or explodes)
  as it flows back through time: the product of Jacobians ``dh_{t+1}/dh_t``;
* :func:`jacobian_norms`: ``||dh_T/dh_t||_F`` (Hutchinson estimate with random probes);
* :func:`spectral_report`: spectral radius and largest singular values of every
  recurrent matrix, per gate block (the seeds' "largest singular value of W" argument);
* :func:`saturation`: how often hidden units sit near the ends of their range.

The layer is stepped one time step at a time (its own ``forward`` on ``(B, 1, I)``), so
every ``h_t`` is a node of the graph whatever kernel the layer uses.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError


def recurrent_layer_of(model: nn.Module) -> nn.Module:
    """The model's recurrent stack (``model.rnn``), or a clear error."""
    rnn = getattr(model, "rnn", None)
    if rnn is None or not any(name.startswith("weight_hh") for name, _ in rnn.named_parameters()):
        raise ConfigError(f"{type(model).__name__} has no recurrent layer (model.rnn with weight_hh_*) to diagnose")
    return rnn


def layer_inputs(model: nn.Module, inputs: Tensor) -> Tensor:
    """What the recurrent stack reads: the embedded tokens of a language model, else the inputs."""
    encode = getattr(model, "encode", None)
    if encode is None or inputs.is_floating_point():
        return inputs
    return encode(inputs.long())   # tasks may store ids compactly (the copy task: uint8)


def _hidden(state: Any) -> Tensor:
    return state[0] if isinstance(state, tuple) else state


def _step_states(rnn: nn.Module, x: Tensor) -> list[Tensor]:
    """``h_t`` (all layers, ``(L*D, B, H)``) after each step of ``x (B, T, I)``, graph kept."""
    states, state = [], None
    for x_t in x.unbind(1):
        _, state = rnn(x_t.unsqueeze(1), state)
        h = _hidden(state)
        h.retain_grad()
        states.append(h)
    return states


@contextmanager
def _stepped(model: nn.Module, inputs: Tensor) -> Iterator[list[Tensor]]:
    """The per-step states of the model's recurrent stack on ``inputs``, in eval mode
    (no dropout, no random numbers drawn), graph kept; the mode and gradients are
    restored afterwards."""
    rnn = recurrent_layer_of(model)
    mode = model.training
    model.eval()
    try:
        with torch.enable_grad():
            yield _step_states(rnn, layer_inputs(model, inputs).detach())
    finally:
        model.train(mode)
        model.zero_grad(set_to_none=True)


def gradient_through_time(model: nn.Module, inputs: Tensor) -> list[float]:
    """``||dL/dh_t||`` for t = 1..T with ``L = sum(h_T)`` (all layers and units): entry
    ``T - k`` is the gradient that reached ``k`` steps back. ``inputs``: ``(B, T)`` token
    ids or ``(B, T, I)`` values."""
    with _stepped(model, inputs) as states:
        states[-1].sum().backward()
        return [float(h.grad.norm()) if h.grad is not None else 0.0 for h in states]


def jacobian_norms(model: nn.Module, inputs: Tensor, probes: int = 8, seed: int = 0) -> list[float]:
    """Estimated ``||dh_T/dh_t||_F`` for t = 1..T: ``E||v^T J||^2 = ||J||_F^2`` for
    ``v ~ N(0, I)`` (Hutchinson), averaged over ``probes`` random vectors."""
    g = torch.Generator().manual_seed(seed)
    with _stepped(model, inputs) as states:
        total = torch.zeros(len(states))
        for _ in range(probes):
            v = torch.randn(states[-1].shape, generator=g).to(states[-1])
            grads = torch.autograd.grad(states[-1], states, grad_outputs=v, retain_graph=True, allow_unused=True)
            total += torch.tensor([0.0 if gr is None else float(gr.pow(2).sum()) for gr in grads])
    return (total / probes).sqrt().tolist()


def spectral_report(model: nn.Module, top: int = 3) -> list[dict[str, Any]]:
    """Per recurrent matrix and gate block: spectral radius (largest |eigenvalue|) and the
    ``top`` largest singular values. A radius well above 1 invites exploding gradients,
    well below 1 vanishing ones (for the linearised recurrence)."""
    rnn = recurrent_layer_of(model)
    rows = []
    for name, w in rnn.named_parameters():
        if not name.startswith("weight_hh"):
            continue
        w = w.detach().double().cpu()
        cols = w.shape[1]
        blocks = w.shape[0] // cols if w.shape[0] % cols == 0 else 1
        for g, block in enumerate(w.split(cols) if blocks > 1 else [w]):
            square = block if block.shape[0] == block.shape[1] else None
            radius = float(torch.linalg.eigvals(square).abs().max()) if square is not None else None
            sv = torch.linalg.svdvals(block)[:top].tolist()
            rows.append({"matrix": name, "gate": g, "gates": blocks, "spectral_radius": radius,
                         "singular_values": sv})
    return rows


def saturation(model: nn.Module, inputs: Tensor, threshold: float = 0.95, bins: int = 20) -> dict[str, Any]:
    """How the hidden states are distributed: the fraction with ``|h| > threshold`` (tanh
    units stuck near +-1 pass almost no gradient) and a histogram of all values."""
    rnn = recurrent_layer_of(model)
    with torch.no_grad():
        out, _ = rnn(layer_inputs(model, inputs))
    values = out.detach().float().flatten().cpu()
    lo, hi = float(values.min()), float(values.max())
    hist = torch.histc(values, bins=bins, min=lo, max=hi if hi > lo else lo + 1.0)
    return {"saturated_fraction": float((values.abs() > threshold).float().mean()), "threshold": threshold,
            "histogram": hist.tolist(), "range": [lo, hi]}


def batch_inputs(batch: Any) -> Tensor:
    """The input tensor of a task's batch: ``(window, x, y)`` of the streaming tasks or ``(x, y)``."""
    from .train.tbptt import Window

    return batch[1] if isinstance(batch[0], Window) else batch[0]


def training_snapshot(model: nn.Module, inputs: Tensor, points: int = 12) -> dict[str, Any]:
    """The few numbers worth logging during training: the gradient-through-time curve at
    up to ``points`` distances (steps back from the last) and each matrix's spectral radius."""
    g = gradient_through_time(model, inputs)
    back = sorted({round(k) for k in torch.logspace(0, torch.log10(torch.tensor(float(len(g)))), points).tolist()}
                  | {0})
    return {"grad_back": {str(k): g[-1 - k] for k in back if k < len(g)},
            "spectral_radius": {f"{r['matrix']}:{r['gate']}": r["spectral_radius"] for r in spectral_report(model)}}


def diagnose(model: nn.Module, inputs: Tensor) -> dict[str, Any]:
    """Everything above on one batch of inputs."""
    return {"gradient_through_time": gradient_through_time(model, inputs),
            "jacobian_norms": jacobian_norms(model, inputs), "spectral": spectral_report(model),
            "saturation": saturation(model, inputs)}


def plot(report: dict[str, Any], directory: str | Path, label: str = "model") -> list[Path]:
    """PNGs: gradient norm against distance in time (log scale), singular values per gate,
    the hidden-state histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    g = report["gradient_through_time"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.semilogy(range(len(g)), [max(v, 1e-30) for v in reversed(g)], label=f"{label}: ||dL/dh_(T-k)||")
    ax.semilogy(range(len(g)), [max(v, 1e-30) for v in reversed(report["jacobian_norms"])], "--",
                label=f"{label}: ||dh_T/dh_(T-k)||_F")
    ax.set(xlabel="distance in time k (steps back from the last)", ylabel="norm", title="gradient through time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(directory / "gradient_through_time.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for i, row in enumerate(report["spectral"]):
        sv = row["singular_values"]
        ax.scatter([i] * len(sv), sv, s=12)
    ax.set_xticks(range(len(report["spectral"])),
                  [f"{r['matrix'].removeprefix('weight_hh_')}:{r['gate']}" for r in report["spectral"]],
                  rotation=60, fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(ylabel="largest singular values", title="recurrent matrices, per gate")
    fig.tight_layout()
    paths.append(directory / "singular_values.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    s = report["saturation"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    lo, hi = s["range"]
    edges = torch.linspace(lo, hi if hi > lo else lo + 1.0, len(s["histogram"]) + 1)
    ax.bar(edges[:-1].tolist(), s["histogram"], width=float(edges[1] - edges[0]), align="edge")
    ax.set(xlabel="hidden-state value", ylabel="count",
           title=f"hidden states: {100 * s['saturated_fraction']:.1f}% with |h| > {s['threshold']}")
    fig.tight_layout()
    paths.append(directory / "saturation.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def training_figures(records: list[dict[str, Any]], label: str = "model") -> list[tuple[str, Any]]:
    """``(name, matplotlib Figure)`` of the snapshots ``--diagnose-every`` logged (the
    ``split == "diagnose"`` lines of metrics.jsonl): gradient norm against distance in
    time, one curve per snapshot (light = early, dark = late), and each recurrent
    matrix's spectral radius over training. Figures of matplotlib's object API (no
    pyplot state, no display), for files (:func:`plot_training`) and the run report."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    snapshots = [r for r in records if r.get("split") == "diagnose"]
    if not snapshots:
        raise ValueError("no diagnostics were logged in this run: train with --diagnose-every N")
    fig = Figure(figsize=(6, 3.5), dpi=120, layout="tight")
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    for i, r in enumerate(snapshots):
        back = sorted((int(k), v) for k, v in r["grad_back"].items())
        ax.loglog([k + 1 for k, _ in back], [max(v, 1e-30) for _, v in back],
                  color=cmap(i / max(len(snapshots) - 1, 1)), label=f"step {r['step']}")
    ax.set(xlabel="distance in time k + 1 (steps back from the last)", ylabel="||dL/dh_(T-k)||",
           title=f"{label}: gradient through time over training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    figures = [("gradient_over_training", fig)]
    fig = Figure(figsize=(6, 3.5), dpi=120, layout="tight")
    ax = fig.subplots()
    for name in snapshots[-1]["spectral_radius"]:
        ax.plot([r["step"] for r in snapshots], [r["spectral_radius"].get(name) for r in snapshots], marker=".",
                label=name.removeprefix("weight_hh_"))
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="update", ylabel="spectral radius", title=f"{label}: recurrent matrices over training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    figures.append(("spectral_radius_over_training", fig))
    return figures


def plot_training(records: list[dict[str, Any]], directory: str | Path, label: str = "model") -> list[Path]:
    """PNGs of :func:`training_figures`: ``gradient_over_training.png`` and
    ``spectral_radius_over_training.png`` in ``directory``."""
    figures = training_figures(records, label)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures:
        paths.append(directory / f"{name}.png")
        fig.savefig(paths[-1])
    return paths
