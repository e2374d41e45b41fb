r"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

Their gates read only ``x_t``, never ``h_{t-1}``, so each step is *linear* in the
state, :math:`h_t = a_t \odot h_{t-1} + b_t` with :math:`a_t, b_t` functions of
``x_t`` alone. That buys two equivalent ways to run them:

* the O(1)-state sequential step (:meth:`MinRNNCell.recur`), for generation and as
  the reference;
* a parallel scan over all steps at once (:mod:`rnnkit.kernels.linear_scan`), for
  training, which asks the cell for :meth:`~MinRNNCell.coefficients` (or their logs,
  :meth:`~MinRNNCell.log_coefficients`) of every step.

Both call the same coefficient code, so the two modes cannot drift apart.
"""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from .base import Params, RecurrentCell, State


def g(x: Tensor) -> Tensor:
    r"""The paper's positive candidate activation, :math:`g(x) = x + 0.5` for
    :math:`x \ge 0` else :math:`\sigma(x)`: continuous, > 0, linear for large x."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    r""":math:`\log g(x)`, computed without forming ``g`` (so :math:`\log\sigma(x)`
    does not underflow for very negative ``x``)."""
    # relu keeps the unused branch finite, so torch.where's gradient has no NaN in it
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), F.logsigmoid(x))


class MinRNNCell(RecurrentCell):
    r"""Common base of the cells whose step is linear in the state,
    :math:`h_t = a_t \odot h_{t-1} + b_t` with :math:`0 < a_t < 1`.

    Subclasses set ``num_gates`` and implement :meth:`coefficients` and
    :meth:`log_coefficients` on the projected input ``xp (*, G*H)``.

    Args:
        input_size, hidden_size, bias: as :class:`~rnnkit.cells.RecurrentCell`.
        positive: use the paper's :func:`g` for the candidate, so :math:`\tilde h_t > 0`,
            hence :math:`b_t > 0` and the scan can run in log space (default; the
            paper's log-space version). ``False`` uses the plain linear candidate
            :math:`\tilde h_t = W x_t + b` (the paper's sequential version); the
            parallel scan then runs in linear space.

    Parameters: ``weight_ih (G*H, I)``, ``bias_ih (G*H,)``; no hidden-to-hidden weights.
    State: ``(h (B, H),)``. Output: ``h_t``.
    """

    state_names = ("h",)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 positive: bool = True, own_parameters: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, own_parameters=own_parameters)
        self.positive = bool(positive)
        self._finish_init(device, dtype)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I, G = self.hidden_size, self.input_size, self.num_gates
        shapes = {"weight_ih": (G * H, I)}
        if self.bias:
            shapes["bias_ih"] = (G * H,)
        return shapes

    def candidate(self, xh: Tensor) -> Tensor:
        r""":math:`\tilde h_t` from its pre-activation ``(*, H)``."""
        return g(xh) if self.positive else xh

    def coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)``, each ``(*, H)``, with ``h_t = a * h_{t-1} + b``, from ``xp (*, G*H)``."""
        raise NotImplementedError

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """``(log a, log b)``, each ``(*, H)``; needs ``positive=True`` (``b > 0``)."""
        raise NotImplementedError

    def _require_positive(self) -> None:
        if not self.positive:
            raise ValueError(f"{type(self).__name__}: log_coefficients needs positive=True "
                             "(the linear candidate can be negative, and so can b)")

    def recur(self, xp: Tensor, state: State, p: Params) -> tuple[Tensor, State]:
        a, b = self.coefficients(xp)
        h = torch.addcmul(b, a, state[0])  # a * h + b: O(1) state, no h-to-h weights
        return h, (h,)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.positive else ", positive=False")


class MinGRUCell(MinRNNCell):
    r"""minGRU (Feng et al. 2024), gate order ``z, h``:

    .. math::
        \begin{aligned}
        z_t &= \sigma(W_{iz} x_t + b_{iz}) \\
        \tilde h_t &= g(W_{i\tilde h} x_t + b_{i\tilde h}) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t
        \end{aligned}

    with :math:`g(x) = x + 0.5` if :math:`x \ge 0` else :math:`\sigma(x)` when
    ``positive=True`` (default), the identity otherwise. As a linear recurrence:
    :math:`a_t = 1 - z_t = \sigma(-(W_{iz} x_t + b_{iz}))`, :math:`b_t = z_t \odot \tilde h_t`.

    Parameters: ``weight_ih (2H, I)``, ``bias_ih (2H,)``. State: ``(h (B, H),)``.
    Output: ``h_t``.
    """

    num_gates = 2

    def coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        xz, xh = xp.chunk(2, dim=-1)
        # 1 - sigmoid(k) == sigmoid(-k): no cancellation when z_t is close to 1
        return torch.sigmoid(-xz), torch.sigmoid(xz) * self.candidate(xh)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        self._require_positive()
        xz, xh = xp.chunk(2, dim=-1)
        return F.logsigmoid(-xz), F.logsigmoid(xz) + log_g(xh)


class MinLSTMCell(MinRNNCell):
    r"""minLSTM (Feng et al. 2024), gate order ``f, i, h``:

    .. math::
        \begin{aligned}
        f_t &= \sigma(W_{if} x_t + b_{if}) \qquad i_t = \sigma(W_{ii} x_t + b_{ii}) \\
        \tilde h_t &= g(W_{i\tilde h} x_t + b_{i\tilde h}) \\
        f'_t &= \frac{f_t}{f_t + i_t} \qquad i'_t = \frac{i_t}{f_t + i_t} \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t
        \end{aligned}

    with ``g`` as in :class:`MinGRUCell`. The normalisation makes the gates sum to
    one (time-independent scale of ``h``); it is computed as
    :math:`f' = \sigma(-d)`, :math:`i' = \sigma(d)` with
    :math:`d = \log i_t - \log f_t = \log\sigma(k_i) - \log\sigma(k_f)`
    (``k`` the pre-activations), which is exactly ``f/(f+i)`` and never divides
    two underflowed gates. There is no cell state ``c``: the state is ``h``.

    Parameters: ``weight_ih (3H, I)``, ``bias_ih (3H,)``. State: ``(h (B, H),)``.
    Output: ``h_t``. ``forget_bias`` initialises the ``f`` block of ``bias_ih``.
    """

    num_gates = 3
    forget_gate = 0

    @staticmethod
    def _log_ratio(xf: Tensor, xi: Tensor) -> Tensor:
        r""":math:`d = \log i - \log f`, so that :math:`f' = \sigma(-d)`, :math:`i' = \sigma(d)`."""
        # logsigmoid, not -softplus(-x): softplus turns linear beyond |x| = 20, an
        # approximation float64 would see
        return F.logsigmoid(xi) - F.logsigmoid(xf)

    def coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        xf, xi, xh = xp.chunk(3, dim=-1)
        d = self._log_ratio(xf, xi)
        return torch.sigmoid(-d), torch.sigmoid(d) * self.candidate(xh)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        self._require_positive()
        xf, xi, xh = xp.chunk(3, dim=-1)
        d = self._log_ratio(xf, xi)
        return F.logsigmoid(-d), F.logsigmoid(d) + log_g(xh)
