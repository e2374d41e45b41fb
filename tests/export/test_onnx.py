"""ONNX export (rnnkit.export): every cell's graph in ONNX Runtime against the PyTorch
layer, whole-sequence and one-step, with lengths and a given state; and its errors."""
import inspect

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit import cells as cell_module  # noqa: E402
from rnnkit.errors import ArgumentError, DtypeError, ShapeError  # noqa: E402
from rnnkit.export import OnnxRecurrent, export_onnx  # noqa: E402
from rnnkit.export.cells import EMITTERS  # noqa: E402
from rnnkit.models.cells import CELLS  # noqa: E402
from rnnkit.nn import Recurrent  # noqa: E402

TOL = 1e-5
I, H = 5, 6


def _jordan(*args, **kwargs):
    return Recurrent(cell_module.JordanCell, *args, **kwargs)


#: every named cell of the registry, plus the layer options the registry leaves at their default
LAYERS = {name: (cls, kwargs) for name, (cls, kwargs) in CELLS.items()} | {
    "lstm_proj": (rnnkit.LSTM, {"proj_size": 4}),
    "lstm_peephole_layer_norm_nobias": (rnnkit.LSTM, {"peephole": True, "layer_norm": True, "bias": False}),
    "gru_nobias": (rnnkit.GRU, {"bias": False}),
    "mingru_linear": (rnnkit.MinGRU, {"positive": False}),
    "minlstm_linear": (rnnkit.MinLSTM, {"positive": False}),
    "jordan": (_jordan, {}),
    "jordan_sigmoid_out3": (_jordan, {"output_size": 3, "nonlinearity": "sigmoid", "output_activation": "tanh"}),
    "lstm_zoneout": (rnnkit.LSTM, {"zoneout": {"h": 0.3, "c": 0.5}}),
    "gru_learned_h0": (rnnkit.GRU, {"learn_initial_state": True}),
}


def _build(name: str, bidirectional: bool, batch_first: bool = False) -> Recurrent:
    torch.manual_seed(0)
    cls, kwargs = LAYERS[name]
    layer = cls(I, H, num_layers=2, bidirectional=bidirectional, batch_first=batch_first, **kwargs).eval()
    with torch.no_grad():  # off the init, so that a gain or peephole mix-up shows
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return layer


def _random_state(layer: Recurrent, batch: int) -> tuple[torch.Tensor, ...]:
    s = layer.init_state(batch)
    return tuple(torch.randn_like(t) for t in (s if isinstance(s, tuple) else (s,)))


def _hx(state):
    return state if len(state) > 1 else state[0]


def _max_diff(expected, got) -> float:
    expected = [e.detach().numpy() for e in expected]
    return max(float(np.abs(e - g).max()) for e, g in zip(expected, got))


def _torch_sequence(layer, x, state, lengths):
    with torch.no_grad():
        y, final = layer(x, _hx(state), lengths=lengths)
    return y, final if isinstance(final, tuple) else (final,)


def test_every_cell_class_has_an_onnx_step():
    """A new cell in rnnkit.cells without an export fails here, not in a user's hands."""
    classes = {c for c in vars(cell_module).values()
               if inspect.isclass(c) and issubclass(c, cell_module.RecurrentCell)}
    concrete = {c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)}  # the leaves
    assert concrete <= set(EMITTERS), concrete - set(EMITTERS)
    assert {type(_build(n, False).cells[0]) for n in LAYERS} >= set(EMITTERS)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_sequence_graph_matches_pytorch_with_lengths_and_state(name, bidirectional, tmp_path):
    batch_first = bidirectional  # both layouts, without doubling the grid
    layer = _build(name, bidirectional, batch_first)
    T, B = 7, 4
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    lengths = torch.tensor([7, 3, 1, 5])
    state = _random_state(layer, B)
    y, final = _torch_sequence(layer, x, state, lengths)
    runner = OnnxRecurrent(export_onnx(layer, tmp_path / "m.onnx"))
    y_onnx, final_onnx = runner.run(x, state, lengths)
    assert _max_diff([y, *final], [y_onnx, *final_onnx]) <= TOL
    pad = (lengths.view(1, -1) <= torch.arange(T).view(-1, 1))  # (T, B): padded steps
    y_tb = y_onnx.transpose(1, 0, 2) if batch_first else y_onnx
    assert np.all(y_tb[pad.numpy()] == 0.0)  # exactly zero, as the layer


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_step_graph_matches_layer_step(name, tmp_path):
    layer = _build(name, False)
    B = 3
    state = _random_state(layer, B)
    runner = OnnxRecurrent(export_onnx(layer, tmp_path / "s.onnx", mode="step"))
    onnx_state = tuple(s.numpy() for s in state)
    for _ in range(3):  # the state carried through the graph, step after step
        x = torch.randn(B, I)
        with torch.no_grad():
            y, new = layer.step(x, _hx(state))
        state = new if isinstance(new, tuple) else (new,)
        y_onnx, onnx_state = runner.run(x, onnx_state)
        assert _max_diff([y, *state], [y_onnx, *onnx_state]) <= TOL


