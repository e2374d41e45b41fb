"""FSDD loader on tiny synthetic archives (WAVs written with ``wave``), and the real files when present."""
import io
import tarfile

import pytest
import torch

from rnnkit.data import fsdd
from rnnkit.data.audio import FeatureSettings, compute_features
from rnnkit.errors import DataError
from shared_data import DATA, needs
from wav_files import digit_tone

SPEAKERS = ("alice", "bob")




def write_tar(path, members: dict[str, bytes], directory: bool = True) -> None:
    with tarfile.open(path, "w") as tar:
        if directory:
            info = tarfile.TarInfo("recordings")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_fsdd(path, speakers=SPEAKERS, digits=range(10), takes=12) -> None:
    write_tar(path, {f"recordings/{d}_{s}_{i}.wav": digit_tone(d, i)
                     for s in speakers for d in digits for i in range(takes)})


def test_parse_name():
    assert fsdd.parse_name("recordings/7_jackson_32.wav") == (7, "jackson", 32)
    for bad in ("recordings/12_jackson_3.wav", "recordings/7-jackson-3.wav", "other/7_jackson_3.wav",
                "recordings/7_jackson_3.mp3", "recordings/7__3.wav"):
        with pytest.raises(DataError, match="unexpected member"):
            fsdd.parse_name(bad)


def test_read_recordings_reads_every_wav_in_memory(tmp_path):
    make_fsdd(tmp_path / "r.tar", takes=3)
    recs = fsdd.read_recordings(tmp_path / "r.tar")
    assert len(recs) == 2 * 10 * 3 and fsdd.speakers_of(recs) == list(SPEAKERS)
    r = next(r for r in recs if (r.digit, r.speaker, r.index) == (4, "bob", 2))
    assert r.data == digit_tone(4, 2) and r.name == "recordings/4_bob_2.wav"


def test_official_split_tests_takes_0_to_4_and_validates_on_5_to_9(tmp_path):
    make_fsdd(tmp_path / "r.tar")
    s = fsdd.split_recordings(fsdd.read_recordings(tmp_path / "r.tar"))
    assert {r.index for r in s["test"]} == set(range(5))
    assert {r.index for r in s["valid"]} == set(range(5, 10))
    assert {r.index for r in s["train"]} == {10, 11}
    for split in s.values():   # balanced: every speaker and digit in every split
        assert {(r.speaker, r.digit) for r in split} == {(sp, d) for sp in SPEAKERS for d in range(10)}
    assert len(s["train"]) + len(s["valid"]) + len(s["test"]) == 2 * 10 * 12


def test_speaker_held_out_split_never_shows_the_speaker_in_training(tmp_path):
    make_fsdd(tmp_path / "r.tar", speakers=("alice", "bob", "carol"))
    s = fsdd.split_recordings(fsdd.read_recordings(tmp_path / "r.tar"), heldout_speaker="bob")
    assert {r.speaker for r in s["test"]} == {"bob"} and len(s["test"]) == 10 * 12
    assert {r.speaker for r in s["train"] + s["valid"]} == {"alice", "carol"}
    assert {r.index for r in s["valid"]} == set(range(5, 10))
    with pytest.raises(DataError, match="heldout_speaker 'dave' is not in the data"):
        fsdd.split_recordings(fsdd.read_recordings(tmp_path / "r.tar"), heldout_speaker="dave")


def test_features_equal_the_audio_front_end_and_are_cached(tmp_path):
    make_fsdd(tmp_path / "r.tar", speakers=("alice",), digits=range(2), takes=2)
    recs = fsdd.read_recordings(tmp_path / "r.tar")
    settings = FeatureSettings(n_mels=20)
    got = fsdd.features(recs, settings, tmp_path / "cache")
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 4
    again = fsdd.features(recs, settings, tmp_path / "cache")
    for r, f, g in zip(recs, got, again):
        want = compute_features("x.wav", settings, data=r.data)
        assert f.shape == (1 + 2400 // 80, 20) and torch.equal(f, want) and torch.equal(g, want)


def test_bad_archives_are_one_clear_error(tmp_path):
    write_tar(tmp_path / "names.tar", {"recordings/seven_bob_1.wav": digit_tone(7, 1)})
    with pytest.raises(DataError, match="unexpected member 'recordings/seven_bob_1.wav'"):
        fsdd.read_recordings(tmp_path / "names.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match="cannot read .* as a tar archive"):
        fsdd.read_recordings(tmp_path / "junk.tar")
    write_tar(tmp_path / "empty.tar", {})
    with pytest.raises(DataError, match="holds no recordings"):
        fsdd.read_recordings(tmp_path / "empty.tar")
    # a corrupt member is named when its features are computed
    write_tar(tmp_path / "corrupt.tar", {"recordings/1_bob_0.wav": b"RIFF\x00\x00garbage"})
    recs = fsdd.read_recordings(tmp_path / "corrupt.tar")
    with pytest.raises(DataError, match="recordings.tar:recordings/1_bob_0.wav: not a readable PCM WAV"):
        fsdd.features(recs, FeatureSettings(), None)
    (tmp_path / "speakers.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read .*speakers.json as JSON"):
        fsdd.read_speakers(tmp_path / "speakers.json")


def test_spec_augment_batch_masks_only_real_frames():
    x = torch.randn(2, 30, 12)
    out = fsdd.spec_augment_batch(x, torch.tensor([30, 12]), torch.Generator().manual_seed(0))
    assert torch.equal(out[1, 12:], x[1, 12:])                          # padding untouched
    masked = out == 0
    assert masked[0].all(1).sum() >= 5 and masked[0].all(0).sum() >= 5  # a time band and a channel band
    assert masked[1, :12].all(1).any()
    assert torch.equal(out[~masked], x[~masked])                       # nothing else changed


@needs("fsdd/recordings.tar", "fsdd/speakers.json")
def test_real_fsdd_is_six_speakers_ten_digits_fifty_takes():
    recs = fsdd.read_recordings(DATA / "fsdd/recordings.tar")
    speakers = fsdd.read_speakers(DATA / "fsdd/speakers.json")
    assert len(recs) == 3000 and fsdd.speakers_of(recs) == sorted(speakers)
    s = fsdd.split_recordings(recs)
    assert (len(s["train"]), len(s["valid"]), len(s["test"])) == (2400, 300, 300)
