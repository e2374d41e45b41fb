"""Small language-model runs whose curves were recorded with the trainer before the
generic loop (tests/train/data/lm_curves_before_loop.json); the loop must reproduce them."""
import json
from pathlib import Path

from rnnkit.cli import main

COMMON = ["--level", "char", "--batch-size", "6", "--hidden-size", "16", "--embedding-dim", "8",
          "--no-progress", "--no-baseline", "--samples", "0", "--seed", "5"]
CASES = {
    "adam_dropout": ["--bptt", "12", "--num-layers", "2", "--dropout", "0.3", "--epochs", "2", "--eval-every", "7"],
    "sgd_sum_over_time": ["--bptt", "10", "--num-layers", "1", "--optimizer", "sgd", "--lr", "1.0",
                          "--max-steps", "30", "--cell", "gru"],
    "tbptt_k1_lt_k2": ["--bptt", "12", "--bptt-k1", "5", "--num-layers", "1", "--max-steps", "25",
                       "--cell", "lstm_peephole", "--clip-value", "0.05"],
}
TOML = {"adam_dropout": "[train]\nlog_every = 1\n",
        "sgd_sum_over_time": "[train]\nlog_every = 1\nsum_over_time = true\nlr_decay = 0.5\nlr_decay_start = 0\n",
        "tbptt_k1_lt_k2": "[train]\nlog_every = 1\n"}


def run_case(name: str, corpus: Path, out: Path) -> dict:
    cfg = out.parent / f"{name}.toml"
    cfg.write_text(TOML[name])
    rc = main(["train", "--text", str(corpus), *COMMON, *CASES[name], "--config", str(cfg), "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"train": [r["loss"] for r in rows if r["split"] == "train"],
            "valid": [r["nll"] for r in rows if r["split"] == "valid"],
            "final": [rows[-1]["valid"]["nll"], rows[-1]["test"]["nll"]]}
