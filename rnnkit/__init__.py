"""rnnkit: recurrent and recursive sequence models for PyTorch."""
from .cells import ElmanCell, GRUCell, JordanCell, LSTMCell, MinGRUCell, MinLSTMCell, RecurrentCell, RNNCell
from .nn import GRU, LSTM, RNN, MinGRU, MinLSTM, Recurrent, from_torch, to_torch

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "Recurrent", "from_torch", "to_torch",
           "RecurrentCell", "ElmanCell", "RNNCell", "LSTMCell", "GRUCell", "JordanCell",
           "MinGRU", "MinLSTM", "MinGRUCell", "MinLSTMCell"]
