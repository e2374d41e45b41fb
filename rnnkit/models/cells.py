"""The named recurrent cells a model config may ask for: one registry for every model."""
from __future__ import annotations

from dataclasses import dataclass

from ..nn import GRU, LSTM, RNN, MinGRU, MinLSTM
from ..nn.init import INIT_SCHEMES as INITS
from ..nn.recurrent import Recurrent
from ..options import option

#: cell name -> (layer class, extra constructor arguments)
CELLS: dict[str, tuple[type[Recurrent], dict]] = {
    "lstm": (LSTM, {}),
    "lstm_peephole": (LSTM, {"peephole": True}),
    "lstm_layer_norm": (LSTM, {"layer_norm": True}),
    "gru": (GRU, {}),
    "gru_reset_before": (GRU, {"variant": "reset_before"}),
    "gru_simplified": (GRU, {"variant": "simplified"}),
    "rnn_tanh": (RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (RNN, {"nonlinearity": "relu"}),
    "mingru": (MinGRU, {}),
    "minlstm": (MinLSTM, {}),
}


def stack_checks(config) -> list[tuple[bool, str]]:
    """The checks of every config that builds a :func:`recurrent_layer` from its ``cell``,
    ``hidden_size``, ``num_layers``, ``dropout`` and ``init`` fields (for ``options.require``)."""
    c = config
    return [(c.cell in CELLS, f"cell must be one of {sorted(CELLS)}, got {c.cell!r}"),
            (c.hidden_size > 0 and c.num_layers > 0, "hidden_size and num_layers must be > 0"),
            (0.0 <= c.dropout < 1.0, f"dropout must be in [0, 1), got {c.dropout}"),
            (c.init in INITS, f"init must be one of {INITS}, got {c.init!r}")]


def recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int = 1, *,
                    dropout: float = 0.0, init: str = "torch", forget_bias: float | None = None,
                    bidirectional: bool = False, **regularization) -> Recurrent:
    """A batch-first stack of the named cell; dropout only between layers (as torch.nn);
    ``regularization``: the layer's options of :mod:`rnnkit.nn.regularization`."""
    layer_cls, extras = CELLS[cell]
    kwargs = {"bidirectional": True} if bidirectional else {}
    return layer_cls(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                     dropout=dropout if num_layers > 1 else 0.0, init=init, forget_bias=forget_bias,
                     **extras, **kwargs, **regularization)


#: cells whose state has a memory cell ``c`` besides ``h`` (zoneout_c applies)
CELLS_WITH_C = ("lstm", "lstm_peephole", "lstm_layer_norm")


@dataclass(frozen=True, kw_only=True)
class RegularizationOptions:
    """The recurrent layer's regularisation options (:mod:`rnnkit.nn.regularization`), shared
    by every model config that builds a :func:`recurrent_layer` from its ``cell`` and
    ``num_layers``: such a config derives from this class, checks the rates with
    :func:`regularization_checks` and passes :func:`layer_regularization` to the layer.

    The fields are keyword-only (``kw_only``), so a derived config may still declare
    fields without defaults (``vocab_size``); they come first in ``dataclasses.fields``.
    All 0: the layer computes what it always did (older checkpoints mean what they meant).
    """

    recurrent_dropout: float = option(0.0, "variational dropout on h where it enters the recurrent weights")
    weight_drop: float = option(0.0, "DropConnect on the recurrent weight matrices")
    hidden_dropout: float = option(0.0, "variational dropout between recurrent layers")
    zoneout_h: float = option(0.0, "zoneout rate of the hidden state h (Krueger et al. 2017)")
    zoneout_c: float = option(0.0, "zoneout rate of the LSTM memory cell c")


def regularization_checks(c) -> list[tuple[bool, str]]:
    """Checks of a model config's recurrent regularisation fields (see :func:`layer_regularization`)."""
    rates = ("recurrent_dropout", "weight_drop", "hidden_dropout", "zoneout_h", "zoneout_c")
    checks = [(isinstance(getattr(c, r), (int, float)) and not isinstance(getattr(c, r), bool)
               and 0.0 <= getattr(c, r) < 1.0, f"{r} must be in [0, 1), got {getattr(c, r)!r}") for r in rates]
    checks.append((not c.zoneout_c or c.cell in CELLS_WITH_C,
                   f"zoneout_c needs a cell with a memory cell c ({', '.join(CELLS_WITH_C)}); {c.cell!r} has only h"))
    checks.append((not (c.recurrent_dropout or c.weight_drop) or c.cell not in ("mingru", "minlstm"),
                   f"recurrent_dropout and weight_drop need recurrent weights; {c.cell!r} has none"))
    return checks


def layer_regularization(c, num_layers: int | None = None) -> dict:
    """A model config's recurrent regularisation as :func:`recurrent_layer` keywords;
    ``num_layers``: the stack's depth where the config has no single ``num_layers``
    (an encoder and a decoder), for ``hidden_dropout`` (between layers: none with one)."""
    layers = c.num_layers if num_layers is None else num_layers
    zone = {name: z for name, z in (("h", c.zoneout_h), ("c", c.zoneout_c)) if z}
    return {"recurrent_dropout": c.recurrent_dropout, "weight_drop": c.weight_drop,
            "hidden_dropout": c.hidden_dropout if layers > 1 else 0.0, "zoneout": zone}
