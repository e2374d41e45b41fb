"""Hash embeddings: an embedding table for an open vocabulary, with no vocabulary.

A token id ``x`` (any non-negative int64, e.g. :meth:`HashEmbedding.hash_string`
of a word) is sent to ``num_hashes`` rows of a shared ``(num_buckets, dim)``
table by independent universal hashes

    h_i(x) = ((a_i * (x mod P) + b_i) mod P) mod num_buckets,    P = 2**31 - 1,

and its embedding is the sum (or mean) of those rows. With ``weighted=True``
each token also gets learned importance weights ``w(x) in R^num_hashes`` read
from a second table at row ``h_0'(x)`` (one more hash of the same family), and
the embedding is ``sum_i w_i(x) E[h_i(x)]`` -- the hash embeddings of
Svenstrup, Hansson & Winther (NeurIPS 2017). Two tokens that collide in one
hash are still told apart by the others (and by their weights).

The coefficients ``a_i in [1, P)``, ``b_i in [0, P)`` come from BLAKE2b of
``(seed, i)``, not from torch's RNG or Python's ``hash()``, so buckets are the
same on every machine, process and torch version. ``x mod P`` keeps
``a_i * x`` below 2**62, so everything is exact int64 arithmetic; ids congruent
mod P share all their buckets (a 2**-31 chance for hashed strings).
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable, Literal

import torch
from torch import Tensor, nn

PRIME = 2**31 - 1  # Mersenne prime: (a * x) with a, x < P fits in int64
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _coefficient(seed: int, index: int, which: str) -> int:
    digest = hashlib.blake2b(f"rnnkit.hash:{seed}:{index}:{which}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def hash_coefficients(seed: int, count: int) -> list[tuple[int, int]]:
    """``count`` pairs ``(a, b)`` with ``1 <= a < P`` and ``0 <= b < P``, fixed by ``seed``."""
    return [(1 + _coefficient(seed, i, "a") % (PRIME - 1), _coefficient(seed, i, "b") % PRIME)
            for i in range(count)]


class HashEmbedding(nn.Module):
    """Embedding of unbounded integer ids through ``num_hashes`` hashed buckets.

    Args:
        num_buckets: rows of the shared table (``1 <= num_buckets < 2**31 - 1``).
        embedding_dim: size of each embedding vector.
        num_hashes: number of independent hashes ``k`` per token.
        mode: ``"sum"`` or ``"mean"`` of the ``k`` (weighted) bucket vectors.
        weighted: learn per-token importance weights (Svenstrup et al. 2017).
        seed: picks the hash functions; equal seeds give equal buckets everywhere.

    Shapes:
        ``forward(ids (*,)) -> (*, embedding_dim)``; ``buckets(ids (*,)) -> (*, k)``.

    Init: table entries ``N(0, sigma^2)`` with sigma chosen so each output
    coordinate has unit variance (as ``nn.Embedding`` rows do): ``1/sqrt(k)`` for
    sum, ``sqrt(k)`` for mean; importance weights start at 1, so a weighted
    module starts equal to the unweighted one.
    """

    def __init__(self, num_buckets: int, embedding_dim: int, num_hashes: int = 2,
                 mode: Literal["sum", "mean"] = "sum", weighted: bool = False, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(num_buckets, int) or not 1 <= num_buckets < PRIME:
            raise ValueError(f"HashEmbedding: num_buckets must be an int in [1, {PRIME}), got {num_buckets!r}")
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"HashEmbedding: embedding_dim must be a positive int, got {embedding_dim!r}")
        if not isinstance(num_hashes, int) or num_hashes < 1:
            raise ValueError(f"HashEmbedding: num_hashes must be a positive int, got {num_hashes!r}")
        if mode not in ("sum", "mean"):
            raise ValueError(f"HashEmbedding: mode must be 'sum' or 'mean', got {mode!r}")
        self.num_buckets = num_buckets
        self.embedding_dim = embedding_dim
        self.num_hashes = num_hashes
        self.mode = mode
        self.weighted = weighted
        self.seed = seed
        # One extra hash (the last pair) indexes the importance table, so the
        # weights of two tokens sharing their embedding buckets still differ.
        coeffs = hash_coefficients(seed, num_hashes + 1)
        self.register_buffer("hash_a", torch.tensor([a for a, _ in coeffs], dtype=torch.long))
        self.register_buffer("hash_b", torch.tensor([b for _, b in coeffs], dtype=torch.long))
        self.weight = nn.Parameter(torch.empty(num_buckets, embedding_dim))
        self.importance = nn.Parameter(torch.empty(num_buckets, num_hashes)) if weighted else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = self.num_hashes
        std = math.sqrt(k) if self.mode == "mean" else 1.0 / math.sqrt(k)
        with torch.no_grad():
            self.weight.normal_(0.0, std)
            if self.importance is not None:
                self.importance.fill_(1.0)

    def extra_repr(self) -> str:
        return (f"{self.num_buckets}, {self.embedding_dim}, num_hashes={self.num_hashes}, "
                f"mode={self.mode!r}, weighted={self.weighted}, seed={self.seed}")

    # -- hashing ------------------------------------------------------------
    @staticmethod
    def hash_string(token: str) -> int:
        """A stable non-negative 63-bit id for a string (BLAKE2b of its UTF-8), same in every process."""
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    @staticmethod
    def hash_strings(tokens: Iterable[str]) -> Tensor:
        """:meth:`hash_string` of each token as a LongTensor ``(N,)``."""
        return torch.tensor([HashEmbedding.hash_string(t) for t in tokens], dtype=torch.long)

    def _check_ids(self, ids: Tensor) -> Tensor:
        if not isinstance(ids, Tensor):
            raise ValueError(f"HashEmbedding: ids must be a tensor, got {type(ids).__name__}")
        if ids.dtype not in _INT_DTYPES:
            raise ValueError(f"HashEmbedding: ids must have an integer dtype, got {ids.dtype}")
        # The check syncs with the device; skip it while compiling, where it would break the graph.
        if not torch.compiler.is_compiling() and ids.numel() and bool((ids < 0).any()):
            raise ValueError("HashEmbedding: ids must be non-negative")
        return ids.long()

    def _hash(self, ids: Tensor, a: Tensor, b: Tensor) -> Tensor:
        x = torch.remainder(ids, PRIME).unsqueeze(-1)  # (*, 1), < 2**31
        return torch.remainder(torch.remainder(a * x + b, PRIME), self.num_buckets)

    def buckets(self, ids: Tensor) -> Tensor:
        """Bucket rows of each id: LongTensor ``(*, num_hashes)``, values in ``[0, num_buckets)``."""
        k = self.num_hashes
        return self._hash(self._check_ids(ids), self.hash_a[:k], self.hash_b[:k])

    def importance_bucket(self, ids: Tensor) -> Tensor:
        """Row of the importance table for each id: LongTensor ``(*,)``."""
        k = self.num_hashes
        return self._hash(self._check_ids(ids), self.hash_a[k:], self.hash_b[k:]).squeeze(-1)

    # -- forward ------------------------------------------------------------
    def forward(self, ids: Tensor) -> Tensor:
        """``(*,)`` integer ids -> ``(*, embedding_dim)`` embeddings."""
        ids = self._check_ids(ids)
        k = self.num_hashes
        idx = self._hash(ids, self.hash_a[:k], self.hash_b[:k])   # (*, k)
        vecs = nn.functional.embedding(idx, self.weight)          # (*, k, D)
        if self.importance is not None:
            row = self._hash(ids, self.hash_a[k:], self.hash_b[k:]).squeeze(-1)  # (*,)
            w = nn.functional.embedding(row, self.importance)     # (*, k)
            out = torch.einsum("...k,...kd->...d", w, vecs)
        else:
            out = vecs.sum(dim=-2)
        return out / self.num_hashes if self.mode == "mean" else out
