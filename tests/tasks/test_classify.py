"""Many-to-one classification: the generated DNA-motif data, every pooling with padding
that never leaks, and training through the one loop."""
import pytest
import torch

from rnnkit.errors import ConfigError, ShapeError
from rnnkit.models import ClassifierConfig, SequenceClassifier
from rnnkit.tasks.classify import BASES, dna_motif
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop
from rnnkit.train.saved import load_model

from shared_data import needs


def _contains(seq: list[int], motif: str) -> bool:
    return motif in "".join(BASES[i] for i in seq)


def test_dna_motif_planted_in_positives_and_absent_from_negatives():
    x, y = dna_motif(400, 40, "ACGTAC", torch.Generator().manual_seed(0))
    assert len(x) == 400 and all(len(s) == 40 for s in x) and 150 < sum(y) < 250
    assert all(_contains(s, "ACGTAC") == bool(label) for s, label in zip(x, y))
    again = dna_motif(400, 40, "ACGTAC", torch.Generator().manual_seed(0))
    assert again == (x, y)


def _model(pooling, bidirectional=True, input="embedding", cell="lstm"):
    torch.manual_seed(0)
    return SequenceClassifier(ClassifierConfig(num_classes=3, vocab_size=7, input_size=5 if input == "features" else 0,
                                               input=input, embedding_dim=6, hidden_size=8, cell=cell,
                                               bidirectional=bidirectional, pooling=pooling)).eval()


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("input", ["embedding", "hashing", "onehot", "features"])
def test_padding_never_reaches_the_result(pooling, bidirectional, input):
    model = _model(pooling, bidirectional, input, cell="gru" if input == "hashing" else "lstm")
    g = torch.Generator().manual_seed(1)
    if input == "features":
        x = torch.randn(3, 9, 5, generator=g)
        garbage = x.clone()
        garbage[0, 4:] = 1e3
    else:
        x = torch.randint(1, 7, (3, 9), generator=g)
        garbage = x.clone()
        garbage[0, 4:] = 6
    lengths = torch.tensor([4, 9, 7])
    padded = model(garbage, lengths)
    torch.testing.assert_close(padded, model(x, lengths))
    alone = model(x[:1, :4], torch.tensor([4]))
    torch.testing.assert_close(padded[:1], alone, rtol=1e-5, atol=1e-6)


def test_mean_and_max_pooling_match_their_definitions():
    out = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    mean, mx = _model("mean"), _model("max")
    torch.testing.assert_close(mean.pool(out, None, mask)[0], out[0, :2].mean(0))
    torch.testing.assert_close(mx.pool(out, None, mask)[0], out[0, :2].max(0).values)


def test_last_pooling_reads_both_directions_at_the_right_ends():
    model = _model("last")
    x = torch.randint(1, 7, (1, 6))
    out, _ = model.rnn(model.encoder(x))
    h = model.hidden_size if hasattr(model, "hidden_size") else 8
    want = torch.cat([out[0, -1, :h], out[0, 0, h:]])          # forward at T, backward at 1
    got = model.pool(out, model.rnn(model.encoder(x))[1], torch.ones(1, 6, dtype=torch.bool))[0]
    torch.testing.assert_close(got, want)


def test_bad_input():
    model = _model("mean")
    with pytest.raises(ShapeError, match="token ids"):
        model(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="lengths"):
        model(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match="pooling"):
        ClassifierConfig(num_classes=2, vocab_size=4, pooling="sum")
    with pytest.raises(ConfigError, match="motif"):
        build_config(None, {"train": {"task": "classify", "motif": "ACGU"}})


def test_dna_motif_learned_through_the_loop(tmp_path):
    cfg = build_config(None, {"train": {"task": "classify", "seq_len": 24, "motif": "GATTC", "train_size": 1200,
                                        "valid_size": 200, "test_size": 200, "epochs": 6, "batch_size": 32,
                                        "lr": 1e-2, "progress": False, "out": str(tmp_path / "run")},
                              "model": {"input": "onehot", "hidden_size": 16, "pooling": "max"}})
    task = cfg.make_task()
    task.prepare()
    result = Loop(cfg, task).fit()
    assert result["test"]["accuracy"] > 0.9
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    assert loaded.task.labels == ["no motif", "motif"] and loaded.model.config.input == "onehot"


@needs("sst/train.txt", "sst/dev.txt", "sst/test.txt")
def test_sst_sentences_and_binary_labels():
    from shared_data import DATA

    cfg = build_config(None, {"train": {"task": "classify", "dataset": "sst", "data_dir": str(DATA)}})
    task = cfg.make_task()
    task.prepare()
    assert [len(task.splits[s][1]) for s in ("train", "valid", "test")] == [6920, 872, 1821]   # SST-2 sizes
    assert set(task.splits["train"][1]) == {0, 1} and task.model_fields()["vocab_size"] == len(task.vocab)


@needs("sst/train.txt", "sst/dev.txt", "sst/test.txt")
def test_sst_as_characters():
    from shared_data import DATA

    cfg = build_config(None, {"train": {"task": "classify", "dataset": "sst", "level": "char", "data_dir": str(DATA)}})
    task = cfg.make_task()
    task.prepare()
    assert len(task.vocab) < 200 and " " in task.vocab.stoi      # characters, the space among them
    assert len(task.splits["train"][0][0]) > 40                   # a sentence is many characters


