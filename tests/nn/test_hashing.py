"""HashEmbedding: buckets follow the documented formula exactly; gradients stay in them."""
from __future__ import annotations

import hashlib
import itertools

import pytest
import torch

from rnnkit.nn.hashing import PRIME, HashEmbedding

P = 2**31 - 1


def _coeffs(seed: int, count: int) -> list[tuple[int, int]]:
    """Independent re-derivation of the documented coefficients (BLAKE2b of seed and index)."""
    def h(i: int, which: str) -> int:
        d = hashlib.blake2b(f"rnnkit.hash:{seed}:{i}:{which}".encode(), digest_size=8).digest()
        return int.from_bytes(d, "little")
    return [(1 + h(i, "a") % (P - 1), h(i, "b") % P) for i in range(count)]


def _brute_buckets(x: int, num_buckets: int, coeffs) -> list[int]:
    return [((a * (x % P) + b) % P) % num_buckets for a, b in coeffs]


def test_prime():
    assert PRIME == P


def test_same_seed_same_buckets_different_seed_differs():
    ids = torch.arange(1000)
    a, b = HashEmbedding(97, 4, num_hashes=3, seed=5), HashEmbedding(97, 4, num_hashes=3, seed=5)
    assert torch.equal(a.buckets(ids), b.buckets(ids))
    c = HashEmbedding(97, 4, num_hashes=3, seed=6)
    assert (a.buckets(ids) != c.buckets(ids)).float().mean() > 0.5


def test_golden_buckets():
    # Pinned so a change of formula or coefficients (which would silently remap every
    # trained checkpoint) fails loudly.
    m = HashEmbedding(10, 4)
    assert m.buckets(torch.tensor([0, 1, 2, 12345])).tolist() == [[6, 8], [3, 6], [0, 4], [4, 3]]


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_buckets_match_brute_force_and_collide_as_predicted(seed):
    m = HashEmbedding(2, 3, num_hashes=2, seed=seed)
    ids = list(range(100))
    got = m.buckets(torch.tensor(ids)).tolist()
    want = [_brute_buckets(x, 2, _coeffs(seed, 2)) for x in ids]
    assert got == want
    collide = lambda u, v: [p == q for p, q in zip(u, v)]  # noqa: E731
    pairs = list(itertools.combinations(range(100), 2))
    assert [collide(got[i], got[j]) for i, j in pairs] == [collide(want[i], want[j]) for i, j in pairs]
    assert any(all(collide(got[i], got[j])) for i, j in pairs)  # 2 buckets: collisions must happen


def test_large_ids_are_exact():
    ids = [P - 1, P, P + 1, 2**40 + 7, 2**62, 2**63 - 1]
    m = HashEmbedding(1009, 2, num_hashes=4, seed=9)
    assert m.buckets(torch.tensor(ids)).tolist() == [_brute_buckets(x, 1009, _coeffs(9, 4)) for x in ids]


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_shapes(shape):
    m = HashEmbedding(50, 6, num_hashes=3)
    ids = torch.randint(0, 10**9, shape)
    assert m(ids).shape == (*shape, 6)
    assert m.buckets(ids).shape == (*shape, 3)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_forward_is_sum_or_mean_of_bucket_rows(mode):
    m = HashEmbedding(31, 5, num_hashes=3, mode=mode, seed=2)
    ids = torch.tensor([[0, 7], [10**12, 42]])
    out = m(ids)
    for idx in itertools.product(range(2), range(2)):
        rows = [m.weight[r] for r in _brute_buckets(int(ids[idx]), 31, _coeffs(2, 3))]
        want = sum(rows) / (3 if mode == "mean" else 1)
        torch.testing.assert_close(out[idx], want)


def test_weighted_uses_importance_weights():
    m = HashEmbedding(31, 5, num_hashes=2, weighted=True, seed=4)
    ids = torch.tensor([3, 99])
    plain = HashEmbedding(31, 5, num_hashes=2, seed=4)
    with torch.no_grad():
        plain.weight.copy_(m.weight)
    torch.testing.assert_close(m(ids), plain(ids))  # importance weights start at 1
    with torch.no_grad():
        m.importance.normal_()
    coeffs = _coeffs(4, 3)
    for x, out in zip(ids.tolist(), m(ids)):
        rows = _brute_buckets(x, 31, coeffs[:2])
        imp_row = _brute_buckets(x, 31, coeffs[2:])[0]
        want = sum(m.importance[imp_row, i] * m.weight[r] for i, r in enumerate(rows))
        torch.testing.assert_close(out, want)


def test_gradient_reaches_only_selected_buckets():
    m = HashEmbedding(64, 3, num_hashes=2, seed=1)
    ids = torch.tensor([5, 17, 5, 2**50])
    m(ids).sum().backward()
    counts = torch.zeros(64)
    for r in m.buckets(ids).flatten().tolist():
        counts[r] += 1
    # d(sum of outputs)/d(row r) = (times r was selected) * ones
    torch.testing.assert_close(m.weight.grad, counts[:, None].expand(64, 3))
    assert set(m.weight.grad.abs().sum(1).nonzero().flatten().tolist()) == set(m.buckets(ids).flatten().tolist())


def test_weighted_gradient_reaches_only_used_importance_rows():
    m = HashEmbedding(64, 3, num_hashes=2, weighted=True, seed=1)
    ids = torch.tensor([5, 17])
    m(ids).pow(2).sum().backward()
    used = set(m.importance_bucket(ids).tolist())
    assert set(m.importance.grad.abs().sum(1).nonzero().flatten().tolist()) <= used
    assert m.importance.grad.abs().sum() > 0


def test_hash_string_is_stable():
    h = HashEmbedding.hash_string("hello")
    assert h == int.from_bytes(hashlib.blake2b(b"hello", digest_size=8).digest(), "little") >> 1
    assert h == 4511043874410912595
    assert 0 <= HashEmbedding.hash_string("\u00e9t\u00e9") < 2**63
    assert HashEmbedding.hash_strings(["a", "hello"]).tolist() == [HashEmbedding.hash_string("a"), h]


def test_bad_ids_and_args():
    m = HashEmbedding(10, 2)
    with pytest.raises(ValueError, match="non-negative"):
        m(torch.tensor([1, -1]))
    with pytest.raises(ValueError, match="integer dtype"):
        m(torch.tensor([1.0]))
    assert m(torch.tensor([1, 2], dtype=torch.int32)).shape == (2, 2)
    for kwargs in ({"num_buckets": 0}, {"embedding_dim": 0}, {"num_hashes": 0}, {"mode": "max"}):
        with pytest.raises(ValueError):
            HashEmbedding(**{"num_buckets": 10, "embedding_dim": 2, **kwargs})


def test_state_dict_round_trip():
    a = HashEmbedding(20, 4, num_hashes=3, weighted=True, seed=3)
    b = HashEmbedding(20, 4, num_hashes=3, weighted=True, seed=3)
    b.load_state_dict(a.state_dict())
    ids = torch.arange(30)
    torch.testing.assert_close(a(ids), b(ids))
