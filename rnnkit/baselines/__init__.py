"""Non-neural baselines that the recurrent models are compared against."""

from rnnkit.baselines.ngram import KneserNeyLM

__all__ = ["KneserNeyLM"]
