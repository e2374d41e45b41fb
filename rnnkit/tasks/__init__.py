"""Tasks: what to learn and how to score it. Each is a small :class:`~rnnkit.train.task.Task`
trained by the one loop in :mod:`rnnkit.train.loop`; ``rnnkit train --task NAME``."""
from ..train.task import Task
from .adding import AddingTask
from .classify import ClassifyTask
from .copy_memory import CopyMemoryTask
from .esn_forecast import EchoStateForecastTask
from .forecast import ForecastTask
from .forecast_multi import ForecastMultiTask
from .lm import LanguageModelTask
from .music import MusicTask
from .reber import ReberTask
from .sentiment_tree import SentimentTreeTask
from .seq_digits import SeqDigitsTask
from .tag import TagTask
from .transcribe import TranscribeTask
from .translate import TranslateTask
from .video import VideoTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (LanguageModelTask, AddingTask, ForecastTask, SeqDigitsTask,
                                                     CopyMemoryTask, ReberTask, EchoStateForecastTask,
                                                     ClassifyTask, TagTask, SentimentTreeTask, MusicTask,
                                                     TranslateTask, ForecastMultiTask, VideoTask, TranscribeTask)}

__all__ = ["TASKS", "AddingTask", "ClassifyTask", "CopyMemoryTask", "EchoStateForecastTask", "ForecastTask", "ForecastMultiTask",
           "LanguageModelTask", "MusicTask", "ReberTask", "SentimentTreeTask", "SeqDigitsTask", "TagTask", "TranslateTask",
           "VideoTask", "TranscribeTask"]
