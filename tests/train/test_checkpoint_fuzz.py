"""Mutated checkpoints (truncated, flipped bytes, edited metadata values and types,
resized or retyped tensors) given to the CLI: success, or exit 2 with exactly one
error line and no traceback. Never a crash, a hang or a silently wrong model."""
import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fuzzing import examples
from rnnkit.cli import main
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run: best.safetensors (model) and checkpoint.safetensors (training)."""
    root = tmp_path_factory.mktemp("fuzzrun")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat. a dog ran far.\n" * 30)
    cfg = build_config(None, {"train": {"data": str(corpus), "level": "char", "batch_size": 4, "bptt": 8,
                                        "max_steps": 2, "progress": False, "out": str(root / "run")},
                              "model": {"hidden_size": 8, "embedding_dim": 4, "num_layers": 1}})
    task = cfg.make_task()
    task.prepare()
    Loop(cfg, task).fit()
    return root


def _split(data: bytes) -> tuple[dict, dict, dict]:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__")
    return meta, json.loads(meta["state"]), st_load(data)


def _join(meta: dict, state, tensors: dict) -> bytes:
    return st_save(tensors, metadata={**meta, "state": json.dumps(state)})


def _leaves(obj, path=()):
    """Paths to every value of a JSON tree (dicts and lists), the containers included."""
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))


def _set(obj, path, value):
    if not path:
        return value
    obj[path[0]] = _set(obj[path[0]], path[1:], value)
    return obj


def _nested(depth: int):
    v = 0
    for _ in range(depth):
        v = {"__list__": [v]}
    return v


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.just("x" * 200_000), st.just("\x1b[31mred\x1b[0m"), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.sampled_from([{"__tensor__": "s.nope"},
                                                                                    _nested(200), {"__dict__": 3}]))


def _check_cli(capsys, argv) -> int:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc in (0, 2), (rc, captured.err[-2000:])
    if rc == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err[-2000:]
        assert len(lines[0]) < 1000  # untrusted content is quoted within bounds
    assert "\x1b" not in captured.out + captured.err  # no raw terminal escapes reach the terminal
    return rc


def _sample(capsys, path: Path) -> int:
    return _check_cli(capsys, ["sample", str(path), "--length", "5"])


@settings(max_examples=examples(25), **SETTINGS)
@given(cut=st.floats(0.0, 1.0))
def test_fuzz_truncated(run_dir, tmp_path, capsys, cut):
    data = (run_dir / "run" / "best.safetensors").read_bytes()
    path = tmp_path / "m.safetensors"
    path.write_bytes(data[:int(cut * (len(data) - 1))])
    assert _sample(capsys, path) == 2


@settings(max_examples=examples(40), **SETTINGS)
@given(where=st.floats(0.0, 1.0), value=st.integers(0, 255))
def test_fuzz_flipped_byte(run_dir, tmp_path, capsys, where, value):
    data = bytearray((run_dir / "run" / "best.safetensors").read_bytes())
    data[int(where * (len(data) - 1))] = value
    path = tmp_path / "m.safetensors"
    path.write_bytes(bytes(data))
    _sample(capsys, path)


@settings(max_examples=examples(60), **SETTINGS)
@given(data=st.data(), value=JSON_VALUES)
def test_fuzz_edited_metadata(run_dir, tmp_path, capsys, data, value):
    meta, state, tensors = _split((run_dir / "run" / "best.safetensors").read_bytes())
    path_to = data.draw(st.sampled_from(list(_leaves(state))))
    path = tmp_path / "m.safetensors"
    path.write_bytes(_join(meta, _set(state, path_to, value), tensors))
    _sample(capsys, path)


@settings(max_examples=examples(30), **SETTINGS)
@given(data=st.data(), shape=st.lists(st.integers(0, 5), max_size=3),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]),
       poison=st.sampled_from([None, float("nan"), float("inf")]))
def test_fuzz_resized_or_retyped_tensor(run_dir, tmp_path, capsys, data, shape, dtype, poison):
    meta, state, tensors = _split((run_dir / "run" / "best.safetensors").read_bytes())
    name = data.draw(st.sampled_from(sorted(tensors)))
    old = tensors[name]
    new = torch.zeros(shape, dtype=dtype) if data.draw(st.booleans()) else old.clone()
    if poison is not None and new.is_floating_point() and new.numel():
        new.view(-1)[0] = poison
    tensors[name] = new
    path = tmp_path / "m.safetensors"
    path.write_bytes(_join(meta, state, tensors))
    rc = _sample(capsys, path)
    changed = new.shape != old.shape or new.dtype != old.dtype or poison is not None
    assert rc == 2 or not changed, "a tensor that disagrees with the config must be refused"


@settings(max_examples=examples(20), **SETTINGS)
@given(data=st.data(), value=JSON_VALUES)
def test_fuzz_resume_from_edited_training_checkpoint(run_dir, tmp_path, capsys, data, value):
    meta, state, tensors = _split((run_dir / "run" / "checkpoint.safetensors").read_bytes())
    paths = [p for p in _leaves(state) if p and p[0] == "__dict__" and len(p) >= 3]
    path_to = data.draw(st.sampled_from(paths))
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    (out / "checkpoint.safetensors").write_bytes(_join(meta, _set(state, path_to, value), tensors))
    corpus = run_dir / "corpus.txt"
    _check_cli(capsys, ["train", "--text", str(corpus), "--level", "char", "--batch-size", "4", "--bptt", "8",
                        "--hidden-size", "8", "--embedding-dim", "4", "--num-layers", "1", "--max-steps", "3",
                        "--out", str(out), "--resume", "--no-progress", "--no-baseline", "--samples", "0"])


def test_absurdly_nested_metadata_is_one_error(run_dir, tmp_path, capsys):
    """JSON nested past Python's recursion limit (a crafted header) is refused, not a RecursionError."""
    meta, _, tensors = _split((run_dir / "run" / "best.safetensors").read_bytes())
    path = tmp_path / "deep.safetensors"
    path.write_bytes(st_save(tensors, metadata={**meta, "state": "[" * 100_000 + "]" * 100_000}))
    assert _sample(capsys, path) == 2
