"""The Free Spoken Digit Dataset (FSDD, Jackson et al., CC BY-SA 4.0): 3,000 8 kHz mono
recordings of the digits 0-9, 6 speakers x 10 digits x 50 takes.

Files (``$RNNKIT_DATA/fsdd``, checked by :mod:`rnnkit.data.registry`): ``recordings.tar``
holding ``recordings/{digit}_{speaker}_{index}.wav`` and ``speakers.json`` (accent,
gender per speaker). The tar is read in memory with :mod:`tarfile`; nothing is extracted.

Splits (:func:`split_recordings`):

* **official**: test = takes 0-4 of every speaker and digit (the FSDD convention);
* **speaker held out**: test = every take of one speaker, training side = the five others;

and on the training side, validation = takes 5-9, training = the rest: deterministic,
balanced over speakers and digits, and never a test recording.
"""
from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from .audio import FeatureSettings, cached_features, compute_features, read_wav, spec_augment

#: ``recordings/{digit}_{speaker}_{index}.wav``; a leading ``./`` is tolerated
MEMBER = re.compile(r"(?:\./)?recordings/(\d)_([A-Za-z][A-Za-z0-9-]*)_(\d+)\.wav")
OFFICIAL_TEST = range(0, 5)
VALID_TAKES = range(5, 10)
#: a recording is a second or so (~16 kB); anything far larger is not an FSDD take
MAX_MEMBER_BYTES = 16 << 20


@dataclass(frozen=True)
class Recording:
    """One take: its digit (the label), speaker, take index, member name and WAV bytes."""

    digit: int
    speaker: str
    index: int
    name: str
    data: bytes


def parse_name(name: str) -> tuple[int, str, int]:
    """``(digit, speaker, index)`` of a member name; DataError for any other name."""
    m = MEMBER.fullmatch(name)
    if m is None:
        raise DataError(f"fsdd: unexpected member {name!r} in recordings.tar; expected "
                        "recordings/{digit}_{speaker}_{index}.wav")
    return int(m.group(1)), m.group(2), int(m.group(3))


def read_recordings(path: str | Path) -> list[Recording]:
    """Every WAV of the tar at ``path``, sorted by (speaker, digit, index).

    Raises:
        DataError: for an unreadable tar, a member that is not a plain file, a wrongly
            named or oversized member, or a duplicate take.
    """
    out: dict[tuple[str, int, int], Recording] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isdir():
                    continue
                digit, speaker, index = parse_name(member.name)
                if not member.isfile():
                    raise DataError(f"fsdd: {path}:{member.name} is not a plain file")
                if member.size > MAX_MEMBER_BYTES:
                    raise DataError(f"fsdd: {path}:{member.name} is {member.size:,} bytes, too large for a take")
                key = (speaker, digit, index)
                if key in out:
                    raise DataError(f"fsdd: {path}: {member.name} appears twice")
                f = tar.extractfile(member)
                out[key] = Recording(digit, speaker, index, member.name, f.read() if f is not None else b"")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"fsdd: cannot read {path} as a tar archive ({e})") from e
    if not out:
        raise DataError(f"fsdd: {path} holds no recordings/*.wav members")
    return [out[k] for k in sorted(out)]


def read_speakers(path: str | Path) -> dict[str, dict]:
    """``speakers.json``: speaker -> metadata (accent, gender, language)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"fsdd: cannot read {path} as JSON ({e})") from e
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError(f"fsdd: {path} must map each speaker to a table of metadata")
    return data


def speakers_of(recordings: list[Recording]) -> list[str]:
    return sorted({r.speaker for r in recordings})


def split_recordings(recordings: list[Recording], heldout_speaker: str = "") -> dict[str, list[Recording]]:
    """``{"train", "valid", "test"}`` recordings: the official split, or with
    ``heldout_speaker`` every take of that speaker as test (see the module docstring)."""
    if heldout_speaker:
        known = speakers_of(recordings)
        if heldout_speaker not in known:
            raise DataError(f"fsdd: heldout_speaker {heldout_speaker!r} is not in the data; speakers: {known}")
        is_test = [r.speaker == heldout_speaker for r in recordings]
    else:
        is_test = [r.index in OFFICIAL_TEST for r in recordings]
    splits: dict[str, list[Recording]] = {"train": [], "valid": [], "test": []}
    for r, test in zip(recordings, is_test):
        splits["test" if test else "valid" if r.index in VALID_TAKES else "train"].append(r)
    empty = [k for k, v in splits.items() if not v]
    if empty:
        raise DataError(f"fsdd: the {'/'.join(empty)} split is empty (train: takes 10+, valid: 5-9, test: "
                        f"{'the held-out speaker' if heldout_speaker else 'takes 0-4'})")
    return splits


def features(recordings: list[Recording], settings: FeatureSettings, cache_dir: str | Path | None,
             source: str = "recordings.tar") -> list[torch.Tensor]:
    """Log-mel features ``(T, n_mels)`` of each recording, cached under ``cache_dir`` (None: not cached)."""
    out = []
    for r in recordings:
        name = f"{source}:{r.name}"
        out.append(cached_features(name, cache_dir, settings, data=r.data) if cache_dir is not None
                   else compute_features(name, settings, data=r.data))
    return out


def waveforms(recordings: list[Recording], rate: int, source: str = "recordings.tar") -> list[torch.Tensor]:
    """The samples ``(N,)`` of each recording, resampled to ``rate`` where needed."""
    from .audio import resample

    out = []
    for r in recordings:
        name = f"{source}:{r.name}"
        x, sr = read_wav(name, data=r.data)
        out.append(x if sr == rate else resample(x, sr, rate, name=name))
    return out


def pad_features(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``(T_i, C)`` features with zeros: ``(padded (B, T_max, C), lengths (B,))``."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), lengths


def spec_augment_batch(x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment of each row's real frames of ``x`` ``(B, T, C)`` (padding untouched): two
    time masks of 5 frames (a spoken digit is only ~45 frames long) and two of 5 channels."""
    out = x.clone()
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = spec_augment(x[i, :n].cpu(), time_width=5, generator=generator).to(x.device)
    return out
