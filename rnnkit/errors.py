"""Typed exceptions. Each subclasses the builtin a caller would expect, so
``except ValueError`` keeps working, while the CLI can catch ``RnnkitError``
and print one clear line instead of a traceback."""


class RnnkitError(Exception):
    """Base class of every error rnnkit raises on purpose."""


class DataError(RnnkitError, ValueError):
    """A corpus or dataset file is missing, corrupt, empty or not text."""


class ConfigError(RnnkitError, ValueError):
    """A configuration (TOML file, CLI flags, dataclass) is invalid."""


class CheckpointError(RnnkitError, ValueError):
    """A checkpoint is missing, truncated, or belongs to another architecture."""


class TrainingDiverged(RnnkitError, ArithmeticError):
    """The loss or the gradients became NaN or infinite; the weights were not updated."""


# --- layers and cells (rnnkit.nn, rnnkit.cells) --------------------------------------
# torch.nn raises RuntimeError for some of these mistakes and ValueError or TypeError
# for others (often a different one for a layer than for a cell); each class below
# subclasses every builtin torch.nn raises for its mistakes, so code written against
# torch.nn's exceptions catches rnnkit's, and ``except ValueError``/``TypeError`` as
# rnnkit documented before keeps working.

class ArgumentError(RnnkitError, ValueError):
    """A constructor argument has a value the layer or cell does not take (torch.nn: ValueError)."""


class ArgumentTypeError(RnnkitError, TypeError):
    """A constructor argument has the wrong type, e.g. ``bias="False"`` (torch.nn: TypeError)."""


class ShapeError(RnnkitError, RuntimeError, ValueError):
    """An input, state or size has the wrong shape, rank or size (torch.nn: RuntimeError
    for sizes, ValueError for ranks)."""


class DtypeError(RnnkitError, TypeError, ValueError, RuntimeError):
    """An input or state has the wrong dtype (torch.nn: ValueError for layers,
    RuntimeError for cells; rnnkit raised TypeError)."""


class DeviceError(RnnkitError, RuntimeError, ValueError):
    """An input or state is on another device than the parameters (torch.nn: RuntimeError)."""
