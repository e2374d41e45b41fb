"""The command line end to end on a tiny corpus, and its one-line errors."""
import pytest

from rnnkit.cli import main

TINY = ["--level", "char", "--batch-size", "4", "--bptt", "16", "--hidden-size", "16", "--embedding-dim", "8",
        "--num-layers", "1", "--no-progress"]


def _error_line(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_train_sample_eval_ngram(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--text", str(tiny_corpus), *TINY, "--max-steps", "3", "--out", str(out),
                 "--samples", "1"]) == 0
    text = capsys.readouterr().out
    assert "5-gram Kneser-Ney" in text and "model" in text and "bits/char" in text
    assert "samples at temperature 0.5" in text and "rnnkit sample" in text
    assert (out / "checkpoint.safetensors").exists() and (out / "best.safetensors").exists()
    assert (out / "vocab.json").exists() and (out / "metrics.jsonl").exists()

    assert main(["sample", str(out / "best.safetensors"), "--prime", "the ", "--length", "20", "--top-k", "3"]) == 0
    assert capsys.readouterr().out.startswith("the ")
    assert main(["eval", str(out / "best.safetensors"), "--data", str(tiny_corpus), "--split", "valid"]) == 0
    assert "bits/char" in capsys.readouterr().out
    assert main(["ngram", "--data", str(tiny_corpus), "--level", "char", "--order", "3"]) == 0
    assert "3-gram KN" in capsys.readouterr().out


def test_resume_continues(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--samples", "0", "--no-baseline"]
    assert main(base + ["--max-steps", "2"]) == 0
    assert main(base + ["--max-steps", "4", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_empty_corpus(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    assert "empty" in _error_line(capsys, ["train", "--text", str(empty), *TINY, "--out", str(tmp_path / "o")])


def test_binary_file(tmp_path, capsys):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    err = _error_line(capsys, ["train", "--text", str(binary), *TINY, "--out", str(tmp_path / "o")])
    assert "blob.bin" in err and "binary" in err


@pytest.mark.parametrize("toml,pattern", [
    ("[train]\nbogus = 1\n", "unknown key 'bogus'"),
    ("[train]\nlr = \"fast\"\n", "lr must be float"),
    ("[model]\nhidden_size = 2.5\n", "hidden_size must be int"),
    ("[train\n", "not valid TOML"),
])
def test_bad_config(tmp_path, capsys, toml, pattern):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    assert pattern in _error_line(capsys, ["train", "--config", str(cfg)])


def test_checkpoint_from_other_architecture(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--samples", "0", "--no-baseline"]
    assert main(base + ["--max-steps", "1"]) == 0
    capsys.readouterr()
    err = _error_line(capsys, base + ["--max-steps", "2", "--resume", "--hidden-size", "32"])
    assert "different configuration" in err and "[model] hidden_size: 16 -> 32" in err


def test_truncated_checkpoint(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--samples", "0",
                 "--no-baseline", "--max-steps", "1"]) == 0
    path = out / "best.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    assert "truncated" in _error_line(capsys, ["sample", str(path)])
    assert "not found" in _error_line(capsys, ["eval", str(tmp_path / "nope.safetensors")])


def test_unknown_dataset_and_bad_experiment_name(tmp_path, capsys):
    err = _error_line(capsys, ["train", "--data", "nosuchset_xyz", "--out", str(tmp_path)])
    assert "nosuchset_xyz" in err
    assert "--experiment" in _error_line(capsys, ["train", "--experiment", "../x", "--out", str(tmp_path)])


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "ptb" in out and "tinyshakespeare" in out


def test_light_subcommands_do_not_import_the_layers():
    """`rnnkit data list` (and help) must not pay for the kernel stack `rnnkit train` needs."""
    import subprocess
    import sys

    code = ("import sys; from rnnkit.cli import main; main(['data', 'list']); "
            "print(sorted(m for m in sys.modules if m.startswith(('rnnkit.nn', 'rnnkit.kernels', 'rnnkit.models'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_data_list_unknown_name(capsys):
    assert "unknown dataset 'nope'" in _error_line(capsys, ["data", "list", "nope"])


def test_sample_escapes_terminal_control_sequences(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--text", str(tiny_corpus), *TINY, "--max-steps", "1", "--out", str(out), "--samples", "0",
                 "--no-baseline"]) == 0
    capsys.readouterr()
    assert main(["sample", str(out / "best.safetensors"), "--prime", "\x1b[2Jthe", "--length", "5"]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text and "\\x1b[2Jthe" in text


@pytest.mark.parametrize("device,pattern", [("tpu", "not a device"), ("meta", "not supported"),
                                            ("cuda:99", "CUDA")])
def test_bad_devices_are_one_error(tiny_corpus, tmp_path, capsys, device, pattern):
    assert pattern in _error_line(capsys, ["train", "--text", str(tiny_corpus), *TINY, "--device", device,
                                           "--out", str(tmp_path / "o")])
    assert pattern in _error_line(capsys, ["sample", str(tmp_path / "x.safetensors"), "--device", device])
    assert pattern in _error_line(capsys, ["eval", str(tmp_path / "x.safetensors"), "--device", device])


def test_endless_input_is_refused(tmp_path, capsys):
    assert "not a regular file" in _error_line(capsys, ["train", "--text", "/dev/zero", *TINY,
                                                        "--out", str(tmp_path / "o")])


def test_disk_full_at_save_is_one_error_and_the_old_checkpoint_survives(tiny_corpus, tmp_path, capsys):
    from unittest import mock

    out = tmp_path / "run"
    base = ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--samples", "0", "--no-baseline"]
    assert main(base + ["--max-steps", "1"]) == 0
    before = (out / "checkpoint.safetensors").read_bytes()
    with mock.patch("rnnkit.train.checkpoint.atomic_write_bytes", side_effect=OSError(28, "No space left on device")):
        err = _error_line(capsys, base + ["--max-steps", "2", "--resume"])
    assert "No space left on device" in err and "intact" in err
    with mock.patch("rnnkit.atomic.os.fsync", side_effect=OSError(28, "No space left on device")):
        assert "No space left on device" in _error_line(capsys, base + ["--max-steps", "2", "--resume"])
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


def test_read_only_out_is_one_error(tiny_corpus, tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert "cannot write" in _error_line(capsys, ["train", "--text", str(tiny_corpus), *TINY,
                                                  "--out", str(ro / "run")])


def test_config_file_not_utf8_or_a_directory(tmp_path, capsys):
    bad = tmp_path / "c.toml"
    bad.write_bytes(b"[train]\nlr = 0.1 # \xff\xfe\n")
    assert "UTF-8" in _error_line(capsys, ["train", "--config", str(bad)])
    assert "is a directory" in _error_line(capsys, ["train", "--config", str(tmp_path)])


def test_huge_error_messages_are_bounded(tmp_path, capsys):
    big = tmp_path / ("x" * 200)
    err = _error_line(capsys, ["sample", str(big / ("y" * 200) / ("z" * 200) / "m.safetensors")])
    assert len(err) < 800


def test_experiment_records_the_command_as_typed(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--task", "adding", "--seq-len", "6", "--train-size", "64", "--valid-size", "16",
            "--test-size", "16", "--epochs", "1", "--hidden-size", "4", "--out", "run", "--no-progress",
            "--experiment", "tiny"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert record["command"] == "rnnkit " + " ".join(argv) and record["metrics"]["test"]["mse"] >= 0