def test_length_buckets_split_global_batches_over_processes():
    from rnnkit.tasks.examples import length_buckets
    from rnnkit.train.task import Plan

    lengths = [(i * 7) % 23 + 1 for i in range(100)]
    one = length_buckets(lengths, Plan("train", epoch=3, batch_size=8), 64)
    halves = [length_buckets(lengths, Plan("train", epoch=3, batch_size=8, rank=r, world_size=2), 64) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == one
    assert len({i for g in one for i in g}) == 96 and all(len(g) == 8 for g in one)   # whole batches only
    assert max(max(lengths[i] for i in g) - min(lengths[i] for i in g) for g in one) <= 2   # similar lengths
    assert one != length_buckets(lengths, Plan("train", epoch=4, batch_size=8), 64)        # reshuffled per epoch
    assert sorted(i for g in length_buckets(lengths, Plan("valid"), 64) for i in g) == list(range(100))


def test_fsdd_audio_features_train_one_step_through_the_loop(tmp_path, monkeypatch):
    import rnnkit.tasks.classify as classify
    from rnnkit.train.task import Plan
    from test_transcribe import fake_fsdd

    fake_fsdd(tmp_path, monkeypatch)
    monkeypatch.setattr(classify, "resolve", lambda name, data_dir=None: {"recordings": tmp_path / "recordings.tar"})
    cfg = build_config(None, {"train": {"task": "classify", "dataset": "fsdd", "heldout_speaker": "bob",
                                        "spec_augment": True, "speed_perturb": 0.2, "feature_norm": "utterance", "n_mels": 20, "feature_cache": str(tmp_path / "cache"),
                                        "epochs": 1, "batch_size": 30, "progress": False, "out": str(tmp_path / "run")},
                              "model": {"hidden_size": 8, "pooling": "mean"}})
    task = cfg.make_task()
    task.prepare()
    assert [len(task.splits[s][1]) for s in ("train", "valid", "test")] == [60, 50, 110]   # alice 0-4 + 10 / 5-9; bob
    x, lengths, y = task.batches(Plan(split="test", batch_size=16))[0]
    assert x.dtype == torch.float32 and x.shape[-1] == 20 and lengths.max() == x.shape[1]
    result = Loop(cfg, task).fit()
    assert result["steps"] == 2 and 0 <= result["test"]["accuracy"] <= 1
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    assert loaded.model.config.input == "features" and loaded.model.config.input_size == 20


def test_stretch_batch_interpolates_each_row_to_its_drawn_length():
    from rnnkit.tasks.classify import stretch_batch

    ramp = torch.arange(10, dtype=torch.float32)
    x = torch.zeros(2, 10, 2)
    x[0, :6] = torch.stack([ramp[:6], 2 * ramp[:6]], -1)      # a linear ramp stays a ramp when stretched
    x[1] = torch.stack([ramp, -ramp], -1)
    lengths = torch.tensor([6, 10])
    out, new = stretch_batch(x, lengths, 0.3, torch.Generator().manual_seed(0))
    factors = 1 + 0.3 * (2 * torch.rand(2, generator=torch.Generator().manual_seed(0)) - 1)   # same draws
    assert new.tolist() == [round(6 * factors[0].item()), round(10 * factors[1].item())] != [6, 10]
    assert out.shape == (2, int(new.max()), 2)
    for i, (n, m) in enumerate(zip(lengths.tolist(), new.tolist())):
        want = torch.linspace(0, n - 1, m)                   # ends kept, evenly spaced in between
        torch.testing.assert_close(out[i, :m, 0], want)
        torch.testing.assert_close(out[i, :m, 1], want * (2 if i == 0 else -1))
        assert (out[i, m:] == 0).all()                       # re-padded with zeros
    same, n0 = stretch_batch(x, lengths, 0.0, torch.Generator().manual_seed(0))
    assert n0.tolist() == [6, 10] and torch.equal(same, x)  # no stretch: unchanged


def test_speed_perturb_is_checked():
    with pytest.raises(ConfigError, match="speed_perturb must be in"):
        build_config(None, {"train": {"task": "classify", "dataset": "fsdd", "speed_perturb": 1.5}})
    with pytest.raises(ConfigError, match="speed_perturb applies to dataset fsdd"):
        build_config(None, {"train": {"task": "classify", "speed_perturb": 0.1}})


def test_utterance_standardisation_keeps_the_spectral_shape():
    from rnnkit.data.audio import standardize

    f = torch.randn(30, 8, generator=torch.Generator().manual_seed(0)) + torch.linspace(-3, 3, 8)   # a tilt
    out = standardize(2.5 * f + 7.0)                          # gain and offset go
    want = (f - f.mean()) / f.std(unbiased=False)
    torch.testing.assert_close(out, want)
    assert out.mean(0)[-1] - out.mean(0)[0] > 2               # the tilt across channels stays
    assert torch.equal(standardize(torch.full((3, 4), 5.0)), torch.zeros(3, 4))   # silence: centred, no NaN
    with pytest.raises(ConfigError, match="feature_norm must be one of"):
        build_config(None, {"train": {"task": "classify", "dataset": "fsdd", "feature_norm": "global"}})
