"""rnnkit: recurrent and recursive sequence models for PyTorch.

The public names below load on first use (PEP 562): ``import rnnkit`` alone
imports nothing else, so ``rnnkit data list``, ``rnnkit sample`` or ``import
rnnkit.data`` do not pay for the layers' kernel stack (:mod:`rnnkit.kernels`,
its native-build and Triton checks). ``rnnkit.LSTM``, ``from rnnkit import LSTM``
and ``rnnkit.nn`` work as before, importing what they need then.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs; never run
    from .cells import ElmanCell, GRUCell, JordanCell, LSTMCell, MinGRUCell, MinLSTMCell, RecurrentCell, RNNCell
    from .nn import GRU, LSTM, RNN, MinGRU, MinLSTM, Recurrent, from_torch, to_torch

__version__ = "0.1.0"

#: public name -> the module that defines it (relative to this package)
_LAZY: dict[str, str] = {
    **dict.fromkeys(("RNN", "LSTM", "GRU", "Recurrent", "from_torch", "to_torch", "MinGRU", "MinLSTM"), ".nn"),
    **dict.fromkeys(("RecurrentCell", "ElmanCell", "RNNCell", "LSTMCell", "GRUCell", "JordanCell",
                     "MinGRUCell", "MinLSTMCell"), ".cells"),
}

__all__ = ["RNN", "LSTM", "GRU", "Recurrent", "from_torch", "to_torch",
           "RecurrentCell", "ElmanCell", "RNNCell", "LSTMCell", "GRUCell", "JordanCell",
           "MinGRU", "MinLSTM", "MinGRUCell", "MinLSTMCell"]


def __getattr__(name: str) -> Any:
    """A public name from its submodule (cached here after the first look-up), or a
    submodule itself (``rnnkit.nn`` without ``import rnnkit.nn``, as before)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)  # binds itself as an attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
