"""``rnnkit.LSTM``: drop-in for ``torch.nn.LSTM``, plus peepholes and layer norm."""
from __future__ import annotations

from ..cells.lstm import LSTMCell
from .recurrent import Recurrent


class LSTM(Recurrent):
    r"""Multi-layer LSTM, same constructor and I/O as ``torch.nn.LSTM`` (``hx = (h0, c0)``,
    returns ``output, (h_n, c_n)``); equations in :class:`~rnnkit.cells.LSTMCell`.

    Extras (keyword-only): ``peephole=True`` (Gers & Schmidhuber), ``layer_norm=True``
    (Ba et al. 2016), ``forget_bias=1.0``, ``init``, ``learn_initial_state``, ``backend``,
    and ``lengths=`` in ``forward``. Peephole and layer-norm LSTMs run rnnkit's own
    paths; everything else runs PyTorch's fused kernel (``layer.fused``).

    Example::

        >>> lstm = rnnkit.LSTM(10, 20, num_layers=2, peephole=True, forget_bias=1.0)
        >>> out, (h_n, c_n) = lstm(torch.randn(5, 3, 10))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, peephole: bool = False,
                 layer_norm: bool = False, **extras) -> None:
        self.proj_size, self.mode = proj_size, "LSTM"
        self.peephole, self.layer_norm = peephole, layer_norm
        super().__init__(LSTMCell, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype, proj_size=proj_size,
                         peephole=peephole, layer_norm=layer_norm, **extras)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        for key in ("proj_size", "peephole", "layer_norm"):
            if getattr(self, key):
                s += f", {key}={getattr(self, key)!r}"
        return s
