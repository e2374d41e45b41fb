"""Tree-structured recursive models (Tai, Socher & Manning 2015; Socher et al. 2011/2013),
evaluated level by level over a :class:`~rnnkit.data.trees.TreeBatch`.

A node ``j`` with children ``C(j)`` gets an input ``x_j`` (the word embedding at a leaf;
0 at an internal node of a constituency tree) and the children's states, and computes
its own state. Batched evaluation: all leaves of all trees at once, then each height
``k = 1 .. depth-1`` as one step: the children's states are gathered with the level's
index tensor ``(n_k, A_k)`` (missing children, ids -1, read a zero state) and the
level's states computed with a few batched matrix products. A batch therefore costs
``O(depth)`` tensor steps, not one Python call per node. :func:`naive_forward` is the
reference recursion, one node at a time, written independently of the batched path.

Shapes: ``I`` input (embedding) size, ``H`` hidden size, ``N`` nodes of the batch,
``n_0`` its leaves.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.trees import Tree, TreeBatch, leaves
from ..errors import ArgumentError, ShapeError
from ..options import option, require

State = tuple[Tensor, ...]


class TreeCell(nn.Module):
    """Base of the tree cells: the level-batched :meth:`forward` and the per-node :meth:`node`.

    A subclass sets ``max_arity`` (None: any number of children) and implements
    :meth:`leaf` and :meth:`compose` (batched: many nodes at once) and :meth:`node` (one
    node, for the reference). A state is a tuple whose first entry is ``h``: ``(h, c)``
    for the LSTMs, ``(h,)`` for the recursive NN.
    """

    max_arity: int | None = None

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ArgumentError(f"{type(self).__name__}: input_size and hidden_size must be >= 1, "
                                f"got {input_size} and {hidden_size}")
        self.input_size, self.hidden_size = input_size, hidden_size

    def _init(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def leaf(self, x: Tensor) -> State:
        """States of leaves from their inputs ``x`` ``(n, I)``: each ``(n, H)``."""
        raise NotImplementedError

    def compose(self, *children: Tensor) -> State:
        """States of ``n`` internal nodes (input 0) from their children's states, each
        ``(n, A, H)`` (zero rows for missing children): each ``(n, H)``."""
        raise NotImplementedError

    def node(self, x: Tensor | None, children: Sequence[State]) -> State:
        """One node: input ``x`` ``(I,)`` or None (= 0), children's states ``(H,)`` each."""
        raise NotImplementedError

    def check_batch(self, batch: TreeBatch) -> None:
        if self.max_arity is not None and batch.max_arity > self.max_arity:
            raise ShapeError(f"{type(self).__name__} takes nodes of at most {self.max_arity} children, "
                             f"the batch has a node with {batch.max_arity}; use ChildSumTreeLSTM for any arity")

    def forward(self, batch: TreeBatch, leaf_inputs: Tensor) -> Tensor:
        """Hidden states of every node, ``(N, H)`` in the batch's node order, from the
        leaves' inputs ``leaf_inputs`` ``(n_0, I)`` (level-0 order: tree by tree, left to right)."""
        self.check_batch(batch)
        if leaf_inputs.dim() != 2 or leaf_inputs.shape != (batch.num_leaves, self.input_size):
            raise ShapeError(f"{type(self).__name__}: leaf_inputs must be ({batch.num_leaves}, {self.input_size}), "
                             f"got {tuple(leaf_inputs.shape)}")
        zero = leaf_inputs.new_zeros(1, self.hidden_size)
        # every state so far, behind a zero row at index 0 (what a missing child, id -1, reads)
        done = [torch.cat([zero, s]) for s in self.leaf(leaf_inputs)]
        for children in batch.children[1:]:
            index = children + 1                              # (n_k, A_k)
            new = self.compose(*(s[index] for s in done))     # gathers: (n_k, A_k, H) each
            done = [torch.cat([s, t]) for s, t in zip(done, new)]
        return done[0][1:]