@pytest.mark.parametrize("name", ["lstm", "lstm_layer_norm", "gru_reset_before", "minlstm", "jordan"])
def test_reimported_graph_runs_another_batch_and_length(name, tmp_path):
    layer = _build(name, True, batch_first=True)
    path = export_onnx(layer, tmp_path / "m.onnx")
    model = onnx.load(str(path))  # a fresh copy of the file, as a user's runtime would read it
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for B, T in ((1, 2), (6, 11)):
        x = torch.randn(B, T, I)
        lengths = torch.randint(1, T + 1, (B,))
        state = _random_state(layer, B)
        y, final = _torch_sequence(layer, x, state, lengths)
        feeds = {"x": x.numpy(), "lengths": lengths.numpy()}
        feeds |= {f"{n}0": s.numpy() for n, s in zip(layer.cells[0].state_names, state)}
        got = session.run(None, feeds)
        assert _max_diff([y, *final], got) <= TOL


def test_standard_configurations_use_onnx_recurrent_operators(tmp_path):
    """torch.nn's configurations map to ONNX's fused operators; the others to a Scan."""
    def ops(layer):
        return {n.op_type for n in onnx.load(str(export_onnx(layer, tmp_path / "m.onnx"))).graph.node}

    assert "LSTM" in ops(_build("lstm", True)) and "Scan" not in ops(_build("lstm", True))
    assert "GRU" in ops(_build("gru", False)) and "RNN" in ops(_build("rnn_relu", False))
    for name in ("lstm_peephole", "lstm_proj", "gru_simplified", "mingru", "jordan", "lstm_zoneout"):
        assert {"Scan"} <= ops(_build(name, False)) and not {"LSTM", "GRU", "RNN"} & ops(_build(name, False))


def test_sequence_without_lengths_input(tmp_path):
    layer = _build("gru_simplified", False)
    x, state = torch.randn(5, 2, I), _random_state(layer, 2)
    y, final = _torch_sequence(layer, x, state, None)
    runner = OnnxRecurrent(export_onnx(layer, tmp_path / "m.onnx", lengths=False))
    assert [i.name for i in runner.session.get_inputs()] == ["x", "h0"]
    assert _max_diff([y, *final], [runner.run(x, state)[0], *runner.run(x, state)[1]]) <= TOL


@pytest.mark.parametrize("cell,encoding", [("lstm", "embedding"), ("lstm_layer_norm", "embedding"),
                                           ("mingru", "onehot")])
@pytest.mark.parametrize("mode", ["sequence", "step"])
def test_language_model_graph_matches_pytorch(cell, encoding, mode, tmp_path):
    from rnnkit.models.language_model import LanguageModel, LMConfig

    torch.manual_seed(0)
    config = LMConfig(vocab_size=11, cell=cell, input=encoding, embedding_dim=6, hidden_size=H, num_layers=2)
    model = LanguageModel(config).eval()
    runner = OnnxRecurrent(export_onnx(model, tmp_path / "lm.onnx", mode=mode))
    state = _random_state(model.rnn, 3)
    if mode == "sequence":
        tokens, lengths = torch.randint(0, 11, (3, 5)), torch.tensor([5, 2, 4])
        with torch.no_grad():
            logits, final = model(tokens, _hx(state), lengths=lengths)
        got = runner.run(tokens, state, lengths)
    else:
        tokens = torch.randint(0, 11, (3,))
        with torch.no_grad():
            logits, final = model(tokens.unsqueeze(1), _hx(state))
        logits = logits[:, 0]
        got = runner.run(tokens, state)
    final = final if isinstance(final, tuple) else (final,)
    assert _max_diff([logits, *final], [got[0], *got[1]]) <= TOL


