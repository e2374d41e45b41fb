"""Tree-LSTMs and the recursive NN: the level-batched forward is the one-node-at-a-time
recursion (values and gradients, float64), on trees of many shapes."""
import random

import pytest
import torch
import torch.nn.functional as F

from rnnkit.data.trees import IGNORE_LABEL, Tree, batch_trees, parse_tree, sst2_label
from rnnkit.errors import ArgumentError, ShapeError
from rnnkit.models.tree_lstm import (CELL_TYPES, BinaryTreeLSTM, ChildSumTreeLSTM, RecursiveNN,
                                     TreeSentimentClassifier, naive_forward)

I, H = 5, 4
WORDS = [f"w{i}" for i in range(11)]
WORD_ID = {w: i for i, w in enumerate(WORDS)}.__getitem__


def random_tree(rng: random.Random, size: int, max_arity: int, unary: float = 0.0) -> Tree:
    """A random tree with ``size`` leaves: a node splits its leaves among 2..max_arity
    children; with probability ``unary`` a node gets one child (a unary chain)."""
    if rng.random() < unary:
        return Tree(rng.randrange(5), [random_tree(rng, size, max_arity, unary)])
    if size == 1:
        return Tree(rng.randrange(5), [], rng.choice(WORDS))
    arity = rng.randint(2, min(max_arity, size))
    cuts = sorted(rng.sample(range(1, size), arity - 1))
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [size])]
    return Tree(rng.randrange(5), [random_tree(rng, s, max_arity, unary) for s in sizes])


def forest(seed: int, max_arity: int, unary: float) -> list[Tree]:
    rng = random.Random(seed)
    trees = [random_tree(rng, rng.choice([1, 1, 2, 3, 5, 8, 13, 21]), max_arity, unary) for _ in range(9)]
    trees.append(Tree(2, [], "w0"))                                    # a single leaf
    trees.append(parse_tree("(1 (2 (3 (4 w1))))"))                     # a unary chain over a leaf
    trees.append(random_tree(rng, 16, 2))                              # a full-ish binary tree
    return trees


def _grad(p: torch.Tensor) -> torch.Tensor:
    """A parameter's gradient; zeros where it got none (ChildSum's W_f: no node has both an input and children)."""
    return torch.zeros_like(p) if p.grad is None else p.grad.clone()


CASES = [(ChildSumTreeLSTM, 4, 0.0), (ChildSumTreeLSTM, 5, 0.15), (ChildSumTreeLSTM, 2, 0.0),
         (BinaryTreeLSTM, 2, 0.0), (BinaryTreeLSTM, 2, 0.2), (RecursiveNN, 2, 0.0), (RecursiveNN, 2, 0.2)]


