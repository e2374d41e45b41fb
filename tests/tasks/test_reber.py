"""The embedded Reber grammar: generated strings checked against a grammar written
here from the transition table, the legal-successor masks, the "predicts the
grammar" criterion, metrics from sums, and training through the one loop."""
import math

import pytest
import torch
import torch.nn.functional as F

import rnnkit.tasks
from rnnkit.cli import main
from rnnkit.errors import ConfigError
from rnnkit.tasks.reber import (EMBEDDED, LEGAL, PAD, STATE_ID, SYMBOLS, VOCAB, ReberOptions, ReberTask, accepts,
                                embedded_reber)
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop, evaluate
from rnnkit.train.saved import load_model
from rnnkit.train.task import Plan

# Reber's automaton as in Cleeremans et al. / Hochreiter & Schmidhuber, written independently
# of the module's: (state, symbol) -> state, 0 the start, 7 the end.
TABLE = {(0, "B"): 1, (1, "T"): 2, (1, "P"): 3, (2, "S"): 2, (2, "X"): 4, (3, "T"): 3, (3, "V"): 5,
         (4, "X"): 3, (4, "S"): 6, (5, "P"): 4, (5, "V"): 6, (6, "E"): 7}


def is_reber(s: str) -> bool:
    state = 0
    for c in s:
        if (state, c) not in TABLE:
            return False
        state = TABLE[state, c]
    return state == 7


def is_embedded_reber(s: str) -> bool:
    return len(s) >= 4 and s[0] == "B" and s[-1] == "E" and s[1] in "TP" and s[-2] == s[1] and is_reber(s[2:-2])


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(rnnkit.tasks.TASKS, "reber", ReberTask)


def make(**kw) -> ReberTask:
    task = ReberTask(ReberOptions(**{"train_size": 200, "valid_size": 700, "test_size": 300, **kw}), {})
    task.prepare()
    return task


def test_the_checker_knows_the_classic_examples():
    for s in ("BTXSE", "BPVVE", "BTSSXXTVVE", "BPTVPSE", "BTXXVPXVPSE"):
        assert is_reber(s) and not accepts(s)                 # Reber, but not embedded
        assert accepts("BT" + s + "TE") and accepts("BP" + s + "PE") and not accepts("BT" + s + "PE")
    for s in ("BTXSE", "BPVE", "BTSXE", "TXSE", "BTXS"):
        assert is_reber(s) == (s == "BTXSE")
    assert accepts("BTBTSSXXTVVETE") and accepts("BPBPVVEPE")
    assert not accepts("BTBTSSXXTVVEPE") and not accepts("BPBPVVETE") and not accepts("BTBTXSE")


def test_every_generated_string_is_embedded_reber_and_both_branches_occur():
    strings, states = embedded_reber(3000, seed=5)
    assert all(is_embedded_reber(s) for s in strings)
    assert all(accepts(s) for s in strings)
    assert all(s[1] == s[-2] for s in strings)                      # the long-range dependency
    assert {s[1] for s in strings} == {"T", "P"}
    assert 0.45 < sum(s[1] == "T" for s in strings) / 3000 < 0.55   # each branch 1/2
    assert set("".join(strings)) == set(SYMBOLS)
    assert len({s[2:-2] for s in strings}) > 100 and max(map(len, strings)) > 20
    assert [len(q) for q in states] == [len(s) for s in strings] and all(q[-1] == STATE_ID["end"] for q in states)
    assert embedded_reber(50, seed=5)[0] == strings[:50] and embedded_reber(50, seed=6)[0] != strings[:50]


def test_batches_are_padded_shifted_and_carry_the_legal_successors():
    task = make()
    data = task.splits["valid"]
    batches = task.batches(Plan("valid"))
    assert [len(b[0]) for b in batches] == [500, 200]
    rows = 0
    for x, y, legal in batches:
        assert x.shape == y.shape == legal.shape[:2] and legal.shape[2] == VOCAB
        for i in range(len(x)):
            n = int(data.lengths[rows + i]) - 1                     # symbols to predict
            s = "".join(SYMBOLS[j] for j in data.ids[rows + i, :n + 1].tolist())
            assert is_embedded_reber(s)
            assert torch.equal(x[i, :n], data.ids[rows + i, :n]) and torch.equal(y[i, :n], data.ids[rows + i, 1:n + 1])
            assert (y[i, n:] == PAD).all() and (x[i, n:] == PAD).all() and not legal[i, n:].any()
            assert legal[i, torch.arange(n), y[i, :n]].all()        # the true next symbol is always legal
            assert not legal[i, :, PAD].any()
            # the step before the end: only the branch symbol is legal; the step after B: T or P
            assert legal[i, n - 2].nonzero().flatten().tolist() == [SYMBOLS.index(s[1])]
            assert legal[i, 0].nonzero().flatten().tolist() == [SYMBOLS.index("T"), SYMBOLS.index("P")]
            # at each step the legal set is what the independent table allows
            for t in range(n):
                want = {c for c in SYMBOLS if _state(s[:t + 1] + c) is not None}
                assert {SYMBOLS[j] for j in legal[i, t].nonzero().flatten().tolist()} == want
        rows += len(x)