# --- errors ------------------------------------------------------------------------------
def test_wrong_state_is_named(tmp_path):
    lstm = OnnxRecurrent(export_onnx(_build("lstm", False), tmp_path / "lstm.onnx"))
    x = np.zeros((4, 2, I), np.float32)
    with pytest.raises(ShapeError, match=r"state h has shape \(2, 3, 6\), expected .* = \(2, 2, 6\)"):
        lstm.run(x, (np.zeros((2, 3, H), np.float32), np.zeros((2, 2, H), np.float32)))
    gru_state = _random_state(_build("gru", False), 2)  # one tensor, where the LSTM takes (h, c)
    with pytest.raises(ShapeError, match=r"state must hold 2 tensor\(s\) \(h, c\), got 1 .*another kind of model"):
        lstm.run(x, gru_state)
    wide = _random_state(_build("lstm", True), 2)  # a bidirectional model's: (4, B, H)
    with pytest.raises(ShapeError, match=r"state h has shape \(4, 2, 6\)"):
        lstm.run(x, wide)
    with pytest.raises(ShapeError, match=r"lengths must lie in \[1, 4\]"):
        lstm.run(x, None, np.array([0, 4]))
    with pytest.raises(ShapeError, match=r"x has shape \(4, 2, 3\)"):
        lstm.run(np.zeros((4, 2, 3), np.float32))


def test_what_onnx_cannot_express_is_refused_by_name(tmp_path):
    class MyCell(cell_module.ElmanCell):  # a subclass may change the equations: not guessed
        pass

    with pytest.raises(ArgumentError, match="cell MyCell has no ONNX export"):
        export_onnx(Recurrent(MyCell, I, H).eval(), tmp_path / "a.onnx")
    with pytest.raises(ArgumentError, match="bidirectional LSTM has no one-step graph"):
        export_onnx(_build("lstm", True), tmp_path / "b.onnx", mode="step")
    with pytest.raises(DtypeError, match="float64.*float32"):
        export_onnx(_build("gru", False).double(), tmp_path / "c.onnx")
    with pytest.raises(ArgumentError, match="mode must be one of"):
        export_onnx(_build("gru", False), tmp_path / "d.onnx", mode="chunk")
    with pytest.raises(ArgumentError, match="opset must be"):
        export_onnx(_build("gru", False), tmp_path / "e.onnx", opset=9)
    with pytest.raises(ArgumentError, match="Linear has no ONNX export"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "f.onnx")
    from rnnkit.models.language_model import LanguageModel, LMConfig

    hashed = LanguageModel(LMConfig(vocab_size=11, input="hashing", hidden_size=H, num_layers=1)).eval()
    with pytest.raises(ArgumentError, match="input='hashing' has no ONNX export"):
        export_onnx(hashed, tmp_path / "g.onnx")
    assert not list(tmp_path.iterdir())  # nothing written for a refused export
    with pytest.raises(ArgumentError, match="not written by rnnkit"):
        io = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("a", "b")]
        plain = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Identity", ["a"], ["b"])],
                                                              "g", io[:1], io[1:]),
                                       opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
        onnx.save(plain, str(tmp_path / "plain.onnx"))
        OnnxRecurrent(tmp_path / "plain.onnx")


def test_cli_export(tiny_corpus, tmp_path, capsys):
    from rnnkit.cli import main

    out = tmp_path / "run"
    assert main(["train", "--text", str(tiny_corpus), "--level", "char", "--batch-size", "4", "--bptt", "8",
                 "--hidden-size", "8", "--embedding-dim", "4", "--num-layers", "1", "--no-progress",
                 "--max-steps", "1", "--samples", "0", "--no-baseline", "--out", str(out)]) == 0
    ckpt = out / "best.safetensors"
    assert main(["export", str(ckpt), "--mode", "step", "-o", str(tmp_path / "lm.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out
    from rnnkit.train.saved import load_model

    model = load_model(ckpt).model
    tokens = torch.randint(0, model.config.vocab_size, (2,))
    with torch.no_grad():
        logits, (h, c) = model(tokens.unsqueeze(1))
    got, (h_o, c_o) = OnnxRecurrent(tmp_path / "lm.onnx").run(tokens)
    assert _max_diff([logits[:, 0], h, c], [got, h_o, c_o]) <= TOL
    assert main(["export", str(tmp_path / "missing.safetensors")]) == 2
    assert "error" in capsys.readouterr().err
