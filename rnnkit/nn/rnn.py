"""``rnnkit.RNN``: drop-in for ``torch.nn.RNN`` (Elman, tanh or ReLU)."""
from __future__ import annotations

from ..cells.elman import ElmanCell
from .recurrent import Recurrent, _no_projection


class RNN(Recurrent):
    r"""Multi-layer Elman RNN, same constructor and I/O as ``torch.nn.RNN``:
    :math:`h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.

    Extras (keyword-only): ``init`` ("identity" with ``nonlinearity="relu"`` gives the
    IRNN of Le et al. 2015), ``init_gain``, ``learn_initial_state``, ``backend``, and
    ``lengths=`` in ``forward``. See :class:`~rnnkit.nn.recurrent.Recurrent`.

    Example::

        >>> rnn = rnnkit.RNN(10, 20, num_layers=2, nonlinearity="relu", init="identity")
        >>> out, h_n = rnn(torch.randn(5, 3, 10))        # (T, B, I) -> (T, B, H), (L, B, H)
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None,
                 **extras) -> None:
        _no_projection(type(self).__name__, extras)
        self.nonlinearity = nonlinearity
        super().__init__(ElmanCell, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype, nonlinearity=nonlinearity, **extras)
        self.mode = self.cells[0].torch_mode

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else "")
