"""Building and loading the compiled CPU steps (rnnkit.kernels.cpu.native)."""
import math
import os
import shutil
import stat

import pytest
import torch

from rnnkit.kernels.cpu import native


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache and no memoised library; the memo is reset afterwards too."""
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")  # these tests build (or fail to) on purpose
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None or not native.enabled(),
                              reason="no C compiler, or RNNKIT_NATIVE=0")


@needs_cc
def test_builds_once_into_the_cache_and_reuses_it(fresh):
    lib = native.library()
    assert lib is not None and hasattr(lib, "lstm_sequence_f32") and hasattr(lib, "gru_backward_sequence_f64")
    built = sorted(fresh.glob("*.so"))
    assert len(built) == 1 and not list(fresh.glob("*.tmp"))  # renamed into place, no leftovers
    mtime = built[0].stat().st_mtime_ns
    native.library.cache_clear()
    assert native.library() is not None
    assert built[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt


def test_disabled_by_environment(fresh, monkeypatch):
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    assert native.library() is None
    assert not list(fresh.iterdir())


def test_no_compiler_means_the_reference_quietly(fresh, monkeypatch, recwarn):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert native.library() is None
    assert not [w for w in recwarn if "rnnkit" in str(w.message)]


def test_failing_compiler_warns_once_leaves_no_library_and_is_not_rerun(fresh, monkeypatch, tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("bin")
    calls = bin_dir / "calls"
    bad = bin_dir / "cc"
    bad.write_text(f"#!/bin/sh\necho run >> {calls}\necho 'cc: simulated failure' >&2\nexit 1\n")
    bad.chmod(bad.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(bad))
    with pytest.warns(RuntimeWarning, match="simulated failure"):
        assert native.library() is None
    assert not list(fresh.glob("*.so")) and not list(fresh.glob("*.tmp"))  # no half-written library
    runs = len(calls.read_text().split())
    assert runs == len(native.variants())
    assert native.library() is None  # memoised in this process: no second warning, no build
    native.library.cache_clear()  # a new process: the refusal is remembered in the cache
    with pytest.warns(RuntimeWarning, match="earlier build"):
        assert native.library() is None
    assert len(calls.read_text().split()) == runs


def test_avx512_cpus_build_wide_vectors_first_then_fall_back(monkeypatch):
    """On an AVX-512 CPU the tuned builds ask for 512-bit vectors (GCC's -march=native keeps
    256), each followed by the same build without, for a compiler that refuses the flag;
    elsewhere the variants are as listed."""
    monkeypatch.setattr(native, "_cpu_signature", lambda: "flags\t: fpu sse2 avx2 fma")
    assert native.variants() == native.VARIANTS
    monkeypatch.setattr(native, "_cpu_signature", lambda: "flags\t: fpu sse2 avx2 avx512f avx512bw")
    tried = native.variants()
    assert tried[0] == (*native.VARIANTS[0], *native.WIDE_VECTORS)
    assert [v for v in tried if v[-1] != native.WIDE_VECTORS[-1]] == list(native.VARIANTS)
    assert all("-march=native" in v for v in tried if v[-1] == native.WIDE_VECTORS[-1])


@needs_cc
def test_ci_builds_the_native_steps():
    """Where a compiler exists (CI included) the fast path must really be built and used,
    not silently replaced by the fallback."""
    native.library.cache_clear()
    assert native.library() is not None


def test_sources_are_found_not_listed_and_all_hashed(tmp_path, monkeypatch):
    """Every ``*.c``/``*.h`` beside the loader is a source: a new header (say, one more
    step included from steps.c) changes the cache name and its functions' signatures are
    found, with no list to edit."""
    found = {p.name for p in native.sources()}
    assert {"steps.c", "gemm.h", "lstm_step.h", "gru_step.h", "stream_step.h"} <= found
    copy = tmp_path / "native"
    shutil.copytree(native._HERE, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(native, "_HERE", copy)
    cc, variant = ["cc"], ("-O3",)
    before = native._library_path(cc, variant)
    (copy / "extra_step.h").write_text("void NAME(extra_step)(long n, real a, real *out) { }\n")
    native.signature.cache_clear()
    try:
        assert "extra_step.h" in {p.name for p in native.sources()}
        assert native._library_path(cc, variant) != before
        assert native.signature("extra_step") == ("long", "real", "pointer")
    finally:
        native.signature.cache_clear()


def test_signatures_are_read_from_the_c_definitions():
    """ctypes gets every exported function's parameter kinds from the source itself."""
    assert native.signature("gemm_pack") == ("long", "long", "pointer", "pointer")
    kinds = native.signature("lstm_sequence")
    # T, B, b0, nb (the rows it runs), H, R, flags, threads, pw_threads, reverse, store; eps
    assert kinds[:11] == ("long",) * 11 and kinds[11] == "real" and set(kinds[12:-7]) == {"pointer"}
    # the step masks (recurrent dropout, zoneout): zh, zc, kh, kc, zh_rate, zc_rate, CN
    assert kinds[-7:] == ("long", "long", "pointer", "pointer", "real", "real", "pointer")
    with pytest.raises(KeyError, match="no C function"):
        native.signature("no_such_function")