def naive_forward(cell: TreeCell, trees: Sequence[Tree], leaf_inputs: Tensor) -> Tensor:
    """Reference: the hidden states of every node, one node at a time by recursion.

    ``leaf_inputs`` ``(n_0, I)``: the leaves' inputs, tree by tree, left to right (as in
    a :class:`TreeBatch`). Returns ``(N, H)`` in *post-order*, tree after tree, so
    ``cell(batch, x)[batch.postorder]`` is the same tensor.
    """
    rows: list[Tensor] = []
    position = 0

    def visit(node: Tree) -> State:
        nonlocal position
        if node.is_leaf:
            state = cell.node(leaf_inputs[position], [])
            position += 1
        else:
            state = cell.node(None, [visit(child) for child in node.children])
        rows.append(state[0])
        return state

    for tree in trees:
        if cell.max_arity is not None and _arity(tree) > cell.max_arity:
            raise ShapeError(f"{type(cell).__name__} takes nodes of at most {cell.max_arity} children")
        visit(tree)
    if position != len(leaf_inputs):
        raise ShapeError(f"naive_forward: {len(leaf_inputs)} leaf inputs for {position} leaves")
    return torch.stack(rows)


def _arity(tree: Tree) -> int:
    best, stack = 0, [tree]
    while stack:
        node = stack.pop()
        best = max(best, len(node.children))
        stack.extend(node.children)
    return best


class ChildSumTreeLSTM(TreeCell):
    r"""Child-Sum Tree-LSTM (Tai et al. 2015, eqs. 2-8), any number of children:

    .. math::
        \tilde h_j = \textstyle\sum_{k \in C(j)} h_k \\
        i_j = \sigma(W^{(i)} x_j + U^{(i)} \tilde h_j + b^{(i)}), \quad
        o_j = \sigma(W^{(o)} x_j + U^{(o)} \tilde h_j + b^{(o)}), \quad
        u_j = \tanh(W^{(u)} x_j + U^{(u)} \tilde h_j + b^{(u)}) \\
        f_{jk} = \sigma(W^{(f)} x_j + U^{(f)} h_k + b^{(f)}) \quad \text{(one forget gate per child)} \\
        c_j = i_j \odot u_j + \textstyle\sum_{k} f_{jk} \odot c_k, \qquad h_j = o_j \odot \tanh(c_j)

    Parameters: ``W_iou`` ``(3H, I)``, ``U_iou`` ``(3H, H)``, ``b_iou`` ``(3H)``,
    ``W_f`` ``(H, I)``, ``U_f`` ``(H, H)``, ``b_f`` ``(H)``. ``W_f`` only acts at nodes
    that have both an input and children, which constituency trees do not have; it is
    kept so the cell is the paper's (and unused parameters get zero gradients).
    """


    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        H, I = hidden_size, input_size
        self.W_iou = nn.Parameter(torch.empty(3 * H, I))
        self.U_iou = nn.Parameter(torch.empty(3 * H, H))
        self.b_iou = nn.Parameter(torch.empty(3 * H))
        self.W_f = nn.Parameter(torch.empty(H, I))
        self.U_f = nn.Parameter(torch.empty(H, H))
        self.b_f = nn.Parameter(torch.empty(H))
        self._init()

    @staticmethod
    def _cell(iou: Tensor, fc: Tensor | None) -> State:
        i, o, u = iou.chunk(3, dim=-1)
        c = torch.sigmoid(i) * torch.tanh(u)
        if fc is not None:
            c = c + fc
        return torch.sigmoid(o) * torch.tanh(c), c

    def leaf(self, x: Tensor) -> State:
        return self._cell(F.linear(x, self.W_iou, self.b_iou), None)

    def compose(self, h: Tensor, c: Tensor) -> State:
        iou = F.linear(h.sum(1), self.U_iou, self.b_iou)             # (n, 3H)
        f = torch.sigmoid(F.linear(h, self.U_f, self.b_f))            # (n, A, H): a gate per child
        return self._cell(iou, (f * c).sum(1))                        # padded children: c = 0

    def node(self, x: Tensor | None, children: Sequence[State]) -> State:
        iou = self.b_iou
        wf = self.b_f
        if x is not None:
            iou = iou + self.W_iou @ x
            wf = wf + self.W_f @ x
        if not children:
            return self._cell(iou, None)
        h_sum = children[0][0]
        for h_k, _ in children[1:]:
            h_sum = h_sum + h_k
        iou = iou + self.U_iou @ h_sum
        fc = None
        for h_k, c_k in children:
            term = torch.sigmoid(wf + self.U_f @ h_k) * c_k
            fc = term if fc is None else fc + term
        return self._cell(iou, fc)


