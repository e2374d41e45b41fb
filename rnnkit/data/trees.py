"""PTB-bracketed sentiment trees (the Stanford Sentiment Treebank format) and their
level-batched packing for tree-structured models (:mod:`rnnkit.models.tree_lstm`).

One tree per line, a label on every node, a word on every leaf::

    (3 (2 It) (4 (2 (2 's) (2 a)) (3 lovely)))

Labels are non-negative integers (SST: 0-4, very negative .. very positive). Escaped
tokens such as ``-LRB-``/``-RRB-`` are ordinary words. The reader accepts any arity
(unary chains, n-ary nodes); SST itself is binary-branching.

:func:`batch_trees` packs a list of trees into a :class:`TreeBatch`: nodes of all the
trees grouped by *height* (leaves 0, a parent one above its highest child), so a model
evaluates a batch in ``O(depth)`` batched tensor steps instead of one call per node.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..errors import DataError
from .text import read_text_file

#: label given to nodes whose label the ``label_map`` drops (``F.cross_entropy``'s default ignore_index)
IGNORE_LABEL = -100
# Tokens are separated by ASCII whitespace only: SST has words holding a no-break space
# (U+00A0, "8\u00a01/2"), which Unicode-aware \s would split into two words.
_TOKEN = re.compile(r"\(|\)|[^ \t\n\r\f\v()]+")
_LABEL = re.compile(r"[0-9]+")
_EXAMPLE = "(3 (2 It) (4 works))"


@dataclass
class Tree:
    """A node: its ``label``, its ``children`` (empty for a leaf) and, for a leaf, its ``word``."""

    label: int
    children: list[Tree] = field(default_factory=list)
    word: str | None = None

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def __str__(self) -> str:
        """The PTB bracketing, as read: ``(label word)`` or ``(label child child ...)``."""
        if self.is_leaf:
            return f"({self.label} {self.word})"
        return f"({self.label} " + " ".join(str(c) for c in self.children) + ")"


def parse_tree(text: str, source: str = "<string>", line: int = 1) -> Tree:
    """The tree a PTB bracketing describes.

    Raises DataError, naming ``source:line`` and the column, for an empty text,
    unbalanced brackets, a missing or non-integer label, an empty node ``(2)``, a leaf
    with two words, a node mixing a word and subtrees, or text after the tree.
    """
    def fail(msg: str) -> DataError:
        return DataError(f"{source}:{line}: {msg}")

    tokens = [(m.group(), m.start() + 1) for m in _TOKEN.finditer(text)]
    if not tokens:
        raise fail(f"empty line; expected a bracketed tree such as {_EXAMPLE}")
    if tokens[0][0] != "(":
        raise fail(f"expected '(' at column {tokens[0][1]}, got {tokens[0][0]!r}")
    stack: list[Tree] = []
    root: Tree | None = None
    i = 0
    while i < len(tokens):
        tok, col = tokens[i]
        if root is not None:
            if tok == ")":
                raise fail(f"unbalanced brackets: ')' at column {col} closes nothing")
            raise fail(f"trailing text after the tree at column {col}: {tok!r}")
        if tok == "(":
            if i + 1 == len(tokens) or tokens[i + 1][0] in "()":
                raise fail(f"'(' at column {col} is not followed by a label")
            label, label_col = tokens[i + 1]
            if not _LABEL.fullmatch(label):
                raise fail(f"label {label!r} at column {label_col} is not a non-negative integer")
            node = Tree(int(label))
            if stack:
                if stack[-1].word is not None:
                    raise fail(f"subtree at column {col} follows the word {stack[-1].word!r} in the same node")
                stack[-1].children.append(node)
            stack.append(node)
            i += 2
        elif tok == ")":
            node = stack.pop()  # never empty: the first token is '(' and a ')' after the root fails above
            if node.word is None and not node.children:
                raise fail(f"empty node ({node.label}) closed at column {col}; a node needs a word or subtrees")
            if not stack:
                root = node
            i += 1
        else:  # a word: stack is non-empty here (the first token is '(' and text after the root fails above)
            node = stack[-1]
            if node.children:
                raise fail(f"word {tok!r} at column {col} follows subtrees in the same node")
            if node.word is not None:
                raise fail(f"second word {tok!r} at column {col} in the leaf ({node.label} {node.word} ...); "
                           "a leaf holds one word")
            node.word = tok
            i += 1
    if stack:
        raise fail(f"unbalanced brackets: {len(stack)} '(' not closed at the end of the line")
    assert root is not None
    return root


def read_trees(path: str | os.PathLike[str]) -> list[Tree]:
    """Every tree of a file, one per line (UTF-8). Blank lines at the end of the file
    are ignored; anywhere else a blank line is an error. DataError naming the file and
    line for a malformed tree, or when the file is missing, not text or has no trees."""
    lines = read_text_file(path).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: no trees (the file is empty); expected one bracketed tree per line")
    return [parse_tree(text, str(path), n) for n, text in enumerate(lines, start=1)]


def leaves(tree: Tree) -> list[str]:
    """The words of the leaves, left to right (the sentence)."""
    out: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.is_leaf:
            out.append(node.word if node.word is not None else "")
        else:
            stack.extend(reversed(node.children))
    return out


def sst2_label(label: int) -> int | None:
    """SST-5 label to the binary task: 0, 1 (negative) -> 0; 3, 4 (positive) -> 1;
    2 (neutral) -> None, dropped as is standard for SST-2. DataError outside 0-4."""
    if label in (0, 1):
        return 0
    if label in (3, 4):
        return 1
    if label == 2:
        return None
    raise DataError(f"SST labels are 0-4, got {label!r}")


def postorder(tree: Tree) -> list[tuple[Tree, list[int]]]:
    """The nodes of ``tree`` in post-order (children left to right, then the parent),
    each with the post-order positions of its children. Iterative: any depth."""
    out: list[tuple[Tree, list[int]]] = []
    stack: list[tuple[Tree, list[int]]] = [(tree, [])]
    while stack:
        node, done = stack[-1]
        if len(done) < len(node.children):
            stack.append((node.children[len(done)], []))
        else:
            stack.pop()
            out.append((node, done))
            if stack:
                stack[-1][1].append(len(out) - 1)
    return out


@dataclass
class TreeBatch:
    """Trees packed level by level; ``N`` nodes in all, numbered level after level.

    Level ``k`` holds the nodes of height ``k`` of every tree: ids
    ``offsets[k] <= id < offsets[k + 1]``, within a level by tree, then post-order. So
    level 0 is every leaf, tree by tree, left to right, and a node's children always
    have smaller ids than the node (they sit on lower levels).

    Fields (all tensors on one device, ids are ``int64``):

    * ``offsets``: ``depth + 1`` ints, ``offsets[-1] == N``;
    * ``children[k]``: ``(n_k, A_k)`` ids of the children of level ``k``'s nodes, in
      order, padded with -1 up to the level's largest arity ``A_k`` (``children[0]`` is
      ``(n_0, 0)``);
    * ``word_ids``: ``(n_0,)`` the leaves' word ids;
    * ``labels``: ``(N,)`` every node's label (after ``label_map``; :data:`IGNORE_LABEL`
      where it returned None);
    * ``roots``: ``(B,)`` the id of each tree's root; ``tree_index``: ``(N,)`` the tree of each node;
    * ``postorder``: ``(N,)`` the ids of the nodes in post-order, tree after tree:
      ``states[batch.postorder]`` lists a per-node result the way a recursion visits it.
    """

    offsets: list[int]
    children: list[Tensor]
    word_ids: Tensor
    labels: Tensor
    roots: Tensor
    tree_index: Tensor
    postorder: Tensor

    @property
    def num_nodes(self) -> int:
        return self.offsets[-1]

    @property
    def num_leaves(self) -> int:
        return self.offsets[1]

    @property
    def num_trees(self) -> int:
        return len(self.roots)

    @property
    def depth(self) -> int:
        """Number of levels (1 for a batch of single-leaf trees)."""
        return len(self.offsets) - 1

    @property
    def max_arity(self) -> int:
        return max((c.shape[1] for c in self.children), default=0)

    def to(self, device: torch.device | str) -> TreeBatch:
        return TreeBatch(list(self.offsets), [c.to(device) for c in self.children], self.word_ids.to(device),
                         self.labels.to(device), self.roots.to(device), self.tree_index.to(device),
                         self.postorder.to(device))


def batch_trees(trees: Sequence[Tree], word_to_id: Callable[[str], int],
                label_map: Callable[[int], int | None] | None = None) -> TreeBatch:
    """Pack ``trees`` into a :class:`TreeBatch` (plain Python, once per batch).

    ``word_to_id`` maps a leaf's word to its embedding row (e.g.
    ``lambda w: vocab.encode([w])[0]``); ``label_map`` maps each node's label, e.g.
    :func:`sst2_label` (None: the node gets :data:`IGNORE_LABEL`). DataError for no
    trees, a leaf without a word, or a node with both a word and children.
    """
    if len(trees) == 0:
        raise DataError("batch_trees: no trees to batch")
    flat = []                                   # per tree: its post-order nodes
    levels: list[list[tuple[int, int]]] = []    # per height: (tree, post-order position)
    heights: list[list[int]] = []
    for t, tree in enumerate(trees):
        nodes = postorder(tree)
        hs: list[int] = []
        for p, (node, kids) in enumerate(nodes):
            if node.is_leaf and node.word is None:
                raise DataError(f"batch_trees: tree {t} has a leaf without a word (label {node.label})")
            if not node.is_leaf and node.word is not None:
                raise DataError(f"batch_trees: tree {t} has a node with both the word {node.word!r} and children")
            h = 1 + max(hs[k] for k in kids) if kids else 0
            hs.append(h)
            if h == len(levels):
                levels.append([])
            levels[h].append((t, p))
        flat.append(nodes)
        heights.append(hs)
    offsets = [0]
    for level in levels:
        offsets.append(offsets[-1] + len(level))
    ids = [[0] * len(nodes) for nodes in flat]  # (tree, post-order position) -> batch id
    for h, level in enumerate(levels):
        for j, (t, p) in enumerate(level):
            ids[t][p] = offsets[h] + j
    children, labels, tree_index = [], [], []
    for level in levels:
        arity = max(len(flat[t][p][1]) for t, p in level)
        children.append(torch.tensor([[ids[t][k] for k in flat[t][p][1]] + [-1] * (arity - len(flat[t][p][1]))
                                      for t, p in level], dtype=torch.long).view(len(level), arity))
        for t, p in level:
            label = flat[t][p][0].label
            mapped = label if label_map is None else label_map(label)
            labels.append(IGNORE_LABEL if mapped is None else mapped)
            tree_index.append(t)
    word_ids = torch.tensor([word_to_id(flat[t][p][0].word) for t, p in levels[0]], dtype=torch.long)
    return TreeBatch(offsets=offsets, children=children, word_ids=word_ids,
                     labels=torch.tensor(labels, dtype=torch.long),
                     roots=torch.tensor([row[-1] for row in ids], dtype=torch.long),
                     tree_index=torch.tensor(tree_index, dtype=torch.long),
                     postorder=torch.tensor([i for row in ids for i in row], dtype=torch.long))
