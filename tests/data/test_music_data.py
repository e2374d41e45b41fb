"""Piano rolls: JSB Chorales from JSON, and MIDI written and read back exactly."""
import json

import mido
import pytest
import torch
from shared_data import DATA, needs

from rnnkit.data.music import (KEYS, LOWEST, load_chorales, midi_to_piano_roll, piano_roll_to_midi,
                               read_chorales, roll_notes)
from rnnkit.errors import DataError, ShapeError

JSB = "jsb_chorales/jsb-chorales-quarter.json"
MIDI_FILES = sorted((DATA / "midi").glob("*.mid")) if (DATA / "midi").is_dir() else []


def random_roll(steps: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    roll = torch.rand(steps, KEYS, generator=g) < 0.05
    roll[:, 40] = torch.tensor([True, True, False] * (steps // 3) + [True] * (steps % 3))  # held and re-struck
    roll[-2:] = False                                                                       # trailing silence
    roll[0] = False                                                                         # leading silence
    return roll


@pytest.mark.parametrize("steps_per_beat", [1, 4])
def test_midi_round_trip_gives_back_the_same_roll(tmp_path, steps_per_beat):
    roll = random_roll(50)
    path = tmp_path / "roll.mid"
    piano_roll_to_midi(roll, path, steps_per_beat=steps_per_beat)
    assert torch.equal(midi_to_piano_roll(path, steps_per_beat=steps_per_beat), roll)
    assert not list(tmp_path.glob(".*.tmp"))                      # written atomically, nothing left over


def test_a_held_key_is_one_note(tmp_path):
    roll = torch.zeros(6, KEYS, dtype=torch.bool)
    roll[1:4, 39] = True                                          # middle C held three steps
    roll[5, 39] = True                                            # struck again after a rest
    assert roll_notes(roll) == [(1, 4, 60), (5, 6, 60)]
    path = tmp_path / "c.mid"
    piano_roll_to_midi(roll, path)
    msgs = [m for m in mido.MidiFile(path).tracks[0] if m.type in ("note_on", "note_off")]
    assert [(m.type, m.note) for m in msgs] == [("note_on", 60), ("note_off", 60)] * 2
    assert [m.time for m in msgs] == [480, 3 * 480, 480, 480]     # one beat per step at 480 ticks


def test_roll_shape_is_checked(tmp_path):
    with pytest.raises(ShapeError):
        piano_roll_to_midi(torch.zeros(4, 12), tmp_path / "x.mid")


def test_a_midi_with_no_notes_names_the_file(tmp_path):
    path = tmp_path / "silent.mid"
    piano_roll_to_midi(torch.zeros(8, KEYS), path)
    with pytest.raises(DataError, match="silent.mid.*no notes"):
        midi_to_piano_roll(path)


def test_an_unreadable_midi_names_the_file(tmp_path):
    path = tmp_path / "bad.mid"
    path.write_bytes(b"not a midi file at all")
    with pytest.raises(DataError, match="bad.mid.*not a readable MIDI"):
        midi_to_piano_roll(path)


@pytest.mark.skipif(not MIDI_FILES, reason=f"no shared MIDI files under {DATA / 'midi'}")
@pytest.mark.parametrize("path", MIDI_FILES, ids=lambda p: p.name)
def test_real_midi_files_read_as_non_empty_rolls(path):
    try:
        roll = midi_to_piano_roll(path, steps_per_beat=4)
    except DataError as e:                                        # a test file of note_seq's with pitches 1..3
        assert path.name in str(e) and "outside the piano" in str(e)
        with pytest.raises(DataError, match="no notes"):
            midi_to_piano_roll(path, steps_per_beat=4, out_of_range="drop")
        return
    assert roll.dtype == torch.bool and roll.shape[1] == KEYS and roll.shape[0] > 0 and roll.any()


def write_chorales(path, pieces):
    path.write_text(json.dumps({"train": pieces, "valid": [[[60]]], "test": [[[60]]]}))
    return path


def test_chorales_json_becomes_rolls(tmp_path):
    path = write_chorales(tmp_path / "c.json", [[[60, 64, 67], [], [LOWEST, LOWEST + KEYS - 1]]])
    roll = read_chorales(path)["train"][0]
    assert roll.shape == (3, KEYS) and roll.dtype == torch.bool
    assert torch.nonzero(roll).tolist() == [[0, 39], [0, 43], [0, 46], [2, 0], [2, 87]]


@pytest.mark.parametrize("pitch", [20, 109, 60.5])
def test_a_pitch_off_the_piano_names_file_split_piece_and_step(tmp_path, pitch):
    path = write_chorales(tmp_path / "c.json", [[[60]], [[60], [62], [pitch, 64]]])
    with pytest.raises(DataError, match=r"c\.json \(train, piece 1\), step 2: pitch"):
        read_chorales(path)


@needs(JSB)
def test_jsb_chorales_splits():
    splits = load_chorales(DATA)
    assert {k: len(v) for k, v in splits.items()} == {"train": 229, "valid": 76, "test": 77}
    assert all(r.shape[1] == KEYS and r.any(1).float().mean() > 0.9 for r in splits["train"])


@needs(JSB)
def test_a_chorale_survives_a_midi_round_trip(tmp_path):
    roll = load_chorales(DATA)["test"][0]
    piano_roll_to_midi(roll, tmp_path / "c.mid")
    assert torch.equal(midi_to_piano_roll(tmp_path / "c.mid"), roll)
