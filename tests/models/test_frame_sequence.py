"""FrameSequenceClassifier: the per-frame CNN (on each frame and its difference from the
previous one) batched over B*T equals a loop over frames, global pooling ignores where the
content is, the recurrent part is an ordinary rnnkit layer, padding never leaks, bad input
is named."""
import pytest
import torch

from rnnkit.errors import ConfigError, DtypeError, ShapeError
from rnnkit.models import MODELS, FrameEncoder, FrameSequenceClassifier, FrameSequenceConfig
from rnnkit.nn.recurrent import Recurrent


def _model(**kw):
    torch.manual_seed(0)
    cfg = {"num_classes": 4, "channels": 3, "frame_height": 12, "frame_width": 8, "conv_channels": 4,
           "frame_features": 10, "hidden_size": 6, **kw}
    return FrameSequenceClassifier(FrameSequenceConfig(**cfg)).eval()


def _clips(b=3, t=5, c=3, h=12, w=8, seed=1):
    return torch.randn(b, t, c, h, w, generator=torch.Generator().manual_seed(seed))


def _by_hand(model, x):
    """``(B, T, F)`` frame by frame: the encoder on ``[x_t, x_t - x_{t-1}]`` (``x_{-1}`` = 0
    differences at t = 0), or on ``x_t`` alone without ``frame_diff``."""
    def one(i, j):
        frame = x[i, j:j + 1]
        if model.config.frame_diff:
            before = x[i, j - 1:j] if j else frame
            frame = torch.cat([frame, frame - before], dim=1)
        return model.encoder(frame)[0]
    return torch.stack([torch.stack([one(i, j) for j in range(x.shape[1])]) for i in range(x.shape[0])])


@pytest.mark.parametrize("frame_diff,spatial_pool", [(True, "max"), (True, "flatten"), (False, "mean")])
def test_encoder_on_all_frames_at_once_equals_a_loop_over_frames(frame_diff, spatial_pool):
    model, x = _model(frame_diff=frame_diff, spatial_pool=spatial_pool), _clips()
    assert model.encoder.conv[0].in_channels == (6 if frame_diff else 3)
    torch.testing.assert_close(model.features(x), _by_hand(model, x))


def test_global_pooling_ignores_where_the_shape_is_flatten_does_not():
    """A blob on a zero background moved by 4 pixels (the two 2x2 poolings' stride), away
    from the borders: the same features with max or mean pooling over the map (the mean over
    the same values, as the background's are the same everywhere), other ones when flattened."""
    frame = torch.zeros(2, 1, 24, 24)
    frame[0, 0, 9:12, 9:11] = 1.0
    frame[1, 0, 13:16, 9:11] = 1.0
    torch.manual_seed(0)
    for pool in ("max", "mean", "flatten"):
        enc = FrameEncoder(1, 24, 24, conv_channels=4, features=8, spatial_pool=pool)
        f = enc(frame)
        assert torch.allclose(f[0], f[1]) == (pool != "flatten"), pool


def test_forward_is_the_cnn_then_an_ordinary_recurrent_layer_then_the_head():
    """The same clips through the encoder frame by frame, torch.nn.GRU holding the model's
    recurrent weights, and the head, by hand: the same logits."""
    model, x = _model(cell="gru", num_layers=2), _clips()
    assert isinstance(model.rnn, Recurrent)
    ref = torch.nn.GRU(10, 6, num_layers=2, batch_first=True)
    ref.load_state_dict(model.rnn.state_dict())
    torch.testing.assert_close(model(x), model.head(ref(_by_hand(model, x))[1][-1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_frames_never_reach_the_result(pooling, bidirectional):
    model, x = _model(pooling=pooling, bidirectional=bidirectional), _clips()
    lengths = torch.tensor([2, 5, 4])
    garbage = x.clone()
    garbage[0, 2:] = 1e3
    torch.testing.assert_close(model(garbage, lengths), model(x, lengths))
    torch.testing.assert_close(model(x, lengths)[:1], model(x[:1, :2]), rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_cnn_the_recurrent_layer_and_the_head():
    model = _model().train()
    loss = torch.nn.functional.cross_entropy(model(_clips()), torch.tensor([0, 1, 3]))
    loss.backward()
    for name in ("encoder.conv.0.weight", "encoder.conv.3.weight", "encoder.proj.2.weight", "rnn.weight_ih_l0",
                 "rnn.weight_hh_l0", "head.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_registered_and_built_from_its_config():
    cfg = FrameSequenceConfig(num_classes=3, frame_height=16, frame_width=16, cell="mingru", hidden_size=5)
    model = MODELS["frame_sequence"].build(cfg)
    assert model(torch.rand(2, 4, 1, 16, 16)).shape == (2, 3)


def test_bad_input_names_the_problem():
    model = _model()
    with pytest.raises(ShapeError, match=r"expected \(batch, frames, channels, height, width\) = \(B, T, 3, 12, 8\)"):
        model(torch.randn(3, 5, 12, 8))                       # no channel axis
    with pytest.raises(ShapeError, match="3, 12, 8"):
        model(torch.randn(3, 5, 1, 12, 8))                    # wrong channels
    with pytest.raises(DtypeError, match="float"):
        model(torch.zeros(3, 5, 3, 12, 8, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="no clips or no frames"):
        model(torch.randn(3, 0, 3, 12, 8))
    with pytest.raises(ShapeError, match="lengths"):
        model(_clips(), torch.tensor([0, 5, 5]))
    with pytest.raises(ConfigError, match="pooling"):
        FrameSequenceConfig(num_classes=2, pooling="attention")
    with pytest.raises(ConfigError, match="spatial_pool"):
        FrameSequenceConfig(num_classes=2, spatial_pool="sum")
    with pytest.raises(ConfigError, match="at least 4x4"):
        FrameSequenceConfig(num_classes=2, frame_height=3)
    with pytest.raises(ConfigError, match="cell"):
        FrameSequenceConfig(num_classes=2, cell="transformer")
