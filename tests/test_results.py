"""Results records and the generated table: figures come from the files, not by hand."""
import json

from rnnkit.results import REFERENCES, render, write_result


def test_record_then_table_shows_ours_reference_baseline_and_total_time(tmp_path):
    what, key, value, source = REFERENCES["ptb-small"]
    metrics = {"valid": {"ppl": 120.0}, "test": {"ppl": 115.25}, "epochs_completed": 13, "train_seconds": 3600.0,
               "ngram": {"test": {"ppl": 141.06}}}
    ref = {"what": what, "metric": key, "value": value, "source": source, "baseline_metric": "ngram." + key}
    path = write_result("ptb-small", metrics, seed=3, wall_seconds=60.0, reference=ref, directory=tmp_path,
                        extra={"notes": ["trained in two legs"]})
    record = json.loads(path.read_text())
    assert record["seed"] == 3 and record["git_commit"] and record["machine"]["torch"]
    row = next(line for line in render(tmp_path).splitlines() if line.startswith("| ptb-small"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:8] == [what, "115.2", "114.5", source, "141.1", "13", "60.0 min"]  # a resumed run: total time
    assert "- **ptb-small**: trained in two legs" in render(tmp_path)


def test_char_reference_metric_exists_in_both_model_and_baseline_metrics():
    from rnnkit.train.metrics import loss_metrics
    _, key, _, _ = REFERENCES["char-small"]
    split, name = key.split(".")
    assert name in loss_metrics(1.0, "char")  # the baseline's evaluate() reports bits_per_token too


def test_git_commit_is_read_once_so_a_long_run_records_the_commit_it_started_from(monkeypatch):
    """A run pins the commit when it starts; a commit made while it trains must not be
    credited with its result."""
    import subprocess

    from rnnkit import results

    heads = iter(["a" * 40, "b" * 40])
    calls = []

    def fake_run(*args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout=next(heads) + "\n")

    results.git_commit.cache_clear()
    monkeypatch.setattr(results.subprocess, "run", fake_run)
    try:
        assert results.git_commit() == "a" * 40
        assert results.git_commit() == "a" * 40  # HEAD moved on: still the start's
        assert len(calls) == 1
    finally:
        results.git_commit.cache_clear()
