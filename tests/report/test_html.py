"""``rnnkit report``: one self-contained HTML file, checked in a real browser (headless
Chromium through playwright): it loads with no console error and no network request,
every figure decodes; older, killed and malformed run folders render with a note of
what is missing, or fail with one line."""
import json
import re
import shutil
from pathlib import Path

import pytest

from rnnkit.cli import main
from rnnkit.report.html import render, spread
from rnnkit.report.rundata import load_run

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _report(tmp_path, *folders, name="report.html"):
    out = tmp_path / name
    assert main(["report", *map(str, folders), "-o", str(out)]) == 0
    return out, out.read_text()


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    return path


def test_report_of_two_tasks_loads_in_chromium_without_errors(runs, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    browser_path = _chromium()
    out, text = _report(tmp_path, runs["lm"], runs["adding"])
    problems, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        ARTIFACTS.mkdir(exist_ok=True)
        for shot in (tmp_path / "report.png", ARTIFACTS / "report-two-runs.png"):
            page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert problems == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []     # nothing from the network
    assert len(images) == text.count("<img ") >= 6
    assert all(complete and w > 0 and h > 0 for complete, w, h in images), images
    assert headings[0] == "Comparison" and any("lm" in h for h in headings) and any("adding" in h for h in headings)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_is_self_contained_and_shows_what_the_run_recorded(runs, tmp_path):
    out, text = _report(tmp_path, runs["lm"])
    assert "<script" not in text and not re.search(r"""(src|href)=['"]?https?:""", text)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"<img src='([^']*)'", text))
    info = json.loads((runs["lm"] / "run.json").read_text())
    assert info["commands"][0].startswith("rnnkit train") and info["commands"][0].split()[2] in text
    assert "5-gram Kneser-Ney" in text and "Gradient diagnostics" in text and "Configuration" in text
    evals = [json.loads(line) for line in (runs["lm"] / "evaluations.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [10, 20, 30]
    import html
    assert all(html.escape(e["samples"][0]) in text for e in evals)     # the samples of each evaluation
    final = [json.loads(line) for line in (runs["lm"] / "metrics.jsonl").read_text().splitlines()][-1]
    assert f"{final['test']['nll']:.4g}" in text


def test_task_panels_come_from_the_task(runs, tmp_path):
    _, text = _report(tmp_path, runs["adding"])
    evals = [json.loads(line) for line in (runs["adding"] / "evaluations.jsonl").read_text().splitlines()]
    assert evals and all(e["panels"][0]["title"] == "first validation sequences" for e in evals)
    assert "first validation sequences" in text and "always predict 1" in text


def test_every_panel_kind_renders_and_a_malformed_one_is_a_note(copy_run, tmp_path):
    folder = copy_run("adding")
    panels = [{"kind": "text", "title": "T", "lines": ["<b>not bold</b>"]},
              {"kind": "table", "title": "Tab", "columns": ["a", "b"], "rows": [["x", 1.5]]},
              {"kind": "heatmap", "title": "H", "matrix": [[0, 1], [1, 0]], "x_labels": ["p", "q"],
               "y_labels": ["r", "s"], "xlabel": "", "ylabel": ""},
              {"kind": "lines", "title": "L", "x": [0, 1, 2], "series": {"truth": [1, 2, 3], "forecast": [1, 2, 2]}},
              {"kind": "heatmap", "title": "bad", "matrix": "nope"},
              {"kind": "sparkles", "title": "future"}]
    (folder / "evaluations.jsonl").write_text(json.dumps({"format": 1, "step": 1, "epoch": 1, "samples": [],
                                                          "panels": panels}) + "\n")
    text = render([load_run(folder)])
    assert "&lt;b&gt;not bold&lt;/b&gt;" in text and "<td>1.5</td>" in text
    assert text.count("<img ") == 1 + 2 + 1     # curves, heatmap + lines, the mse curve
    assert "malformed" in text and "unknown kind" in text


def test_older_run_folder_renders_with_notes(copy_run, tmp_path):
    folder = copy_run("lm")
    (folder / "run.json").unlink()
    (folder / "evaluations.jsonl").unlink()
    _, text = _report(tmp_path, folder)
    assert "no run.json" in text and "no evaluations.jsonl" in text and "not recorded" in text
    assert text.count("<img ") >= 2


def test_killed_run_renders_with_notes(copy_run, tmp_path):
    folder = copy_run("lm")
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    (folder / "metrics.jsonl").write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:15])   # no final line, cut short
    _, text = _report(tmp_path, folder)
    assert "cut short" in text and "did not finish" in text and "valid (last)" in text


