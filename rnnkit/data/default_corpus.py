"""The default corpus: pure-Python modules of the running interpreter's standard
library, so a fresh machine can train and evaluate with no download.

The file list below is fixed and split *by file*: whole modules go to train,
valid or test, so no function body is half in train and half in test. On
CPython 3.11 this gives about 2.1 MB train, 133 KB valid and 129 KB test; the
exact text depends on the Python version (it is whatever that interpreter
ships), but is deterministic for a given interpreter.

Modules missing from this Python version (or a trimmed distribution) are
skipped; fewer than half present, or a split left empty, is a DataError.
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from ..errors import DataError
from .text import Corpus, read_text_file

#: Chosen to exist as plain ``.py`` files from 3.10 to 3.14 (nothing deprecated for
#: removal, nothing that turned into a package such as ``pathlib`` or ``zipfile``),
#: and to be hand-written code rather than generated tables.
TRAIN_FILES: tuple[str, ...] = (
    "argparse.py", "typing.py", "inspect.py", "subprocess.py", "difflib.py", "enum.py",
    "pickle.py", "ast.py", "dataclasses.py", "threading.py", "shutil.py", "configparser.py",
    "platform.py", "traceback.py", "functools.py", "os.py", "socket.py", "codecs.py",
    "random.py", "bdb.py", "tempfile.py", "_collections_abc.py", "dis.py", "trace.py",
    "pstats.py", "socketserver.py", "uuid.py", "plistlib.py", "tokenize.py", "mimetypes.py",
    "gettext.py", "base64.py", "weakref.py", "selectors.py", "fileinput.py", "cmd.py",
    "copy.py", "bisect.py", "queue.py", "sched.py", "glob.py", "fnmatch.py",
    "collections/__init__.py", "json/decoder.py", "json/encoder.py", "email/message.py",
    "http/client.py", "urllib/parse.py", "logging/__init__.py", "unittest/case.py",
    "concurrent/futures/_base.py", "html/parser.py", "asyncio/base_events.py",
)
VALID_FILES: tuple[str, ...] = ("heapq.py", "textwrap.py", "fractions.py", "shlex.py", "statistics.py")
TEST_FILES: tuple[str, ...] = ("calendar.py", "pprint.py", "csv.py", "gzip.py", "contextlib.py", "string.py")
#: Every file of the default corpus, train then valid then test, relative to the stdlib directory.
DEFAULT_CORPUS_FILES: tuple[str, ...] = TRAIN_FILES + VALID_FILES + TEST_FILES

NAME = "default"


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def default_corpus(root: str | os.PathLike[str] | None = None) -> Corpus:
    """Concatenate the files of each split (in list order) into a char-level Corpus.

    Args:
        root: directory to read the files from; None means :func:`stdlib_dir`
            (tests pass a temporary folder).
    """
    base = Path(root) if root is not None else stdlib_dir()
    found = 0
    parts: list[str] = []
    for split, files in (("train", TRAIN_FILES), ("valid", VALID_FILES), ("test", TEST_FILES)):
        texts = []
        for rel in files:
            path = base.joinpath(*rel.split("/"))
            if path.is_file():
                texts.append(read_text_file(path))
        if not texts:
            raise DataError(f"default corpus: none of the {split} files {files} found under {base}")
        found += len(texts)
        # Each module ends with a newline; add one where missing so modules never run together.
        parts.append("".join(t if t.endswith("\n") else t + "\n" for t in texts))
    if found * 2 < len(DEFAULT_CORPUS_FILES):
        raise DataError(f"default corpus: only {found} of {len(DEFAULT_CORPUS_FILES)} standard-library "
                        f"files found under {base}; pass a corpus path or dataset name instead")
    return Corpus(parts[0], parts[1], parts[2], name=NAME, level="char")
