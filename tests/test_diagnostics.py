"""Gradient diagnostics against closed forms."""
import numpy as np
import pytest
import torch

from rnnkit.diagnostics import gradient_through_time, jacobian_norms, plot, plot_training, saturation, spectral_report
from rnnkit.errors import ConfigError
from rnnkit.models import LanguageModel, LMConfig, RegressorConfig, SequenceRegressor


def _linear_rnn(a: float, hidden: int = 4) -> SequenceRegressor:
    """A ReLU RNN with W_hh = a I, positive input weights and inputs: it stays in the
    linear regime, h_t = a h_{t-1} + W x_t, so dh_T/dh_t = a^(T-t) I."""
    model = SequenceRegressor(RegressorConfig(input_size=2, output_size=1, cell="rnn_relu", hidden_size=hidden))
    with torch.no_grad():
        model.rnn.weight_hh_l0.copy_(a * torch.eye(hidden))
        model.rnn.weight_ih_l0.uniform_(0.1, 1.0)
        model.rnn.bias_ih_l0.fill_(0.1)
        model.rnn.bias_hh_l0.zero_()
    return model


@pytest.mark.parametrize("a", [0.5, 0.9, 1.1])
def test_gradient_decays_as_a_power_of_the_distance(a):
    model, T = _linear_rnn(a), 12
    x = torch.rand(3, T, 2)
    norms = gradient_through_time(model, x)
    ratios = [norms[t] / norms[-1] for t in range(T)]
    np.testing.assert_allclose(ratios, [a ** (T - 1 - t) for t in range(T)], rtol=1e-5)
    jac = jacobian_norms(model, x, probes=64)
    # ||a^k I||_F over 3 batch rows x 4 units = a^k sqrt(12); Hutchinson with 64 probes is within ~15%
    np.testing.assert_allclose(jac, [a ** (T - 1 - t) * 12 ** 0.5 for t in range(T)], rtol=0.25)


def test_spectral_radius_of_a_known_matrix_matches_numpy():
    model = _linear_rnn(0.9)
    m = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.rnn.weight_hh_l0.copy_(m)
    row = spectral_report(model)[0]
    assert row["spectral_radius"] == pytest.approx(np.abs(np.linalg.eigvals(m.numpy())).max(), rel=1e-6)
    np.testing.assert_allclose(row["singular_values"], np.linalg.svd(m.numpy(), compute_uv=False)[:3], rtol=1e-6)


def test_gate_blocks_of_an_lstm():
    torch.manual_seed(0)
    lm = LanguageModel(LMConfig(vocab_size=9, embedding_dim=4, hidden_size=5, num_layers=2))
    rows = spectral_report(lm)
    assert len(rows) == 8 and {r["gates"] for r in rows} == {4}
    report = gradient_through_time(lm, torch.randint(0, 9, (2, 7)))
    assert len(report) == 7 and all(np.isfinite(report))
    sat = saturation(lm, torch.randint(0, 9, (2, 7)))
    assert 0 <= sat["saturated_fraction"] <= 1 and sum(sat["histogram"]) == 2 * 7 * 5


def test_a_model_without_recurrence_is_one_clear_error():
    with pytest.raises(ConfigError, match="no recurrent layer"):
        spectral_report(torch.nn.Linear(3, 3))


def test_plots(tmp_path):
    model, x = _linear_rnn(0.9), torch.rand(2, 6, 2)
    report = {"gradient_through_time": gradient_through_time(model, x), "jacobian_norms": jacobian_norms(model, x),
              "spectral": spectral_report(model), "saturation": saturation(model, x)}
    for path in plot(report, tmp_path):
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_cli_diagnose(tmp_path, capsys):
    from rnnkit.cli import main

    out = tmp_path / "run"
    assert main(["train", "--task", "adding", "--seq-len", "12", "--train-size", "100", "--valid-size", "20",
                 "--test-size", "20", "--epochs", "1", "--hidden-size", "8", "--out", str(out), "--no-progress",
                 "--diagnose-every", "1"]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(out / "best.safetensors"), "--plot-dir", str(tmp_path / "p"),
                 "--json", str(tmp_path / "d.json")]) == 0
    text = capsys.readouterr().out
    assert "gradient through time" in text and "weight_hh_l0 gate 3/4" in text
    assert (tmp_path / "p" / "gradient_through_time.png").exists() and (tmp_path / "d.json").exists()
    assert not (tmp_path / "p" / "gradient_over_training.png").exists()   # a file has no training history
    # A run folder: its best weights, and the snapshots logged during training drawn over training.
    assert main(["diagnose", str(out), "--plot-dir", str(tmp_path / "q")]) == 0
    for name in ("gradient_through_time", "gradient_over_training", "spectral_radius_over_training"):
        assert (tmp_path / "q" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "empty").mkdir()
    assert main(["diagnose", str(tmp_path / "empty")]) == 2
    assert "not a run (no best.safetensors" in capsys.readouterr().err


def test_plot_training_needs_logged_snapshots(tmp_path):
    with pytest.raises(ValueError, match="--diagnose-every"):
        plot_training([{"split": "train", "step": 1}], tmp_path)


def test_diagnose_every_logs_and_leaves_training_unchanged(tiny_corpus, tmp_path):
    import json

    from rnnkit.train.config import build_config
    from rnnkit.train.loop import Loop

    def fit(out, **extra):
        cfg = build_config(None, {"train": {"data": str(tiny_corpus), "level": "char", "batch_size": 4, "bptt": 10,
                                            "max_steps": 6, "progress": False, "out": str(out), **extra},
                                  "model": {"embedding_dim": 6, "hidden_size": 8, "num_layers": 1, "dropout": 0.2}})
        task = cfg.make_task()
        task.prepare()
        loop = Loop(cfg, task)
        loop.fit()
        return loop.model.state_dict()

    plain, watched = fit(tmp_path / "a"), fit(tmp_path / "b", diagnose_every=2)
    assert all(torch.equal(plain[k], watched[k]) for k in plain)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    diag = [r for r in rows if r["split"] == "diagnose"]
    assert [r["step"] for r in diag] == [2, 4, 6]
    assert "0" in diag[0]["grad_back"] and "weight_hh_l0:0" in diag[0]["spectral_radius"]


def test_ids_stored_compactly_are_read_as_ids():
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=10, embedding_dim=4, hidden_size=6, num_layers=1))
    ids = torch.randint(0, 10, (2, 7))
    assert gradient_through_time(model, ids.to(torch.uint8)) == gradient_through_time(model, ids)
