"""The datasets rnnkit knows by name, where their files live, and checksums.

Files are looked up under a *data directory* (:func:`data_dir`): an explicit
argument (the CLI's ``--data-dir``), else ``$RNNKIT_DATA``, else
``~/.cache/rnnkit``. Nothing is downloaded: a missing file is a DataError that
says exactly which path to fill.

Split conventions:

* ``tinyshakespeare`` ships as one file, registered under the split name
  :data:`WHOLE`; :mod:`rnnkit.data.corpus` cuts its *characters* 90/5/5 into
  train/valid/test, contiguously and in order (char-rnn and nanoGPT also split
  by position, 90%+ for training), so the split is the same everywhere.
* ``ptb-char`` reads the word-level PTB files as characters (the official
  ``ptb.char.train.txt`` is not available, so valid/test use the word files too
  for a consistent alphabet: ``' '`` rather than ``'_'`` between words).
* ``jsb-chorales`` ships as one JSON file holding its own train/valid/test split,
  registered under :data:`WHOLE`; :mod:`rnnkit.data.music` reads the splits from it.
* ``etth1`` ships as one CSV registered under :data:`WHOLE`; :mod:`rnnkit.data.etth`
  cuts its rows 12/4/4 months into train/valid/test (Informer's split).
* ``fsdd`` registers its two files under ``recordings`` and ``speakers``;
  :mod:`rnnkit.data.fsdd` splits the takes (official test: takes 0-4) or holds out a speaker.
* ``wikitext2`` is incomplete: only valid/test exist in the shared data, so
  ``check`` reports train missing. Its checksum is unknown (``sha256=None``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import DataError
from .tokenize import Level

ENV_VAR = "RNNKIT_DATA"
DEFAULT_DATA_DIR = "~/.cache/rnnkit"
#: split name of a dataset shipped as one file that the loader splits itself.
WHOLE = "all"
STATUSES = ("ok", "missing", "corrupt")


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    Args:
        relpath: path under the data directory, ``/``-separated.
        sha256: expected hex digest, or None when the checksum is unknown.
        bytes: expected size, or None when unknown (a cheap pre-check before hashing).
    """

    relpath: str
    sha256: str | None
    bytes: int | None


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its tokenization level and one file per split.

    ``splits`` maps ``"train"/"valid"/"test"`` (or just :data:`WHOLE`) to files.
    ``complete`` is False when some files are known to be unavailable.
    """

    name: str
    level: Level
    splits: dict[str, FileSpec]
    description: str
    complete: bool = True


_PTB_TRAIN = FileSpec("ptb/ptb.train.txt", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf", 5101618)
_PTB_VALID = FileSpec("ptb/ptb.valid.txt", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2", 399782)
_PTB_TEST = FileSpec("ptb/ptb.test.txt", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0", 449945)

DATASETS: dict[str, DatasetSpec] = {
    "tinyshakespeare": DatasetSpec(
        name="tinyshakespeare",
        level="char",
        splits={WHOLE: FileSpec("tinyshakespeare/input.txt",
                                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394)},
        description="Karpathy's char-rnn Shakespeare (1.1 MB); characters split 90/5/5 in order.",
    ),
    "ptb": DatasetSpec(
        name="ptb",
        level="word",
        splits={"train": _PTB_TRAIN, "valid": _PTB_VALID, "test": _PTB_TEST},
        description="Penn Treebank, Mikolov/Zaremba LM split: 10k words, <unk>, <eos> per line.",
    ),
    "ptb-char": DatasetSpec(
        name="ptb-char",
        level="char",
        splits={"train": _PTB_TRAIN, "valid": _PTB_VALID, "test": _PTB_TEST},
        description="The PTB word files read as characters (ptb.char.train.txt is not available).",
    ),
    "wikitext2": DatasetSpec(
        name="wikitext2",
        level="word",
        splits={
            "train": FileSpec("wikitext2/wiki.train.tokens", None, None),
            "valid": FileSpec("wikitext2/wiki.valid.tokens",
                              "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8", 1121681),
            "test": FileSpec("wikitext2/wiki.test.tokens",
                             "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", 1256449),
        },
        description="WikiText-2 v1 (tokenized). INCOMPLETE: train file unavailable, checksum unknown.",
        complete=False,
    ),
    "sst": DatasetSpec(
        name="sst",
        level="word",
        splits={
            "train": FileSpec("sst/train.txt", "e2f3f41b0b1e6d4dddc0effe3bfc2d27ed8928079aa9a03d652311614fc5feb7",
                              2160058),
            "valid": FileSpec("sst/dev.txt", "0e9336aed6e4730e19f58d00a77b3f0297efdb755f7b5e598c98a05e3f97ea40",
                              280825),
            "test": FileSpec("sst/test.txt", "6e54806dee95cf80cd918e7dfb3f6770f6df24bf826f289a4d1f709e1c8f6761",
                             559614),
        },
        description="Stanford Sentiment Treebank: PTB-bracketed trees, a 0-4 label on every node (8544/1101/2210).",
    ),
    "multi30k": DatasetSpec(
        name="multi30k",
        level="word",
        splits={
            "train.de": FileSpec("multi30k/train.de.gz",
                                 "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6", 637044),
            "train.en": FileSpec("multi30k/train.en.gz",
                                 "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f", 568929),
            "valid.de": FileSpec("multi30k/val.de.gz",
                                 "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a", 24681),
            "valid.en": FileSpec("multi30k/val.en.gz",
                                 "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28", 21650),
            "test.de": FileSpec("multi30k/test_2016_flickr.de.gz",
                                "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8", 22890),
            "test.en": FileSpec("multi30k/test_2016_flickr.en.gz",
                                "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9", 21077),
        },
        description="Multi30k task 1 (raw, cased): German-English image captions, 29000/1014/1000 (test 2016 Flickr).",
    ),
    "conll2003": DatasetSpec(
        name="conll2003",
        level="word",
        splits={
            "train": FileSpec("conll2003/train.txt",
                              "bed631399cb0e859c4b446438ce57dfe0208792ca6106ef11620877355494c3a", 3281526),
            "valid": FileSpec("conll2003/valid.txt",
                              "aa83a45b88e4952998156583e2ff5a8be7c1f04fb9efa3a29cd87fac2c883807", 827010),
            "test": FileSpec("conll2003/test.txt",
                             "443914daf51328868558859b28252a28caee2fd02b65e77987977d6489246c5f", 748093),
        },
        description="CoNLL-2003 English NER (eng.train/testa/testb): word POS chunk NER columns, IOB1 tags.",
    ),
    "ud-ewt": DatasetSpec(
        name="ud-ewt",
        level="word",
        splits={
            "train": FileSpec("ud_english_ewt/en_ewt-ud-train.conllu",
                              "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b", 14203025),
            "valid": FileSpec("ud_english_ewt/en_ewt-ud-dev.conllu",
                              "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6", 1805545),
            "test": FileSpec("ud_english_ewt/en_ewt-ud-test.conllu",
                             "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd", 1804515),
        },
        description="Universal Dependencies English-EWT (CoNLL-U): UPOS/XPOS tagging (12544/2001/2077 sentences).",
    ),
    "jsb-chorales": DatasetSpec(
        name="jsb-chorales",
        level="char",  # unused: the chorales are piano rolls, not text (rnnkit.data.music)
        splits={WHOLE: FileSpec("jsb_chorales/jsb-chorales-quarter.json",
                                "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91", 407200)},
        description="JSB Chorales (Boulanger-Lewandowski et al. 2012), quarter-note steps: one JSON file "
                    "holding train/valid/test (229/76/77 pieces) as MIDI pitches per step.",
    ),
    "etth1": DatasetSpec(
        name="etth1",
        level="char",  # unused: a numeric multivariate series (rnnkit.data.etth)
        splits={WHOLE: FileSpec("etth1/ETTh1.csv",
                                "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066", 2589657)},
        description="ETTh1 (Zhou et al. 2021): 17420 hourly rows, date + 7 channels (OT = oil temperature); "
                    "rnnkit.data.etth splits train/valid/test 12/4/4 months.",
    ),
    "fsdd": DatasetSpec(
        name="fsdd",
        level="char",  # unused: audio (rnnkit.data.fsdd)
        splits={"recordings": FileSpec("fsdd/recordings.tar",
                                       "82aeab5d4ca7aec97dcaa44487ae043c2a3990c811eb72ef3e557a4cd13caefc", 23429120),
                "speakers": FileSpec("fsdd/speakers.json",
                                     "24eac42bffba4e2287070e2fe96d8721c51ba077a8fde5db0a793bac06853c65", 526)},
        description="Free Spoken Digit Dataset (CC BY-SA 4.0): 3000 8 kHz WAVs, 6 speakers x 10 digits x 50; "
                    "rnnkit.data.fsdd splits (official test: indices 0-4).",
    ),
}


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit``, else ``$RNNKIT_DATA``, else ``~/.cache/rnnkit``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_DATA_DIR).expanduser()


def get_spec(name: str) -> DatasetSpec:
    """The registered spec; DataError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


