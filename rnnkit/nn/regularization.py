r"""Recurrent regularisation: the dropout family that respects time, and zoneout.

Plain dropout on a recurrent state draws a new mask every step, which wipes the memory
the network is trying to keep; the methods here were designed around that:

* **variational dropout** (Gal & Ghahramani 2016): one mask per sequence, the same at
  every time step, on a layer's inputs, between layers, on the outputs, and on the
  state where it enters the recurrent weights (``recurrent_dropout``);
* **locked dropout** (:class:`LockedDropout`, Merity et al. 2018): the same, as a
  module for any ``(B, T, F)`` tensor;
* **zoneout** (Krueger et al. 2017): each unit of a state keeps its previous value
  with probability ``z`` at each step (a new mask per step); at evaluation the
  expectation ``z * old + (1 - z) * new``;
* **weight drop** (DropConnect on the recurrent matrices, Merity et al. 2018): one mask
  over ``weight_hh`` per forward call, shared by the batch, so the fused kernels
  (cuDNN/oneDNN included) run unchanged on the dropped weight;
* **embedding dropout** (:func:`embedding_dropout`): whole word types dropped per batch;
* **activation and temporal activation regularisation** (:func:`activation_penalty`).

Masks come from torch's default generator, drawn by the layer (never by a kernel), so a
run is reproducible from its seed, and resumable exactly (the loop checkpoints the
generator), whichever path (reference scan or fused kernel) then consumes them.
Every dropout mask is scaled by ``1 / (1 - p)`` (inverted dropout), so evaluation uses
the weights as they are.
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from ..cells.base import Params
from ..errors import ArgumentError, ArgumentTypeError
from ..kernels.reference import zone_state  # noqa: F401  (re-exported: the scan applies it)


class FrozenRates(dict):
    """A read-only ``{state name: rate}`` (a dict for every reader; a write raises):
    layers and their fast paths check a regularisation once, by identity, so a rate
    changed in place would go unseen."""

    def _read_only(self, *args, **kwargs):
        raise TypeError("Regularization.zoneout is read-only: build the layer with the rates you want "
                        "(e.g. rnnkit.LSTM(..., zoneout={'h': 0.1}))")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self):  # (pickle and deepcopy would refill it through __setitem__)
        return FrozenRates, (dict(self),)

    def __repr__(self) -> str:
        return dict.__repr__(self)


@dataclass(frozen=True)
class Regularization:
    """A layer's regularisation rates (all 0: the layer computes what it always did).

    ``zoneout`` maps state names to rates (``{"h": 0.05, "c": 0.5}``, Krueger et al.'s
    LSTM setting), read-only (:class:`FrozenRates`); a number applies to every state of the cell.
    """

    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    output_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_drop: float = 0.0
    zoneout: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zoneout", FrozenRates(self.zoneout))

    @property
    def active(self) -> bool:
        return bool(self.input_dropout or self.hidden_dropout or self.output_dropout
                    or self.recurrent_dropout or self.weight_drop or any(self.zoneout.values()))

    def steps_masked(self, training: bool) -> bool:
        """Whether the time loop itself changes: recurrent dropout (training) or zoneout
        (training: random; evaluation: the expectation). PyTorch's kernels cannot do that."""
        return bool((training and self.recurrent_dropout) or any(self.zoneout.values()))


RATES = ("input_dropout", "hidden_dropout", "output_dropout", "recurrent_dropout", "weight_drop")


