r"""Generated video clips whose class is a motion: frame-sequence classification, no files.

A clip is ``(T, C, H, W)`` float (``C`` = 1, ``H`` = ``W`` = ``size``): a bright shape (a
disc or a square, drawn at random) moves in one of the :data:`MOTIONS` across ``T``
frames; a smaller *distractor* shape wanders at random (a Gaussian random walk) and
Gaussian pixel noise covers everything. The class is the target's motion:

=================  ===========================================================
``left/right``     constant velocity along x: :math:`c_t = c_0 \mp (v t, 0)`
``up/down``        constant velocity along y (rows grow downwards)
``clockwise``      a circle of radius :math:`R = v / \omega` about :math:`c_0`, as seen
``anticlockwise``  on screen, angular step :math:`\omega = 2\pi / \max(T, 8)`
``zigzag``         rightwards at ``v`` while weaving up and down (period 4 frames)
``still``          no motion
=================  ===========================================================

Why the frames wrap around (a torus): the start :math:`c_0` is uniform on it, so the
target's position in *every* frame is uniform whatever the class, the shape and its
size are drawn independently of the class, and so are the distractor and the noise.
A single frame therefore says nothing about the class; only the sequence does (the
property ``tests/data/test_video_clips.py`` checks). The speed of each clip is ``v`` times a
factor uniform in [0.75, 1.25]. Every random number comes from the generator passed in:
the same seed, the same clips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError

MOTIONS = ("left", "right", "up", "down", "clockwise", "anticlockwise", "zigzag", "still")
SHAPES = ("disc", "square")
DISTRACTOR_RADIUS = 1.5          # smaller than any target (radius >= 0.75 * 3 by default)
_CHUNK = 256                     # clips rendered at once: bounds the (n, T, H, W) temporaries


@dataclass(frozen=True)
class ClipSpec:
    """What :func:`generate_clips` draws; every field is checked here, once."""

    frames: int = 16             # T
    size: int = 32               # H = W, pixels
    motions: int = 8             # classes: the first ``motions`` of MOTIONS
    speed: float = 2.0           # v, pixels per frame
    radius: float = 3.0          # target radius (a square has the disc's area), jittered x[0.75, 1.25]
    noise: float = 0.1           # std of the Gaussian pixel noise
    distractors: int = 1         # randomly wandering smaller shapes

    def __post_init__(self) -> None:
        checks = [
            (self.frames >= 2, f"frames must be >= 2 (a motion needs two frames), got {self.frames}"),
            (self.size >= 8, f"size must be >= 8 pixels, got {self.size}"),
            (2 <= self.motions <= len(MOTIONS), f"motions must be in [2, {len(MOTIONS)}] "
                                                 f"({', '.join(MOTIONS)}), got {self.motions}"),
            # beyond size/4 per frame a step and its wrapped opposite look alike
            (math.isfinite(self.speed) and 0 < self.speed <= self.size / 4,
             f"speed must be in (0, size/4 = {self.size / 4:g}] pixels per frame, got {self.speed}"),
            (math.isfinite(self.radius) and 1 <= self.radius <= self.size / 4,
             f"radius must be in [1, size/4 = {self.size / 4:g}] pixels, got {self.radius}"),
            (math.isfinite(self.noise) and 0 <= self.noise <= 1, f"noise must be in [0, 1], got {self.noise}"),
            (0 <= self.distractors <= 8, f"distractors must be in [0, 8], got {self.distractors}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"video clips: {message}")

    @property
    def labels(self) -> list[str]:
        return list(MOTIONS[:self.motions])


@dataclass(frozen=True)
class Trajectories:
    """What a batch of clips shows, before drawing: everything random about them."""

    labels: Tensor               # (n,) class index into MOTIONS
    centres: Tensor              # (n, T, 2) target centre (x, y) in [0, size)
    radii: Tensor                # (n,) target radius
    squares: Tensor              # (n,) bool: a square rather than a disc
    distractors: Tensor          # (n, D, T, 2) distractor centres in [0, size)


def sample_trajectories(n: int, spec: ClipSpec, generator: torch.Generator) -> Trajectories:
    """The motions of ``n`` clips, classes balanced (a shuffled cycle through them)."""
    g, t = generator, torch.arange(spec.frames, dtype=torch.float64)
    labels = (torch.arange(n) % spec.motions)[torch.randperm(n, generator=g)]
    start = torch.rand(n, 1, 2, generator=g, dtype=torch.float64) * spec.size
    v = spec.speed * (0.75 + 0.5 * torch.rand(n, 1, generator=g, dtype=torch.float64))       # (n, 1)
    phase = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 * math.pi
    weave = torch.randint(0, 4, (n, 1), generator=g)
    omega = 2 * math.pi / max(spec.frames, 8)
    zero = torch.zeros(n, spec.frames, dtype=torch.float64)
    vt = v * t                                                                               # (n, T)
    tri = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[(t.long() + weave) % 4]  # zig-zag offsets
    # with y pointing down the screen, a growing angle turns clockwise as seen
    turn = lambda sign: (v / omega).unsqueeze(-1) * torch.stack([torch.cos(phase + sign * omega * t) - torch.cos(phase),   # noqa: E731
                                                   torch.sin(phase + sign * omega * t) - torch.sin(phase)], -1)
    moves = {"left": torch.stack([-vt, zero], -1), "right": torch.stack([vt, zero], -1),
             "up": torch.stack([zero, -vt], -1), "down": torch.stack([zero, vt], -1),
             "clockwise": turn(1.0), "anticlockwise": turn(-1.0),
             "zigzag": torch.stack([vt, v * tri], -1), "still": torch.stack([zero, zero], -1)}
    shift = torch.stack([moves[m] for m in MOTIONS[:spec.motions]])[labels, torch.arange(n)]   # (n, T, 2)
    centres = (start + shift) % spec.size
    radii = spec.radius * (0.75 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64))
    squares = torch.rand(n, generator=g) < 0.5
    d = spec.distractors
    walk = torch.randn(n, d, spec.frames, 2, generator=g, dtype=torch.float64) * spec.speed
    walk[:, :, 0] = 0
    distractors = (torch.rand(n, d, 1, 2, generator=g, dtype=torch.float64) * spec.size + walk.cumsum(2)) % spec.size
    return Trajectories(labels, centres.float(), radii.float(), squares, distractors.float())


def _draw(centres: Tensor, radius: Tensor, square: Tensor, size: int) -> Tensor:
    """Shapes of ``radius`` ``(n, 1)`` at ``centres`` ``(n, T, 2)`` -> ``(n, T, size, size)``
    in [0, 1], wrapped around the edges, with a one-pixel soft edge (sub-pixel motion shows)."""
    grid = torch.arange(size, dtype=torch.float32)

    def offset(axis: int) -> Tensor:                                       # toroidal distance along an axis
        return (grid - centres[..., axis, None] + size / 2) % size - size / 2   # (n, T, size)

    dx, dy = offset(0).unsqueeze(-2), offset(1).unsqueeze(-1)              # (n, T, 1, W), (n, T, H, 1)
    r = radius.view(-1, 1, 1, 1)
    disc = torch.sqrt(dx ** 2 + dy ** 2)
    box = torch.maximum(dx.abs(), dy.abs()) * (2 / math.sqrt(math.pi))     # the square of the disc's area
    dist = torch.where(square.view(-1, 1, 1, 1), box, disc)
    return (r + 0.5 - dist).clamp(0.0, 1.0)


def render(traj: Trajectories, spec: ClipSpec, generator: torch.Generator) -> Tensor:
    """The clips of ``traj``: ``(n, T, 1, size, size)`` float32, noise from ``generator``."""
    n, out = len(traj.labels), []
    for lo in range(0, n, _CHUNK):
        s = slice(lo, lo + _CHUNK)
        frame = _draw(traj.centres[s], traj.radii[s], traj.squares[s], spec.size)
        for k in range(spec.distractors):
            other = traj.distractors[s, k]
            flat = torch.full((len(other),), DISTRACTOR_RADIUS)
            frame = torch.maximum(frame, _draw(other, flat, torch.zeros(len(other), dtype=torch.bool), spec.size))
        out.append(frame)
    clips = torch.cat(out).unsqueeze(2)
    return clips + spec.noise * torch.randn(clips.shape, generator=generator) if spec.noise else clips


def generate_clips(n: int, spec: ClipSpec, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` clips ``(n, T, 1, H, W)`` float32 and their motion classes ``(n,)`` long."""
    if n < 1:
        raise ConfigError(f"video clips: n must be >= 1, got {n}")
    traj = sample_trajectories(n, spec, generator)
    return render(traj, spec, generator), traj.labels
