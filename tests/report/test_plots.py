"""``rnnkit plot``: the figure holds exactly the logged data (lines checked against
metrics.jsonl), the baseline as a line, the learning rate; bad input is one error."""
import json

import matplotlib.image
import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.report.plots import curves
from rnnkit.report.rundata import load_run


def _log(folder, split):
    return [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def _line(ax, label):
    (line,) = [ln for ln in ax.lines if ln.get_label() == label]
    return line


def test_loss_lines_equal_the_metrics_log_and_baseline_is_the_ngram_nll(runs):
    fig = curves([load_run(runs["lm"])], "loss", "step")
    ax, ax_lr = fig.axes[:2]
    train, valid = _log(runs["lm"], "train"), _log(runs["lm"], "valid")
    assert [ln.get_label() for ln in ax.lines] == ["train loss", "valid loss", "baseline: 5-gram Kneser-Ney (valid)"]
    np.testing.assert_array_equal(_line(ax, "train loss").get_xdata(), [r["step"] for r in train])
    np.testing.assert_array_equal(_line(ax, "train loss").get_ydata(), [r["loss"] for r in train])
    np.testing.assert_array_equal(_line(ax, "valid loss").get_xdata(), [r["step"] for r in valid])
    np.testing.assert_array_equal(_line(ax, "valid loss").get_ydata(), [r["loss"] for r in valid])
    info = json.loads((runs["lm"] / "run.json").read_text())
    baseline = _line(ax, "baseline: 5-gram Kneser-Ney (valid)").get_ydata()
    assert set(baseline) == {info["baseline"]["valid"]["nll"]}     # a language model's loss is its nll
    (lr,) = ax_lr.lines
    np.testing.assert_array_equal(lr.get_ydata(), [r["lr"] for r in train])
    assert ax.get_ylabel() == "loss" and ax_lr.get_xlabel() == "update" and ax_lr.get_ylabel() == "learning rate"


@pytest.mark.parametrize("x,key", [("time", "time"), ("tokens", "tokens_seen")])
def test_x_axis_is_the_logged_time_or_count(runs, x, key):
    fig = curves([load_run(runs["lm"])], "valid.nll", x)
    valid = _log(runs["lm"], "valid")
    line = _line(fig.axes[0], "valid nll")
    np.testing.assert_array_equal(line.get_xdata(), [r[key] for r in valid])
    np.testing.assert_array_equal(line.get_ydata(), [r["nll"] for r in valid])
    assert [r[key] for r in valid] == sorted(r[key] for r in valid) and valid[-1][key] > 0


def test_several_runs_one_line_each(runs):
    fig = curves([load_run(runs["lm"]), load_run(runs["adding"])], "valid.loss", "step", lr=False)
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert labels == ["lm: valid loss", "lm: baseline: 5-gram Kneser-Ney (valid)",
                      "adding: valid loss", "adding: baseline: always predict 1 (valid)"]
    np.testing.assert_array_equal(fig.axes[0].lines[2].get_ydata(), [r["loss"] for r in _log(runs["adding"], "valid")])
    adding = json.loads((runs["adding"] / "run.json").read_text())
    assert set(fig.axes[0].lines[3].get_ydata()) == {adding["baseline"]["valid"]["mse"]}


def test_cli_writes_a_png(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["plot", str(runs["lm"]), str(runs["adding"]), "--metric", "valid.loss", "-o", str(out)]) == 0
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0


def test_unknown_metric_is_one_error_that_lists_the_known(runs, tmp_path, error_line):
    err = error_line(["plot", str(runs["lm"]), "--metric", "valid.bogus", "-o", str(tmp_path / "p.png")])
    assert "valid.bogus" in err and "valid.nll" in err
    assert not (tmp_path / "p.png").exists()


def test_folder_without_metrics_is_one_error(runs, tmp_path, error_line):
    (tmp_path / "empty").mkdir()
    assert "no metrics.jsonl" in error_line(["plot", str(tmp_path / "empty"), "-o", str(tmp_path / "p.png")])
    assert "no such run folder" in error_line(["plot", str(tmp_path / "nope"), "-o", str(tmp_path / "p.png")])
    assert ".png" in error_line(["plot", str(runs["lm"]), "-o", str(tmp_path / "p.jpg")])


def test_truncated_last_line_is_skipped(copy_run, tmp_path, capsys):
    folder = copy_run("lm")
    train = _log(folder, "train")
    rows = (folder / "metrics.jsonl").read_text()
    (folder / "metrics.jsonl").write_text(rows + '{"split": "train", "step": 31, "lo')   # a killed run
    run = load_run(folder)
    assert any("cut short" in n for n in run.notes)
    fig = curves([run], "loss", "step")
    assert list(_line(fig.axes[0], "train loss").get_xdata()) == [r["step"] for r in train]
    assert main(["plot", str(folder), "-o", str(tmp_path / "p.png")]) == 0
    assert "cut short" in capsys.readouterr().err


def test_older_log_time_is_interpolated_and_tokens_is_one_error(copy_run, tmp_path, error_line):
    folder = copy_run("lm")
    (folder / "run.json").unlink()
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    old = [{k: v for k, v in r.items() if not (k == "time" and r["split"] == "valid") and not k.endswith("_seen")}
           for r in rows]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    fig = curves([load_run(folder)], "valid.loss", "time")
    train = [r for r in old if r["split"] == "train"]
    valid_x = _line(fig.axes[0], "valid loss").get_xdata()
    np.testing.assert_allclose(valid_x, np.interp([r["step"] for r in old if r["split"] == "valid"],
                                                  [r["step"] for r in train], [r["time"] for r in train]))
    err = error_line(["plot", str(folder), "--x", "tokens", "-o", str(tmp_path / "p.png")])
    assert "older rnnkit" in err and "--x step" in err