def check_rate(owner: str, arg: str, value) -> float:
    """A rate in ``[0, 1)``: TypeError for a non-number, ValueError outside the range."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ArgumentTypeError(f"{owner}: {arg} should be a number in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ArgumentError(f"{owner}: {arg} must be in [0, 1), got {value}")
    return float(value)


def make_regularization(owner: str, cell, *, input_dropout=0.0, hidden_dropout=0.0, output_dropout=0.0,
                        recurrent_dropout=0.0, weight_drop=0.0, zoneout=0.0) -> Regularization:
    """The checked :class:`Regularization` of layer ``owner`` built on ``cell``: every rate
    in ``[0, 1)``; zoneout only on states the cell has; recurrent dropout and weight drop
    only on cells with recurrent weights."""
    rates = {name: check_rate(owner, name, value) for name, value in zip(
        RATES, (input_dropout, hidden_dropout, output_dropout, recurrent_dropout, weight_drop))}
    names = tuple(cell.state_names)
    if isinstance(zoneout, dict):
        unknown = sorted(set(zoneout) - set(names))
        if unknown:
            raise ArgumentError(f"{owner}: zoneout names state(s) {unknown}, but {type(cell).__name__} has "
                                f"states {list(names)}")
        zones = {n: check_rate(owner, f"zoneout[{n!r}]", z) for n, z in zoneout.items()}
    else:
        z = check_rate(owner, "zoneout", zoneout)
        zones = {n: z for n in names} if z else {}
    zones = {n: z for n, z in zones.items() if z}
    if (rates["recurrent_dropout"] or rates["weight_drop"]) and recurrent_weight_name(cell) is None:
        which = "recurrent_dropout" if rates["recurrent_dropout"] else "weight_drop"
        raise ArgumentError(f"{owner}: {which} needs a cell with recurrent weights; "
                            f"{type(cell).__name__} has none (its state enters elementwise)")
    return Regularization(**rates, zoneout=zones)


def recurrent_weight_name(cell) -> str | None:
    """The parameter through which the cell's state re-enters the step: ``weight_hh``,
    or ``weight_oh`` for output-recurrent (Jordan) cells; None when there is none."""
    shapes = cell.parameter_shapes()
    return next((n for n in ("weight_hh", "weight_oh") if n in shapes), None)


def dropout_mask(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """Inverted dropout's multipliers of ``shape`` in ``like``'s dtype and device: 0 with
    probability ``p`` (to 2^-16), else ``1 / (1 - p)``; drawn by :func:`bernoulli_mask`.
    Every dropout here takes its mask from this: torch's ``bernoulli_`` (what
    ``F.dropout`` draws with) runs ~20 ns per element on a CPU, so weight drop on a
    512 x 128 matrix alone cost ~5% of an LSTM layer's forward and backward."""
    drop = bernoulli_mask(tuple(shape), p, like.device)
    return (~drop).to(like.dtype).mul_(1.0 / (1.0 - p))


def locked_dropout(x: Tensor, p: float, training: bool, time_dim: int = 0) -> Tensor:
    """The same dropout mask at every step of ``x`` (time along ``time_dim``; the other
    leading dim is the batch, the last the features)."""
    if not training or p == 0.0:
        return x
    shape = list(x.shape)
    shape[time_dim] = 1
    return x * dropout_mask(shape, p, x)


class LockedDropout(nn.Module):
    """Variational ("locked") dropout as a module: one mask per sequence over time.
    ``x (B, T, F)`` (``batch_first``) or ``(T, B, F)``."""

    def __init__(self, p: float = 0.5, batch_first: bool = True) -> None:
        super().__init__()
        self.p = check_rate("LockedDropout", "p", p)
        self.batch_first = batch_first

    def forward(self, x: Tensor) -> Tensor:
        return locked_dropout(x, self.p, self.training, time_dim=1 if self.batch_first else 0)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"


def embedding_dropout(embedding: nn.Embedding, tokens: Tensor, p: float, training: bool) -> Tensor:
    """Embeddings of ``tokens`` with whole word types dropped (Gal & Ghahramani 2016 sec. 4;
    Merity et al. 2018): one mask over the vocabulary per call, so every occurrence of a
    dropped word in the batch is zero; the kept rows are scaled by ``1 / (1 - p)``."""
    if not training or p == 0.0:
        return embedding(tokens)
    weight = embedding.weight
    dropped = weight * dropout_mask((weight.shape[0], 1), p, weight)
    return F.embedding(tokens, dropped, embedding.padding_idx, embedding.max_norm, embedding.norm_type,
                       embedding.scale_grad_by_freq, embedding.sparse)


def activation_penalty(outputs: Tensor, dropped: Tensor, ar: float, tar: float, time_dim: int = 1) -> Tensor:
    r"""Merity et al. 2018: ``ar * mean(dropped^2) + tar * mean((h_t - h_{t-1})^2)``. AR on the
    dropped outputs (what the softmax sees), TAR on the undropped ones (slowness of the state)."""
    penalty = outputs.new_zeros(())
    if ar:
        penalty = penalty + ar * dropped.pow(2).mean()
    if tar and outputs.shape[time_dim] > 1:
        penalty = penalty + tar * outputs.diff(dim=time_dim).pow(2).mean()
    return penalty