def _state(prefix: str):
    """The embedded grammar's prefix check, from the independent table: a hashable
    state if ``prefix`` starts some embedded Reber string, else None."""
    if prefix[:1] not in ("", "B"):
        return None
    if len(prefix) <= 1:
        return ("outer", len(prefix))
    if prefix[1] not in "TP":
        return None
    branch, inner = prefix[1], prefix[2:]
    state = 0
    for k, c in enumerate(inner):
        if state == 7:  # the inner string is over: the branch symbol, then E
            rest = inner[k:]
            return ("tail", rest) if rest in (branch, branch + "E") else None
        if (state, c) not in TABLE:
            return None
        state = TABLE[state, c]
    return ("inner", branch, state)


class Oracle(torch.nn.Module):
    """The grammar's own next-symbol distribution (uniform over the legal successors);
    with ``forget``, it loses the branch: T and P at 1/2 at the second-to-last step."""

    def __init__(self, forget: bool = False) -> None:
        super().__init__()
        self.forget = forget

    def forward(self, x):
        logits = torch.full((*x.shape, VOCAB), -1e4)
        for i, row in enumerate(x.tolist()):
            state = "start"
            for t, sym in enumerate(row):
                if sym == PAD or not EMBEDDED[state]:
                    break
                state = EMBEDDED[state][SYMBOLS[sym]]
                legal = LEGAL[STATE_ID[state]].clone()
                if self.forget and isinstance(state, tuple) and state[1] == "end":
                    legal[SYMBOLS.index("T")] = legal[SYMBOLS.index("P")] = True
                logits[i, t, legal] = 0.0
        return logits, None


def test_the_grammar_itself_scores_full_accuracy_and_the_entropy():
    task = make()
    m = evaluate(task, Oracle(), "valid")
    assert m["accuracy"] == 1.0 and m["step_accuracy"] == 1.0
    base = task.baseline(5)["valid"]
    assert m["nll"] == pytest.approx(base["entropy"], rel=1e-5)
    # hand count: ln 2 per binary choice, over the predicted symbols
    data = task.splits["valid"]
    choices = sum(LEGAL[data.states[i, :int(data.lengths[i]) - 1]].sum(-1).eq(2).sum().item()
                  for i in range(len(data.lengths)))
    assert base["entropy"] == pytest.approx(choices * math.log(2) / int((data.lengths - 1).sum()))


def test_forgetting_the_branch_fails_every_string():
    """The criterion is "predicted set = legal set": probability above the threshold
    for every legal symbol is not enough (T and P at 1/2 would pass)."""
    task = make()
    m = evaluate(task, Oracle(forget=True), "valid")
    assert m["accuracy"] == 0.0
    n = int((task.splits["valid"].lengths - 1).sum())
    assert m["step_accuracy"] == pytest.approx(1 - 700 / n)        # one wrong step per string
    assert m["nll"] == pytest.approx(evaluate(task, Oracle(), "valid")["nll"] + 700 * math.log(2) / n, rel=1e-5)


