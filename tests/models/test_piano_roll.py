"""The piano-roll model: shapes, the step contract, sampling fed back frame by frame."""
import pytest
import torch

from rnnkit.errors import ConfigError, ShapeError
from rnnkit.models import MODELS, PianoRollConfig, PianoRollModel


def tiny(cell: str = "gru", **kw) -> PianoRollModel:
    torch.manual_seed(0)
    return PianoRollModel(PianoRollConfig(keys=88, cell=cell, hidden_size=12, **kw)).eval()


def frames(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(b, t, 88, generator=torch.Generator().manual_seed(seed)) < 0.1).float()


def test_registered_and_shapes():
    assert MODELS["piano_roll"].config is PianoRollConfig
    model = MODELS["piano_roll"].build(PianoRollConfig(hidden_size=8, num_layers=2))
    logits, state = model(frames(3, 7))
    assert logits.shape == (3, 7, 88) and state.shape == (2, 3, 8)
    with pytest.raises(ShapeError):
        model(frames(3, 7)[..., :80])
    with pytest.raises(ConfigError):
        PianoRollConfig(cell="nope")


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh"])
def test_step_matches_forward(cell):
    model = tiny(cell, num_layers=2)
    x = frames(2, 9)
    full, _ = model(x)
    state, steps = None, []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-6, rtol=0)


def test_lengths_give_each_piece_its_own_last_state():
    model = tiny()
    x = frames(2, 6)
    _, state = model(x, lengths=torch.tensor([6, 4]))
    _, alone = model(x[1:, :4])
    torch.testing.assert_close(state[:, 1:], alone, atol=1e-6, rtol=0)


def test_sample_feeds_each_frame_back_and_is_seeded():
    model = tiny()
    primer = frames(2, 5)
    a = model.sample(10, primer=primer, generator=torch.Generator().manual_seed(1))
    b = model.sample(10, primer=primer, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 10, 88) and torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    # the same draws, replayed: sample t+1 comes from the logits after reading sample t
    g = torch.Generator().manual_seed(1)
    start = torch.zeros(2, 1, 88)
    logits, state = model(torch.cat([start, primer], 1))
    y = logits[:, -1]
    for t in range(10):
        frame = torch.bernoulli(torch.sigmoid(y), generator=g)
        assert torch.equal(frame, a[:, t])
        y, state = model.step(frame, state)
    assert model.sample(3, batch_size=4).shape == (4, 3, 88)
    with pytest.raises(ConfigError):
        model.sample(3, temperature=0.0)
