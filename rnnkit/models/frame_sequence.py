r"""Frame-sequence (video) classification: a small CNN per frame, a recurrent layer over
the frames, one label per clip (many-to-one), trained end to end.

``forward(x (B, T, C, H, W), lengths (B,) = None) -> logits (B, K)``:

* :class:`FrameEncoder` maps every frame to a feature vector,
  ``conv3x3-ReLU-maxpool2`` twice, then a spatial pooling (``max``/``mean`` over the whole
  map, or ``flatten`` to keep the layout) and ``Linear-ReLU`` (``(N, C', H, W) -> (N, F)``);
  the ``B * T`` frames of a batch go through it as one batch (reshaped, not looped);
* with ``frame_diff`` (the default) the encoder reads each frame stacked with its
  difference from the previous frame (``C' = 2C``; zero for the first frame);
* an ordinary rnnkit recurrent layer (any cell of :data:`~rnnkit.models.cells.CELLS`,
  deep, uni- or bidirectional, with its regularisation options) reads the ``(B, T, F)``
  features;
* pooling ``last`` (the final state of each direction at each clip's last real frame),
  ``mean`` or ``max`` (over the real frames) gives ``(B, D)``, a linear head the logits.

Why the frame difference and the global pooling: when no single frame tells the class
(:mod:`rnnkit.data.video`), a CNN on raw frames must encode *where* the shape is and the
recurrent layer must subtract positions across frames, a multiplicative interaction that
gradient descent finds only after a long plateau at chance (the plain 8-motion run stayed
at ln 8 for 1,250 steps; a 2-motion one left it after 150 steps or never, by seed). A
difference image shows motion locally (a bright leading edge, a dark trailing one), where a
3x3 convolution sees it, and pooling over the whole map makes the features independent of
where the shape is, which carries no information here. The class still needs the sequence:
one difference says "moving up-left" now, not whether the path turns clockwise or zig-zags.

Nothing here is special to training: the task (:mod:`rnnkit.tasks.video`) uses the one
loop, like every other model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..errors import DtypeError, ShapeError
from ..options import option, require
from .cells import (CELLS, RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks,
                    stack_checks)
from .classifier import pool_sequence

POOLINGS = ("last", "mean", "max")
SPATIAL_POOLINGS = ("max", "mean", "flatten")


@dataclass(frozen=True)
class FrameSequenceConfig(RegularizationOptions):
    """Architecture of a :class:`FrameSequenceClassifier`; the frame shape and the number
    of classes come from the data."""

    num_classes: int                  # from the data
    channels: int = 1                 # from the data: C
    frame_height: int = 32            # from the data: H
    frame_width: int = 32             # from the data: W
    conv_channels: int = option(8, "frame CNN: channels of its first convolution (the second has twice as many)")
    frame_features: int = option(64, "frame CNN: size of the feature vector per frame")
    # see the module docstring: without these two the net sat at chance
    frame_diff: bool = option(True, "frame CNN: read each frame with its difference from the previous one")
    spatial_pool: str = option("max", "frame CNN: how its feature maps become a vector: "
                                      + ", ".join(SPATIAL_POOLINGS) + " (max/mean: wherever the shape is)")
    # a GRU leaves the plateau at chance (no single frame tells the class) sooner than an LSTM here
    cell: str = option("gru", "recurrent cell: " + ", ".join(CELLS))
    hidden_size: int = option(128, "recurrent state size (per direction)")
    num_layers: int = option(1, "stacked recurrent layers")
    bidirectional: bool = option(False, "read the frames both ways")
    pooling: str = option("last", "how the outputs become one vector: " + ", ".join(POOLINGS))
    dropout: float = option(0.0, "dropout on the frame features, between layers and before the head")
    init: str = option("torch", "weight init: torch, orthogonal, identity or xavier")

    def __post_init__(self) -> None:
        checks = [
            (self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}"),
            (self.channels >= 1, f"channels must be >= 1, got {self.channels}"),
            (self.frame_height >= 4 and self.frame_width >= 4,       # two 2x2 poolings leave >= 1 pixel
             f"frames must be at least 4x4 pixels, got {self.frame_height}x{self.frame_width}"),
            (self.conv_channels >= 1 and self.frame_features >= 1,
             f"conv_channels and frame_features must be >= 1, got {self.conv_channels} and {self.frame_features}"),
            (self.pooling in POOLINGS, f"pooling must be one of {POOLINGS}, got {self.pooling!r}"),
            (self.spatial_pool in SPATIAL_POOLINGS,
             f"spatial_pool must be one of {SPATIAL_POOLINGS}, got {self.spatial_pool!r}"),
        ]
        require(checks + stack_checks(self) + regularization_checks(self), "model config:")

    def to_dict(self) -> dict:
        return asdict(self)


class FrameEncoder(nn.Module):
    """``(N, C, H, W)`` frames -> ``(N, F)`` features: ``[conv3x3(c) ReLU maxpool2] x 2``
    with ``c`` = ``conv_channels``, ``2 * conv_channels``, then ``spatial_pool``: ``max`` or
    ``mean`` over the ``(H//4, W//4)`` map (``2c`` values, the same wherever the content
    is) or ``flatten`` (``2c * (H//4) * (W//4)`` values, the layout kept), then
    ``Linear(., F)`` and ReLU."""

    def __init__(self, channels: int, height: int, width: int, conv_channels: int = 8, features: int = 64,
                 spatial_pool: str = "max") -> None:
        super().__init__()
        c = conv_channels
        self.shape = (channels, height, width)
        self.conv = nn.Sequential(nn.Conv2d(channels, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        pool, width_in = {"max": (nn.AdaptiveMaxPool2d(1), 2 * c), "mean": (nn.AdaptiveAvgPool2d(1), 2 * c),
                          "flatten": (nn.Identity(), 2 * c * (height // 4) * (width // 4))}[spatial_pool]
        self.proj = nn.Sequential(pool, nn.Flatten(), nn.Linear(width_in, features), nn.ReLU())
        self.size = features

    def forward(self, frames: Tensor) -> Tensor:
        return self.proj(self.conv(frames))


def with_differences(x: Tensor) -> Tensor:
    """``(B, T, C, H, W)`` -> ``(B, T, 2C, H, W)``: each frame, then ``x[t] - x[t-1]``
    (zero at ``t = 0``). Frame ``t`` sees only frames ``<= t``, so padding after a clip's
    last real frame never reaches its real frames."""
    diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
    return torch.cat([x, diff], dim=2)


class FrameSequenceClassifier(nn.Module):
    """``forward(x (B, T, C, H, W) float, lengths (B,) = None) -> logits (B, K)``."""

    def __init__(self, config: FrameSequenceConfig) -> None:
        super().__init__()
        self.config = c = config
        self.frame_shape = (c.channels, c.frame_height, c.frame_width)
        self.encoder = FrameEncoder(c.channels * (2 if c.frame_diff else 1), c.frame_height, c.frame_width,
                                    c.conv_channels, c.frame_features, c.spatial_pool)
        self.rnn = recurrent_layer(c.cell, c.frame_features, c.hidden_size, c.num_layers, dropout=c.dropout,
                                   init=c.init, bidirectional=c.bidirectional, **layer_regularization(c))
        width = c.hidden_size * (2 if c.bidirectional else 1)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(width, c.num_classes)

    def _check(self, x: Tensor) -> None:
        want = self.frame_shape
        if x.dim() != 5 or tuple(x.shape[2:]) != want:
            raise ShapeError(f"FrameSequenceClassifier: x has shape {tuple(x.shape)}, expected "
                             f"(batch, frames, channels, height, width) = (B, T, {want[0]}, {want[1]}, {want[2]})")
        if not x.is_floating_point():
            raise DtypeError(f"FrameSequenceClassifier: x must be a float tensor of frames, got {x.dtype}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ShapeError(f"FrameSequenceClassifier: x has no clips or no frames: shape {tuple(x.shape)}")

    def features(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` -> ``(B, T, F)``: every frame (with its difference from the
        previous one if ``frame_diff``) through the encoder in one batch."""
        b, t = x.shape[:2]
        if self.config.frame_diff:
            x = with_differences(x)
        return self.encoder(x.reshape(b * t, *x.shape[2:])).view(b, t, -1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        self._check(x)
        b, t = x.shape[:2]
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        lengths = lengths.to("cpu", torch.long)
        if lengths.shape != (b,) or int(lengths.min()) < 1 or int(lengths.max()) > t:
            raise ShapeError(f"FrameSequenceClassifier: lengths must be (batch={b},) in [1, {t}], got "
                             f"{tuple(lengths.shape)} with values {lengths.tolist()[:8]}")
        out, state = self.rnn(self.drop(self.features(x)), lengths=lengths)          # out (B, T, D)
        mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).to(out.device)  # (B, T) real frames
        return self.head(self.drop(self.pool(out, state, mask)))

    def pool(self, out: Tensor, state, mask: Tensor) -> Tensor:
        """``(B, T, D)`` outputs -> ``(B, D)``, ignoring padded frames."""
        return pool_sequence(out, state, mask, self.config.pooling, self.config.bidirectional)
