"""torchrun with 2 gloo processes gives the same loss curve as one process with
the same global batch."""
import json
import os
import subprocess
import sys

import pytest


def _train(tiny_corpus, out, nproc):
    args = ["-m", "rnnkit", "train", "--text", str(tiny_corpus), "--level", "char", "--batch-size", "8",
            "--bptt", "10", "--max-steps", "5", "--hidden-size", "16", "--embedding-dim", "8",
            "--num-layers", "2", "--optimizer", "sgd", "--lr", "0.5", "--seed", "3", "--out", str(out),
            "--no-progress", "--no-baseline", "--samples", "0"]
    if nproc > 1:
        args = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", "29517"] + args
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # log every step through a config file, so both runs share identical flags
    cfg = out.parent / f"log{nproc}.toml"
    cfg.write_text("[train]\nlog_every = 1\n")
    proc = subprocess.run([sys.executable, *args, "--config", str(cfg)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def test_two_gloo_processes_match_one_process(tiny_corpus, tmp_path):
    single = _train(tiny_corpus, tmp_path / "one", 1)
    double = _train(tiny_corpus, tmp_path / "two", 2)
    assert len(single) == len(double) == 5
    assert double == pytest.approx(single, abs=1e-5)
    assert not (tmp_path / "two" / "metrics.jsonl.rank1").exists()
