"""Layers: torch.nn-compatible recurrent layers that scan any cell, with dispatch to fused paths."""
from .gru import GRU
from .interop import from_torch, to_torch
from .lstm import LSTM
from .min_rnn import MinGRU, MinLSTM
from .recurrent import Recurrent
from .rnn import RNN

__all__ = ["RNN", "LSTM", "GRU", "Recurrent", "from_torch", "to_torch", "MinGRU", "MinLSTM"]