def step_masks(reg: Regularization, cell, x: Tensor, training: bool) -> Params:
    """What one (layer, direction) time loop needs, for ``x (T, B, I)``:

    * ``drop_h (B, R)``: the recurrent-dropout mask, multiplied into the state where it
      enters the recurrent weights (training only; None otherwise);
    * ``zone``: per state, None (no zoneout), a bool ``(T, B, S)`` mask that is True where
      the unit keeps its previous value (training), or the rate itself (evaluation: the
      expectation).
    """
    T, B = x.shape[0], x.shape[1]
    sizes = dict(zip(cell.state_names, cell.state_sizes()))
    drop_h = None
    if training and reg.recurrent_dropout:
        drop_h = dropout_mask((B, sizes[cell.state_names[0]]), reg.recurrent_dropout, x)  # one per sequence
    zone: list = []
    for name in cell.state_names:
        z = reg.zoneout.get(name, 0.0)
        if not z:
            zone.append(None)
        elif training:
            zone.append(bernoulli_mask((T, B, sizes[name]), z, x.device))
        else:
            zone.append(z)
    return Params(drop_h=drop_h, zone=tuple(zone) if any(z is not None for z in zone) else None)


#: zoneout draws its per-step masks from 16 random bits per unit: rates are exact to 2^-16
MASK_BITS = 16
#: SplitMix64's constants (kernels/cpu/native/masks.h), as the int64 values of their bits
_GOLDEN, _MIX1, _MIX2 = (c - (1 << 64) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def bernoulli_mask(shape: tuple[int, ...], p: float, device) -> Tensor:
    """A bool mask of ``shape``, True with probability ``p`` (rounded to a multiple of
    2^-16): one 64-bit seed from torch's generator, expanded by SplitMix64 into 16 bits
    per element (kernels/cpu/native/masks.h). A per-step zoneout mask has T*B*S
    elements; drawn through torch's generator (even four to a 64-bit draw) they cost
    about as much as the zoned loop's own pointwise work. On the CPU the C library
    expands the seed; elsewhere (or without it, or under torch.compile) torch ops compute
    the same bits."""
    n = 1
    for d in shape:
        n *= d
    threshold = min(round(p * 2 ** MASK_BITS), 2 ** MASK_BITS - 1)
    seed = torch.randint(-2 ** 63, 2 ** 63 - 1, (), dtype=torch.int64, device=device)
    expand = None if seed.device.type != "cpu" or torch.compiler.is_compiling() else _native_mask()
    if expand is None:
        return splitmix_mask(n, seed, threshold).view(shape)
    out = torch.empty(shape, dtype=torch.bool)
    expand(n, seed.item(), threshold, out.data_ptr())
    return out


def splitmix_mask(n: int, seed: Tensor, threshold: int) -> Tensor:
    """``n`` bools from ``seed`` (an int64 scalar tensor) as masks.h computes them, in
    torch ops on the seed's device (int64 arithmetic wraps, as the C's unsigned does)."""
    i = torch.arange(1, (n + 3) // 4 + 1, dtype=torch.int64, device=seed.device)
    z = seed + i * _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    z = z ^ _shift_right(z, 31)
    lanes = torch.stack([_shift_right(z, 16 * k) & 0xFFFF for k in range(4)], 1)
    return lanes.flatten()[:n] < threshold


def _shift_right(z: Tensor, k: int) -> Tensor:
    """The logical (unsigned) shift of int64 bits: torch's ``>>`` copies the sign bit."""
    return (z >> k) & ((1 << (64 - k)) - 1) if k else z


@functools.lru_cache(maxsize=None)
def _native_mask():
    """The C mask expander (kernels/cpu/native/masks.h), or None without the library."""
    from ..kernels.cpu import native

    if not native.enabled() or native.library() is None:
        return None
    return native.bind("bernoulli_mask", torch.float32)


def probe_masks(reg: Regularization, cell, x: Tensor, training: bool) -> Params:
    """Masks shaped as :func:`step_masks` draws them for ``x``, but drawn from nothing (all
    kept): for asking a kernel whether it takes them without touching the generator."""
    sizes = dict(zip(cell.state_names, cell.state_sizes()))
    T, B = x.shape[0], x.shape[1]
    drop_h = x.new_ones(B, sizes[cell.state_names[0]]) if training and reg.recurrent_dropout else None
    zone = tuple(None if not reg.zoneout.get(n) else
                 (torch.zeros(T, B, sizes[n], dtype=torch.bool, device=x.device) if training else reg.zoneout[n])
                 for n in cell.state_names)
    return Params(drop_h=drop_h, zone=zone if any(z is not None for z in zone) else None)


def drop_weight(weight: Tensor, p: float, training: bool) -> Tensor:
    """DropConnect: ``weight`` with entries zeroed with probability ``p`` (scaled by
    ``1 / (1 - p)``), one mask per call; ``weight`` itself in evaluation."""
    return weight * dropout_mask(weight.shape, p, weight) if p and training else weight
