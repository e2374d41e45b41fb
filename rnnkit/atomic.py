"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

The one writer for every file rnnkit saves (checkpoints, results, vocabularies),
so each gets the same guarantees: the temporary file lives in the destination
directory (``os.replace`` is atomic only within one filesystem), the data is
fsynced before the rename and the directory after it (so the rename itself
survives a power cut), the new file gets the permissions an ordinary ``open``
would give it (``mkstemp`` creates 0600), and a failure leaves no temporary file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating missing parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # owns fd from here: closed on any error below
            umask = os.umask(0)  # the portable way to read the umask is to set it
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved file should look like any other
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded (no newline translation: bytes as given)."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort (some platforms cannot open a directory)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
