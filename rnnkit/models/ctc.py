r"""An acoustic model trained with CTC (Graves et al. 2006): feature frames in, a distribution
over labels plus *blank* per frame out.

``forward(x (B, T, I), lengths (B,)) -> (log_probs (B, T', C), out_lengths (B,))``:
optionally ``frame_stack`` consecutive frames are concatenated into one (``T' = ceil(T / k)``,
the usual frame-rate reduction of CTC models: fewer steps, same information), then a
recurrent stack (any rnnkit cell, by default bidirectional) reads them and a linear layer
gives :math:`\log p(c \mid t)` over ``num_labels`` classes, class ``blank`` (0) included.
Train with :class:`torch.nn.CTCLoss` on ``log_probs.transpose(0, 1)``; decode with
:mod:`rnnkit.models.ctc_decode`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..errors import ShapeError
from ..options import option, require
from .cells import (CELLS, RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks,
                    stack_checks)
from .inputs import stack_frames

BLANK = 0


@dataclass(frozen=True)
class CTCConfig(RegularizationOptions):
    """Architecture of a :class:`CTCModel`."""

    num_labels: int                   # from the data: output classes, blank (0) included
    input_size: int = 0               # from the data: feature width
    cell: str = option("gru", "recurrent cell: " + ", ".join(CELLS))
    hidden_size: int = option(128, "recurrent state size (per direction)")
    num_layers: int = option(2, "stacked recurrent layers")
    bidirectional: bool = option(True, "read the sequence both ways")
    frame_stack: int = option(2, "CTC: concatenate this many consecutive frames into one step (frame-rate reduction)")
    dropout: float = option(0.0, "dropout on the inputs, between layers and before the head")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")

    def __post_init__(self) -> None:
        checks = [(self.num_labels >= 2, f"num_labels must be >= 2 (blank and one label), got {self.num_labels}"),
                  (self.input_size > 0, f"input_size must be > 0, got {self.input_size}"),
                  (self.frame_stack >= 1, f"frame_stack must be >= 1, got {self.frame_stack}")]
        require(checks + stack_checks(self) + regularization_checks(self), "model config:")

    def to_dict(self) -> dict:
        return asdict(self)


class CTCModel(nn.Module):
    """``forward(x (B, T, I), lengths (B,) = None) -> (log_probs (B, ceil(T / k), C), out_lengths (B,))``."""

    def __init__(self, config: CTCConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rnn = recurrent_layer(c.cell, c.input_size * c.frame_stack, c.hidden_size, c.num_layers,
                                   dropout=c.dropout, init=c.init, bidirectional=c.bidirectional,
                                   **layer_regularization(c))
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size * (2 if c.bidirectional else 1), c.num_labels)

    def stack(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, I) -> (B, ceil(T / k), k * I)`` for ``k = frame_stack``; lengths likewise
        (:func:`~rnnkit.models.inputs.stack_frames`: padded frames zeroed first)."""
        return stack_frames(x, lengths, self.config.frame_stack)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c = self.config
        if x.dim() != 3 or x.shape[-1] != c.input_size or not x.is_floating_point():
            raise ShapeError(f"CTCModel: input must be float (batch, frames, {c.input_size}), "
                             f"got {x.dtype} of shape {tuple(x.shape)}")
        b, t = x.shape[:2]
        lengths = torch.full((b,), t, dtype=torch.long) if lengths is None else lengths.to("cpu", torch.long)
        if lengths.shape != (b,) or int(lengths.min()) < 1 or int(lengths.max()) > t:
            raise ShapeError(f"CTCModel: lengths must be (batch={b},) in [1, {t}], got {tuple(lengths.shape)} "
                             f"with range [{int(lengths.min())}, {int(lengths.max())}]")
        x, lengths = self.stack(x, lengths)
        out, _ = self.rnn(self.drop(x), lengths=lengths)                 # (B, T', D)
        return torch.log_softmax(self.head(self.drop(out)).float(), dim=-1), lengths
