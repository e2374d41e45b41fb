"""Time series for forecasting, generated with no files.

Mackey-Glass (Mackey & Glass 1977): dx/dt = beta x(t - tau) / (1 + x(t - tau)^n) - gamma x(t),
chaotic for tau = 17 (beta 0.2, gamma 0.1, n 10), the benchmark of echo-state and
recurrent forecasting papers (Jaeger & Haas 2004). Integrated with fourth-order
Runge-Kutta at ``dt`` = 0.1 (the delayed term at half steps is the mean of its two
neighbouring history samples) and sampled every time unit after a transient.
"""
from __future__ import annotations

import numpy as np


def mackey_glass(n: int, tau: float = 17.0, *, beta: float = 0.2, gamma: float = 0.1, exponent: float = 10.0,
                 dt: float = 0.1, sample_every: float = 1.0, x0: float = 1.2, transient: int = 1000) -> np.ndarray:
    """``n`` samples of the Mackey-Glass series, one per ``sample_every`` time units, ``(n,)`` float64."""
    if n < 1 or tau <= 0 or dt <= 0 or sample_every < dt:
        raise ValueError(f"mackey_glass: need n >= 1, tau > 0, 0 < dt <= sample_every; got n={n}, tau={tau}, "
                         f"dt={dt}, sample_every={sample_every}")
    lag = int(round(tau / dt))
    stride = int(round(sample_every / dt))
    steps = (n + transient) * stride
    x = np.empty(lag + steps + 1)
    x[:lag + 1] = x0                                  # constant history before t = 0

    def f(now: float, delayed: float) -> float:
        return beta * delayed / (1.0 + delayed ** exponent) - gamma * now

    for i in range(lag, lag + steps):
        d0, d1 = x[i - lag], x[i - lag + 1]
        dh = 0.5 * (d0 + d1)
        k1 = f(x[i], d0)
        k2 = f(x[i] + 0.5 * dt * k1, dh)
        k3 = f(x[i] + 0.5 * dt * k2, dh)
        k4 = f(x[i] + dt * k3, d1)
        x[i + 1] = x[i] + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x[lag + transient * stride::stride][:n].copy()
