"""Example counts for the hypothesis-driven robustness tests: a fixed count in CI,
ten times more with ``RNNKIT_FUZZ=1`` (``RNNKIT_FUZZ=1 pytest tests -k fuzz``)."""
import os

FACTOR = 10 if os.environ.get("RNNKIT_FUZZ") else 1


def examples(n: int) -> int:
    return n * FACTOR
