"""Two short real runs shared by the report tests: a character language model (baseline,
diagnostics, samples at each evaluation) and the adding problem (its table panel)."""
import random
import shutil

import pytest

from rnnkit.cli import main

LM = ["--level", "char", "--batch-size", "4", "--bptt", "16", "--hidden-size", "16", "--embedding-dim", "8",
      "--num-layers", "1", "--no-progress", "--samples", "0", "--max-steps", "30", "--eval-every", "10",
      "--log-every", "2", "--diagnose-every", "10"]
ADDING = ["--task", "adding", "--seq-len", "6", "--train-size", "64", "--valid-size", "16", "--test-size", "16",
          "--epochs", "3", "--batch-size", "16", "--hidden-size", "4", "--log-every", "1", "--no-progress"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """``{"lm": folder, "adding": folder}``, trained once per session; copy before changing one."""
    root = tmp_path_factory.mktemp("runs")
    rng = random.Random(0)
    words = ["the cat sat", "a dog ran", "the bird flew", "my fish swam", "one cow ate"]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(4)) + "." for _ in range(60)) + "\n")
    assert main(["train", "--text", str(corpus), *LM, "--out", str(root / "lm")]) == 0
    assert main(["train", *ADDING, "--out", str(root / "adding")]) == 0
    return {"lm": root / "lm", "adding": root / "adding"}


@pytest.fixture
def copy_run(runs, tmp_path):
    def copy(name):
        return shutil.copytree(runs[name], tmp_path / name, ignore=shutil.ignore_patterns(".lock"))
    return copy


@pytest.fixture
def error_line(capsys):
    """Run the CLI expecting a user error: status 2 and one line on stderr, no traceback."""
    def run(argv):
        capsys.readouterr()
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err
    return run
