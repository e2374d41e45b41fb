from unittest import mock

import pytest
import torch

from rnnkit.errors import CheckpointError
from rnnkit.train import checkpoint


def test_round_trip_nested_state(tmp_path):
    state = {"w": torch.randn(3, 2), "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "groups": [{"lr": 0.1}]},
             "hidden": (torch.ones(1, 2), torch.zeros(1, 2)), "none": None, "s": "x"}
    checkpoint.save(tmp_path / "c.safetensors", state)
    back = checkpoint.load(tmp_path / "c.safetensors")
    assert torch.equal(back["w"], state["w"]) and isinstance(back["hidden"], tuple)
    assert back["opt"]["state"][0]["step"].item() == 3.0 and back["opt"]["groups"][0]["lr"] == 0.1
    assert back["none"] is None and back["s"] == "x"


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.zeros(4), "step": 1})
    with mock.patch("rnnkit.atomic.os.replace", side_effect=KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save(path, {"w": torch.ones(4), "step": 2})
    back = checkpoint.load(path)
    assert back["step"] == 1 and torch.equal(back["w"], torch.zeros(4))
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left behind


def test_interrupted_write_leaves_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"step": 1})
    with mock.patch("rnnkit.atomic.os.fsync", side_effect=OSError("disk full")):
        with pytest.raises(OSError):
            checkpoint.save(path, {"step": 2})
    assert checkpoint.load(path)["step"] == 1


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.randn(100)})
    data = path.read_bytes()
    for cut in (4, 60, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
            checkpoint.load(path)


def test_foreign_safetensors_and_missing_file(tmp_path):
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not an rnnkit checkpoint"):
        checkpoint.load(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing.safetensors")
