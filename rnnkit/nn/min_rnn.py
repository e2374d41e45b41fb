"""``rnnkit.MinGRU`` and ``rnnkit.MinLSTM`` (Feng et al. 2024): recurrences linear in
the state, trained with a parallel scan and run step by step for generation."""
from __future__ import annotations

from ..cells.min_rnn import MinGRUCell, MinLSTMCell, MinRNNCell
from .recurrent import Recurrent


class _MinRecurrent(Recurrent):
    """Shared constructor of the minimal RNN layers (torch.nn.GRU's signature)."""

    cell_class: type[MinRNNCell]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, positive: bool = True, **extras) -> None:
        self.mode, self.positive = type(self).__name__, positive
        super().__init__(self.cell_class, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype, positive=positive, **extras)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.positive else ", positive=False")


class MinGRU(_MinRecurrent):
    r"""Multi-layer minGRU, constructor and I/O like ``torch.nn.GRU``; equations in
    :class:`~rnnkit.cells.min_rnn.MinGRUCell` (no hidden-to-hidden weights, so there
    are only ``weight_ih_l{k}`` and ``bias_ih_l{k}`` per layer and direction).

    Two modes compute the same outputs:

    * parallel (default, ``backend="auto"``, :attr:`path` ``"kernel"``): every step
      at once with :mod:`rnnkit.kernels.linear_scan`, for training;
    * sequential (``backend="scan"``, :attr:`path` ``"scan"``): the O(1)-state
      reference step, one step after another.

    Generation with a carried state (``out, h = layer(x_t, h)``) costs one step
    either way.

    Extras (keyword-only): ``positive=True`` (the paper's :math:`g`, so the log-space
    scan applies; ``False`` for the linear candidate), ``init``,
    ``learn_initial_state``, ``backend``, and ``lengths=`` in ``forward``.

    Example::

        >>> layer = rnnkit.MinGRU(10, 20, num_layers=2, batch_first=True)
        >>> out, h_n = layer(torch.randn(3, 5, 10), lengths=torch.tensor([5, 2, 4]))
        >>> layer.path
        'kernel'
    """

    cell_class = MinGRUCell


class MinLSTM(_MinRecurrent):
    r"""Multi-layer minLSTM, constructor and I/O like ``torch.nn.GRU`` (the state is
    ``h`` alone: there is no cell state); equations in
    :class:`~rnnkit.cells.min_rnn.MinLSTMCell`. Modes and extras as :class:`MinGRU`,
    plus ``forget_bias=`` for the ``f`` block of ``bias_ih``.
    """

    cell_class = MinLSTMCell
