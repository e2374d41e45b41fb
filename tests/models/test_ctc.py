"""CTC: torch's loss and our decoders against brute-force enumeration of every alignment."""
import itertools
import math

import pytest
import torch

from rnnkit.errors import ConfigError, ShapeError
from rnnkit.models.ctc import CTCConfig, CTCModel
from rnnkit.models.ctc_decode import decode_batch, greedy_decode, prefix_beam_search


def collapse(path) -> tuple[int, ...]:
    """B(pi): merge repeats, then drop blanks (0)."""
    return tuple(c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c))


def labelling_probs(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """p(l) for every labelling reachable in T frames: the sum over all C**T paths."""
    t, c = log_probs.shape
    p = log_probs.double().exp()
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(c), repeat=t):
        prob = math.prod(float(p[i, k]) for i, k in enumerate(path))
        key = collapse(path)
        out[key] = out.get(key, 0.0) + prob
    return out


def random_log_probs(t: int, c: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(t, c, generator=g, dtype=torch.float64), -1)


@pytest.mark.parametrize("target", [(1,), (1, 2), (2, 2), (1, 2, 1), (3,)])
def test_torch_ctc_loss_equals_brute_force_sum_over_alignments(target):
    lp = random_log_probs(5, 4, seed=len(target) * 7 + target[0])
    brute = labelling_probs(lp).get(tuple(target), 0.0)
    loss = torch.nn.CTCLoss(blank=0, reduction="sum")(lp.unsqueeze(1), torch.tensor([target]),
                                                       torch.tensor([5]), torch.tensor([len(target)]))
    assert float(loss) == pytest.approx(-math.log(brute), rel=1e-10)


def test_greedy_collapses_repeats_and_removes_blanks():
    path = [0, 3, 3, 0, 3, 1, 1, 2, 0, 0, 2]
    lp = torch.full((len(path), 4), -5.0)
    lp[torch.arange(len(path)), torch.tensor(path)] = -0.01
    assert greedy_decode(lp) == [3, 3, 1, 2, 2] == list(collapse(path))


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_with_a_wide_beam_finds_the_most_probable_labelling(seed):
    lp = random_log_probs(5, 3, seed)
    probs = labelling_probs(lp)
    best = max(probs, key=probs.get)
    found, score = prefix_beam_search(lp, beam=1000)
    assert tuple(found) == best
    assert score == pytest.approx(math.log(probs[best]), rel=1e-9)


def test_prefix_beam_search_beats_best_path_where_they_differ():
    # best path is "blank blank", but labelling (1,) collects more mass over its paths
    lp = torch.tensor([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]], dtype=torch.float64).log()
    assert greedy_decode(lp) == []
    probs = labelling_probs(lp)
    assert probs[(1,)] > probs[()]
    assert prefix_beam_search(lp, beam=10)[0] == [1]


@pytest.mark.parametrize("seed", range(20))
def test_beam_width_one_equals_greedy_on_peaked_outputs(seed):
    # a trained model's frames put most mass on one label: there one prefix = the best path
    g = torch.Generator().manual_seed(seed)
    path = torch.randint(0, 5, (30,), generator=g)
    logits = torch.randn(30, 5, generator=g, dtype=torch.float64)
    logits[torch.arange(30), path] += 6.0
    lp = torch.log_softmax(logits, -1)
    assert prefix_beam_search(lp, beam=1)[0] == greedy_decode(lp)


def test_decode_batch_stops_at_each_length():
    lp = torch.full((2, 4, 3), -9.0)
    lp[:, :, 0] = -0.001
    lp[0, 3, 2] = 0.0        # beyond row 0's length: ignored
    lp[1, 1, 1] = 0.0
    for beam in (None, 4):
        assert decode_batch(lp, torch.tensor([3, 4]), beam) == [[], [1]]


def test_model_shapes_and_frame_stacking():
    m = CTCModel(CTCConfig(num_labels=11, input_size=8, hidden_size=16, num_layers=1, frame_stack=3))
    x = torch.randn(2, 10, 8)
    lp, n = m(x, torch.tensor([10, 4]))
    assert lp.shape == (2, 4, 11) and n.tolist() == [4, 2]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 4), atol=1e-5)
    # frames beyond a row's length never change its outputs (the layer stops at each length)
    x2 = x.clone()
    x2[1, 6:] = 100.0
    assert torch.allclose(m(x2, torch.tensor([10, 4]))[0][1, :2], lp[1, :2], atol=1e-6)
    stacked, _ = m.stack(x, torch.tensor([10, 4]))
    assert torch.equal(stacked[0, 1], x[0, 3:6].reshape(-1))


def test_bad_input():
    m = CTCModel(CTCConfig(num_labels=3, input_size=4, hidden_size=8, num_layers=1))
    with pytest.raises(ShapeError, match="input must be float"):
        m(torch.zeros(2, 5, 3))
    with pytest.raises(ShapeError, match="lengths"):
        m(torch.zeros(2, 5, 4), torch.tensor([6, 1]))
    with pytest.raises(ConfigError, match="frame_stack"):
        CTCConfig(num_labels=3, input_size=4, frame_stack=0)
    with pytest.raises(ConfigError, match="beam"):
        prefix_beam_search(torch.zeros(2, 3), beam=0)
    with pytest.raises(ShapeError, match="frames, labels"):
        greedy_decode(torch.zeros(2, 3, 4))