def test_bad_folders_are_one_error(runs, copy_run, tmp_path, error_line):
    (tmp_path / "empty").mkdir()
    assert "no metrics.jsonl" in error_line(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.html")])
    only_cut = tmp_path / "cut"
    only_cut.mkdir()
    (only_cut / "metrics.jsonl").write_text('{"split": "tr')
    assert "no training or validation metrics" in error_line(["report", str(only_cut), "-o", str(tmp_path / "r.html")])
    newer = copy_run("lm")
    info = json.loads((newer / "run.json").read_text())
    (newer / "run.json").write_text(json.dumps({**info, "format": 99}))
    assert "newer than this rnnkit reads" in error_line(["report", str(newer), "-o", str(tmp_path / "r.html")])
    assert ".html" in error_line(["report", str(runs["lm"]), "-o", str(tmp_path / "r.txt")])
    assert not (tmp_path / "r.html").exists()


def test_spread_keeps_first_and_last():
    assert spread(3, 4) == [0, 1, 2] and spread(10, 4) == [0, 3, 6, 9] and spread(10, 1) == [9]


def test_many_evaluations_stay_bounded(copy_run):
    folder = copy_run("adding")
    panel = {"kind": "table", "title": "the panel", "columns": ["a"], "rows": [[1]]}
    (folder / "evaluations.jsonl").write_text("".join(
        json.dumps({"format": 1, "step": i, "epoch": 1, "samples": [f"sample {i}"], "panels": [panel]}) + "\n"
        for i in range(1, 121)))
    text = render([load_run(folder)], evaluations=4)
    shown = len(set(spread(120, 50)) | set(spread(120, 4)))     # samples of 50, panels of 4, spread over the run
    assert 50 <= shown <= 54 and f"120 evaluations; {shown} of them are shown" in text and text.count("<h4>") == shown
    assert text.count("<h5>the panel</h5>") == 4 and "sample 1<" in text and "sample 120<" in text


def test_malformed_lines_are_skipped_with_a_note(copy_run, tmp_path):
    folder = copy_run("adding")
    with (folder / "metrics.jsonl").open("a") as f:
        f.write('[1, 2]\n{"split": "valid", "step": "soon", "loss": 1}\n{"no split": 1}\n')
    (folder / "evaluations.jsonl").write_text(json.dumps({"format": 1, "step": 1, "samples": "text",
                                                          "panels": {"kind": "text"}}) + "\n")
    run = load_run(folder)
    assert any("is not a JSON object; skipped" in n for n in run.notes)
    assert any("2 line(s) without a split or an update number" in n for n in run.notes)
    _, text = _report(tmp_path, folder)
    assert "without a split" in text


def test_runs_in_folders_of_the_same_name_are_told_apart(runs, tmp_path):
    from rnnkit.report.rundata import load_runs

    a = shutil.copytree(runs["lm"], tmp_path / "a" / "run", ignore=shutil.ignore_patterns(".lock"))
    b = shutil.copytree(runs["adding"], tmp_path / "b" / "run", ignore=shutil.ignore_patterns(".lock"))
    assert [r.name for r in load_runs([a, b])] == ["a/run", "b/run"]
