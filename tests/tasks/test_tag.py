"""Sequence tagging through the one loop: entity F1 as seqeval counts it, constrained
IOBES decoding, your own CoNLL files, `rnnkit tag`, and errors naming file and line."""
import random

import pytest

from rnnkit.cli import main
from rnnkit.errors import ConfigError, DataError
from rnnkit.nn.crf import allowed_transitions
from rnnkit.tasks.tag import entity_counts
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop

from shared_data import DATA, needs

NAMES = ["Anna", "Bob", "Carla", "Dmitri"]
PLACES = ["Paris", "Oslo", "Lima"]
FILLER = ["went", "to", "saw", "and", "met", "in", "the", "city", "today"]


def _write(folder, n, seed):
    """Generated CoNLL-2003-style columns (IOB1): people and places among filler words."""
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(n):
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.2:
                lines.append(f"{rng.choice(NAMES)} NNP B-NP I-PER")
                if rng.random() < 0.5:
                    lines.append("Smith NNP I-NP I-PER")
            elif r < 0.35:
                lines.append(f"{rng.choice(PLACES)} NNP B-NP I-LOC")
            else:
                lines.append(f"{rng.choice(FILLER)} XX O O")
        lines.append("")
    return "\n".join(lines) + "\n"


@pytest.fixture
def conll_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for split, n, seed in (("train", 300, 0), ("valid", 60, 1), ("test", 60, 2)):
        (folder / f"{split}.txt").write_text(_write(folder, n, seed))
    return folder


def _config(folder, out, **train):
    return build_config(None, {"train": {"task": "tag", "dataset": "conll", "data_dir": str(folder), "epochs": 4,
                                         "batch_size": 10, "lr": 1e-2, "progress": False, "out": str(out), **train},
                               "model": {"embedding_dim": 16, "hidden_size": 16, "char_dim": 8, "char_hidden": 8,
                                         "dropout": 0.0, "constraints": "IOBES"}})


def test_entity_counts_are_seqeval_micro_f1():
    from seqeval.metrics import f1_score

    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 9))] for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in gold]
    c = entity_counts(gold, pred)
    p, r = c["tp"] / c["pred_entities"], c["tp"] / c["gold_entities"]
    assert 2 * p * r / (p + r) == pytest.approx(f1_score(gold, pred))
    assert entity_counts([["B-PER", "I-PER", "O"]], [["S-PER", "O", "O"]]) == \
        {"tp": 0, "pred_entities": 1, "gold_entities": 1}                      # span must match exactly


def test_tagger_learns_entities_with_constrained_iobes_decoding(conll_dir, tmp_path, capsys):
    cfg = _config(conll_dir, tmp_path / "run")
    task = cfg.make_task()
    task.prepare()
    assert task.tag_names == sorted(task.tag_names) and "S-LOC" in task.tag_names and "E-PER" in task.tag_names
    loop = Loop(cfg, task)
    result = loop.fit()
    assert result["test"]["f1"] > 0.9 and set(result["test"]) >= {"precision", "recall", "accuracy"}
    trans, start, end = allowed_transitions(task.tag_names, "IOBES")
    words, chars, tags, mask = task.encode(task.splits["test"][:50])
    loop.model.eval()
    pred = loop.model.decode(words, chars, mask)
    for row, m in zip(pred, mask):
        path = row[m].tolist()
        assert start[path[0]] and end[path[-1]] and all(trans[a, b] for a, b in zip(path, path[1:]))
    (tmp_path / "raw.txt").write_text("Anna Smith went to Oslo\nthe city\n")
    capsys.readouterr()
    assert main(["tag", str(tmp_path / "run" / "best.safetensors"), str(tmp_path / "raw.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == ["Anna B-PER", "Smith E-PER", "went O", "to O", "Oslo S-LOC"] and lines[5] == ""


def test_bad_files_name_the_file_and_line(conll_dir, tmp_path):
    bad = (conll_dir / "valid.txt").read_text().splitlines()
    bad[5] = bad[5] + " EXTRA"
    (conll_dir / "valid.txt").write_text("\n".join(bad) + "\n")
    task = _config(conll_dir, tmp_path / "run").make_task()
    with pytest.raises(DataError, match=r"valid\.txt:6"):
        task.prepare()
    (conll_dir / "test.txt").unlink()
    with pytest.raises(DataError, match="missing: .*test.txt"):
        _config(conll_dir, tmp_path / "run").make_task().prepare()
    with pytest.raises(ConfigError, match="tag_scheme must be one of"):
        _config(conll_dir, tmp_path / "run", tag_scheme="BILOU")
    with pytest.raises(ConfigError, match="--data-dir"):
        build_config(None, {"train": {"task": "tag", "dataset": "conll"}})


@needs("conll2003/train.txt", "conll2003/valid.txt", "conll2003/test.txt")
def test_conll2003_reads_with_the_standard_sizes():
    cfg = build_config(None, {"train": {"task": "tag", "data_dir": str(DATA)}})
    task = cfg.make_task()
    task.prepare()
    assert [len(task.splits[s]) for s in ("train", "valid", "test")] == [14041, 3250, 3453]
    assert len(task.tag_names) == 17       # O and B/I/E/S for PER, LOC, ORG, MISC
