"""``rnnkit report``: one self-contained HTML file of one or several runs.

Self-contained: no script, no stylesheet or font from the network; every figure is an
inline base64 PNG, so the file can be mailed, archived or opened offline. For each run:
its command and config (``run.json``), the final metrics next to the task's baseline,
the curves (:func:`.plots.curves`), the gradient diagnostics ``--diagnose-every``
logged, and at each evaluation the model's samples and the task's panels (attention
maps, confusion matrices, forecasts...; :meth:`rnnkit.train.task.Task.panels`). Several
runs get a comparison table and their validation curves on one figure first. What a
folder lacks (an older rnnkit's, a killed run's) is said in a note where it would be.
"""
from __future__ import annotations

import datetime
import html
import json
import unicodedata
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import ConfigError, DataError
from . import plots
from .rundata import Run, number

MAX_SAMPLE_EVALUATIONS = 50   # evaluations whose samples are listed (spread over the run)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; white-space: pre-wrap; font-size: .85em; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: .4em .8em; margin: .4em 0; }
.error { background: #fde2e2; border-left: 4px solid #c00; padding: .4em .8em; margin: .4em 0; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: 600; }
"""


def _text(value: Any) -> str:
    """Untrusted text (samples, file contents) as HTML: escaped, control characters shown as escapes."""
    s = "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf")
                else c.encode("unicode_escape").decode("ascii") for c in str(value))
    return html.escape(s)


def _fmt(value: Any) -> str:
    v = number(value)
    if v is None:
        return "&ndash;" if value is None or isinstance(value, float) else _text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"


def _table(columns: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f"<th class='l'>{_text(c)}</th>" if i < left else f"<th>{_text(c)}</th>"
                   for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(f"<td class='l'>{_text(v)}</td>" if i < left else f"<td>{_fmt(v)}</td>"
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(fig, alt: str) -> str:
    return f"<img src='{plots.data_uri(fig)}' alt='{html.escape(alt, quote=True)}'>"


def _note(text: str, cls: str = "note") -> str:
    return f"<div class='{cls}'>{_text(text)}</div>"


def spread(n: int, k: int) -> list[int]:
    """At most ``k`` indices of ``range(n)``, evenly spread, the first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n - 1]


# --- sections ---------------------------------------------------------------------------
def _metric_name(run: Run) -> str:
    return run.select[0] if run.select else "loss"


def comparison(runs: list[Run]) -> str:
    """The table of several runs side by side, and their validation curves on one figure."""
    rows = []
    for run in runs:
        key = _metric_name(run)
        final = run.final or {}
        m = run.final_metrics()
        valid = next(iter(m.values()), {})
        b = plots.baseline_value(run, key)
        seconds = number(final.get("train_seconds"))
        rows.append([run.name, run.task, final.get("stopped_by", "not finished"), final.get("steps"),
                     None if seconds is None else seconds / 60, key, valid.get(key), m.get("test", {}).get(key),
                     valid.get("loss"), None if b is None else b[1]])
    out = ["<h2 id='comparison'>Comparison</h2>",
           _table(["run", "task", "stopped by", "updates", "train minutes", "selection metric", "valid", "test",
                   "valid loss", "baseline valid"], rows, left=3)]
    try:
        out.append(_img(plots.curves(runs, "valid.loss", "step", lr=False), "validation loss of every run"))
    except (ConfigError, DataError) as e:
        out.append(_note(f"no comparison figure: {e}"))
    return "\n".join(out)


def _header(run: Run, index: int) -> list[str]:
    out = [f"<h2 id='run-{index}'>{_text(run.name)} <small>({_text(run.task)})</small></h2>",
           f"<p>folder: <code>{_text(run.path)}</code></p>"]
    out += [_note(n) for n in run.notes]
    commands = run.info.get("commands") or []
    commands = commands if isinstance(commands, list) else [commands]
    if commands:
        out.append("<h3>Command</h3><pre>" + _text("\n".join(map(str, commands))) + "</pre>")
    else:
        out.append(_note("the command that started this run was not recorded"))
    if isinstance(run.info.get("config"), dict):
        out.append("<details><summary>Configuration</summary><pre>"
                   + _text(json.dumps(run.info["config"], indent=1, default=str)) + "</pre></details>")
    return out


