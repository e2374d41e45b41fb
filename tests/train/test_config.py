"""Run configuration: the loop's, the task's and the model's options, each declared
once, validated at the edge; what a resume may change."""
import dataclasses

import pytest

from rnnkit.errors import ConfigError
from rnnkit.models import MODELS
from rnnkit.tasks import TASKS
from rnnkit.train.config import TrainConfig, build_config, compare_runs


@pytest.mark.parametrize("file,pattern", [
    ({"train": {"bogus": 1}}, "unknown key 'bogus' in \\[train\\]"),
    ({"train": {"lr": "fast"}}, "\\[train\\] lr must be float, got str"),
    ({"train": {"lr": float("nan")}}, "lr must be a finite number"),
    ({"train": {"epochs": 1.5}}, "\\[train\\] epochs must be int"),
    ({"model": {"cell": "transformer"}}, "cell must be one of"),
    ({"model": {"vocab_size": 5}}, "unknown key 'vocab_size' in \\[model\\]"),
    ({"optim": {}}, "unknown section \\[optim\\]"),
    ({"train": {"bptt_k1": 99, "bptt": 10}}, "bptt_k1 must be in"),
    ({"train": {"max_steps": -1}}, "max_steps must be > 0"),
    ({"train": {"eval_every": 0}}, "eval_every must be > 0"),
    ({"train": {"patience": -1}}, "patience must be > 0"),
    ({"train": {"checkpoint_minutes": -1.0}}, "checkpoint_minutes must be > 0"),
    ({"train": {"weight_decay": -0.1}}, "weight_decay must be >= 0"),
    ({"train": {"seed": -1}}, "seed must be in"),
    ({"train": {"seed": 2**64}}, "seed must be in"),
    ({"train": {"out": ""}}, "out must name a folder"),
    ({"train": {"data": ""}}, "must not be empty"),
    ({"train": {"device": "tpu"}}, "device 'tpu'"),
    ({"train": {"device": "meta"}}, "not supported"),
    ({"train": {"on_nonfinite": "ignore"}}, "on_nonfinite must be"),
    ({"train": {"task": "telepathy"}}, "task must be one of"),
    ({"train": {"task": "adding", "level": "char"}}, "unknown key 'level' in \\[train\\] for task 'adding'"),
    ({"train": {"task": "adding", "seq_len": 1}}, "seq_len must be >= 2"),
    ({"train": {"task": "adding"}, "model": {"embedding_dim": 8}}, "unknown key 'embedding_dim' in \\[model\\]"),
    ({"model": {"embedding_dim": 0}}, "embedding_dim must be > 0"),
    ({"model": {"init": "he"}}, "init must be one of"),
    ({"model": {"init_range": -0.1}}, "init_range must be in \\(0, 1000\\]"),
    ({"model": {"forget_bias": float("inf")}}, "forget_bias must be a finite number"),
    ({"train": {"min_freq": 0}}, "min_freq must be >= 1"),
    ({"train": {"max_vocab": 0}}, "max_vocab must be >= 1"),
    ({"model": {"hash_buckets": -3}}, "hash_buckets must be >= 0"),
    ({"model": {"num_hashes": 0}}, "num_hashes > 0"),
])
def test_config_errors(file, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_config(None, file)


def test_cuda_device_on_a_machine_without_one():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        build_config(None, {"train": {"device": "cuda"}})


def test_preset_of_another_task_is_refused():
    with pytest.raises(ConfigError, match="preset 'char-small' is for task 'lm', not 'adding'"):
        build_config("char-small", overrides={"train": {"task": "adding"}})


def test_task_defaults_then_preset_then_file_then_flags():
    cfg = build_config(None, {"train": {"task": "adding", "seq_len": 20}}, {"train": {"seq_len": 30}})
    assert cfg.train.out == "runs/adding" and cfg.task.seq_len == 30
    assert cfg.model == {k: v for k, v in dataclasses.asdict(MODELS["sequence_regressor"].config(2, 1)).items()
                         if k not in ("input_size", "output_size")}


def test_every_option_is_declared_once():
    """Loop and task options share the [train] table and the flag namespace: no name twice."""
    loop = {f.name for f in dataclasses.fields(TrainConfig)}
    for task in TASKS.values():
        assert not loop & task.option_names(), task.name
        # fields the task fills in from its data or options are not flags of their own
        model = {f.name for f in dataclasses.fields(MODELS[task.model].config)} - set(task.model_placeholders)
        assert not (loop | task.option_names()) & model, task.name


def test_resume_may_change_budgets_but_not_what_is_learned():
    old = build_config(None, {"train": {"lr": 1e-3, "epochs": 3}}).to_dict()
    incompatible, allowed = compare_runs(old, build_config(None, {"train": {"lr": 5e-4, "epochs": 9}}))
    assert incompatible == [] and allowed == ["[train] epochs: 3 -> 9", "[train] lr: 0.001 -> 0.0005"]
    incompatible, _ = compare_runs(old, build_config(None, {"train": {"lr": 1e-3, "epochs": 3, "batch_size": 8,
                                                                      "level": "word"},
                                                            "model": {"hidden_size": 64}}))
    assert incompatible == ["[train] batch_size: 32 -> 8", "[train] level: None -> 'word'",
                            "[model] hidden_size: 256 -> 64"]
