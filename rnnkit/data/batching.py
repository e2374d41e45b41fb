"""Batches for language modelling (contiguous streams + truncated BPTT) and for
variable-length sequences (length buckets + padding).

All tensors are batch-first: streams are ``(B, L)``, chunks ``(B, T)``.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from ..errors import DataError


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """Cut a token stream into ``batch_size`` contiguous streams (Zaremba et al. 2014).

    Args:
        ids: LongTensor ``(N,)``.
        batch_size: number of streams ``B``.

    Returns:
        ``(B, N // B)``: row ``b`` is ``ids[b*L:(b+1)*L]`` with ``L = N // B``; the
        last ``N % B`` tokens are dropped so every stream has the same length.
        Hidden state carries across BPTT chunks along each row.

    Raises:
        DataError (a ValueError) if ``N < 2 * B``: each stream needs an input and a target.
    """
    if ids.dim() != 1:
        raise DataError(f"batchify: ids must be 1-D (N,), got shape {tuple(ids.shape)}")
    if batch_size < 1:
        raise DataError(f"batchify: batch_size must be >= 1, got {batch_size}")
    n = ids.numel()
    if n < 2 * batch_size:
        raise DataError(f"batchify: {n} tokens are too few for {batch_size} streams (need >= {2 * batch_size})")
    length = n // batch_size
    return ids[: batch_size * length].reshape(batch_size, length)


def num_bptt_batches(streams: Tensor, bptt: int) -> int:
    """How many chunks :func:`bptt_batches` yields: ``ceil((L - 1) / bptt)``."""
    if bptt < 1:
        raise DataError(f"bptt must be >= 1, got {bptt}")
    length = streams.shape[1]
    return max(0, -(-(length - 1) // bptt))


def bptt_batches(streams: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Walk the streams in chunks of ``bptt`` steps.

    Args:
        streams: ``(B, L)`` from :func:`batchify`.
        bptt: chunk length ``T``.

    Yields:
        ``(x, y)``, both ``(B, T)`` with ``y[:, t] == streams[:, i + t + 1]`` where
        ``x[:, t] == streams[:, i + t]``. The last chunk is shorter when ``L - 1`` is
        not a multiple of ``bptt``. The chunks are views, not copies.
    """
    if streams.dim() != 2:
        raise DataError(f"bptt_batches: streams must be (B, L), got shape {tuple(streams.shape)}")
    n = num_bptt_batches(streams, bptt)
    length = streams.shape[1]
    for k in range(n):
        i = k * bptt
        t = min(bptt, length - 1 - i)
        yield streams[:, i : i + t], streams[:, i + 1 : i + 1 + t]


def shard_streams(streams: Tensor, rank: int, world_size: int) -> Tensor:
    """This rank's contiguous block of ``B // world_size`` streams, ``(B / world_size, L)``.

    Equal shards keep every data-parallel rank on the same number of steps, which
    collective ops require; hence the error rather than a ragged last shard.
    """
    b = streams.shape[0]
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"shard_streams: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if b % world_size:
        raise DataError(f"shard_streams: {b} streams do not split evenly over {world_size} ranks")
    per = b // world_size
    return streams[rank * per : (rank + 1) * per]


def bucket_indices(lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Group sequence indices into batches of similar length.

    Indices are sorted by length (stably) and cut into consecutive batches of
    ``batch_size`` (the last may be smaller), so each batch pads little. With
    ``shuffle``, indices are permuted before the stable sort (equal-length
    sequences land in different batches for different seeds) and the batch
    order is permuted too, both from one ``torch.Generator`` seeded by ``seed``.
    Within a batch, indices are ordered by length descending, as
    ``pack_padded_sequence(enforce_sorted=True)`` wants.
    """
    if batch_size < 1:
        raise DataError(f"bucket_indices: batch_size must be >= 1, got {batch_size}")
    n = len(lengths)
    if shuffle:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=gen).tolist()
    else:
        order = list(range(n))
    order.sort(key=lambda i: lengths[i])  # stable: ties keep the (shuffled) order
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    for b in batches:
        b.sort(key=lambda i: -lengths[i])
    if shuffle:
        perm = torch.randperm(len(batches), generator=gen).tolist()
        batches = [batches[p] for p in perm]
    return batches


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad to the longest: returns ``(padded (B, T_max), lengths (B,))``, both LongTensor."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    t_max = int(lengths.max()) if len(sequences) else 0
    padded = torch.full((len(sequences), t_max), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            padded[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return padded, lengths


def bucket_batches(
    sequences: list[list[int]], batch_size: int, pad_id: int, shuffle: bool, seed: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """Padded batches of similar-length sequences (see :func:`bucket_indices`).

    Yields:
        ``(padded, lengths)``: LongTensor ``(B, T)`` right-padded with ``pad_id``,
        and LongTensor ``(B,)`` of true lengths, descending. Every sequence appears
        in exactly one batch. Use :func:`bucket_indices` directly when labels or
        other per-sequence data must follow the same grouping.

    Raises:
        DataError on an empty sequence: an RNN cannot consume zero steps and
        ``pack_padded_sequence`` rejects length 0.
    """
    for i, s in enumerate(sequences):
        if len(s) == 0:
            raise DataError(f"bucket_batches: sequence {i} is empty")
    for idx in bucket_indices([len(s) for s in sequences], batch_size, shuffle, seed):
        yield pad_batch([sequences[i] for i in idx], pad_id)
