"""Generated motion clips: shapes, seeds, motions as defined, and no class visible in one frame."""
import math

import pytest
import torch

from rnnkit.data.video import MOTIONS, ClipSpec, generate_clips, render, sample_trajectories
from rnnkit.errors import ConfigError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_clip_shapes_dtypes_and_balanced_classes():
    spec = ClipSpec(frames=6, size=16, motions=5)
    x, y = generate_clips(50, spec, _gen())
    assert x.shape == (50, 6, 1, 16, 16) and x.dtype == torch.float32
    assert y.dtype == torch.long and torch.bincount(y).tolist() == [10] * 5


def test_same_seed_same_clips_other_seed_other_clips():
    spec = ClipSpec(frames=5, size=12)
    a, b = generate_clips(20, spec, _gen(3)), generate_clips(20, spec, _gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], generate_clips(20, spec, _gen(4))[0])


def _wrapped(d: torch.Tensor, size: int) -> torch.Tensor:
    """A displacement on the torus, in [-size/2, size/2)."""
    return (d + size / 2) % size - size / 2


def test_each_motion_moves_as_defined():
    spec = ClipSpec(frames=8, size=32, speed=2.0)
    traj = sample_trajectories(400, spec, _gen(1))
    step = _wrapped(traj.centres[:, 1:] - traj.centres[:, :-1], spec.size)       # (n, T-1, 2) per-frame moves
    for k, name in enumerate(MOTIONS):
        s = step[traj.labels == k]
        dx, dy = s[..., 0], s[..., 1]
        if name in ("left", "right", "up", "down"):
            along, across = (dx, dy) if name in ("left", "right") else (dy, dx)
            sign = -1 if name in ("left", "up") else 1
            assert (sign * along).min() >= 0.75 * 2 - 1e-4 and (sign * along).max() <= 1.25 * 2 + 1e-4
            assert across.abs().max() < 1e-4
        elif name == "zigzag":
            assert dx.min() > 1.4 and (dy.abs() > 1.4).all()                 # right, and up or down every frame
        elif name == "still":
            assert s.abs().max() < 1e-4
        else:   # a circle: the turn between successive steps has the sign of the motion (y grows downwards)
            cross = s[:, :-1, 0] * s[:, 1:, 1] - s[:, :-1, 1] * s[:, 1:, 0]
            assert ((cross > 0) if name == "clockwise" else (cross < 0)).all()


def test_one_frame_does_not_tell_the_class():
    """Every class puts its target uniformly on the (wrapped) frame at every frame: the
    first Fourier coefficients of its position average 0 (closed form for a uniform law,
    standard error 1/sqrt(2n)), and its drawn brightness is the same in every class."""
    spec = ClipSpec(frames=6, size=16, noise=0.0, distractors=0)
    traj = sample_trajectories(4000, spec, _gen(2))
    angle = 2 * math.pi * traj.centres.double() / spec.size                      # (n, T, 2)
    x = render(traj, spec, _gen(0))
    for k in range(spec.motions):
        mine = traj.labels == k
        n = int(mine.sum())
        for f in (0, spec.frames - 1):
            coef = torch.cat([angle[mine, f].cos().mean(0), angle[mine, f].sin().mean(0)])
            assert coef.abs().max() < 5 / math.sqrt(2 * n), (MOTIONS[k], f, coef)
        mass = x[mine].sum((2, 3, 4))                                            # (n_k, T) brightness per frame
        assert abs(float(mass.mean()) - float(x.sum((2, 3, 4)).mean())) < 0.05 * float(x.sum((2, 3, 4)).mean())


def test_distractor_and_noise_are_drawn():
    spec = ClipSpec(frames=4, size=16, noise=0.0, distractors=0)
    traj = sample_trajectories(10, spec, _gen(5))
    clean = render(traj, spec, _gen(0))
    assert clean.min() >= 0 and clean.max() == 1.0
    noisy = render(traj, ClipSpec(frames=4, size=16, noise=0.2, distractors=0), _gen(0))
    assert abs(float((noisy - clean).std()) - 0.2) < 0.01
    crowded = sample_trajectories(10, ClipSpec(frames=4, size=16, noise=0.0, distractors=2), _gen(5))
    assert crowded.distractors.shape == (10, 2, 4, 2)
    lit = render(crowded, ClipSpec(frames=4, size=16, noise=0.0, distractors=2), _gen(0))
    assert (lit >= render(crowded, ClipSpec(frames=4, size=16, noise=0.0, distractors=0), _gen(0))).all()


@pytest.mark.parametrize("field,value,match", [
    ("frames", 1, "frames must be >= 2"), ("size", 4, "size must be >= 8"), ("motions", 9, "motions must be in"),
    ("motions", 1, "motions must be in"), ("speed", 0.0, "speed must be in"), ("speed", 20.0, "speed must be in"),
    ("speed", float("nan"), "speed must be in"), ("radius", 0.5, "radius must be in"),
    ("noise", -0.1, "noise must be in"), ("distractors", -1, "distractors must be in")])
def test_bad_options_name_the_problem(field, value, match):
    with pytest.raises(ConfigError, match=match):
        ClipSpec(**{field: value})


def test_no_clips_is_an_error():
    with pytest.raises(ConfigError, match="n must be >= 1"):
        generate_clips(0, ClipSpec(), _gen())
