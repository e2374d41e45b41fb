"""Models built from rnnkit layers."""
from .language_model import CELLS, LanguageModel, LMConfig

__all__ = ["LanguageModel", "LMConfig", "CELLS"]
