"""The PTB-bracketed tree reader (SST format), sst2 labels and level-batched packing."""

import pytest
import torch

from rnnkit.data.trees import (IGNORE_LABEL, Tree, batch_trees, leaves, parse_tree, postorder, read_trees,
                               sst2_label)
from rnnkit.errors import DataError

from shared_data import DATA

SST_DEV = DATA / "sst" / "dev.txt"
EXAMPLE = "(3 (2 It) (4 (2 (2 's) (2 a)) (3 lovely)))"


def test_parse_example():
    t = parse_tree(EXAMPLE)
    assert t.label == 3 and t.word is None and len(t.children) == 2
    assert t.children[0] == Tree(2, [], "It")
    assert leaves(t) == ["It", "'s", "a", "lovely"]
    assert [n.label for n, _ in postorder(t)] == [2, 2, 2, 2, 3, 4, 3]
    assert str(t) == EXAMPLE


def test_escaped_tokens_are_words_and_whitespace_is_free():
    t = parse_tree("  (2 (2 -LRB-)\t(1 (2 :-RRB-) (2 `` ) ) )  ")
    assert leaves(t) == ["-LRB-", ":-RRB-", "``"]
    assert str(t) == "(2 (2 -LRB-) (1 (2 :-RRB-) (2 ``)))"


def test_single_leaf_unary_and_nary():
    assert parse_tree("(4 great)") == Tree(4, [], "great")
    chain = parse_tree("(1 (2 (3 x)))")
    assert chain.children[0].children[0] == Tree(3, [], "x")
    assert len(parse_tree("(0 (1 a) (2 b) (3 c))").children) == 3


def test_deep_tree_does_not_recurse():
    depth = 5000
    t = parse_tree("(1 " * depth + "w" + ")" * depth)
    assert leaves(t) == ["w"] and len(postorder(t)) == depth


