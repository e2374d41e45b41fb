"""Translation: BLEU from summed sentence statistics equals sacrebleu's corpus BLEU, the
tokeniser round trip, bad parallel files, and a model through the loop and the CLI."""
import random

import pytest

from rnnkit.cli import main
from rnnkit.data.parallel import detokenize, read_parallel, tokenize
from rnnkit.errors import DataError
from rnnkit.tasks.translate import attention_heatmap, bleu_stats, corpus_bleu
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop

from shared_data import DATA, needs


def test_bleu_from_summed_statistics_is_sacrebleus_corpus_bleu():
    import sacrebleu

    rng = random.Random(0)
    words = "a man in a red shirt is riding a bike on the street . two dogs play".split()
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(60)]
    hyps = [" ".join(w if rng.random() < 0.7 else rng.choice(words) for w in r.split()) for r in refs]
    halves = [bleu_stats(hyps[:25], refs[:25]), bleu_stats(hyps[25:], refs[25:])]
    sums = {k: halves[0][k] + halves[1][k] for k in halves[0]}
    assert corpus_bleu(sums) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)


def test_tokenizer_round_trip():
    for line in ["A man, in a red shirt, is riding a bike.", "Two dogs (one brown) play!", "It's a dog's life."]:
        assert detokenize(tokenize(line)) == line


def test_bad_parallel_files(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(DataError, match="not aligned"):
        read_parallel(tmp_path / "a.de", tmp_path / "a.en")
    (tmp_path / "a.en").write_text("one\n \n")
    with pytest.raises(DataError, match=r"a\.en:2: empty sentence"):
        read_parallel(tmp_path / "a.de", tmp_path / "a.en")


@needs("multi30k/train.de.gz", "multi30k/val.en.gz", "multi30k/test_2016_flickr.de.gz")
def test_translate_through_the_loop_and_the_cli(tmp_path, capsys):
    cfg = build_config(None, {"train": {"task": "translate", "data_dir": str(DATA), "max_steps": 4, "batch_size": 16,
                                        "decode_len": 5, "progress": False, "out": str(tmp_path / "run")},
                              "model": {"embedding_dim": 8, "hidden_size": 8}})
    task = cfg.make_task()
    task.prepare()
    assert len(task.raw["train"]) == 29000 and len(task.raw["test"]) == 1000
    loop = Loop(cfg, task)
    result = loop.fit()
    assert 0.0 <= result["test"]["bleu"] <= 100.0 and result["test"]["sentences"] == 1000
    attention_heatmap(task, loop.model, "Ein Hund läuft.", tmp_path / "a.png", beam=2)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "in.txt").write_text("Ein Hund läuft.\nZwei Männer.\n")
    capsys.readouterr()
    assert main(["translate", str(tmp_path / "run" / "best.safetensors"), str(tmp_path / "in.txt"), "--beam", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