@needs_cc
def test_loading_keeps_denormals():
    """-ffast-math would link crtfastmath.o, which turns on flush-to-zero for the whole
    process when the library loads; every later torch/numpy computation would change."""
    import subprocess
    import sys
    code = ("import torch; from rnnkit.kernels.cpu import native; assert native.library() is not None; "
            "import rnnkit; rnnkit.LSTM(3, 4, peephole=True)(torch.randn(2, 1, 3)); "
            "print(float((torch.tensor([1e-40]) * 1).item()), float((torch.tensor([1e-310], "
            "dtype=torch.float64) * 1).item()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) > 0 and float(out[1]) > 0, out


# --- the GEMM: panel width from the library, forced 64-byte vectors, vendor BLAS ------


from kernel_checks import outputs_and_grads  # noqa: E402


def _gemm_matches_torch(choice="packed"):
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-12)):
        if choice not in native.available_choices(dtype):  # MKL exports no cblas_dgemm_pack in some builds
            continue
        gen = torch.Generator().manual_seed(0)
        for B, G, K in ((1, 40, 3), (7, 100, 33), (13, 148, 37), (32, 64, 16)):
            x = torch.randn(B, K + 5, generator=gen, dtype=dtype)[:, 2:K + 2]  # strided rows
            w = torch.randn(G, K, generator=gen, dtype=dtype)
            add = torch.randn(B, G, generator=gen, dtype=dtype)
            got = native.gemm(x, native.gemm_weight(w, choice, B), G, add=add, choice=choice)
            torch.testing.assert_close(got, x @ w.t() + add, atol=tol, rtol=tol)


def _fused_match_reference():
    """A peephole + layer-norm LSTM and both GRUs through the native kernels, forward and
    backward (masked, reverse), against the reference scan: float32 at the kernel tests'
    1e-5, float64 tight."""
    from rnnkit.cells import GRUCell, LSTMCell
    from rnnkit.kernels.cpu import gru, lstm
    from rnnkit.nn.scan import scan
    factories = [(lstm.lstm_scan, lambda i, h, **kw: LSTMCell(i, h, peephole=True, layer_norm=True, **kw)),
                 (gru.gru_scan, lambda i, h, **kw: GRUCell(i, h, variant="reset_before", **kw)),
                 (gru.gru_scan, lambda i, h, **kw: GRUCell(i, h, variant="simplified", **kw))]
    for kernel, factory in factories:
        for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
            torch.manual_seed(0)
            cell = factory(5, 37, dtype=dtype)  # 4H = 148: a partial panel at every width
            with torch.no_grad():
                for p in cell.parameters():
                    p.normal_(0, 0.5)
            x = torch.randn(6, 3, 5, dtype=dtype, requires_grad=True)
            state = tuple(torch.randn(3, n, dtype=dtype, requires_grad=True) for n in cell.state_sizes())
            mask = (torch.arange(6).unsqueeze(1) < torch.tensor([6, 2, 4])).unsqueeze(-1)
            for reverse in (False, True):
                want = outputs_and_grads(scan, cell, x, state, mask, reverse)
                got = outputs_and_grads(kernel, cell, x, state, mask, reverse)
                for a, b in zip((*got[0], *got[1]), (*want[0], *want[1])):
                    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@needs_cc
def test_panel_width_comes_from_the_library():
    """Python sizes the panels by what the C was built with: two vectors, 32 bytes each
    on AVX2, 64 where the compiler targets AVX-512."""
    native.library.cache_clear()
    width = 64 if "avx512f" in native._cpu_signature().split() else 32
    assert native.panel_width(torch.float32) == 2 * width // 4
    assert native.panel_width(torch.float64) == 2 * width // 8
    _gemm_matches_torch()


@needs_cc
def test_forced_64_byte_vectors_build_separately_and_match(fresh, monkeypatch):
    """-DRNNKIT_VEC_BYTES=64 (the AVX-512 code, lowered to pairs of 256-bit operations on an
    AVX2 CPU): its own cache file, 32-float panels, the same GEMM and whole-sequence results."""
    default = native.library()
    monkeypatch.setenv("RNNKIT_NATIVE_CFLAGS", "-DRNNKIT_VEC_BYTES=64")
    monkeypatch.setenv("RNNKIT_GEMM", "packed")
    native.library.cache_clear()
    wide = native.library()
    assert wide is not None and wide._name != default._name and len(list(fresh.glob("*.so"))) == 2
    assert native.panel_width(torch.float32) == 32 and native.panel_width(torch.float64) == 16
    _gemm_matches_torch()
    _fused_match_reference()