@lru_cache(maxsize=256)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    # mtime and size are part of the key so an edited file is hashed again;
    # they are otherwise unused.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; cached per (path, mtime, size)."""
    st = os.stat(path)
    return _sha256_cached(os.fspath(Path(path).absolute()), st.st_mtime_ns, st.st_size)


def _file_status(fs: FileSpec, path: Path) -> tuple[str, str | None]:
    """(status, actual sha256 or None). Size is compared first: a truncated file needs no hashing."""
    if not path.is_file():
        return "missing", None
    if fs.bytes is not None and path.stat().st_size != fs.bytes:
        return "corrupt", None
    if fs.sha256 is None:
        return "ok", None
    actual = file_sha256(path)
    return ("ok" if actual == fs.sha256 else "corrupt"), actual


def _fix_hint(fs: FileSpec) -> str:
    return (f"put the file there, or set {ENV_VAR} (or pass --data-dir) to a folder "
            f"that contains {fs.relpath}")


def resolve(name: str, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Paths of every split of ``name``, each checked for existence, size and sha256.

    ``data_dir`` None means :func:`data_dir` (``$RNNKIT_DATA`` or the default).
    Raises DataError naming the dataset, the file, the full path, the expected
    sha256 and the fix.
    """
    spec = get_spec(name)
    root = _data_dir(data_dir)
    out: dict[str, Path] = {}
    for split, fs in spec.splits.items():
        path = root / fs.relpath
        status, actual = _file_status(fs, path)
        expected = fs.sha256 or "unknown"
        if status == "missing":
            note = "" if spec.complete else f" [{name} is incomplete: {spec.description}]"
            raise DataError(
                f"dataset {name!r} ({split}): file {fs.relpath} not found at {path} "
                f"(expected sha256 {expected}); {_fix_hint(fs)}{note}")
        if status == "corrupt":
            got = (f"sha256 {actual}" if actual is not None
                   else f"{path.stat().st_size} bytes, expected {fs.bytes}")
            raise DataError(
                f"dataset {name!r} ({split}): file {path} is corrupt: {got} "
                f"(expected sha256 {expected}); replace it with the original {fs.relpath}")
        out[split] = path
    return out


def check(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, Path, str]]:
    """``(split, full path, status)`` per file, status in ``"ok"/"missing"/"corrupt"``; never raises for files."""
    spec = get_spec(name)
    root = _data_dir(data_dir)
    rows = []
    for split, fs in spec.splits.items():
        path = root / fs.relpath
        rows.append((split, path, _file_status(fs, path)[0]))
    return rows


# resolve()/check() take a parameter named data_dir, which shadows the function.
_data_dir = data_dir
