"""Batching: compare against manual reshapes and brute-force bookkeeping."""
from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from rnnkit.data.batching import (batchify, bptt_batches, bucket_batches, bucket_indices,
                                  num_bptt_batches, shard_streams)


def test_batchify_matches_manual_reshape():
    ids = torch.arange(103)
    s = batchify(ids, 4)
    assert s.shape == (4, 25)
    for b in range(4):
        assert s[b].tolist() == list(range(b * 25, (b + 1) * 25))  # contiguous stream per row
    assert torch.equal(s, ids[:100].view(4, 25))


def test_batchify_needs_two_tokens_per_stream():
    assert batchify(torch.arange(8), 4).shape == (4, 2)
    with pytest.raises(ValueError):
        batchify(torch.arange(7), 4)
    with pytest.raises(ValueError):
        batchify(torch.arange(10).view(2, 5), 1)


@pytest.mark.parametrize("length,bptt", [(25, 5), (26, 5), (10, 35), (2, 1), (17, 4)])
def test_bptt_targets_are_shifted_inputs(length, bptt):
    streams = torch.arange(3 * length).view(3, length)
    chunks = list(bptt_batches(streams, bptt))
    assert len(chunks) == num_bptt_batches(streams, bptt) == -(-(length - 1) // bptt)
    i = 0
    for x, y in chunks:
        t = x.shape[1]
        assert x.shape == y.shape == (3, t) and 1 <= t <= bptt
        assert torch.equal(x, streams[:, i : i + t])
        assert torch.equal(y, streams[:, i + 1 : i + 1 + t])
        i += t
    assert i == length - 1  # every (input, target) pair once
    assert all(x.shape[1] == bptt for x, _ in chunks[:-1])


def test_shards_are_equal_and_cover_the_streams():
    streams = torch.arange(8 * 5).view(8, 5)
    shards = [shard_streams(streams, r, 4) for r in range(4)]
    assert all(s.shape == (2, 5) for s in shards)
    assert torch.equal(torch.cat(shards), streams)
    assert torch.equal(shards[1], streams[2:4])
    with pytest.raises(ValueError):
        shard_streams(streams, 0, 3)
    with pytest.raises(ValueError):
        shard_streams(streams, 4, 4)


def _random_sequences(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 50) for _ in range(rng.randint(1, 30))] for _ in range(n)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_bucket_batches_cover_each_sequence_once(shuffle):
    seqs = _random_sequences(103, 0)
    seen: Counter = Counter()
    batches = list(bucket_batches(seqs, 8, pad_id=0, shuffle=shuffle, seed=3))
    assert len(batches) == 13
    for padded, lengths in batches:
        assert padded.dtype == lengths.dtype == torch.long
        assert padded.shape == (len(lengths), int(lengths.max())) and len(lengths) <= 8
        assert lengths.tolist() == sorted(lengths.tolist(), reverse=True)
        for row, n in zip(padded, lengths.tolist()):
            assert (row[n:] == 0).all()
            seen[tuple(row[:n].tolist())] += 1
    assert seen == Counter(tuple(s) for s in seqs)


def test_bucketing_pads_as_little_as_sorted_chunks():
    seqs = _random_sequences(64, 1)
    sizes = sorted(len(s) for s in seqs)
    # Closed form: cells used when sorted lengths are cut into consecutive chunks of 8.
    optimal = sum(max(sizes[i : i + 8]) * len(sizes[i : i + 8]) for i in range(0, 64, 8))
    cells = sum(p.numel() for p, _ in bucket_batches(seqs, 8, 0, shuffle=True, seed=0))
    assert cells == optimal


def test_bucket_shuffle_is_seeded():
    lengths = [len(s) for s in _random_sequences(50, 2)]
    a = bucket_indices(lengths, 4, shuffle=True, seed=7)
    assert a == bucket_indices(lengths, 4, shuffle=True, seed=7)
    assert a != bucket_indices(lengths, 4, shuffle=True, seed=8)
    plain = bucket_indices(lengths, 4, shuffle=False)
    assert [i for b in plain for i in b] != list(range(50))
    flat_lengths = [lengths[b[0]] for b in plain]
    assert flat_lengths == sorted(flat_lengths)  # unshuffled: batches in length order


def test_bucket_rejects_empty_sequence():
    with pytest.raises(ValueError, match="sequence 1"):
        list(bucket_batches([[1], [], [2]], 2, 0, shuffle=False, seed=0))
