"""Sentiment over SST trees: root SST-5 / SST-2 scoring by its definition, and the
Tree-LSTM trained through the one loop (needs the shared SST files)."""
import torch

from rnnkit.tasks.sentiment_tree import SentimentTreeTask
from rnnkit.train.config import build_config
from rnnkit.train.loop import Loop
from rnnkit.train.saved import load_model

from shared_data import DATA, needs


def test_root_scores_follow_their_definitions():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.05],     # root 0: says 0, negative
                                     [0.1, 0.1, 0.1, 0.2, 0.5],        # root 1: says 4, positive
                                     [0.2, 0.2, 0.4, 0.1, 0.1],        # a non-root node
                                     [0.1, 0.3, 0.2, 0.2, 0.2]]))      # root 2: says 1, but 0+1 = 0.4 = 3+4
    labels = torch.tensor([1, 4, 2, 2])
    s = SentimentTreeTask._score(logits, labels, torch.tensor([0, 1, 3]))
    assert s == {"node_correct": 2, "root_correct": 1, "binary_correct": 2, "binary_trees": 2}


@needs("sst/train.txt", "sst/dev.txt", "sst/test.txt")
def test_tree_lstm_trains_through_the_loop(tmp_path):
    cfg = build_config(None, {"train": {"task": "sentiment_tree", "data_dir": str(DATA), "max_steps": 3,
                                        "batch_size": 8, "progress": False, "out": str(tmp_path / "run")},
                              "model": {"embedding_dim": 8, "hidden_size": 8}})
    task = cfg.make_task()
    task.prepare()
    assert [len(task.splits[s]) for s in ("train", "valid", "test")] == [8544, 1101, 2210]
    result = Loop(cfg, task).fit()
    assert 0 <= result["test"]["sst5_accuracy"] <= 1 and result["test"]["trees"] == 2210
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    assert loaded.model.config.cell == "binary" and len(loaded.task.vocab) == len(task.vocab)
