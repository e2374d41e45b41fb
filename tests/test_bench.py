"""The benchmark suite: grid, ratios against the reference of the same run, JSON, CLI."""
import json

import pytest

from rnnkit.bench import FULL_GRID, Row, grid, interleaved, time_grid
from rnnkit.cli import main
from rnnkit.errors import ConfigError


def test_grid_is_the_full_product_and_rows_are_ratios_to_the_reference():
    variants = ["rnnkit.LSTM", "rnnkit.GRU(simplified)"]
    rows = time_grid([1, 2], [3], 4, [5], ["forward", "inference"], variants, repeats=1, warmup=0)
    assert len(rows) == 2 * 2 * (1 + len(variants))  # reference first in each case
    by_case: dict = {}
    for r in rows:
        by_case.setdefault((r.batch, r.mode), []).append(r)
    assert set(by_case) == {(1, "forward"), (1, "inference"), (2, "forward"), (2, "inference")}
    for case_rows in by_case.values():
        ref = case_rows[0]
        assert ref.variant == "torch.nn.LSTM" and ref.ratio == 1.0
        for r in case_rows:
            assert r.ratio == pytest.approx(r.ms / ref.ms)
            assert r.tokens_per_s == pytest.approx(r.batch * r.steps / (r.ms / 1e3))
        twin = next(r for r in case_rows if r.variant == "rnnkit.LSTM")
        assert twin.ratio_to_twin == pytest.approx(twin.ms / ref.ms)  # its twin is the reference


def test_full_grid_is_the_issue_grid():
    cases = grid(FULL_GRID["batch"], FULL_GRID["steps"], 64, FULL_GRID["hidden"], ["forward"])
    assert len(cases) == 4 * 2 * 4
    assert {c.batch for c in cases} == {1, 8, 64, 256} and {c.hidden for c in cases} == {128, 256, 512, 1024}


@pytest.mark.parametrize("kwargs, message", [
    ({"modes": ["sideways"]}, "unknown mode"),
    ({"dtypes": ["float8"]}, "unknown dtype"),
    ({"batches": [0]}, "batch sizes must be positive"),
])
def test_bad_grid_names_the_problem(kwargs, message):
    args = {"batches": [1], "steps": [2], "input_size": 3, "hidden_sizes": [4], "modes": ["forward"]} | kwargs
    with pytest.raises(ConfigError, match=message):
        grid(**args)


def test_cli_writes_json_with_environment(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--batch", "2", "--steps", "3", "--input-size", "4", "--hidden", "5", "--repeats", "1",
               "--variants", "rnnkit.LSTM(peephole)", "--no-progress", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["environment"]["torch"] and data["command"].startswith("rnnkit bench")
    rows = [Row(**r) for r in data["rows"]]
    assert [r.variant for r in rows] == ["torch.nn.LSTM", "rnnkit.LSTM(peephole)"]
    assert "rnnkit.LSTM(peephole)" in capsys.readouterr().out


def test_environment_records_what_caps_the_isa(monkeypatch):
    """A run with oneDNN or MKL held to AVX2 on an AVX-512 CPU says so: its CPU flags alone
    would pass it off as an AVX-512 figure."""
    from rnnkit.bench import environment
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
                 "RNNKIT_NATIVE_CFLAGS"):
        monkeypatch.delenv(name, raising=False)
    assert environment()["isa_caps"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    assert environment()["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_cli_cuda_without_gpu_is_one_clear_error(capsys):
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--device", "cuda", "--no-progress"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_cli_threads_is_applied_and_recorded(tmp_path):
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "b.json"
    try:
        assert main(["bench", "--batch", "2", "--steps", "3", "--input-size", "4", "--hidden", "5", "--repeats", "1",
                     "--variants", "torch.nn.LSTM", "--threads", "1", "--no-progress", "--out", str(out)]) == 0
        assert json.loads(out.read_text())["environment"]["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_cli_negative_threads_is_one_clear_error(capsys):
    assert main(["bench", "--threads", "-1", "--no-progress"]) == 2
    assert "--threads must be >= 0" in capsys.readouterr().err


def test_cli_settle_is_recorded_and_a_negative_one_refused(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--batch", "2", "--steps", "3", "--hidden", "4", "--repeats", "1", "--settle", "2",
                 "--variants", "torch.nn.LSTM", "--no-progress", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["environment"]["settle"] == 2
    assert main(["bench", "--settle", "-1", "--no-progress"]) == 2
    assert "--settle must be >= 0" in capsys.readouterr().err


def test_interleaved_settles_each_function_before_its_timed_call():
    """``settle`` untimed calls right before each timed one: the timed call always
    follows its own function (steady state), and the times count only timed calls."""
    log: list[str] = []
    fns = {name: (lambda n=name: log.append(n)) for name in ("a", "b", "c")}
    times = interleaved(fns, repeats=4, warmup=1, settle=2)
    assert {n: len(t) for n, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert len(log) == 5 * 3 * 3
    runs = [log[i:i + 3] for i in range(0, len(log), 3)]
    assert all(len(set(run)) == 1 for run in runs)  # each timed call right after its own two
    assert [run[0] for run in runs[3:6]] == ["b", "c", "a"]  # and the order still rotates
