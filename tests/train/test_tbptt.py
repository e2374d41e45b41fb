import pytest
import torch

from rnnkit.models import LanguageModel, LMConfig
from rnnkit.train.tbptt import detach_state, tbptt_windows


@pytest.mark.parametrize("length,k1,k2", [(101, 20, 20), (101, 7, 20), (50, 5, 5), (23, 4, 9), (10, 3, 3)])
def test_windows_score_every_target_exactly_once(length, k1, k2):
    windows = tbptt_windows(length, k1, k2)
    scored = [t for w in windows for t in range(w.score_from, w.end)]
    assert scored == list(range(length - 1))
    for j, w in enumerate(windows):
        assert w.start == j * k1 and w.end - w.start <= k2
        assert w.carry_at == min(k1, w.end - w.start)


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm_layer_norm", "rnn_tanh"])
def test_state_carried_across_batches_equals_one_long_forward(cell):
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=11, cell=cell, embedding_dim=6, hidden_size=8, num_layers=2)).eval()
    tokens = torch.randint(0, 11, (3, 40))
    full, _ = model(tokens)
    state, chunks = None, []
    for start in range(0, 40, 7):
        logits, state = model(tokens[:, start:start + 7], state)
        state = detach_state(state)
        chunks.append(logits)
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=1e-5)
