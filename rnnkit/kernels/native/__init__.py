"""The compiled time loops of the fused CPU kernels, built on first use.

The C sources beside this file hold the recurrences of the custom LSTM and GRU cells:
``gemm.h`` (the per-step recurrent GEMM, weight packed once into panels, register
tiles), ``lstm_step.h`` and ``gru_step.h`` (the pointwise steps and the whole forward
and backward loops), ``steps.c`` (includes them for float and double). They are plain
C with no Python or torch headers, so building takes a couple of seconds with the
system's C compiler (``$CC`` or ``cc``); they are loaded with :mod:`ctypes`, their
signatures read from the C definitions (:func:`signature`). OpenMP from the same
libgomp torch loads, so the C shares torch's thread team. The library is cached
under ``$RNNKIT_CACHE`` (default ``~/.cache/rnnkit``), named by a hash of the
sources, flags, compiler and CPU, written to a temporary file and renamed into place,
so concurrent first uses (DDP workers, pytest) never see a half-written file.

Why C and not ``torch.compile``: the pointwise part of one step is ~10 small ops;
Inductor's generated code needs the same compiler plus ~35 s per cell and its call
overhead ate the fusion (see :mod:`rnnkit.kernels.cpu_fused`); and per-step torch
calls (GEMM, dispatch, Python) cost more than the step itself at small batch.

No compiler, a failed build or ``RNNKIT_NATIVE=0``: :func:`library` returns None
(after one warning for a failed build) and the kernels keep their torch-ops path. A
compiler's refusal is remembered in the cache (``*.failed``, same hash), so later
processes do not compile again; delete the file to retry.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

_HERE = Path(__file__).parent
SOURCES = ("steps.c", "gemm.h", "lstm_step.h", "gru_step.h")
#: the parts of -ffast-math the loops want (reassociated, vectorised sums), not
#: -ffast-math itself: with it GCC links crtfastmath.o into a shared library, which
#: sets flush-to-zero for the whole process when loaded; nor -ffinite-math-only: a NaN
#: or infinity must come out as it would from torch (a diverging model must show it).
FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros", "-fassociative-math",
         "-freciprocal-math", "-fPIC", "-shared")
#: tried in order: tuned for the building CPU (the library never moves) with OpenMP
#: rows (libgomp, the runtime torch loads), then less, for compilers without either.
VARIANTS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native", "-fopenmp-simd"),
            ("-fopenmp-simd",))


def cache_dir() -> Path:
    """Where built libraries live: ``$RNNKIT_CACHE`` or ``$XDG_CACHE_HOME/rnnkit``."""
    root = os.environ.get("RNNKIT_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rnnkit"


def enabled() -> bool:
    """False when ``RNNKIT_NATIVE=0`` asks for the torch-ops kernels."""
    return os.environ.get("RNNKIT_NATIVE", "1") != "0"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(lines)))


def _compiler() -> list[str] | None:
    """``$CC`` (may be a wrapper with arguments, e.g. ``ccache gcc``) or ``cc``, if found."""
    cc = shlex.split(os.environ.get("CC", "cc"))
    path = shutil.which(cc[0]) if cc else None
    return None if path is None else [path, *cc[1:]]


def _library_path(cc: list[str], variant: tuple[str, ...]) -> Path:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((_HERE / name).read_bytes())
    for part in (*cc, *FLAGS, *variant, platform.machine(), _cpu_signature()):
        digest.update(part.encode())
    return cache_dir() / f"rnnkit_native_{digest.hexdigest()[:16]}.so"


def _build(cc: list[str], variant: tuple[str, ...], target: Path) -> None:
    """Compile into a temporary file beside ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        cmd = [*cc, *FLAGS, *variant, str(_HERE / "steps.c"), "-o", tmp, "-lm"]
        subprocess.run(cmd, check=True, capture_output=True, text=True, errors="replace", timeout=120)
        os.chmod(tmp, 0o755)  # mkstemp made it private; a shared cache must be loadable by all
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _remember_failure(marker: Path, detail: str) -> None:
    """Record a compiler's refusal beside where the library would be (same hash: a new
    compiler, flags or sources try again); ignored if the cache is not writable."""
    try:
        marker.write_text(detail)
    except OSError:
        pass


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled steps, building them on the first call; None if unavailable."""
    if not enabled():
        return None
    cc = _compiler()
    if cc is None:
        return None
    errors = []
    for variant in VARIANTS:
        path = _library_path(cc, variant)
        failed = path.with_suffix(".failed")  # a build that failed: not retried by every process
        try:
            if failed.exists():
                errors.append(f"{' '.join(variant)}: {failed.read_text(errors='replace')} (earlier build)")
                continue
            if not path.exists():
                _build(cc, variant, path)
            return ctypes.CDLL(str(path))
        except (OSError, subprocess.SubprocessError) as err:
            detail = (getattr(err, "stderr", None) or str(err)).strip()[:300]
            errors.append(f"{' '.join(variant)}: {detail}")
            if isinstance(err, subprocess.CalledProcessError):  # the compiler said no: remember it
                _remember_failure(failed, detail)
    warnings.warn("rnnkit: could not build the native CPU steps with "
                  f"{' '.join(cc)} ({'; '.join(errors)}); using the slower torch-ops kernels. "
                  "Set RNNKIT_NATIVE=0 to silence this.", RuntimeWarning, stacklevel=2)
    return None


#: the element types the steps are compiled for, and their C suffix and ctypes scalar
SUFFIXES = {"float32": ("_f32", ctypes.c_float), "float64": ("_f64", ctypes.c_double)}


def available(dtype) -> bool:
    """Whether the compiled steps exist for ``dtype`` (a torch dtype; built on the first ask)."""
    return str(dtype).removeprefix("torch.") in SUFFIXES and library() is not None


@functools.lru_cache(maxsize=None)
def signature(name: str) -> tuple[str, ...]:
    """The parameter kinds of the exported C function ``name`` (``"long"``, ``"real"``
    or ``"pointer"``), read from its definition in the sources, so no call site can
    pass a wrong count (ctypes would truncate the extra addresses silently)."""
    pattern = re.compile(r"void\s+NAME\(" + re.escape(name) + r"\)\s*\(([^)]*)\)", re.S)
    for source in SOURCES:
        code = re.sub(r"/\*.*?\*/|//[^\n]*", " ", (_HERE / source).read_text(), flags=re.S)
        match = pattern.search(code)
        if match:
            params = [p.split() for p in match.group(1).split(",")]
            if params == [["void"]]:
                return ()
            kinds = tuple("pointer" if "*" in "".join(p) or "[" in "".join(p) else p[-2] for p in params)
            unknown = set(kinds) - {"long", "real", "pointer"}
            if unknown:
                raise TypeError(f"C function {name!r}: parameter types {unknown} have no ctypes mapping here")
            return kinds
    raise KeyError(f"no C function {name!r} in {SOURCES}")


def bind(name: str, dtype):
    """The C function ``name`` for ``dtype`` (a torch dtype) with its ctypes signature."""
    suffix, real = SUFFIXES[str(dtype).removeprefix("torch.")]
    types = {"long": ctypes.c_long, "real": real, "pointer": ctypes.c_void_p}
    fn = getattr(library(), name + suffix)
    fn.argtypes = [types[kind] for kind in signature(name)]
    fn.restype = None
    return fn


def pack_panels(weight):
    """``weight (G, K)`` (contiguous) packed for ``gemm_packed`` (native/gemm.h): panels of
    ``NR`` rows (two 32-byte vectors: 16 floats, 8 doubles), each ``[K][NR]``, zero past ``G``."""
    G, K = weight.shape
    nr = 2 * 32 // weight.element_size()
    panels = weight.new_empty((G + nr - 1) // nr * K * nr)
    bind("gemm_pack", weight.dtype)(G, K, weight.data_ptr(), panels.data_ptr())
    return panels


def gemm(x, panels, out_features: int, add=None, out=None):
    """``x (B, K) @ W.T (+ add (B, N))`` with ``W (N = out_features, K)`` packed by
    :func:`pack_panels` (rows of ``x`` may be strided), into ``out`` (contiguous ``(B, N)``)
    or a new tensor: the C GEMM the sequence kernels run per step, for tests and
    benchmarks. Shapes are checked: the C would read or write past a wrong one."""
    import torch  # deferred: the build helpers above need no torch
    B, K = x.shape
    nr = 2 * 32 // x.element_size()
    if panels.numel() != (out_features + nr - 1) // nr * K * nr or panels.dtype != x.dtype:
        raise ValueError(f"gemm: panels of {panels.numel()} {panels.dtype} do not pack a "
                         f"({out_features}, {K}) {x.dtype} weight")
    for name, t in (("add", add), ("out", out)):
        if t is not None and (tuple(t.shape) != (B, out_features) or t.dtype != x.dtype):
            raise ValueError(f"gemm: {name} must be ({B}, {out_features}) {x.dtype}, got "
                             f"{tuple(t.shape)} {t.dtype}")
    if out is not None and not out.is_contiguous():
        raise ValueError("gemm: out must be contiguous")
    x = x if x.stride(1) == 1 else x.contiguous()
    out = x.new_empty(B, out_features) if out is None else out
    add = None if add is None else add.contiguous()
    bind("gemm_packed", x.dtype)(B, out_features, K, x.stride(0), torch.get_num_threads(), x.data_ptr(),
                                 panels.data_ptr(), None if add is None else add.data_ptr(), out.data_ptr())
    return out
