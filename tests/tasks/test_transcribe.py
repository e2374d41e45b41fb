"""Connected-digit transcription: composed utterances, a training step through the one loop on a
synthetic FSDD archive, error rates against a hand count, and ``rnnkit transcribe``."""
import io
import tarfile

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.data.fsdd import Recording
from rnnkit.errors import ConfigError
from rnnkit.tasks import transcribe as tr
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop
from wav_files import digit_tone, write_wav

SPEAKERS = ("alice", "bob")






def fake_fsdd(tmp_path, monkeypatch, takes: int = 11) -> None:
    """A tiny archive in FSDD's layout, served to the task in place of the real one."""
    path = tmp_path / "recordings.tar"
    with tarfile.open(path, "w") as tar:
        for s in SPEAKERS:
            for d in range(10):
                for i in range(takes):
                    data = digit_tone(d, i, n=1600)
                    info = tarfile.TarInfo(f"recordings/{d}_{s}_{i}.wav")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(tr, "resolve", lambda name, data_dir=None: {"recordings": path})


def test_compose_joins_one_speakers_recordings_with_pauses():
    recs = [Recording(d, s, 0, f"{d}_{s}", b"") for s in ("a", "b") for d in range(10)]
    waves = [torch.full((50 + i,), float(i + 1)) for i in range(len(recs))]   # each recording recognisable
    opts = tr.TranscribeOptions(min_digits=2, max_digits=4, pause_ms=5.0)
    utts = tr.compose(waves, recs, 40, opts, 8000, torch.Generator().manual_seed(0))
    for x, digits in utts:
        assert 2 <= len(digits) <= 4
        # the non-silent runs, in order, are whole recordings (pauses of >= 20 samples between them)
        runs, prev = [], 0.0
        for v in x.tolist():
            if v and v != prev:
                runs.append(int(v) - 1)
            prev = v
        assert [recs[j].digit for j in runs] == digits
        assert len({recs[j].speaker for j in runs}) == 1
        assert x.count_nonzero() == sum(len(waves[j]) for j in runs)
    again = tr.compose(waves, recs, 40, opts, 8000, torch.Generator().manual_seed(0))
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(utts, again))


def test_utterances_of_each_split_come_only_from_its_recordings(tmp_path, monkeypatch):
    fake_fsdd(tmp_path, monkeypatch)
    used = {}
    real = tr.compose

    def spy(waves, recs, n, options, rate, generator):
        used[n] = {r.index for r in recs}
        return real(waves, recs, n, options, rate, generator)
    monkeypatch.setattr(tr, "compose", spy)
    task = tr.TranscribeTask(tr.TranscribeOptions(train_utterances=7, valid_utterances=6, test_utterances=5), {})
    task.prepare()
    assert used == {7: {10}, 6: set(range(5, 10)), 5: set(range(5))}
    assert [len(task.splits[s]) for s in ("train", "valid", "test")] == [7, 6, 5]
    x, digits = task.splits["test"][0]
    assert x.shape[1] == 40 and 2 <= len(digits) <= 7


def test_error_counts_match_a_hand_count():
    c = tr.error_counts(["one two three", "four"], ["one three", "four five"])
    # "two" deleted; "five" inserted: 2 word errors over 4 reference words
    assert (c["word_errors"], c["words"], c["wrong_utterances"]) == (2, 4, 2)
    assert c["chars"] == len("one two three") + len("four")


def test_one_training_step_through_the_loop_and_the_cli(tmp_path, monkeypatch, capsys):
    fake_fsdd(tmp_path, monkeypatch)
    cfg = build_config(None, {"train": {"task": "transcribe", "train_utterances": 8, "valid_utterances": 4,
                                        "test_utterances": 4, "beam": 3, "epochs": 1, "batch_size": 4,
                                        "spec_augment": True, "progress": False, "out": str(tmp_path / "run")},
                              "model": {"hidden_size": 8, "num_layers": 1, "frame_stack": 3}})
    task = cfg.make_task()
    task.prepare()
    result = Loop(cfg, task).fit()
    assert result["steps"] == 2
    for split in ("valid", "test"):
        m = result[split]
        assert 0 <= m["wer_greedy"] and 0 <= m["cer_beam"] and m["wer"] == m["wer_beam"] and m["loss"] > 0
    wavs = []
    for i, d in enumerate((3, 7)):
        wavs.append(tmp_path / f"{i}.wav")
        wavs[-1].write_bytes(digit_tone(d, 1, n=1600))
    assert main(["transcribe", str(tmp_path / "run" / "best.safetensors"), *map(str, wavs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(set(line) <= set("0123456789") for line in lines)
    ckpt = str(tmp_path / "run" / "best.safetensors")
    # a file at another rate is resampled to the model's 8 kHz
    hi = tmp_path / "hi.wav"
    t = np.arange(3200) / 16000
    write_wav(hi, (0.3 * 32767 * np.sin(2 * np.pi * (300 + 150 * 3 + 7) * t)).astype("<i2"), rate=16000)
    assert main(["transcribe", "--beam", "0", ckpt, str(hi)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    # bad input: one clear error naming the file, exit status 2
    (tmp_path / "notes.wav").write_text("this is not audio\n")
    write_wav(tmp_path / "stereo.wav", np.zeros(400, dtype="<i2"), channels=2)
    write_wav(tmp_path / "empty.wav", np.zeros(0, dtype="<i2"))
    write_wav(tmp_path / "odd-rate.wav", np.zeros(441, dtype="<i2"), rate=44101)
    for name, why in [("nope.wav", "cannot read"), ("notes.wav", "not a readable PCM WAV"),
                      ("stereo.wav", "stereo audio"), ("empty.wav", "empty recording"),
                      ("odd-rate.wav", "cannot resample 44101 Hz -> 8000 Hz")]:
        assert main(["transcribe", ckpt, str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{name}: {why}" in err and "Traceback" not in err


def test_bad_options():
    with pytest.raises(ConfigError, match="min_digits <= max_digits"):
        tr.TranscribeOptions(min_digits=5, max_digits=3)
    with pytest.raises(ConfigError, match="beam must be >= 1"):
        tr.TranscribeOptions(beam=0)
