"""Polyphonic music as piano rolls: JSB Chorales, and MIDI files in and out.

A *piano roll* is a ``(T, 88)`` tensor, one row per time step and one column per
piano key (MIDI pitches 21..108, A0..C8): 1 where the key sounds during the step.
This is the representation of Boulanger-Lewandowski et al. (2012), whose JSB
Chorales split (229/76/77 chorales, quarter-note steps) later papers (Chung et al.
2014) score in NLL per time step.

The chorales are read from ``jsb_chorales/jsb-chorales-quarter.json`` under the
data directory (registered as ``"jsb-chorales"``, one :data:`~.registry.WHOLE`
file holding the three splits): ``{"train" | "valid" | "test": [piece, ...]}``,
a piece a list of steps, a step a list of the MIDI pitches sounding. The
original pickle is never read (unpickling runs code).

MIDI I/O uses ``mido``. Time is quantised in *ticks*, never seconds, so a roll
written at any tempo reads back at the same steps: a step is
``ticks_per_beat / steps_per_beat`` ticks (the chorales: one step per beat).
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, DataError, ShapeError
from .registry import WHOLE, resolve

#: MIDI pitch of the lowest piano key (A0) and the number of keys (up to C8 = 108).
LOWEST = 21
KEYS = 88
HIGHEST = LOWEST + KEYS - 1
SPLITS = ("train", "valid", "test")
DRUM_CHANNEL = 9  # General MIDI channel 10: its note numbers are drums, not pitches


# --- JSB Chorales ---------------------------------------------------------------------

def piece_to_roll(piece: Sequence[Sequence[int]], where: str = "piece") -> Tensor:
    """A piece (steps of MIDI pitches) -> a bool roll ``(T, 88)``.

    A pitch outside 21..108 (or not an integer) is a DataError naming ``where``
    (the file, split and piece) and the step.
    """
    roll = torch.zeros(len(piece), KEYS, dtype=torch.bool)
    for t, step in enumerate(piece):
        if not isinstance(step, list):
            raise DataError(f"{where}, step {t}: expected a list of MIDI pitches, got {type(step).__name__}")
        for pitch in step:
            if isinstance(pitch, bool) or not isinstance(pitch, int) or not LOWEST <= pitch <= HIGHEST:
                raise DataError(f"{where}, step {t}: pitch {pitch!r} is outside the piano's "
                                f"MIDI {LOWEST}..{HIGHEST}")
            roll[t, pitch - LOWEST] = True
    return roll


def read_chorales(path: str | os.PathLike[str]) -> dict[str, list[Tensor]]:
    """The JSON file's splits as bool rolls: ``{"train" | "valid" | "test": [(T, 88), ...]}``.

    DataError naming the file for unreadable JSON, a missing split, an empty piece
    or a pitch out of range (with its split, piece and step).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable JSON file of chorales ({e})") from None
    if not isinstance(data, dict) or any(not isinstance(data.get(s), list) for s in SPLITS):
        raise DataError(f"{path}: expected a JSON object with lists 'train', 'valid' and 'test'")
    out: dict[str, list[Tensor]] = {}
    for split in SPLITS:
        rolls = []
        for i, piece in enumerate(data[split]):
            where = f"{path} ({split}, piece {i})"
            if not isinstance(piece, list) or not piece:
                raise DataError(f"{where}: expected a non-empty list of time steps")
            rolls.append(piece_to_roll(piece, where))
        out[split] = rolls
    return out


def load_chorales(data_dir: str | os.PathLike[str] | None = None) -> dict[str, list[Tensor]]:
    """JSB Chorales from the data directory, checksum verified (:func:`~.registry.resolve`)."""
    return read_chorales(resolve("jsb-chorales", data_dir)[WHOLE])


# --- MIDI -------------------------------------------------------------------------------

def _step_ticks(ticks_per_beat: int, steps_per_beat: int) -> int:
    if steps_per_beat < 1 or ticks_per_beat < 1 or ticks_per_beat % steps_per_beat:
        raise ConfigError(f"steps_per_beat ({steps_per_beat}) must be >= 1 and divide "
                          f"ticks_per_beat ({ticks_per_beat})")
    return ticks_per_beat // steps_per_beat


def _check_roll(roll: Tensor) -> Tensor:
    if roll.dim() != 2 or roll.shape[1] != KEYS:
        raise ShapeError(f"piano roll must be (T, {KEYS}), got shape {tuple(roll.shape)}")
    return roll.detach().cpu() != 0


def roll_notes(roll: Tensor) -> list[tuple[int, int, int]]:
    """``(start step, end step (exclusive), MIDI pitch)`` of every note in a ``(T, 88)``
    roll: a key held over consecutive steps is one note."""
    on = _check_roll(roll)
    padded = torch.cat([torch.zeros(1, KEYS, dtype=torch.bool), on, torch.zeros(1, KEYS, dtype=torch.bool)])
    change = padded[1:].int() - padded[:-1].int()                     # (T+1, 88): +1 onset, -1 offset
    notes = []
    for key in range(KEYS):
        starts = torch.nonzero(change[:, key] == 1).flatten().tolist()
        ends = torch.nonzero(change[:, key] == -1).flatten().tolist()
        notes += [(s, e, key + LOWEST) for s, e in zip(starts, ends)]
    return sorted(notes)


