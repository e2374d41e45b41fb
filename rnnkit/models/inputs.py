"""How token ids become input vectors: one choice for every model that reads symbols."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.hashing import HashEmbedding

#: learned embeddings, the hashing trick (Weinberger et al. 2009; shared buckets), or
#: one-hot vectors (nothing learned: symbols such as DNA bases or copy-task ids).
TOKEN_INPUTS = ("embedding", "hashing", "onehot")


class TokenEncoder(nn.Module):
    """``ids (B, T) -> vectors (B, T, size)``."""

    def __init__(self, kind: str, vocab_size: int, embedding_dim: int, hash_buckets: int = 0,
                 num_hashes: int = 2) -> None:
        super().__init__()
        if kind not in TOKEN_INPUTS:
            raise ValueError(f"input must be one of {TOKEN_INPUTS}, got {kind!r}")
        self.kind, self.vocab_size = kind, vocab_size
        self.encoder: nn.Module | None = None
        if kind == "embedding":
            self.encoder = nn.Embedding(vocab_size, embedding_dim)
        elif kind == "hashing":
            self.encoder = HashEmbedding(hash_buckets or max(2, vocab_size // 2), embedding_dim, num_hashes=num_hashes)
        self.size = vocab_size if kind == "onehot" else embedding_dim

    def forward(self, ids: Tensor) -> Tensor:
        if self.encoder is None:
            return F.one_hot(ids, self.vocab_size).float()
        return self.encoder(ids)
