"""Tasks: what to learn and how to score it. Each is a small :class:`~rnnkit.train.task.Task`
trained by the one loop in :mod:`rnnkit.train.loop`; ``rnnkit train --task NAME``."""
from ..train.task import Task
from .adding import AddingTask
from .copy_memory import CopyMemoryTask
from .esn_forecast import EchoStateForecastTask
from .forecast import ForecastTask
from .lm import LanguageModelTask
from .reber import ReberTask
from .seq_digits import SeqDigitsTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (LanguageModelTask, AddingTask, ForecastTask, SeqDigitsTask,
                                                     CopyMemoryTask, ReberTask, EchoStateForecastTask)}

__all__ = ["TASKS", "AddingTask", "CopyMemoryTask", "EchoStateForecastTask", "ForecastTask", "LanguageModelTask", "ReberTask",
           "SeqDigitsTask"]
