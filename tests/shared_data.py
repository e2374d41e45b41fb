"""Where the tests find the real datasets: ``$RNNKIT_DATA``, else ``../shared/data`` beside
the checkout (as CI lays it out). Tests that need a file skip without it."""
import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("RNNKIT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def needs(*relpaths: str):
    """Skip unless every file is under :data:`DATA`."""
    missing = [p for p in relpaths if not (DATA / p).is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"no shared data: {', '.join(missing)} under {DATA}")
