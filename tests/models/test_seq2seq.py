"""The encoder–decoder: attention masks padding, padding never leaks, beam 1 is greedy,
and a small model learns to reverse sequences and decodes them with beam search."""
import pytest
import torch

from rnnkit.errors import ConfigError, ShapeError
from rnnkit.models.beam import beam_search, greedy_decode
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig, sequence_nll, shift_right

EOS, PAD = 2, 0


def _model(attention="bahdanau", cell="gru", feeding=True, **kw):
    torch.manual_seed(0)
    return Seq2Seq(Seq2SeqConfig(src_vocab_size=13, tgt_vocab_size=11, cell=cell, embedding_dim=8, hidden_size=12,
                                 attention=attention, input_feeding=feeding, dropout=0.0, **kw)).eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, 13, (3, 7), generator=g)
    lengths = torch.tensor([7, 4, 2])
    src[1, 4:], src[2, 2:] = PAD, PAD
    return src, lengths


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_attention_sums_to_one_over_real_source_positions(attention):
    model = _model(attention)
    src, lengths = _batch()
    weights = model.attention_map(src, lengths, torch.randint(3, 11, (3, 5)))       # (B, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))
    assert weights[1, :, 4:].abs().max() == 0 and weights[2, :, 2:].abs().max() == 0


@pytest.mark.parametrize("attention,cell,feeding", [("bahdanau", "gru", True), ("luong", "lstm", False),
                                                    ("none", "gru", False), ("luong", "lstm", True)])
def test_padding_never_leaks(attention, cell, feeding):
    model = _model(attention, cell, feeding, encoder_layers=2)
    src, lengths = _batch()
    tgt = torch.randint(3, 11, (3, 4))
    garbage = src.clone()
    garbage[1, 4:] = 9
    full = model(garbage, lengths, tgt)
    torch.testing.assert_close(full, model(src, lengths, tgt))
    torch.testing.assert_close(full[1:2], model(src[1:2, :4], lengths[1:2], tgt[1:2]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention,cell", [("bahdanau", "gru"), ("luong", "lstm"), ("none", "gru")])
def test_beam_of_one_is_greedy(attention, cell):
    model = _model(attention, cell)
    src, lengths = _batch()
    for max_len in (1, 6, 15):
        assert beam_search(model, src, lengths, max_len, EOS, beam=1) == greedy_decode(model, src, lengths, max_len, EOS)


def _reverse_batch(g, n=32):
    lengths = torch.randint(2, 6, (n,), generator=g)
    src = torch.full((n, 6), PAD)
    tgt = torch.full((n, 7), PAD)
    for i, k in enumerate(lengths.tolist()):
        seq = torch.randint(3, 11, (k,), generator=g)
        src[i, :k], src[i, k] = seq, EOS
        tgt[i, :k], tgt[i, k] = seq.flip(0), EOS
    return src, lengths + 1, tgt


# 250 steps sufficed on an AVX2 CPU but not on an AVX-512 one (other rounding, other
# trajectory: 37/50); 400 leaves a margin on both
STEPS = 400


def test_learns_to_reverse_and_beam_search_decodes_it():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=11, embedding_dim=16, hidden_size=32,
                                  dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        src, lengths, tgt = _reverse_batch(g)
        loss = sequence_nll(model(src, lengths, shift_right(tgt, EOS, PAD)), tgt, PAD) / len(src)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    src, lengths, tgt = _reverse_batch(torch.Generator().manual_seed(99), 50)
    want = [row[:row.index(EOS)] for row in tgt.tolist()]
    got = beam_search(model, src, lengths, 10, EOS, beam=4)
    assert sum(a == b for a, b in zip(got, want)) >= 45


def test_shift_right_and_bad_input():
    tgt = torch.tensor([[5, 6, EOS, PAD], [7, EOS, PAD, PAD]])
    assert shift_right(tgt, EOS, PAD).tolist() == [[EOS, 5, 6, PAD], [EOS, 7, PAD, PAD]]
    model = _model(max_source_len=5)
    src, lengths = _batch()
    with pytest.raises(ShapeError, match="longer than the model's limit max_source_len=5"):
        model.encode(src, lengths)
    with pytest.raises(ConfigError, match="attention"):
        Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=10, attention="dot")
    with pytest.raises(ValueError, match="beam"):
        beam_search(model, src[:, :4], torch.tensor([4, 4, 2]), 3, EOS, beam=0)
