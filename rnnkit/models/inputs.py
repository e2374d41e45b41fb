"""How token ids become input vectors: one choice for every model that reads symbols."""
from __future__ import annotations

import torch
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


def stack_frames(x: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(B, T, I) -> (B, ceil(T / k), k * I)``: ``k`` consecutive frames become one step (fewer
    recurrent steps, same information); each row's last group is zero-padded, lengths ``ceil(n / k)``."""
    if k == 1:
        return x, lengths
    b, t, i = x.shape
    # zero the padded frames: a row's last group may take some, and they must not leak into it
    real = torch.arange(t, device=x.device).unsqueeze(0) < lengths.to(x.device).unsqueeze(1)
    x = F.pad(x * real.unsqueeze(-1), (0, 0, 0, (-t) % k))
    return x.reshape(b, -1, k * i), (lengths + k - 1) // k
