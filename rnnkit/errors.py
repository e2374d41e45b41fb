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
