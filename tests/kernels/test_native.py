"""Building and loading the compiled CPU steps (rnnkit.kernels.native)."""
import os
import shutil
import stat

import pytest

from rnnkit.kernels import native


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache and no memoised library; the memo is reset afterwards too."""
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")


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


def test_no_compiler_means_torch_ops_quietly(fresh, monkeypatch, recwarn):
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
    assert runs == len(native.VARIANTS)
    assert native.library() is None  # memoised in this process: no second warning, no build
    native.library.cache_clear()  # a new process: the refusal is remembered in the cache
    with pytest.warns(RuntimeWarning, match="earlier build"):
        assert native.library() is None
    assert len(calls.read_text().split()) == runs


@needs_cc
def test_ci_builds_the_native_steps():
    """Where a compiler exists (CI included) the fast path must really be built and used,
    not silently replaced by the fallback."""
    native.library.cache_clear()
    assert native.library() is not None


def test_signatures_are_read_from_the_c_definitions():
    """ctypes gets every exported function's parameter kinds from the source itself."""
    assert native.signature("gemm_pack") == ("long", "long", "pointer", "pointer")
    kinds = native.signature("lstm_sequence")
    assert kinds[:9] == ("long",) * 9 and kinds[9] == "real" and set(kinds[10:]) == {"pointer"}
    with pytest.raises(KeyError, match="no C function"):
        native.signature("no_such_function")


@needs_cc
def test_loading_keeps_denormals():
    """-ffast-math would link crtfastmath.o, which turns on flush-to-zero for the whole
    process when the library loads; every later torch/numpy computation would change."""
    import subprocess
    import sys
    code = ("import torch; from rnnkit.kernels import native; assert native.library() is not None; "
            "import rnnkit; rnnkit.LSTM(3, 4, peephole=True)(torch.randn(2, 1, 3)); "
            "print(float((torch.tensor([1e-40]) * 1).item()), float((torch.tensor([1e-310], "
            "dtype=torch.float64) * 1).item()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) > 0 and float(out[1]) > 0, out
