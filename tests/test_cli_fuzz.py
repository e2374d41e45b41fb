"""Generated configuration values (TOML) for `rnnkit train`: a run, or exit 2 with
exactly one error line and no traceback; never a crash deep inside training."""
import dataclasses
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import examples
from rnnkit.cli import main
from rnnkit.models import LMConfig
from rnnkit.tasks.lm import LMOptions
from rnnkit.train.config import TrainConfig

KEYS = {"train": sorted({f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(LMOptions)}),
        "model": sorted(f.name for f in dataclasses.fields(LMConfig) if f.name != "vocab_size")}
VALUES = st.one_of(
    st.integers(-3, 300), st.sampled_from([0, -1, 2**31, 2**63 - 1, -2**63, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=12), st.sampled_from(["", "cuda", "cuda:7", "meta", "tpu", "/dev/zero", "sgd", "gru", "onehot",
                                           "hashing", "char", "word", "skip", "identity", "\x1b[2J"]))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_config_values(tiny_corpus, tmp_path_factory, capsys, monkeypatch, data):
    work = tmp_path_factory.mktemp("cfg")
    monkeypatch.chdir(work)  # a relative `out` or `data` lands here
    entries = data.draw(st.lists(st.tuples(st.sampled_from(["train", "model"]), st.data()), min_size=1, max_size=3))
    tables: dict[str, dict] = {"train": {}, "model": {}}
    for section, d in entries:
        tables[section][d.draw(st.sampled_from(KEYS[section]))] = d.draw(VALUES)
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in kv.items()) for s, kv in tables.items())
    (work / "c.toml").write_text(text)
    rc = main(["train", "--config", str(work / "c.toml"), "--text", str(tiny_corpus), "--max-steps", "1",
               "--max-minutes", "1", "--hidden-size", "8", "--embedding-dim", "8", "--num-layers", "1",
               "--batch-size", "2", "--bptt", "8", "--out", str(work / "run"), "--no-progress", "--no-baseline",
               "--samples", "0"] if "hidden_size" not in tables["model"] else
              ["train", "--config", str(work / "c.toml"), "--text", str(tiny_corpus), "--max-steps", "1",
               "--out", str(work / "run"), "--no-progress", "--no-baseline", "--samples", "0", "--batch-size", "2",
               "--bptt", "8"])
    captured = capsys.readouterr()
    assert rc in (0, 2), (text, captured.err[-3000:])
    if rc == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in captured.err, (text, captured.err[-3000:])
    assert "\x1b" not in captured.out + captured.err