def piano_roll_to_midi(roll: Tensor, path: str | os.PathLike[str], *, steps_per_beat: int = 1,
                       ticks_per_beat: int = 480, bpm: float = 120.0, program: int = 0,
                       velocity: int = 80) -> None:
    """Write a ``(T, 88)`` roll (bool or 0/1) as a one-track MIDI file, atomically.

    Each held note is one note_on/note_off pair; a step lasts ``60 / bpm / steps_per_beat``
    seconds (0.5 s by default). The end of the track marks step T, so trailing silent
    steps survive a round trip through :func:`midi_to_piano_roll`.
    """
    import mido

    step = _step_ticks(ticks_per_beat, steps_per_beat)
    if not 0 <= program <= 127 or not 1 <= velocity <= 127 or not bpm > 0:
        raise ConfigError(f"program must be 0..127, velocity 1..127 and bpm > 0; got {program}, {velocity}, {bpm}")
    notes = roll_notes(roll)
    # at one tick, offsets before onsets: a note ending never cuts one starting there
    events = sorted([(e * step, 0, p) for s, e, p in notes] + [(s * step, 1, p) for s, e, p in notes])
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
                            mido.Message("program_change", program=program, time=0)])
    now = 0
    for tick, is_on, pitch in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, note=pitch, velocity=velocity if is_on else 0, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=roll.shape[0] * step - now))
    midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _read_midi(path: Path):
    import mido

    try:
        return mido.MidiFile(path)
    except Exception as e:  # noqa: BLE001 - mido raises OSError, EOFError, ValueError, KeyError... for bad files
        raise DataError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e})") from None


def midi_to_piano_roll(path: str | os.PathLike[str], steps_per_beat: int = 1, *, drums: bool = False,
                       out_of_range: str = "error") -> Tensor:
    """Read a MIDI file as a bool roll ``(T, 88)`` with ``steps_per_beat`` steps per beat.

    Every track and channel is merged; the drum channel (10) is skipped unless
    ``drums``. A note covers the steps its quantised onset..offset span (at least
    one). ``out_of_range``: ``"error"`` (a DataError naming the file and pitch) or
    ``"drop"`` for pitches outside the piano. DataError naming the file for an
    unreadable file or one with no notes.
    """
    if out_of_range not in ("error", "drop"):
        raise ConfigError(f"out_of_range must be 'error' or 'drop', got {out_of_range!r}")
    import mido

    path = Path(path)
    midi = _read_midi(path)
    if midi.ticks_per_beat < 1:
        raise DataError(f"{path}: MIDI with {midi.ticks_per_beat} ticks per beat (SMPTE timing is not supported)")
    step = midi.ticks_per_beat / steps_per_beat
    notes, length = _collect_notes(path, mido.merge_tracks(midi.tracks), drums, out_of_range)
    if not notes:
        raise DataError(f"{path}: the MIDI file has no notes" + ("" if drums else " (drum channel skipped)"))
    spans = [(round(s / step), round(e / step), p) for s, e, p in notes]
    steps = max(max(max(e, s + 1) for s, e, _ in spans), round(length / step))
    roll = torch.zeros(steps, KEYS, dtype=torch.bool)
    for s, e, p in spans:
        roll[s:max(e, s + 1), p - LOWEST] = True  # a note shorter than a step still sounds in one
    return roll


def _collect_notes(path: Path, messages, drums: bool, out_of_range: str) -> tuple[list[tuple[int, int, int]], int]:
    """``([(start tick, end tick, pitch)], last tick)`` of merged MIDI messages (delta times)."""
    now = 0
    open_notes: dict[tuple[int, int], int] = {}       # (channel, pitch) -> start tick
    notes = []
    for msg in messages:
        now += msg.time
        if msg.type not in ("note_on", "note_off") or (msg.channel == DRUM_CHANNEL and not drums):
            continue
        if not LOWEST <= msg.note <= HIGHEST:
            if out_of_range == "error":
                raise DataError(f"{path}: pitch {msg.note} at tick {now} is outside the piano's "
                                f"MIDI {LOWEST}..{HIGHEST}")
            continue
        key = (msg.channel, msg.note)
        if key in open_notes:  # an offset, or a re-struck note: the sounding one ends here
            notes.append((open_notes.pop(key), now, msg.note))
        if msg.type == "note_on" and msg.velocity > 0:
            open_notes[key] = now
    notes += [(start, now, pitch) for (_, pitch), start in open_notes.items()]  # never released: to the end
    return notes, now
