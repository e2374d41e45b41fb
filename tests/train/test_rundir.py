"""A run folder holds one run and cannot mislead: reuse is refused, divergence is an
error that keeps no weights, resume refuses incompatible changes, a kill loses at
most the checkpoint interval, the log has no duplicated steps, no temp file stays."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rnnkit.cli import main
from rnnkit.train import checkpoint

TINY = ["--level", "char", "--batch-size", "4", "--bptt", "16", "--hidden-size", "16", "--embedding-dim", "8",
        "--num-layers", "1", "--no-progress", "--no-baseline", "--samples", "0"]


def _one_error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def _steps(folder, split="train"):
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["split"] == split]


def test_reuse_without_resume_or_overwrite_is_refused_and_touches_nothing(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--max-steps", "3"]
    assert main(argv) == 0
    before = _snapshot(out)
    err = _one_error(capsys, argv)
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(out) == before


def test_overwrite_starts_a_clean_run(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--log-every", "1"]
    assert main(argv + ["--max-steps", "6"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(argv + ["--max-steps", "2", "--overwrite"]) == 0
    assert _steps(out) == [1, 2]                           # nothing of the old run's log
    assert (out / "notes.txt").read_text() == "mine"       # nothing of the user's removed


def test_out_that_is_a_file_is_one_error(tiny_corpus, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file" in _one_error(capsys, ["train", "--text", str(tiny_corpus), *TINY, "--out", str(f)])


def test_divergence_stops_naming_the_step_and_keeps_no_weights(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    err = _one_error(capsys, ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--optimizer", "sgd",
                              "--lr", "1e38", "--eval-every", "1", "--max-steps", "50"])
    assert "diverged at step 2" in err and "learning rate" in err
    assert not (out / "best.safetensors").exists()  # the validation after step 1 was not finite: not promoted
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["split"] == "nonfinite" and rows[-1]["step"] == 2


def test_skip_nonfinite_batches_when_asked(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    err = _one_error(capsys, ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--optimizer", "sgd",
                              "--lr", "1e38", "--max-steps", "50", "--on-nonfinite", "skip"])
    assert "10 batches in a row" in err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["action"] for r in rows if r["split"] == "nonfinite"] == ["skip"] * 10


@pytest.mark.parametrize("change,key", [(["--batch-size", "2"], "batch_size"), (["--optimizer", "sgd"], "optimizer"),
                                        (["--bptt", "8"], "bptt"), (["--cell", "gru"], "cell")])
def test_resume_with_an_incompatible_change_is_one_clear_error(tiny_corpus, tmp_path, capsys, change, key):
    out = tmp_path / "run"
    argv = ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out)]
    assert main(argv + ["--max-steps", "2"]) == 0
    before = _snapshot(out)
    err = _one_error(capsys, argv + ["--max-steps", "4", "--resume", *change])
    assert "cannot resume" in err and key in err
    assert _snapshot(out) == before


def test_resume_with_a_compatible_change_is_allowed_and_logged(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--log-every", "1"]
    assert main(argv + ["--max-steps", "2"]) == 0
    assert main(argv + ["--max-steps", "4", "--resume", "--lr", "0.001"]) == 0
    assert "changed on resume: [train] lr" in capsys.readouterr().out
    assert _steps(out) == [1, 2, 3, 4]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in rows if r["split"] == "final"] == [4]  # the first leg's final line is gone


def test_periodic_checkpoint_by_minutes(tiny_corpus, tmp_path):
    from rnnkit.train.config import build_config
    from rnnkit.train.loop import Loop

    cfg = build_config(None, {"train": {"data": str(tiny_corpus), "level": "char", "batch_size": 4, "bptt": 16,
                                        "max_steps": 3, "progress": False, "out": str(tmp_path / "run"),
                                        "checkpoint_minutes": 1e-9},
                              "model": {"hidden_size": 8, "embedding_dim": 4, "num_layers": 1}})
    task = cfg.make_task()
    task.prepare()
    loop = Loop(cfg, task)
    saved_at = []
    original = loop.save_checkpoint
    loop.save_checkpoint = lambda *a: (saved_at.append(loop.progress.step), original(*a))
    loop.fit()
    assert saved_at[:2] == [1, 2]  # after every update (then the final save at 3)


def test_sigkill_loses_at_most_the_interval_and_resume_logs_no_step_twice(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "rnnkit", "train", "--text", str(tiny_corpus), *TINY, "--out", str(out),
            "--log-every", "1", "--checkpoint-every", "5", "--epochs", "1000"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "metrics.jsonl").exists() and len(_steps(out)) >= 23:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    logged = max(_steps(out))
    saved = checkpoint.load(out / "checkpoint.safetensors")["progress"]["step"]
    assert saved % 5 == 0 and 0 <= logged - saved < 5 + 1  # at most the interval (and the update in flight)
    (out / ".checkpoint.safetensors.abcd1234.tmp").write_bytes(b"half a save")  # what a kill mid-save leaves
    assert main(["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--log-every", "1",
                 "--checkpoint-every", "5", "--epochs", "1000", "--max-steps", str(saved + 7), "--resume"]) == 0
    steps = _steps(out)
    assert steps == list(range(1, saved + 8))  # no step twice, none missing
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_unwritable_out_is_one_error_before_training(tiny_corpus, tmp_path, capsys):
    """A read-only file system or folder: refused when the run folder is claimed (root
    ignores permission bits, so the refusal is simulated where the folder is created)."""
    from unittest import mock

    with mock.patch("pathlib.Path.mkdir", side_effect=PermissionError(13, "Read-only file system")):
        err = _one_error(capsys, ["train", "--text", str(tiny_corpus), *TINY, "--out", str(tmp_path / "ro")])
    assert "cannot write to --out" in err and "Read-only file system" in err


@pytest.mark.parametrize("name", ["metrics.jsonl", "checkpoint.safetensors", "best.safetensors"])
def test_run_file_names_taken_by_folders_are_refused_before_training(tiny_corpus, tmp_path, capsys, name):
    out = tmp_path / "run"
    (out / name).mkdir(parents=True)
    err = _one_error(capsys, ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--overwrite"])
    assert f"{name} is a folder" in err
