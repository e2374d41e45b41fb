"""Exposure-bias figures: distinct-n, reference scoring of samples, the CLI and its plot."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.baselines.ngram import KneserNeyLM
from rnnkit.cli import main
from rnnkit.exposure_bias import distinct_n, text_free_running
from rnnkit.generate import sample
from rnnkit.train.saved import load_model

MODEL = Path(__file__).parent / "train" / "data" / "lm_model_v0.safetensors"


def test_distinct_n_closed_form():
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)  # (1,2) (2,1) (1,2)
    assert distinct_n([[1, 2, 3], [1, 2, 3]], 1) == 0.5
    assert distinct_n([[1]], 2) == 0.0


def test_token_logprobs_agree_with_evaluate_and_respect_context():
    ids = np.random.default_rng(0).integers(0, 7, 500)
    kn = KneserNeyLM(order=3, vocab_size=7).fit(ids)
    test = ids[:60]
    assert -kn.token_logprobs(test).mean() == pytest.approx(kn.evaluate(test)["nll"], rel=1e-12)
    with_ctx = kn.token_logprobs(test[2:], context=test[:2])
    np.testing.assert_allclose(with_ctx, kn.token_logprobs(test)[2:])


def test_free_running_scores_the_models_own_samples(tiny_corpus):
    loaded = load_model(MODEL, overrides={"data": str(tiny_corpus)})
    loaded.task.prepare()
    report = text_free_running(loaded.task, loaded.model, samples=5, length=50, seed=3, order=4)
    g = torch.Generator().manual_seed(3)
    start = loaded.task.start_id()
    seqs = sample(loaded.model, batch_size=5, max_new_tokens=50, start_id=start, generator=g,
                  forbid=[loaded.task.vocab.pad_id, loaded.task.vocab.unk_id])
    kn = KneserNeyLM(order=4, vocab_size=len(loaded.task.vocab)).fit(loaded.task.data.train.numpy())
    nll = np.stack([-kn.token_logprobs(s, context=[start]) for s in seqs])
    assert report["reference_nll"] == pytest.approx(nll.mean())
    assert report["reference_nll_at"]["10"] == pytest.approx(nll[:, 9].mean())
    assert report["distinct_2"] == pytest.approx(distinct_n(seqs, 2)) and len(report["reference_nll_curve"]) == 50


def test_cli_free_running_writes_json_and_plot(tiny_corpus, tmp_path, capsys):
    assert main(["eval", str(MODEL), "--data", str(tiny_corpus), "--split", "valid", "--free-running", "--samples",
                 "4", "--length", "50", "--plot", str(tmp_path / "h.png"), "--json", str(tmp_path / "r.json")]) == 0
    assert "reference NLL" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["teacher_forced"]["nll"] > 0 and report["free_running"]["samples"] == 4
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
