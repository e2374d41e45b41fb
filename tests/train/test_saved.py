"""Model files: everything a checkpoint declares must agree with its tensors and with
each other, checked before anything large is built."""
import json
import struct
import time
import tracemalloc

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rnnkit.data import Vocab
from rnnkit.errors import CheckpointError
from rnnkit.models import LanguageModel
from rnnkit.tasks.lm import LanguageModelTask, LMOptions
from rnnkit.train import checkpoint
from rnnkit.train.saved import load_model, model_record


def _model_file(path, tokens="abc \n", level="char", **edits):
    vocab = Vocab.build(list(tokens))
    task = LanguageModelTask(LMOptions(level=level), {"hidden_size": 8, "embedding_dim": 4, "num_layers": 1})
    task.load_state_dict({"vocab": vocab.to_dict(), "level": level})
    torch.manual_seed(0)
    model = LanguageModel(task.model_config())
    record = model_record(task, model, {"train": {"task": "lm"}, "model": task.model_options})
    for key, value in edits.items():
        section, _, field = key.partition("__")
        if field:
            record[section][field] = value
        else:
            record[section] = value
    checkpoint.save(path, record)
    return path


def test_round_trip(tmp_path):
    loaded = load_model(_model_file(tmp_path / "m.safetensors"))
    assert loaded.task.level == "char" and loaded.model.config.vocab_size == 8  # 5 characters + <pad> <unk> <eos>


@pytest.mark.parametrize("tokens", ["abcdefgh", "ab"])
def test_vocabulary_longer_or_shorter_than_the_model(tmp_path, tokens):
    path = _model_file(tmp_path / "m.safetensors")
    state = checkpoint.load(path)
    state["task_state"]["vocab"] = Vocab.build(list(tokens)).to_dict()
    checkpoint.save(path, state)
    with pytest.raises(CheckpointError, match="disagrees with the task's data"):
        load_model(path)


def test_level_that_contradicts_the_vocabulary(tmp_path):
    path = _model_file(tmp_path / "m.safetensors", task_state__level="word")
    with pytest.raises(CheckpointError, match="level 'word' but its vocabulary has whitespace"):
        load_model(path)
    path = _model_file(tmp_path / "w.safetensors", task_state__level="char",
                       task_state__vocab=Vocab.build(["the", "cat"]).to_dict())
    with pytest.raises(CheckpointError, match="level 'char' but its vocabulary has multi-character"):
        load_model(path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float16, torch.float64])
def test_weights_of_another_dtype_are_not_cast_silently(tmp_path, dtype):
    path = _model_file(tmp_path / "m.safetensors")
    state = checkpoint.load(path)
    state["model"]["decoder.weight"] = state["model"]["decoder.weight"].to(dtype)
    checkpoint.save(path, state)
    with pytest.raises(CheckpointError, match="decoder.weight is torch."):
        load_model(path)


def test_huge_declared_model_is_refused_before_it_is_built(tmp_path):
    """A few-KB file claiming hidden_size 60000 (a 14 GB LSTM): refused in well under a
    second without allocating it."""
    path = _model_file(tmp_path / "m.safetensors")
    state = checkpoint.load(path)
    state["model_config"]["hidden_size"] = 60_000
    checkpoint.save(path, state)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="do not fit the stored architecture"):
        load_model(path)
    elapsed, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 5 and peak < 50 * 2**20


@pytest.mark.parametrize("entry", ["model", "task_state", "model_config", "task"])
def test_missing_entries(tmp_path, entry):
    path = _model_file(tmp_path / "m.safetensors")
    state = checkpoint.load(path)
    del state[entry]
    checkpoint.save(path, state)
    with pytest.raises(CheckpointError, match=f"no '{entry}' entry"):
        load_model(path)


def test_non_finite_weights(tmp_path):
    path = _model_file(tmp_path / "m.safetensors")
    state = checkpoint.load(path)
    state["model"]["decoder.bias"][0] = float("nan")
    checkpoint.save(path, state)
    with pytest.raises(CheckpointError, match="NaN or inf"):
        load_model(path)


def test_metadata_naming_a_tensor_the_file_lacks(tmp_path):
    path = _model_file(tmp_path / "m.safetensors")
    state = checkpoint.load(path)
    state["task_state"]["extra"] = torch.zeros(1)  # stored as a reference to tensor "s.task_state.extra"
    checkpoint.save(path, state)
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(data[8:8 + n])["__metadata__"]
    tensors = {k: v for k, v in st_load(data).items() if k != "s.task_state.extra"}
    path.write_bytes(st_save(tensors, metadata=meta))
    with pytest.raises(CheckpointError, match="refers to a tensor that is not in the file"):
        load_model(path)
