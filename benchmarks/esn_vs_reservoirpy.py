"""Echo state network head to head: rnnkit.reservoir vs ReservoirPy on Mackey-Glass tau=17,
same reservoir size, leak, spectral radius, input scaling, ridge and data; one-step and
84-step closed-loop NRMSE and fit time, measured in the same run.

    pip install 'rnnkit[bench]'    # ReservoirPy: a benchmark-only peer
    python benchmarks/esn_vs_reservoirpy.py --experiment esn-mackey-glass

NRMSE = RMSE / std(target). The series is tanh(x - 1) (ReservoirPy's tutorial convention).
Closed loop: from each of ``--starts`` points of the test span, read ``--warmup`` true
values, then predict 84 steps feeding each prediction back.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rnnkit.bench import environment  # noqa: E402
from rnnkit.data.series import mackey_glass  # noqa: E402
from rnnkit.reservoir import EchoStateNetwork, ESNConfig  # noqa: E402
from rnnkit.results import git_commit, write_result  # noqa: E402

HORIZON = 84


def nrmse(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - target) ** 2)) / np.std(target))


def _median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn`` (fits are ~0.1 s: one timing is mostly noise)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rnnkit_esn(a, train_u, train_y, test_u, test_y, starts):
    esn = EchoStateNetwork(ESNConfig(input_size=1, reservoir_size=a.units, output_size=1, spectral_radius=a.sr,
                                     leak_rate=a.leak, input_scaling=a.input_scaling, density=0.1, washout=a.washout,
                                     ridge=a.ridge, seed=a.seed))
    fit = _median_seconds(lambda: esn.fit(torch.tensor(train_u), torch.tensor(train_y)), a.fit_repeats)
    one = esn(torch.tensor(test_u)).numpy()
    closed = [esn.generate(torch.tensor(test_u[s - a.warmup:s]), HORIZON).numpy() for s in starts]
    return fit, one, closed


def reservoirpy_esn(a, train_u, train_y, test_u, test_y, starts):

    from reservoirpy.nodes import Reservoir, Ridge

    reservoir = Reservoir(units=a.units, lr=a.leak, sr=a.sr, input_scaling=a.input_scaling, rc_connectivity=0.1,
                          seed=a.seed)
    esn = reservoir >> Ridge(ridge=a.ridge)
    fit = _median_seconds(lambda: esn.fit(train_u, train_y, warmup=a.washout), a.fit_repeats)
    reservoir.reset()
    one = esn.run(test_u)
    closed = []
    for s in starts:
        reservoir.reset()
        y = np.asarray(esn.run(test_u[s - a.warmup:s]))[-1]     # (1,): the prediction after the warmup
        out = [y]
        for _ in range(HORIZON - 1):
            y = np.asarray(esn(y)).reshape(-1)                  # one timestep in, one out
            out.append(y)
        closed.append(np.stack(out))
    return fit, one, closed


def main() -> int:
    git_commit()  # the commit this run starts from: write_result records it at the end
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=300)
    ap.add_argument("--leak", type=float, default=0.3)
    ap.add_argument("--sr", type=float, default=0.9)
    ap.add_argument("--input-scaling", type=float, default=1.0)
    ap.add_argument("--ridge", type=float, default=1e-8)
    ap.add_argument("--washout", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-repeats", type=int, default=9, help="fits timed per library (median)")
    ap.add_argument("--experiment", default=None)
    a = ap.parse_args()
    series = np.tanh(mackey_glass(a.train + a.test + 1) - 1.0)[:, None]
    train_u, train_y = series[:a.train], series[1:a.train + 1]
    test_u, test_y = series[a.train:-1], series[a.train + 1:]
    starts = np.linspace(a.warmup, len(test_u) - HORIZON, a.starts).astype(int).tolist()
    rows = {}
    t0 = time.perf_counter()
    for name, run in (("rnnkit", rnnkit_esn), ("reservoirpy", reservoirpy_esn)):
        fit, one, closed = run(a, train_u, train_y, test_u, test_y, starts)
        closed_nrmse = [nrmse(c.reshape(-1), test_u[s:s + HORIZON, 0]) for c, s in zip(closed, starts)]
        # one step ahead over the test span after its first `warmup` steps (both start from a zero state)
        rows[name] = {"fit_seconds": fit, "nrmse_1": nrmse(np.asarray(one).reshape(-1)[a.warmup:], test_y[a.warmup:, 0]),
                      "nrmse_84": statistics.fmean(closed_nrmse)}
        print(f"{name:<12} fit {fit:.3f} s   NRMSE 1-step {rows[name]['nrmse_1']:.3g}   84-step closed loop "
              f"{rows[name]['nrmse_84']:.3g}", flush=True)
    metrics = {**rows, "nrmse_ratio": rows["rnnkit"]["nrmse_84"] / rows["reservoirpy"]["nrmse_84"],
               "fit_time_ratio": rows["rnnkit"]["fit_seconds"] / rows["reservoirpy"]["fit_seconds"]}
    print(f"rnnkit / ReservoirPy: NRMSE at 84 steps {metrics['nrmse_ratio']:.3f}x, fit time {metrics['fit_time_ratio']:.3f}x")
    if a.experiment:
        path = write_result(a.experiment, metrics, seed=a.seed, wall_seconds=time.perf_counter() - t0,
                            config=vars(a), extra={"environment": environment()},
                            reference={"what": "NRMSE ratio at 84 steps (rnnkit / ReservoirPy)", "metric": "nrmse_ratio",
                                       "value": 1.2, "source": "issue target (<= 1.2)"})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