BAD = [
    ("(3 (2 a) (2 b)", "unbalanced brackets: 1 '(' not closed"),
    ("(2 a))", "')' at column 6 closes nothing"),
    ("", "empty line"),
    ("()", "not followed by a label"),
    ("(2)", "empty node (2)"),
    ("(x a)", "label 'x' at column 2 is not a non-negative integer"),
    ("(2.5 a)", "label '2.5'"),
    ("(-1 a)", "label '-1'"),
    ("(2 a) b", "trailing text after the tree at column 7: 'b'"),
    ("(2 a) (2 b)", "trailing text"),
    ("(2 a b)", "second word 'b'"),
    ("(2 a (2 b))", "follows the word 'a'"),
    ("(2 (2 a) b)", "word 'b' at column 10 follows subtrees"),
    ("a (2 b)", "expected '(' at column 1"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_string(text, message):
    with pytest.raises(DataError, match="^<string>:1: ") as err:
        parse_tree(text)
    assert message in str(err.value)


@pytest.mark.parametrize("text, message", BAD)
def test_bad_line_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "trees.txt"
    path.write_text(EXAMPLE + "\n(1 fine)\n" + text + "\n" + EXAMPLE + "\n")
    with pytest.raises(DataError) as err:
        read_trees(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_read_trees_ignores_trailing_blank_lines_only(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(EXAMPLE + "\r\n(1 ok)\n\n  \n")
    assert [str(t) for t in read_trees(path)] == [EXAMPLE, "(1 ok)"]
    path.write_text("")
    with pytest.raises(DataError, match="no trees"):
        read_trees(path)
    with pytest.raises(DataError, match="missing.txt"):
        read_trees(tmp_path / "missing.txt")


@pytest.mark.skipif(not SST_DEV.exists(), reason="SST dev.txt not available")
def test_sst_dev_first_lines(tmp_path):
    lines = SST_DEV.read_text(encoding="utf-8").splitlines()[:50]
    path = tmp_path / "head.txt"
    path.write_text("\n".join(lines) + "\n")
    trees = read_trees(path)
    assert len(trees) == 50
    assert leaves(trees[0])[:5] == ["It", "'s", "a", "lovely", "film"]
    for line, tree in zip(lines, trees):
        assert str(tree) == " ".join(line.split())          # round trip
        for node, kids in postorder(tree):
            assert 0 <= node.label <= 4 and len(kids) in (0, 2)


def test_sst2_label():
    assert [sst2_label(k) for k in range(5)] == [0, 0, None, 1, 1]
    for bad in (-1, 5):
        with pytest.raises(DataError, match="0-4"):
            sst2_label(bad)


def test_batch_trees_levels():
    trees = [parse_tree(EXAMPLE), parse_tree("(1 solo)"), parse_tree("(0 (1 (2 x)) (3 y) (4 z))")]
    vocab: dict[str, int] = {}
    batch = batch_trees(trees, lambda w: vocab.setdefault(w, len(vocab)), label_map=sst2_label)
    words = [w for t in trees for w in leaves(t)]
    assert [list(vocab)[i] for i in batch.word_ids.tolist()] == words     # level 0: leaves in reading order
    assert batch.num_nodes == 7 + 1 + 5 and batch.num_trees == 3 and batch.num_leaves == len(words)
    assert batch.depth == 4 and batch.max_arity == 3
    assert batch.offsets == [0, 8, 10, 12, 13]
    assert batch.children[0].shape == (8, 0)
    assert sorted(batch.postorder.tolist()) == list(range(13))
    post = [n for t in trees for n, _ in postorder(t)]
    raw = [sst2_label(n.label) for n in post]
    assert batch.labels[batch.postorder].tolist() == [IGNORE_LABEL if r is None else r for r in raw]
    assert batch.tree_index[batch.postorder].tolist() == [0] * 7 + [1] + [2] * 5
    assert batch.roots.tolist() == batch.postorder[[6, 7, 12]].tolist()
    for k, children in enumerate(batch.children[1:], start=1):
        lo = batch.offsets[k]
        for row in children.tolist():                  # children sit on lower levels, padding -1 at the end
            real = [c for c in row if c >= 0]
            assert all(c < lo for c in real) and row == real + [-1] * (len(row) - len(real))
    # level 2: (4 ('s a) lovely) and (0 (1 (2 x)) y z), padded to arity 3; (1 (2 x)) is on level 1
    assert batch.children[1].shape == (2, 2) and batch.children[1][1, 1] == -1
    assert batch.children[2].shape == (2, 3) and batch.children[2][0, 2] == -1
    assert batch.children[3].tolist() == [[0, 10]]          # root of EXAMPLE: It, (4 ...)
    assert batch.to("cpu").offsets == batch.offsets


def test_batch_trees_errors():
    with pytest.raises(DataError, match="no trees"):
        batch_trees([], lambda w: 0)
    with pytest.raises(DataError, match="without a word"):
        batch_trees([Tree(1, [Tree(2)])], lambda w: 0)
    with pytest.raises(DataError, match="both the word"):
        batch_trees([Tree(1, [Tree(2, [], "a")], "b")], lambda w: 0)


def test_batch_ids_are_exact():
    batch = batch_trees([parse_tree("(2 (1 a) (3 b))")], {"a": 0, "b": 1}.__getitem__)
    assert batch.offsets == [0, 2, 3]
    assert batch.children[1].tolist() == [[0, 1]]
    assert batch.word_ids.tolist() == [0, 1] and batch.labels.tolist() == [1, 3, 2]
    assert batch.roots.tolist() == [2] and batch.postorder.tolist() == [0, 1, 2]
    assert batch.word_ids.dtype == torch.long


def test_a_word_holding_a_no_break_space_stays_one_word():
    tree = parse_tree("(2 (2 8\u00a01\\/2) (2 .))")   # as in SST train.txt
    assert leaves(tree) == ["8\u00a01\\/2", "."]