@pytest.mark.parametrize("cell_type, max_arity, unary", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_batched_equals_naive_values_and_gradients(cell_type, max_arity, unary, seed):
    torch.manual_seed(seed)
    trees = forest(seed, max_arity, unary)
    batch = batch_trees(trees, WORD_ID)
    cell = cell_type(I, H).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.7)                         # larger weights: saturating gates are also checked
    x = torch.randn(batch.num_leaves, I, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(batch.num_nodes, H, dtype=torch.float64)

    h = cell(batch, x)
    assert h.shape == (batch.num_nodes, H)
    (h[batch.postorder] * weights).sum().backward()
    grads = [x.grad.clone()] + [_grad(p) for p in cell.parameters()]
    x.grad = None
    cell.zero_grad()

    ref = naive_forward(cell, trees, x)
    (ref * weights).sum().backward()
    ref_grads = [x.grad] + [_grad(p) for p in cell.parameters()]

    torch.testing.assert_close(h[batch.postorder], ref, atol=1e-6, rtol=0)
    for name, g, r in zip(["x"] + [n for n, _ in cell.named_parameters()], grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=0, msg=name)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("cell_type", [ChildSumTreeLSTM, BinaryTreeLSTM, RecursiveNN])
@pytest.mark.parametrize("texts, depth", [(["(1 w3)", "(4 w5)"], 1),                   # single leaves only
                                          (["(1 (2 (3 w3)))", "(0 (4 w5))"], 3)])      # unary levels only
def test_degenerate_batches(cell_type, texts, depth):
    trees = [parse_tree(t) for t in texts]
    batch = batch_trees(trees, WORD_ID)
    assert batch.depth == depth
    cell = cell_type(I, H).double()
    x = torch.randn(2, I, dtype=torch.float64)
    torch.testing.assert_close(cell(batch, x)[batch.postorder], naive_forward(cell, trees, x))


def test_child_sum_is_order_invariant_binary_is_not():
    x = torch.randn(2, I, dtype=torch.float64)
    ab = batch_trees([parse_tree("(2 (1 w1) (3 w2))")], WORD_ID)
    ba = batch_trees([parse_tree("(2 (3 w2) (1 w1))")], WORD_ID)
    cs, bi = ChildSumTreeLSTM(I, H).double(), BinaryTreeLSTM(I, H).double()
    torch.testing.assert_close(cs(ab, x)[2], cs(ba, x.flip(0))[2])
    assert not torch.allclose(bi(ab, x)[2], bi(ba, x.flip(0))[2])


def test_binary_cells_refuse_wider_nodes():
    trees = [parse_tree("(2 (1 w1) (3 w2) (4 w3))")]
    batch = batch_trees(trees, WORD_ID)
    x = torch.randn(3, I)
    for cell in (BinaryTreeLSTM(I, H), RecursiveNN(I, H)):
        with pytest.raises(ShapeError, match="at most 2 children"):
            cell(batch, x)
        with pytest.raises(ShapeError, match="at most 2 children"):
            naive_forward(cell, trees, x)
    assert ChildSumTreeLSTM(I, H)(batch, x).shape == (4, H)


def test_leaf_input_shape_checked():
    batch = batch_trees([parse_tree("(2 (1 w1) (3 w2))")], WORD_ID)
    with pytest.raises(ShapeError, match=r"\(2, 5\)"):
        BinaryTreeLSTM(I, H)(batch, torch.randn(3, I))
    with pytest.raises(ArgumentError):
        BinaryTreeLSTM(0, H)


@pytest.mark.parametrize("cell", sorted(CELL_TYPES))
def test_classifier_batched_equals_naive(cell):
    torch.manual_seed(0)
    trees = forest(3, 2, 0.1 if cell != "childsum" else 0.0)
    batch = batch_trees(trees, WORD_ID, label_map=sst2_label)
    model = TreeSentimentClassifier(len(WORDS), I, H, 2, cell=cell, dropout=0.5).double().eval()
    logits, roots = model(batch)
    assert logits.shape == (batch.num_nodes, 2) and torch.equal(roots, batch.roots)
    loss = F.cross_entropy(logits, batch.labels, ignore_index=IGNORE_LABEL)
    loss.backward()
    grads = [_grad(p) for p in model.parameters()]
    model.zero_grad()

    ref = model.naive_forward(trees, WORD_ID)
    torch.testing.assert_close(logits[batch.postorder], ref, atol=1e-6, rtol=0)
    F.cross_entropy(ref, batch.labels[batch.postorder], ignore_index=IGNORE_LABEL).backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, _grad(p), atol=1e-6, rtol=0)
    # a root loss: the root's logits are the last of each tree in post-order
    ends = torch.tensor([sum(1 for _ in _nodes(t)) for t in trees]).cumsum(0) - 1
    torch.testing.assert_close(logits[roots], ref[ends])


def _nodes(tree):
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def test_classifier_training_mode_and_errors():
    trees = [parse_tree("(3 (2 w1) (4 (2 w2) (3 w3)))")]
    batch = batch_trees(trees, WORD_ID)
    model = TreeSentimentClassifier(len(WORDS), I, H, 5, cell="binary", dropout=0.3)
    logits, _ = model(batch)                          # training mode: dropout active, still finite
    assert torch.isfinite(logits).all()
    with pytest.raises(ArgumentError, match="cell must be one of"):
        TreeSentimentClassifier(10, I, H, 5, cell="lstm")
    with pytest.raises(ArgumentError, match="dropout"):
        TreeSentimentClassifier(10, I, H, 5, dropout=1.0)
    small = TreeSentimentClassifier(3, I, H, 5)
    with pytest.raises(ShapeError, match=r"word ids must be in \[0, 3\)"):
        small(batch)


def test_classifier_learns_a_toy_task():
    """Root label = the label of the leftmost word: a few steps of Adam fit it."""
    torch.manual_seed(0)
    rng = random.Random(0)
    trees = []
    for _ in range(16):
        t = random_tree(rng, rng.randint(1, 6), 2)
        first = t
        while first.children:
            first = first.children[0]
        t.label = int(first.word[1:]) % 2
        trees.append(t)
    batch = batch_trees(trees, WORD_ID)
    model = TreeSentimentClassifier(len(WORDS), 8, 8, 2, cell="binary")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        logits, roots = model(batch)
        loss = F.cross_entropy(logits[roots], batch.labels[roots])
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
