"""Recurrent cells: one class per cell, its equations in the docstring, a pure step."""
from .base import RecurrentCell, State
from .elman import ElmanCell
from .gru import GRU_VARIANTS, GRUCell
from .jordan import JordanCell
from .lstm import LSTMCell
from .min_rnn import MinGRUCell, MinLSTMCell, MinRNNCell

RNNCell = ElmanCell  # torch.nn's name for the same recurrence

__all__ = ["RecurrentCell", "State", "ElmanCell", "RNNCell", "LSTMCell", "GRUCell",
           "GRU_VARIANTS", "JordanCell",
           "MinRNNCell", "MinGRUCell", "MinLSTMCell"]