def test_metrics_are_sums_divided_once_and_padding_is_ignored():
    """Batches of 500 and 200 strings of different lengths: per-symbol means over the split."""
    task = make()
    data = task.splits["valid"]
    torch.manual_seed(0)
    emb = torch.randn(VOCAB, VOCAB) * 2

    class InputDependent(torch.nn.Module):
        def forward(self, x):
            e = emb[x]  # causal: this symbol and the one before
            return e + 0.5 * torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], 1), None

    m = evaluate(task, InputDependent(), "valid")
    nll, count, ok_strings, ok_steps = 0.0, 0, 0, 0
    for n in data.lengths.unique().tolist():     # strings of one length together: no padding
        rows = data.lengths == n
        ids = data.ids[rows, :n]
        logits = InputDependent()(ids[:, :-1])[0]
        nll += float(F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="sum"))
        count += (n - 1) * len(ids)
        step_ok = ((logits.softmax(-1) > 0.3) == LEGAL[data.states[rows, :n - 1]]).all(-1)
        ok_steps += int(step_ok.sum())
        ok_strings += int(step_ok.all(1).sum())
    assert m["nll"] == pytest.approx(nll / count, rel=1e-5) and m["loss"] == m["nll"]
    assert m["step_accuracy"] == pytest.approx(ok_steps / count) and m["accuracy"] == pytest.approx(ok_strings / 700)
    assert m["strings"] == 700 and m["tokens"] == count
    assert task.metrics({"nll": 3.0, "symbols": 4, "steps_ok": 2, "strings_ok": 1, "strings": 2}) == {
        "loss": 0.75, "nll": 0.75, "accuracy": 0.5, "step_accuracy": 0.5, "strings": 2, "tokens": 4}


def test_training_loss_is_the_batch_mean_and_epochs_reshuffle_across_processes():
    task = make()
    model = task.build_model()
    model.train()
    out = task.step(model, task.batches(Plan("train", batch_size=16))[0])
    assert task.metrics(out.stats)["loss"] == pytest.approx(out.loss.item(), rel=1e-6) and out.loss.requires_grad
    one = task.batches(Plan("train", epoch=1, batch_size=16))
    two = task.batches(Plan("train", epoch=2, batch_size=16))
    assert len(one) == 12 and not torch.equal(one[0][0], two[0][0])
    halves = [task.batches(Plan("train", epoch=1, batch_size=16, rank=r, world_size=2))[0] for r in (0, 1)]
    width = max(h[0].shape[1] for h in halves)
    padded = torch.cat([F.pad(h[0], (0, width - h[0].shape[1]), value=PAD) for h in halves])
    assert torch.equal(padded, one[0][0])


def test_the_ngram_baseline_learns_the_local_rules_but_not_the_embedding():
    task = make(train_size=2000)
    base = task.baseline(5)
    assert base["name"] == "5-gram"
    assert base["valid"]["accuracy"] == 0.0                  # the branch is always > 4 symbols back
    assert base["valid"]["step_accuracy"] > 0.85
    assert base["valid"]["nll"] > base["valid"]["entropy"]
    assert task.baseline(1)["valid"]["nll"] > task.baseline(3)["valid"]["nll"] > base["valid"]["nll"]


@pytest.mark.parametrize("key,value", [("train_size", 0), ("valid_size", 0), ("test_size", -3),
                                       ("prob_threshold", 0.5), ("prob_threshold", 0.0)])
def test_bad_options_are_config_errors_naming_the_option(registered, key, value):
    with pytest.raises(ConfigError, match=key):
        ReberOptions(**{key: value})
    with pytest.raises(ConfigError, match=rf"\[train\] {key}"):
        build_config(None, {"train": {"task": "reber", key: value}})


def test_trains_through_the_loop_and_beats_the_ngram(registered, tmp_path):
    cfg = build_config(None, {"train": {"task": "reber", "train_size": 1500, "valid_size": 300, "test_size": 300,
                                        "epochs": 2, "batch_size": 32, "lr": 2e-2, "progress": False,
                                        "out": str(tmp_path / "run")},
                              "model": {"hidden_size": 32, "num_layers": 1, "embedding_dim": 16}})
    task = cfg.make_task()
    task.prepare()
    result = Loop(cfg, task).fit()
    base = task.baseline(3)["test"]
    assert result["test"]["nll"] < base["nll"] - 0.05
    assert result["test"]["step_accuracy"] > base["step_accuracy"]
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    assert loaded.task.name == "reber" and loaded.model.config.vocab_size == VOCAB


def test_cli(registered, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "reber", "--train-size", "64", "--valid-size", "16", "--test-size", "16",
                 "--epochs", "1", "--hidden-size", "8", "--num-layers", "1", "--out", str(out), "--no-progress",
                 "--ngram-order", "3"]) == 0
    text = capsys.readouterr().out
    assert "embedded Reber grammar" in text and "3-gram" in text and "strings predicted" in text
    assert main(["eval", str(out / "best.safetensors"), "--split", "valid"]) == 0
    assert "strings predicted" in capsys.readouterr().out
