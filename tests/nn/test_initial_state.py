import torch

import rnnkit


def test_learned_initial_state_gets_gradient_and_trains():
    """A task only the initial state can solve: predict a constant from a zero input
    at the first step. The learned h0/c0 must receive gradient and move."""
    torch.manual_seed(0)
    for layer in (rnnkit.LSTM(2, 8, num_layers=2, bidirectional=True, learn_initial_state=True),
                  rnnkit.GRU(2, 8, learn_initial_state=True, variant="simplified")):
        head = torch.nn.Linear(layer.num_directions * 8, 1)
        opt = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=0.05)
        before = {n: p.detach().clone() for n, p in layer.named_parameters() if n.startswith("initial_")}
        assert before, "no learned initial state registered"
        x, target = torch.zeros(1, 16, 2), torch.full((1, 16, 1), 0.7)
        for _ in range(20):
            out, _ = layer(x)
            loss = ((head(out) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            for n in before:
                assert getattr(layer, n).grad is not None and getattr(layer, n).grad.abs().sum() > 0
            opt.step()
        for n, old in before.items():
            assert not torch.allclose(getattr(layer, n), old), n


def test_explicit_hx_overrides_learned_state():
    layer = rnnkit.GRU(2, 4, learn_initial_state=True)
    with torch.no_grad():
        layer.initial_h.fill_(0.5)
    x = torch.randn(3, 2, 2)
    out_learned, _ = layer(x)
    out_zero, _ = layer(x, torch.zeros(1, 2, 4))
    ref = rnnkit.GRU(2, 4)
    ref.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "initial_h"})
    torch.testing.assert_close(out_zero, ref(x)[0])
    torch.testing.assert_close(out_learned, ref(x, torch.full((1, 2, 4), 0.5))[0])