def _final(run: Run) -> list[str]:
    m = run.final_metrics()
    if not m:
        return ["<h3>Final metrics</h3>", _note("no validation was logged")]
    b = run.baseline
    splits = list(m)
    keys = sorted({k for d in m.values() for k, v in d.items() if number(v) is not None})
    select = _metric_name(run)
    keys.sort(key=lambda k: (k != select, k != "loss", k))
    columns = ["metric", *splits]
    if b is not None:
        columns += [f"{b.get('name', 'baseline')}: {s}" for s in ("valid", "test") if isinstance(b.get(s), dict)]
    rows = []
    for k in keys:
        row = [k, *(m[s].get(k) for s in splits)]
        if b is not None:
            row += [b[s].get(k) for s in ("valid", "test") if isinstance(b.get(s), dict)]
        rows.append(row)
    final = run.final or {}
    facts = ", ".join(f"{label} {_fmt(final[k])}" for k, label in
                      (("steps", "updates"), ("epochs_completed", "epochs"), ("train_seconds", "seconds"))
                      if k in final)
    out = ["<h3>Final metrics</h3>"]
    if final:
        out.append(f"<p>stopped by {_text(final.get('stopped_by', '?'))}: {facts}; the best validation weights "
                   "are scored</p>")
    if b is None:
        out.append(_note("no baseline was recorded for this run" if run.info else
                         "baseline unknown (no run.json)"))
    out.append(_table(columns, rows))
    return out


def _curves(run: Run) -> list[str]:
    out = ["<h3>Curves</h3>", _img(plots.curves([run], "loss", "step"), f"{run.name}: loss and learning rate")]
    key = _metric_name(run)
    if key != "loss" and plots.series(run, "valid", key, "step")[1].size:
        out.append(_img(plots.curves([run], f"valid.{key}", "step", lr=False), f"{run.name}: valid {key}"))
    return out


def _diagnostics(run: Run) -> list[str]:
    if not run.split("diagnose"):
        return []
    from ..diagnostics import training_figures

    out = ["<h3>Gradient diagnostics</h3>"]
    try:
        out += [_img(fig, f"{run.name}: {name}") for name, fig in training_figures(run.records, run.name)]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        out.append(_note(f"the diagnostics lines of this log are malformed ({e}); not drawn"))
    return out


def _panel(panel: Any) -> str:
    if not isinstance(panel, dict):
        return _note("a panel that is not a JSON object; skipped")
    title = f"<h5>{_text(panel.get('title', ''))}</h5>"
    kind = panel.get("kind")
    try:
        if kind == "text":
            return title + "<pre>" + _text("\n".join(map(str, panel.get("lines") or []))) + "</pre>"
        if kind == "table":
            return title + _table(list(panel.get("columns") or []), [list(r) for r in panel.get("rows") or []])
        fig = plots.panel_figure(panel)
    except (TypeError, ValueError) as e:
        return title + _note(f"this {kind} panel is malformed ({str(e)[:200]}); not drawn")
    if fig is None:
        return title + _note(f"a panel of an unknown kind {str(kind)[:40]!r}; not drawn")
    return _img(fig, str(panel.get("title", kind)))


def _evaluations(run: Run, evaluations: int) -> list[str]:
    evals = run.evaluations
    if not evals:
        return []
    out = ["<h3>Evaluations</h3>"]
    drawn = set(spread(len(evals), evaluations))
    listed = set(spread(len(evals), MAX_SAMPLE_EVALUATIONS)) | drawn
    if len(listed) < len(evals):
        out.append(_note(f"{len(evals)} evaluations; {len(listed)} of them are shown"))
    for i in sorted(listed):
        e = evals[i]
        samples = [s for s in e.get("samples") or [] if isinstance(s, str)] if isinstance(e.get("samples"), list) else []
        panels = e.get("panels") if i in drawn and isinstance(e.get("panels"), list) else []
        if not (samples or panels or e.get("error")):
            continue
        body = [f"<h4>update {_fmt(e.get('step'))} (epoch {_fmt(e.get('epoch'))})</h4>"]
        if e.get("error"):
            body.append(_note(f"the task's panels failed at this evaluation: {e['error']}", "error"))
        if samples:
            body.append("<pre>" + "\n\n".join(_text(s) for s in samples) + "</pre>")
        body += [_panel(p) for p in panels]
        out.append("\n".join(body))
    if len(out) == 1:
        out.append(_note("the task recorded no samples or panels at its evaluations"))
    return out


def render(runs: list[Run], evaluations: int = 4) -> str:
    """The whole HTML document."""
    if not runs:
        raise ConfigError("give at least one run folder")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    names = ", ".join(r.name for r in runs)
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             "<link rel='icon' href='data:,'>",   # no favicon request (a 404 in the console)
             f"<title>rnnkit report: {_text(names)}</title><style>{STYLE}</style></head><body>",
             f"<h1>rnnkit report</h1><p>{len(runs)} run(s): {_text(names)}. Written {when}.</p>"]
    if len(runs) > 1:
        parts.append("<ul>" + "".join(f"<li><a href='#run-{i}'>{_text(r.name)}</a> ({_text(r.task)})</li>"
                                      for i, r in enumerate(runs)) + "</ul>")
        parts.append(comparison(runs))
    for i, run in enumerate(runs):
        parts += ["<section>", *_header(run, i), *_final(run), *_curves(run), *_diagnostics(run),
                  *_evaluations(run, evaluations), "</section>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(runs: list[Run], output: str | Path, evaluations: int = 4) -> Path:
    output = Path(output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"-o must name an .html file, got {str(output)!r}")
    text = render(runs, evaluations)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, text)
    return output
