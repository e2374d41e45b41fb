"""CRF: forward algorithm and Viterbi against brute-force enumeration, tagging-scheme
constraints, masking, gradients and input errors."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnkit.errors import ConfigError, ShapeError
from rnnkit.nn.crf import CRF, SCHEMES, allowed_transitions

BIO_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _crf(k: int, allowed=None, seed: int = 0, dtype=torch.float64) -> CRF:
    """A CRF with O(1) random parameters (the default init is too small to test much)."""
    torch.manual_seed(seed)
    crf = CRF(k, allowed=allowed).to(dtype)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def _mask(lengths: list[int], t: int) -> torch.Tensor:
    return torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _path_score(crf: CRF, em: torch.Tensor, path: tuple[int, ...]) -> float:
    """s(y) straight from the definition, in Python floats, with the constraint masks."""
    big = -1e4
    tr = torch.where(crf.transitions_allowed, crf.transitions, big).tolist()
    st = torch.where(crf.start_allowed, crf.start_transitions, big).tolist()
    en = torch.where(crf.end_allowed, crf.end_transitions, big).tolist()
    s = st[path[0]] + en[path[-1]] + sum(em[i][y] for i, y in enumerate(path))
    return s + sum(tr[a][b] for a, b in zip(path, path[1:]))


def _brute(crf: CRF, em_row: torch.Tensor, allowed_only: bool = False):
    """(log Z, best path, best score) for one unpadded (L, K) row by enumerating K^L paths."""
    length, k = em_row.shape
    em = em_row.tolist()
    scores = {}
    for path in itertools.product(range(k), repeat=length):
        if allowed_only and not (crf.start_allowed[path[0]] and crf.end_allowed[path[-1]]
                                 and all(crf.transitions_allowed[a, b] for a, b in zip(path, path[1:]))):
            continue
        scores[path] = _path_score(crf, em, path)
    m = max(scores.values())
    log_z = m + math.log(sum(math.exp(s - m) for s in scores.values()))
    best = max(scores, key=scores.get)
    return log_z, list(best), scores[best]


# --- exactness against brute force -----------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lengths", [[4, 2, 1], [3, 3, 3], [1, 4, 3]])
def test_log_partition_and_decode_match_brute_force(seed, lengths):
    k, t = 3, max(lengths)
    crf = _crf(k, seed=seed)
    em = torch.randn(3, t, k, dtype=torch.float64)
    mask = _mask(lengths, t)
    log_z = crf.log_partition(em, mask)
    paths, best = crf.decode(em, mask)
    for b, length in enumerate(lengths):
        want_z, want_path, want_best = _brute(crf, em[b, :length])
        assert log_z[b].item() == pytest.approx(want_z, abs=1e-12, rel=1e-12)
        assert paths[b, :length].tolist() == want_path
        assert (paths[b, length:] == -1).all()
        assert best[b].item() == pytest.approx(want_best, abs=1e-12, rel=1e-12)
    # The decoded score is the score of the decoded path.
    assert torch.allclose(crf.score(em, paths, mask), best, atol=1e-12)


def test_score_matches_definition():
    crf = _crf(4, seed=3)
    em = torch.randn(2, 5, 4, dtype=torch.float64)
    tags = torch.randint(0, 4, (2, 5))
    mask = _mask([5, 3], 5)
    got = crf.score(em, tags, mask)
    for b, length in enumerate([5, 3]):
        want = _path_score(crf, em[b, :length].tolist(), tuple(tags[b, :length].tolist()))
        assert got[b].item() == pytest.approx(want, abs=1e-12)


def test_nll_is_log_partition_minus_score_and_nonnegative():
    crf = _crf(5, seed=4)
    em = torch.randn(4, 6, 5, dtype=torch.float64) * 3
    tags = torch.randint(0, 5, (4, 6))
    mask = _mask([6, 1, 4, 2], 6)
    nll = crf(em, tags, mask, reduction="none")
    assert nll.shape == (4,)
    assert (nll >= 0).all()
    assert torch.allclose(nll, crf.log_partition(em, mask) - crf.score(em, tags, mask), atol=0, rtol=0)
    # The Viterbi path has the smallest NLL of all paths.
    paths, _ = crf.decode(em, mask)
    assert (crf(em, paths.clamp(min=0), mask, reduction="none") <= nll + 1e-12).all()
    assert crf(em, tags, mask).item() == pytest.approx(nll.sum().item(), rel=1e-12)
    assert crf(em, tags, mask, reduction="mean").item() == pytest.approx(nll.mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        crf(em, tags, mask, reduction="batchmean")


def test_mask_none_means_all_real_and_float32_works():
    crf64 = _crf(3, seed=5)
    em = torch.randn(2, 4, 3, dtype=torch.float64)
    tags = torch.randint(0, 3, (2, 4))
    full = torch.ones(2, 4, dtype=torch.bool)
    assert torch.equal(crf64(em, tags, reduction="none"), crf64(em, tags, full, reduction="none"))
    assert torch.equal(crf64.decode(em)[0], crf64.decode(em, full)[0])

    crf32 = _crf(3, seed=5, dtype=torch.float32)
    nll32 = crf32(em.float(), tags, reduction="none")
    assert nll32.dtype == torch.float32
    assert crf32.decode(em.float())[1].dtype == torch.float32
    assert torch.allclose(nll32.double(), crf64(em, tags, reduction="none"), atol=1e-5)
    assert torch.equal(crf32.decode(em.float())[0], crf64.decode(em)[0])


# --- masking ---------------------------------------------------------------------------

def test_padding_never_changes_results():
    crf = _crf(4, seed=6)
    lengths, t = [5, 2, 3], 5
    mask = _mask(lengths, t)
    em = torch.randn(3, t, 4, dtype=torch.float64)
    tags = torch.randint(0, 4, (3, t))
    garbage_em = em.clone()
    garbage_em[~mask] = torch.tensor([float("nan"), float("inf"), -1e30, 1e30], dtype=torch.float64)
    garbage_tags = tags.clone()
    garbage_tags[~mask] = -100  # ignore_index-style padding, out of range on purpose

    outs = []
    for e, y in ((em, tags), (garbage_em, garbage_tags)):
        e = e.clone().requires_grad_(True)
        nll = crf(e, y, mask, reduction="none")
        nll.sum().backward()
        paths, best = crf.decode(e, mask)
        outs.append((nll.detach(), paths, best.detach(), e.grad))
    (nll_a, paths_a, best_a, grad_a), (nll_b, paths_b, best_b, grad_b) = outs
    assert torch.equal(nll_a, nll_b)
    assert torch.equal(paths_a, paths_b)
    assert torch.equal(best_a, best_b)
    assert torch.equal(grad_a, grad_b)
    assert (grad_b[~mask] == 0).all() and torch.isfinite(grad_b).all()

    # A padded row equals the same row run alone, unpadded.
    for b, length in enumerate(lengths):
        e, y = em[b : b + 1, :length], tags[b : b + 1, :length]
        assert crf(e, y, reduction="none")[0].item() == pytest.approx(nll_a[b].item(), abs=1e-12)
        alone_paths, alone_best = crf.decode(e)
        assert alone_paths[0].tolist() == paths_a[b, :length].tolist()
        assert alone_best[0].item() == pytest.approx(best_a[b].item(), abs=1e-12)


# --- gradients -------------------------------------------------------------------------

@pytest.mark.parametrize("constrained", [False, True])
def test_gradcheck_nll(constrained):
    allowed = allowed_transitions(BIO_TAGS, "BIO") if constrained else None
    crf = _crf(5, allowed=allowed, seed=7)
    em = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    # Gold tags follow BIO, so the constrained loss stays O(1) and the check is sensitive.
    tags = torch.tensor([[1, 2, 0, 3], [0, 3, 4, 0], [1, 0, 0, 0]])
    mask = _mask([4, 3, 1], 4)
    params = tuple(p.detach().clone().requires_grad_(True)
                   for p in (crf.transitions, crf.start_transitions, crf.end_transitions))

    def nll(e, tr, st, en):
        state = {"transitions": tr, "start_transitions": st, "end_transitions": en}
        return torch.func.functional_call(crf, state, (e, tags, mask), {"reduction": "none"})

    assert torch.autograd.gradcheck(nll, (em, *params), atol=1e-6, rtol=1e-5)


def test_disallowed_entries_get_zero_gradient():
    allowed = allowed_transitions(BIO_TAGS, "BIO")
    crf = _crf(5, allowed=allowed, seed=8)
    em = torch.randn(2, 4, 5, dtype=torch.float64)
    tags = torch.tensor([[0, 2, 2, 0], [4, 1, 2, 0]])  # breaks the rules: O->I-PER, start I-LOC
    loss = crf(em, tags)
    assert torch.isfinite(loss)
    loss.backward()
    trans_ok, start_ok, end_ok = allowed
    assert (crf.transitions.grad[~trans_ok] == 0).all()
    assert (crf.start_transitions.grad[~start_ok] == 0).all()
    assert crf.transitions.grad[trans_ok].abs().sum() > 0
    assert crf.start_transitions.grad[start_ok].abs().sum() > 0


# --- tagging schemes -------------------------------------------------------------------

def test_bio_matrix():
    trans, start, end = allowed_transitions(BIO_TAGS, "BIO")
    #         O  B-P I-P B-L I-L     (to)
    want = [[1, 1, 0, 1, 0],   # O
            [1, 1, 1, 1, 0],   # B-PER
            [1, 1, 1, 1, 0],   # I-PER
            [1, 1, 0, 1, 1],   # B-LOC
            [1, 1, 0, 1, 1]]   # I-LOC
    assert trans.dtype == torch.bool and trans.tolist() == [[bool(x) for x in r] for r in want]
    assert start.tolist() == [True, True, False, True, False]
    assert end.tolist() == [True] * 5
    assert torch.equal(allowed_transitions(BIO_TAGS, "IOB2")[0], trans)


def test_iobes_rules():
    tags = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "E-LOC", "S-LOC"]
    ix = {t: i for i, t in enumerate(tags)}
    trans, start, end = allowed_transitions(tags, "IOBES")
    ok = lambda a, b: bool(trans[ix[a], ix[b]])  # noqa: E731
    for a, b in [("O", "B-PER"), ("O", "S-LOC"), ("B-PER", "I-PER"), ("B-PER", "E-PER"),
                 ("I-PER", "E-PER"), ("E-PER", "B-LOC"), ("E-PER", "O"), ("S-PER", "S-PER"),
                 ("S-LOC", "B-PER")]:
        assert ok(a, b), (a, b)
    for a, b in [("O", "I-PER"), ("O", "E-PER"), ("B-PER", "O"), ("B-PER", "E-LOC"),
                 ("I-PER", "B-PER"), ("I-PER", "S-PER"), ("E-PER", "I-PER"), ("S-PER", "E-PER"),
                 ("B-PER", "B-PER")]:
        assert not ok(a, b), (a, b)
    assert [t for t, s in zip(tags, start.tolist()) if s] == ["O", "B-PER", "S-PER", "B-LOC", "S-LOC"]
    assert [t for t, e in zip(tags, end.tolist()) if e] == ["O", "E-PER", "S-PER", "E-LOC", "S-LOC"]
    for a, b in zip(allowed_transitions(tags, "BIOES"), (trans, start, end)):
        assert torch.equal(a, b)


def test_iob1_rules():
    tags = ["O", "I-PER", "B-PER", "I-LOC", "B-LOC"]
    ix = {t: i for i, t in enumerate(tags)}
    trans, start, end = allowed_transitions(tags, "IOB1")
    ok = lambda a, b: bool(trans[ix[a], ix[b]])  # noqa: E731
    # I- may open an entity; B- only separates two adjacent entities of the same type.
    for a, b in [("O", "I-PER"), ("I-LOC", "I-PER"), ("I-PER", "B-PER"), ("B-PER", "B-PER"),
                 ("B-PER", "I-PER"), ("I-PER", "O"), ("B-LOC", "I-PER")]:
        assert ok(a, b), (a, b)
    for a, b in [("O", "B-PER"), ("I-LOC", "B-PER"), ("B-LOC", "B-PER")]:
        assert not ok(a, b), (a, b)
    assert start.tolist() == [True, True, False, True, False]
    assert end.tolist() == [True] * 5


def test_scheme_and_tag_errors():
    with pytest.raises(ConfigError) as info:
        allowed_transitions(BIO_TAGS, "BILOU")
    msg = str(info.value)
    assert "BILOU" in msg and all(s in msg for s in SCHEMES)
    with pytest.raises(ConfigError, match="X-PER"):
        allowed_transitions(["O", "X-PER"], "BIO")
    with pytest.raises(ConfigError, match="E-PER"):
        allowed_transitions(["O", "B-PER", "E-PER"], "BIO")
    with pytest.raises(ConfigError, match="'B-'"):
        allowed_transitions(["O", "B-"], "BIO")
    assert allowed_transitions(["O", "B-PER"], "bio")[0].shape == (2, 2)  # case-insensitive


@pytest.mark.parametrize("seed", [0, 1])
def test_constrained_crf_matches_brute_force_over_allowed_paths(seed):
    crf = _crf(5, allowed=allowed_transitions(BIO_TAGS, "BIO"), seed=seed)
    lengths = [4, 3, 1]
    em = torch.randn(3, 4, 5, dtype=torch.float64) * 2
    mask = _mask(lengths, 4)
    log_z = crf.log_partition(em, mask)
    paths, best = crf.decode(em, mask)
    for b, length in enumerate(lengths):
        want_z, want_path, want_best = _brute(crf, em[b, :length], allowed_only=True)
        assert log_z[b].item() == pytest.approx(want_z, abs=1e-12, rel=1e-12)
        assert paths[b, :length].tolist() == want_path
        assert best[b].item() == pytest.approx(want_best, abs=1e-12, rel=1e-12)


def test_decode_never_breaks_constraints_even_when_emissions_favour_it():
    allowed = allowed_transitions(BIO_TAGS, "BIO")
    trans_ok, start_ok, end_ok = allowed
    crf = CRF(5, allowed=allowed).double()
    with torch.no_grad():  # make the parameters *prefer* the forbidden moves
        crf.transitions.fill_(5.0)
        crf.start_transitions.fill_(5.0)
    i_per, b_loc, o = BIO_TAGS.index("I-PER"), BIO_TAGS.index("B-LOC"), BIO_TAGS.index("O")
    em = torch.zeros(3, 3, 5, dtype=torch.float64)
    em[0, :, i_per] = 50.0                          # start -> I-PER wanted
    em[1, 0, o], em[1, 1:, i_per] = 50.0, 50.0      # O -> I-PER wanted
    em[2, 0, b_loc], em[2, 1:, i_per] = 50.0, 50.0  # B-LOC -> I-PER wanted
    paths, _ = crf.decode(em)
    unconstrained, _ = CRF(5).double().decode(em)
    assert unconstrained[:, 1].tolist() == [i_per] * 3  # the emissions really favour the bad moves
    assert paths[0].tolist() == [BIO_TAGS.index("B-PER"), i_per, i_per]
    torch.manual_seed(0)
    random_em = torch.randn(64, 6, 5, dtype=torch.float64) * 10
    all_paths = torch.cat([paths, crf.decode(random_em)[0][:, :3]])
    for path in all_paths.tolist():
        assert start_ok[path[0]] and end_ok[path[-1]]
        assert all(trans_ok[a, b] for a, b in zip(path, path[1:])), path


# --- input errors ----------------------------------------------------------------------

def test_input_errors():
    crf = CRF(5)
    em = torch.randn(2, 3, 5)
    tags = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ShapeError, match="3-D"):
        crf.log_partition(em[0])
    with pytest.raises(ShapeError, match="num_tags=5"):
        crf.decode(torch.randn(2, 3, 4))
    with pytest.raises(ShapeError, match="tags"):
        crf(em, tags[:, :2])
    with pytest.raises(ShapeError, match="mask"):
        crf(em, tags, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no real tokens"):
        crf(em, tags, torch.tensor([[True, True, False], [False, False, False]]))
    with pytest.raises(ValueError, match="left-aligned"):
        crf.decode(em, torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        crf(em, torch.tensor([[0, 5, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        crf.score(em, torch.tensor([[0, -1, 0], [0, 0, 0]]))
    # Out-of-range values at padding are fine.
    crf(em, torch.tensor([[0, 0, -100], [0, 99, 99]]), torch.tensor([[True, True, False], [True, False, False]]))
    with pytest.raises(ShapeError):
        CRF(3, allowed=allowed_transitions(BIO_TAGS, "BIO"))