class BinaryTreeLSTM(TreeCell):
    r"""Binary (N-ary, N = 2) Tree-LSTM (Tai et al. 2015, eqs. 9-14): separate weights
    for the left and the right child, a forget gate per child position:

    .. math::
        g_j = W^{(g)} x_j + U^{(g)}_L h_{jL} + U^{(g)}_R h_{jR} + b^{(g)}, \quad g \in \{i, o, u\} \\
        f_{jk} = \sigma(W^{(f)} x_j + U^{(f)}_{kL} h_{jL} + U^{(f)}_{kR} h_{jR} + b^{(f)}), \quad k \in \{L, R\} \\
        c_j = \sigma(i_j) \odot \tanh(u_j) + f_{jL} \odot c_{jL} + f_{jR} \odot c_{jR}, \qquad
        h_j = \sigma(o_j) \odot \tanh(c_j)

    Parameters: ``W_iou`` ``(3H, I)``, ``b_iou`` ``(3H)``, ``U`` ``(5H, 2H)`` acting on
    ``[h_L; h_R]`` (rows: i, o, u, f_L, f_R), ``b_f`` ``(H)`` (shared by both forget
    gates, as in the paper). Internal nodes have no input, so ``W^{(f)}`` is left out. A
    node with one child is composed with a zero right child.
    """

    max_arity = 2

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        H, I = hidden_size, input_size
        self.W_iou = nn.Parameter(torch.empty(3 * H, I))
        self.b_iou = nn.Parameter(torch.empty(3 * H))
        self.U = nn.Parameter(torch.empty(5 * H, 2 * H))
        self.b_f = nn.Parameter(torch.empty(H))
        self._init()

    def leaf(self, x: Tensor) -> State:
        i, o, u = F.linear(x, self.W_iou, self.b_iou).chunk(3, dim=-1)
        c = torch.sigmoid(i) * torch.tanh(u)
        return torch.sigmoid(o) * torch.tanh(c), c

    def compose(self, h: Tensor, c: Tensor) -> State:
        n, A, H = h.shape
        if A < 2:  # a level of unary nodes only: the right child is missing everywhere
            h, c = F.pad(h, (0, 0, 0, 2 - A)), F.pad(c, (0, 0, 0, 2 - A))
        z = F.linear(h.reshape(n, 2 * H), self.U)                                 # (n, 5H)
        iou = z[:, :3 * H] + self.b_iou
        f = torch.sigmoid(z[:, 3 * H:].view(n, 2, H) + self.b_f)                  # (n, 2, H)
        i, o, u = iou.chunk(3, dim=-1)
        c_new = torch.sigmoid(i) * torch.tanh(u) + (f * c).sum(1)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    def node(self, x: Tensor | None, children: Sequence[State]) -> State:
        H = self.hidden_size
        iou = self.b_iou
        if x is not None:
            iou = iou + self.W_iou @ x
        c = None
        if children:                       # [h_L; h_R] (a zero right child for a unary node)
            h = [h_k for h_k, _ in children] + [iou.new_zeros(H)] * (2 - len(children))
            z = self.U @ torch.cat(h)                                      # (5H): i, o, u, f_L, f_R
            iou = iou + z[:3 * H]
            for k, (_, c_k) in enumerate(children):
                term = torch.sigmoid(z[(3 + k) * H:(4 + k) * H] + self.b_f) * c_k
                c = term if c is None else c + term
        i, o, u = iou.chunk(3)
        c = torch.sigmoid(i) * torch.tanh(u) + (0 if c is None else c)
        return torch.sigmoid(o) * torch.tanh(c), c


class RecursiveNN(TreeCell):
    r"""Plain recursive neural network (Socher et al. 2011), the baseline composition:

    .. math::
        h_j = \tanh(W [h_{jL}; h_{jR}] + b) \quad \text{(internal node)}, \qquad
        h_j = \tanh(W_x x_j + b) \quad \text{(leaf)}

    Parameters: ``W`` ``(H, 2H)``, ``W_x`` ``(H, I)`` (projects the embedding to the
    hidden size), ``b`` ``(H)``. A node with one child gets a zero right child.
    """

    max_arity = 2

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.W_x = nn.Parameter(torch.empty(hidden_size, input_size))
        self.W = nn.Parameter(torch.empty(hidden_size, 2 * hidden_size))
        self.b = nn.Parameter(torch.empty(hidden_size))
        self._init()

    def leaf(self, x: Tensor) -> State:
        return (torch.tanh(F.linear(x, self.W_x, self.b)),)

    def compose(self, h: Tensor) -> State:
        n, A, H = h.shape
        if A < 2:
            h = F.pad(h, (0, 0, 0, 2 - A))
        return (torch.tanh(F.linear(h.reshape(n, 2 * H), self.W, self.b)),)

    def node(self, x: Tensor | None, children: Sequence[State]) -> State:
        z = self.b
        if x is not None:
            z = z + self.W_x @ x
        if children:                       # [h_L; h_R] (a zero right child for a unary node)
            h = [h_k for (h_k,) in children] + [z.new_zeros(self.hidden_size)] * (2 - len(children))
            z = z + self.W @ torch.cat(h)
        return (torch.tanh(z),)


