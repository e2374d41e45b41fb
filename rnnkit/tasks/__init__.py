"""Tasks: what to learn and how to score it. Each is a small :class:`~rnnkit.train.task.Task`
trained by the one loop in :mod:`rnnkit.train.loop`; ``rnnkit train --task NAME``."""
from ..train.task import Task
from .adding import AddingTask
from .forecast import ForecastTask
from .lm import LanguageModelTask
from .seq_digits import SeqDigitsTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (LanguageModelTask, AddingTask, ForecastTask, SeqDigitsTask)}

__all__ = ["TASKS", "AddingTask", "ForecastTask", "LanguageModelTask", "SeqDigitsTask"]
