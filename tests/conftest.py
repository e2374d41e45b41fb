import random

import pytest


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small deterministic text file (a few KB) with learnable structure."""
    rng = random.Random(0)
    words = ["the cat sat", "a dog ran", "the bird flew", "my fish swam", "one cow ate"]
    lines = [" ".join(rng.choice(words) for _ in range(4)) + "." for _ in range(60)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
