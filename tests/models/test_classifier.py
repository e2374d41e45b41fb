"""SequenceClassifier's frame stacking (feature input): k consecutive frames per recurrent step."""
import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models import ClassifierConfig, SequenceClassifier
from rnnkit.models.inputs import stack_frames


def _model(frame_stack: int, pooling: str = "mean") -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(ClassifierConfig(num_classes=3, input="features", input_size=4, hidden_size=6,
                                               cell="gru", pooling=pooling, frame_stack=frame_stack)).eval()


def test_stack_frames_concatenates_consecutive_frames_and_zero_pads_each_row():
    x = torch.arange(2 * 7 * 2, dtype=torch.float32).view(2, 7, 2) + 1
    got, lengths = stack_frames(x, torch.tensor([5, 7]), 3)
    assert got.shape == (2, 3, 6) and lengths.tolist() == [2, 3]
    # row 1 (length 7): frames (0,1,2), (3,4,5), (6, pad, pad)
    torch.testing.assert_close(got[1, 0], torch.cat([x[1, 0], x[1, 1], x[1, 2]]))
    torch.testing.assert_close(got[1, 2], torch.cat([x[1, 6], torch.zeros(4)]))
    # row 0 (length 5): its second group is frames 3, 4 and a zeroed padding frame 5
    torch.testing.assert_close(got[0, 1], torch.cat([x[0, 3], x[0, 4], torch.zeros(2)]))


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_stacked_model_equals_the_plain_model_on_stacked_frames(pooling):
    stacked = _model(2, pooling)
    plain = SequenceClassifier(ClassifierConfig(num_classes=3, input="features", input_size=8, hidden_size=6,
                                                cell="gru", pooling=pooling)).eval()
    plain.load_state_dict(stacked.state_dict())               # same shapes: input width 2 * 4
    x = torch.randn(1, 6, 4)
    torch.testing.assert_close(stacked(x), plain(x.reshape(1, 3, 8)))


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_padding_never_reaches_the_result_with_stacking(pooling):
    model = _model(3, pooling)
    x = torch.randn(2, 8, 4)
    garbage = x.clone()
    garbage[0, 4:] = 1e3                                      # row 0 has 4 real frames: 4 % 3 != 0
    lengths = torch.tensor([4, 8])
    torch.testing.assert_close(model(garbage, lengths), model(x, lengths))
    torch.testing.assert_close(model(garbage, lengths)[:1], model(x[:1, :4], torch.tensor([4])),
                               rtol=1e-5, atol=1e-6)


def test_frame_stack_config_errors():
    with pytest.raises(ConfigError, match="frame_stack must be >= 1"):
        ClassifierConfig(num_classes=2, input="features", input_size=4, frame_stack=0)
    with pytest.raises(ConfigError, match="frame_stack applies to 'features' input only"):
        SequenceClassifier(ClassifierConfig(num_classes=2, vocab_size=5, frame_stack=2))