CELL_TYPES: dict[str, type[TreeCell]] = {"binary": BinaryTreeLSTM, "childsum": ChildSumTreeLSTM,
                                          "recursive": RecursiveNN}


@dataclass(frozen=True)
class TreeClassifierConfig:
    """Architecture of a :class:`TreeSentimentClassifier`; sizes of vocabulary and labels from the data."""

    vocab_size: int
    num_classes: int
    cell: str = option("binary", "tree cell: binary (N-ary Tree-LSTM, N=2), childsum, recursive (Socher RNN)")
    embedding_dim: int = option(100, "word embedding size (at the leaves)")
    hidden_size: int = option(150, "tree state size (150 in Tai et al. 2015)")
    dropout: float = option(0.5, "dropout on the embeddings and before the softmax")

    def __post_init__(self) -> None:
        require([(self.cell in CELL_TYPES, f"cell must be one of {sorted(CELL_TYPES)}, got {self.cell!r}"),
                 (min(self.vocab_size, self.num_classes, self.embedding_dim, self.hidden_size) >= 1,
                  "vocab_size, num_classes, embedding_dim and hidden_size must be >= 1"),
                 (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")], "model config:")

    def to_dict(self) -> dict:
        return asdict(self)


class TreeSentimentClassifier(nn.Module):
    """Word embeddings at the leaves, a tree cell, a linear softmax head at every node.

    ``forward(batch) -> (logits (N, C), roots (B,))``: logits of every node in the
    batch's node order (so a loss at the roots, ``logits[roots]``, or at every node
    against ``batch.labels``), and the id of each tree's root. Dropout (rate
    ``dropout``) acts on the embeddings and on the states before the head.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_classes: int,
                 cell: str = "binary", dropout: float = 0.0) -> None:
        super().__init__()
        if cell not in CELL_TYPES:
            raise ArgumentError(f"TreeSentimentClassifier: cell must be one of {sorted(CELL_TYPES)}, got {cell!r}")
        if min(vocab_size, embedding_dim, hidden_size, num_classes) < 1:
            raise ArgumentError("TreeSentimentClassifier: vocab_size, embedding_dim, hidden_size and num_classes "
                                f"must be >= 1, got {vocab_size}, {embedding_dim}, {hidden_size}, {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ArgumentError(f"TreeSentimentClassifier: dropout must be in [0, 1), got {dropout}")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.cell = CELL_TYPES[cell](embedding_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    @classmethod
    def from_config(cls, config: TreeClassifierConfig) -> "TreeSentimentClassifier":
        model = cls(config.vocab_size, config.embedding_dim, config.hidden_size, config.num_classes,
                    cell=config.cell, dropout=config.dropout)
        model.config = config
        return model

    def _embed(self, word_ids: Tensor) -> Tensor:
        if word_ids.numel() and (int(word_ids.min()) < 0 or int(word_ids.max()) >= self.vocab_size):
            raise ShapeError(f"TreeSentimentClassifier: word ids must be in [0, {self.vocab_size}), "
                             f"got {int(word_ids.min())}..{int(word_ids.max())}")
        return self.dropout(self.embedding(word_ids))

    def forward(self, batch: TreeBatch) -> tuple[Tensor, Tensor]:
        h = self.cell(batch, self._embed(batch.word_ids))
        return self.head(self.dropout(h)), batch.roots

    def naive_forward(self, trees: Sequence[Tree], word_to_id: Callable[[str], int]) -> Tensor:
        """Reference: logits ``(N, C)`` of every node in *post-order*, the cell run one node
        at a time by recursion (embedding and head batched); equals
        ``self(batch)[0][batch.postorder]`` when dropout is off."""
        device = self.embedding.weight.device
        ids = torch.tensor([word_to_id(w) for tree in trees for w in leaves(tree)], dtype=torch.long, device=device)
        h = naive_forward(self.cell, trees, self._embed(ids))
        return self.head(self.dropout(h))
