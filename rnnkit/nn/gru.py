"""``rnnkit.GRU``: drop-in for ``torch.nn.GRU``, plus the reset-before and simplified forms."""
from __future__ import annotations

from ..cells.gru import GRUCell
from .recurrent import Recurrent, _no_projection


class GRU(Recurrent):
    r"""Multi-layer GRU, same constructor and I/O as ``torch.nn.GRU``; equations in
    :class:`~rnnkit.cells.GRUCell`.

    Extras (keyword-only): ``variant="reset_after"`` (default, torch.nn/cuDNN),
    ``"reset_before"`` (Cho et al. 2014) or ``"simplified"`` (update gate only),
    ``init``, ``learn_initial_state``, ``backend``, and ``lengths=`` in ``forward``.

    Example::

        >>> gru = rnnkit.GRU(10, 20, variant="simplified", batch_first=True)
        >>> out, h_n = gru(torch.randn(3, 5, 10), lengths=torch.tensor([5, 2, 4]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, variant: str = "reset_after", **extras) -> None:
        _no_projection(type(self).__name__, extras)
        self.mode, self.variant = "GRU", variant
        super().__init__(GRUCell, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype, variant=variant, **extras)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", variant={self.variant!r}" if self.variant != "reset_after" else "")
