"""What a run writes for the report (rnnkit.train.rundir's layout): run.json, one
evaluations.jsonl line per validation with the model's samples, versioned; recording
them draws no random numbers of training's; a resumed run keeps one line per step;
--tensorboard mirrors the log (and singular values) or says what to install."""
import json
import sys

import pytest

from rnnkit.cli import main
from rnnkit.train.loop import Loop
from rnnkit.train.rundir import EVALUATIONS_FORMAT, METRICS_FORMAT, RUN_FORMAT

TINY = ["--level", "char", "--batch-size", "4", "--bptt", "16", "--hidden-size", "16", "--embedding-dim", "8",
        "--num-layers", "1", "--no-progress", "--samples", "0", "--no-baseline", "--eval-every", "3",
        "--log-every", "1"]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_json_and_one_evaluation_per_validation(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--text", str(tiny_corpus), *TINY, "--max-steps", "6", "--out", str(out)]
    assert main(argv) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["format"] == RUN_FORMAT and info["task"] == "lm" and info["select"] == ["nll", "min"]
    assert info["formats"] == {"metrics.jsonl": METRICS_FORMAT, "evaluations.jsonl": EVALUATIONS_FORMAT}
    assert info["commands"] == ["rnnkit " + " ".join(argv)] and info["config"]["model"]["hidden_size"] == 16
    valid = [r for r in _lines(out / "metrics.jsonl") if r["split"] == "valid"]
    evals = _lines(out / "evaluations.jsonl")
    assert [e["step"] for e in evals] == [r["step"] for r in valid] == [3, 6]
    assert all(e["format"] == EVALUATIONS_FORMAT and len(e["samples"]) == 2 and e["panels"] == [] for e in evals)
    assert all(isinstance(s, str) and s for e in evals for s in e["samples"])
    train = [r for r in _lines(out / "metrics.jsonl") if r["split"] == "train"]
    assert [r["tokens_seen"] for r in train] == [4 * 16 * s for s in range(1, 7)]   # batch x window per update
    assert valid[0]["tokens_seen"] == train[2]["tokens_seen"] and valid[0]["time"] >= train[2]["time"]


def test_recording_evaluations_does_not_change_training(tiny_corpus, tmp_path, monkeypatch):
    """Sampling has its own generator: with dropout drawing from the global one, the
    losses are bit-identical with and without the evaluations recorded."""
    base = ["train", "--text", str(tiny_corpus), *TINY, "--dropout", "0.3", "--max-steps", "7"]
    assert main(base + ["--out", str(tmp_path / "with")]) == 0
    monkeypatch.setattr(Loop, "_record_evaluation", lambda self: None)
    assert main(base + ["--out", str(tmp_path / "without")]) == 0
    assert not (tmp_path / "without" / "evaluations.jsonl").exists()
    losses = [[(r["split"], r.get("loss")) for r in _lines(tmp_path / name / "metrics.jsonl")]
              for name in ("with", "without")]
    assert losses[0] == losses[1]


def test_resume_keeps_one_evaluation_per_step(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--text", str(tiny_corpus), *TINY, "--out", str(out), "--checkpoint-every", "3"]
    assert main(base + ["--max-steps", "6"]) == 0
    with (out / "evaluations.jsonl").open("a") as f:     # as if killed after step 7's evaluation, before a save
        f.write(json.dumps({"format": 1, "step": 7, "epoch": 1, "samples": ["lost"], "panels": []}) + "\n")
    assert main(base + ["--max-steps", "9", "--resume"]) == 0
    steps = [e["step"] for e in _lines(out / "evaluations.jsonl")]
    assert steps == [3, 6, 9]
    assert len(json.loads((out / "run.json").read_text())["commands"]) == 2


def test_tensorboard_mirrors_scalars_and_singular_values(tiny_corpus, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                      reason="tensorboard is not installed (pip install 'rnnkit[tensorboard]')")
    out = tmp_path / "run"
    assert main(["train", "--text", str(tiny_corpus), *TINY, "--max-steps", "6", "--diagnose-every", "3",
                 "--out", str(out), "--tensorboard"]) == 0
    events = accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    logged = _lines(out / "metrics.jsonl")
    train = [r for r in logged if r["split"] == "train"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)   # float32 in the file
    assert [e.step for e in events.Scalars("valid/nll")] == [r["step"] for r in logged if r["split"] == "valid"]
    tags = events.Tags()
    assert "diagnose/spectral_radius/weight_hh_l0:0" in tags["scalars"]
    histograms = [t for t in tags["histograms"] if t.startswith("singular_values/")]
    assert len(histograms) == 4                                   # the LSTM's four gate blocks
    assert [h.step for h in events.Histograms(histograms[0])] == [3, 6]
    assert events.Histograms(histograms[0])[0].histogram_value.num == 16     # every singular value of 16x16
    assert main(["train", "--text", str(tiny_corpus), *TINY, "--max-steps", "1", "--out", str(out),
                 "--overwrite"]) == 0
    assert not (out / "tensorboard").exists()                     # --overwrite replaces the whole run


def test_tensorboard_missing_is_one_error(tiny_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # as if tensorboard were not installed
    rc = main(["train", "--text", str(tiny_corpus), *TINY, "--max-steps", "1", "--out", str(tmp_path / "r"),
               "--tensorboard"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "pip install" in err and "tensorboard" in err
