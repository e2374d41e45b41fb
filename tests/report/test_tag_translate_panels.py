"""The tagger's and the translator's panels: seqeval's per-entity report of the model's
tags, and greedy translations with the attention map of the first one."""
import random

import numpy as np
import pytest
import torch
from shared_data import DATA, needs

from rnnkit.report.plots import panel_figure
from rnnkit.train.config import build_config


def _task_and_model(train, model):
    cfg = build_config(None, {"train": {"progress": False, **train}, "model": model})
    task = cfg.make_task()
    task.prepare()
    torch.manual_seed(0)
    return task, task.build_model().eval()


def _conll(n, seed):
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(n):
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.2:
                lines.append(f"{rng.choice(['Anna', 'Bob'])} NNP B-NP I-PER")
            elif r < 0.35:
                lines.append(f"{rng.choice(['Paris', 'Oslo'])} NNP B-NP I-LOC")
            else:
                lines.append(f"{rng.choice(['went', 'to', 'saw'])} XX O O")
        lines.append("")
    return "\n".join(lines) + "\n"


def test_tag_panel_is_seqevals_report_of_the_models_tags(tmp_path):
    from seqeval.metrics import classification_report

    for split, n, seed in (("train", 40, 0), ("valid", 30, 1), ("test", 10, 2)):
        (tmp_path / f"{split}.txt").write_text(_conll(n, seed))
    task, model = _task_and_model({"task": "tag", "dataset": "conll", "data_dir": str(tmp_path)},
                                  {"embedding_dim": 8, "hidden_size": 8, "char_dim": 4, "char_hidden": 4})
    with torch.no_grad():
        (p,) = [p.to_dict() for p in task.panels(model)]
    valid = task.splits["valid"]
    expected = classification_report([s.tags for s in valid], task.tag(model, [s.words for s in valid]),
                                      output_dict=True, zero_division=0)
    assert p["kind"] == "table" and [r[0] for r in p["rows"]] == list(expected)
    assert [r[3] for r in p["rows"]] == pytest.approx([r["f1-score"] for r in expected.values()])


@needs("multi30k/train.de.gz", "multi30k/val.en.gz", "multi30k/test_2016_flickr.de.gz")
def test_translate_panels_are_translations_and_attention():
    task, model = _task_and_model({"task": "translate", "data_dir": str(DATA), "decode_len": 6},
                                  {"embedding_dim": 8, "hidden_size": 8})
    with torch.no_grad():
        text, attention = [p.to_dict() for p in task.panels(model)]
    assert all(f"source:    {s}" in line and f"reference: {t}" in line
               for (s, t), line in zip(task.raw["valid"][:3], text["lines"]))
    weights = np.array(attention["matrix"])
    source = task.encode_sources([task.raw["valid"][0][0]])[0]
    assert weights.shape == (len(attention["y_labels"]), len(source)) and len(attention["x_labels"]) == len(source)
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-5)       # each output step's weights sum to one
    assert panel_figure(attention).axes