def _offered(choice):
    return native.library() is not None and choice in native.available_choices(torch.float32)


@needs_cc
@pytest.mark.parametrize("choice", ["vendor", "vendor_packed"])
def test_vendor_gemms_match(choice):
    """The BLAS's ?gemm_ on the plain weight, and MKL's packed-weight GEMM (strided rows,
    an addend, float32 and where offered float64), against torch."""
    if not _offered(choice):
        pytest.skip(f"this torch offers no {choice} GEMM")
    _gemm_matches_torch(choice)


@needs_cc
@pytest.mark.parametrize("choice", native.GEMM_CHOICES)
def test_each_gemm_choice_matches_the_reference(choice, monkeypatch):
    """RNNKIT_GEMM forces the per-step GEMM: rnnkit's packed one or the vendor BLAS."""
    if not _offered(choice):
        pytest.skip(f"this torch offers no {choice} GEMM")
    monkeypatch.setenv("RNNKIT_GEMM", choice)
    assert native.gemm_choice(torch.float32, 3, 148, 37) == choice
    _fused_match_reference()


def test_gemm_choice_weighs_packing_against_the_steps():
    """A short sequence takes the GEMM whose weight needs no packing even if its product is
    slower; a long one the faster product; packed unless another is cheaper by over 3%."""
    times = {"packed": (1e-3, 1e-6), "vendor": (0.0, 2e-6), "vendor_packed": (4e-3, 0.5e-6)}
    assert native._cheapest(times, None) == "vendor_packed"
    assert native._cheapest(times, 10) == "vendor"
    assert native._cheapest(times, 100_000) == "vendor_packed"
    assert native._cheapest({"packed": (0.0, 1.0), "vendor": (0.0, 0.98)}, 5) == "packed"


@needs_cc
def test_auto_gemm_choice_is_timed_once_and_remembered(monkeypatch):
    monkeypatch.setenv("RNNKIT_GEMM", "auto")
    first = native.gemm_choice(torch.float32, 5, 64, 16, threads=1)
    assert first in native.GEMM_CHOICES
    assert native.gemm_choice(torch.float32, 5, 64, 16, threads=1) == first
    assert native.gemm_choice(torch.float32, 5, 64, 16, threads=1, steps=3) in native.GEMM_CHOICES
    assert any(k[:5] == ("torch.float32", 5, 64, 16, 1) for k in native.gemm_choices())
    monkeypatch.setenv("RNNKIT_GEMM", "fastest")
    with pytest.raises(ValueError, match="RNNKIT_GEMM"):
        native.gemm_choice(torch.float32, 5, 64, 16)


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_activations_match_torch_to_float_accuracy(dtype):
    """The loops' own sigmoid and tanh (float: an inlined exp and a rational tanh,
    steps.c) against torch's in float64, on a dense grid and the special values: relative
    error within a few float ulps, but below 1e-17 absolute where the sigmoid's argument
    is clamped to -40 (lstm_step.h)."""
    half = torch.linspace(0, 20, 200_001, dtype=dtype)
    grid = torch.cat([-half.flip(0), half])  # exactly symmetric, for the oddness below
    special = torch.tensor([0.0, 1e-30, -1e-30, 1e-6, 8.99, 9.0, 9.01, 80.0, -80.0, 1e4, -1e4,
                            math.inf, -math.inf], dtype=dtype)
    x = torch.cat([grid, special])
    sig, th = torch.empty_like(x), torch.empty_like(x)
    native.bind("activations", dtype)(x.numel(), x.data_ptr(), sig.data_ptr(), th.data_ptr())
    exact = x.double()
    bound = 4e-7 if dtype == torch.float32 else 1e-15
    for got, want in ((sig, torch.sigmoid(exact)), (th, torch.tanh(exact))):
        excess = (got.double() - want).abs() - bound * want.abs() - 1e-17
        assert excess.max() <= 0, (x[excess.argmax()], got[excess.argmax()], want[excess.argmax()])
    assert th[x == 0].eq(0).all() and torch.equal(th[:grid.numel()], -th[:grid.numel()].flip(0))  # exactly odd
    nan = torch.tensor([math.nan], dtype=dtype)
    native.bind("activations", dtype)(1, nan.data_ptr(), sig.data_ptr(), th.data_ptr())
    assert sig[0].isnan() and th[0].isnan()
