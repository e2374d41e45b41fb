"""The compiled time loops of the fused CPU kernels, built on first use.

The C sources beside this file hold the recurrences of the custom LSTM and GRU cells:
``gemm.h`` (the per-step recurrent GEMM, weight packed once into panels, register
tiles), ``lstm_step.h`` and ``gru_step.h`` (the pointwise steps and the whole forward
and backward loops), ``stream_step.h`` (one step of a whole stack, for streaming),
``steps.c`` (includes them for float and double). The loader finds them itself
(:func:`sources`: every ``*.c`` beside this file is compiled into the one library, every
``*.c`` and ``*.h`` is hashed and searched for signatures), so a new header included
from ``steps.c`` needs no edit here. They are plain
C with no Python or torch headers, so building takes a couple of seconds with the
system's C compiler (``$CC`` or ``cc``); they are loaded with :mod:`ctypes`, their
signatures read from the C definitions (:func:`signature`). OpenMP from the same
libgomp torch loads, so the C shares torch's thread team. The library is cached
under ``$RNNKIT_CACHE`` (default ``~/.cache/rnnkit``), named by a hash of the
sources, flags, compiler and CPU, written to a temporary file and renamed into place,
so concurrent first uses (DDP workers, pytest) never see a half-written file.
``$RNNKIT_NATIVE_CFLAGS`` adds compiler flags (read when the library is first built or
loaded; part of the hash, so another cache file), e.g. ``-DRNNKIT_VEC_BYTES=64`` builds
the GEMM's 64-byte (AVX-512 width) code on any x86 CPU, as the tests do.

The per-step GEMM is rnnkit's packed one (``gemm.h``), the vendor BLAS torch links (its
Fortran ``sgemm_``/``dgemm_``), or, where torch links MKL, MKL's packed-weight GEMM
(``cblas_?gemm_pack`` once, ``cblas_?gemm_compute`` per step: what oneDNN's own RNNs
use), called from the C through addresses handed over here: :func:`gemm_choice` times
them once per shape and keeps the fastest (``$RNNKIT_GEMM`` = ``packed``, ``vendor`` or
``vendor_packed`` forces one; default ``auto``).

Why C and not ``torch.compile``: the pointwise part of one step is ~10 small ops;
Inductor's generated code needs the same compiler plus ~35 s per cell and its call
overhead ate the fusion (see :mod:`rnnkit.kernels.cpu`); and per-step torch
calls (GEMM, dispatch, Python) cost more than the step itself at small batch.

No compiler, a failed build or ``RNNKIT_NATIVE=0``: :func:`library` returns None
(after one warning for a failed build), the CPU kernels say they are unavailable and
the reference scan runs. A
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


def sources() -> tuple[Path, ...]:
    """Every C source and header beside this file, in a fixed order (the cache hash's)."""
    return tuple(sorted([*_HERE.glob("*.c"), *_HERE.glob("*.h")]))

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
#: on a CPU with AVX-512, what the tuned variants add: GCC's -march=native keeps its loops at
#: 256 bits there (for old CPUs that slowed their clock on 512-bit code); the pointwise steps
#: and the layer norms' sums then do half the work per instruction. Measured on an AVX-512
#: Xeon (B32 T100 H128, forward+backward): layer-norm LSTM 1.26x -> 1.19x torch.nn.LSTM,
#: peephole 1.07x -> 1.04x; AMD's double-pumped AVX-512 is no slower with it.
WIDE_VECTORS = ("-mprefer-vector-width=512",)


def variants() -> tuple[tuple[str, ...], ...]:
    """The build variants to try, in order (:data:`VARIANTS`, the tuned ones widened to 512-bit
    vectors on an AVX-512 CPU, then as they are, for a compiler that does not know the flag)."""
    if not re.search(r"\bavx512f\b", _cpu_signature()):
        return VARIANTS
    wide = tuple((*v, *WIDE_VECTORS) for v in VARIANTS if "-march=native" in v)
    return (wide[0], *VARIANTS[:2], wide[1], *VARIANTS[2:])


def cache_dir() -> Path:
    """Where built libraries live: ``$RNNKIT_CACHE`` or ``$XDG_CACHE_HOME/rnnkit``."""
    root = os.environ.get("RNNKIT_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rnnkit"


def enabled() -> bool:
    """False when ``RNNKIT_NATIVE=0`` asks for the reference scan instead of the C loops."""
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


def extra_flags() -> tuple[str, ...]:
    """``$RNNKIT_NATIVE_CFLAGS``, split as a shell would: added to every build variant."""
    return tuple(shlex.split(os.environ.get("RNNKIT_NATIVE_CFLAGS", "")))


def _library_path(cc: list[str], variant: tuple[str, ...]) -> Path:
    digest = hashlib.sha256()
    for path in sources():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for part in (*cc, *FLAGS, *variant, platform.machine(), _cpu_signature()):
        digest.update(part.encode())
    return cache_dir() / f"rnnkit_native_{digest.hexdigest()[:16]}.so"


def _build(cc: list[str], variant: tuple[str, ...], target: Path) -> None:
    """Compile into a temporary file beside ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        units = [str(p) for p in sources() if p.suffix == ".c"]
        cmd = [*cc, *FLAGS, *variant, *units, "-o", tmp, "-lm"]
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
    for variant in variants():
        variant = (*variant, *extra_flags())
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
                  f"{' '.join(cc)} ({'; '.join(errors)}); using the slower reference scan. "
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
    for source in sources():
        code = re.sub(r"/\*.*?\*/|//[^\n]*", " ", source.read_text(), flags=re.S)
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
    raise KeyError(f"no C function {name!r} in {[p.name for p in sources()]}")


def bind(name: str, dtype):
    """The C function ``name`` for ``dtype`` (a torch dtype) with its ctypes signature."""
    return _bind(library(), name, str(dtype).removeprefix("torch."))


@functools.lru_cache(maxsize=None)
def _bind(lib: ctypes.CDLL, name: str, dtype: str):
    """:func:`bind`, once per library, function and dtype: setting a ctypes signature took
    ~20 us, paid twice per kernel call (a tenth of a small layer's whole call)."""
    suffix, real = SUFFIXES[dtype]
    types = {"long": ctypes.c_long, "real": real, "pointer": ctypes.c_void_p}
    fn = getattr(lib, name + suffix)
    fn.argtypes = [types[kind] for kind in signature(name)]
    fn.restype = None
    return fn


@functools.lru_cache(maxsize=None)
def _panel_width(lib: ctypes.CDLL, suffix: str) -> int:
    fn = getattr(lib, "gemm_panel_width" + suffix)
    fn.argtypes, fn.restype = [], ctypes.c_long
    return int(fn())


def panel_width(dtype) -> int:
    """``NR``, the rows per panel of the packed GEMM for ``dtype``: two of the vectors
    the library was built with (32 bytes on AVX2, 64 on AVX-512 or when forced)."""
    return _panel_width(library(), SUFFIXES[str(dtype).removeprefix("torch.")][0])


def pack_panels(weight):
    """``weight (G, K)`` (contiguous) packed for ``gemm_packed`` (native/gemm.h): panels of
    ``NR`` rows (:func:`panel_width`), each ``[K][NR]``, zero past ``G``."""
    G, K = weight.shape
    nr = panel_width(weight.dtype)
    panels = weight.new_empty((G + nr - 1) // nr * K * nr)
    bind("gemm_pack", weight.dtype)(G, K, weight.data_ptr(), panels.data_ptr())
    return panels


#: the vendor BLAS's Fortran GEMM per element type, as libtorch_cpu exports it
BLAS_SYMBOLS = {"float32": "sgemm_", "float64": "dgemm_"}
GEMM_CHOICES = ("packed", "vendor", "vendor_packed")
# MKL's packed-weight GEMM (CBLAS enums: row major, packed B, transposed source)
_CBLAS_ROW_MAJOR, _CBLAS_B_MATRIX, _CBLAS_TRANS = 101, 162, 112


def _blas_symbol(name: str):
    """The function ``name`` exported by ``libtorch_cpu`` (or the process), or None."""
    import torch  # deferred: the build helpers need no torch
    for lib in (Path(torch.__file__).parent / "lib" / "libtorch_cpu.so", None):
        try:
            handle = ctypes.CDLL(None if lib is None else str(lib))  # torch loaded it: a handle, no reload
            return getattr(handle, name)
        except (OSError, AttributeError):
            continue
    return None


def _letter(dtype) -> str | None:
    return {"float32": "s", "float64": "d"}.get(str(dtype).removeprefix("torch."))


@functools.lru_cache(maxsize=None)
def vendor_gemm(dtype) -> int | None:
    """The address of the BLAS ``?gemm_`` torch links (MKL, OpenBLAS), exported by
    ``libtorch_cpu`` (or the process), for ``dtype``; None where it is not exported."""
    name = BLAS_SYMBOLS.get(str(dtype).removeprefix("torch."))
    fn = None if name is None else _blas_symbol(name)
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value


@functools.lru_cache(maxsize=None)
def vendor_packed(dtype):
    """MKL's ``(cblas_?gemm_pack_get_size, cblas_?gemm_pack, address of cblas_?gemm_compute)``
    for ``dtype`` with their ctypes signatures, or None where torch links no MKL."""
    letter = _letter(dtype)
    fns = None if letter is None else [_blas_symbol(f"cblas_{letter}gemm_{n}") for n in ("pack_get_size", "pack",
                                                                                        "compute")]
    if fns is None or any(f is None for f in fns):
        return None
    size, pack, compute = fns
    real = ctypes.c_float if letter == "s" else ctypes.c_double
    size.argtypes, size.restype = [ctypes.c_int] * 4, ctypes.c_size_t
    pack.argtypes = [ctypes.c_int] * 6 + [real, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    pack.restype = None
    return size, pack, ctypes.cast(compute, ctypes.c_void_p).value


class _Blas(ctypes.Structure):
    """``struct rnnkit_blas`` of native/gemm.h: which vendor GEMM the C calls."""
    _fields_ = [("gemm", ctypes.c_void_p), ("compute", ctypes.c_void_p)]


_BLAS: dict[tuple, _Blas] = {}  # kept alive: the C reads them by address


def available_choices(dtype) -> tuple[str, ...]:
    """The GEMM choices this torch build offers for ``dtype``."""
    return tuple(c for c in GEMM_CHOICES if c == "packed" or (vendor_gemm(dtype) if c == "vendor"
                                                                 else vendor_packed(dtype)) is not None)


#: per shape key, per choice: (seconds to pack the weight, seconds per product)
_TIMES: dict[tuple, dict[str, tuple[float, float]]] = {}


def _time_gemm(fn, args, rounds: int = 5) -> float:
    import time
    fn(*args)  # warm: caches, threads, the BLAS's own first-call setup
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_choice(dtype, batch: int, out_features: int, in_features: int, threads: int | None = None,
                steps: int | None = None) -> str:
    """``"packed"`` (rnnkit's GEMM), ``"vendor"`` (the BLAS torch links) or ``"vendor_packed"``
    (MKL's packed-weight GEMM) for the sequences' per-step product ``(batch, in) @ W.T`` with
    ``W (out, in)``, over ``steps`` steps (None: so many that packing the weight is free).

    ``$RNNKIT_GEMM`` forces one (tests run each); the default, ``auto``, times each once per
    (dtype, shape, threads) in this process (best of a few calls each, alternating): its
    product and the packing of the weight it needs, which a call pays once (MKL packs a
    2048 x 512 weight for one row in 4.4 ms, rnnkit in 0.5 ms, the plain BLAS needs none:
    for a short sequence the packing is most of the cost). It keeps the least total for
    ``steps``, packed unless another is cheaper by more than 3%. Packed wins at small
    batches on AVX2 CPUs where we measured; on AVX-512 ones MKL's kernels can win. No
    vendor symbol: packed."""
    import torch
    forced = os.environ.get("RNNKIT_GEMM", "auto")
    if forced not in ("auto", *GEMM_CHOICES):
        raise ValueError(f"RNNKIT_GEMM must be auto, packed or vendor, not {forced!r}")
    offered = available_choices(dtype)
    if forced != "auto":
        return forced if forced in offered else "packed"
    if len(offered) == 1:
        return "packed"
    threads = torch.get_num_threads() if threads is None else threads
    key = (str(dtype), batch, out_features, in_features, threads, library()._name)
    if key not in _TIMES:
        _TIMES[key] = _time_choices(dtype, batch, out_features, in_features, threads, offered)
    return _cheapest(_TIMES[key], steps)


def _time_choices(dtype, batch: int, out_features: int, in_features: int, threads: int,
                  offered: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Seconds to pack the weight and for one product, per choice (best of a few, alternating:
    a drift in load hits all)."""
    import time

    import torch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_features, generator=gen, dtype=dtype)
    w = torch.randn(out_features, in_features, generator=gen, dtype=dtype)
    out = x.new_empty(batch, out_features)
    fn = bind("gemm_select", dtype)
    common = (batch, out_features, in_features, in_features, threads, x.data_ptr())
    weights = {c: gemm_weight(w, c, batch) for c in offered}  # held while timed
    args = {c: (vendor_arg(dtype, c), *common, weights[c].data_ptr(), None, out.data_ptr()) for c in offered}
    pack = dict.fromkeys(offered, float("inf"))
    step = dict.fromkeys(offered, float("inf"))
    for _ in range(2):
        for c in offered:
            step[c] = min(step[c], _time_gemm(fn, args[c]))
            t0 = time.perf_counter()
            gemm_weight(w, c, batch)
            pack[c] = min(pack[c], time.perf_counter() - t0)
    return {c: (pack[c], step[c]) for c in offered}


def _cheapest(times: dict[str, tuple[float, float]], steps: int | None) -> str:
    """The choice of least cost for ``steps`` products (None: the products alone), packed
    unless another is cheaper by more than 3%."""
    cost = {c: s if steps is None else p + steps * s for c, (p, s) in times.items()}
    best = min(cost, key=cost.get)
    return best if cost[best] < 0.97 * cost["packed"] else "packed"


def gemm_choices() -> dict[tuple, str]:
    """The choices :func:`gemm_choice` timed in this process, for products alone (no
    packing counted): ``(dtype, B, N, K, threads, library) -> "packed" | "vendor" |
    "vendor_packed"`` (benchmarks record them)."""
    return {key: _cheapest(times, None) for key, times in _TIMES.items()}


def gemm_weight(weight, choice: str, batch: int):
    """What the C sequences take for ``weight (G, K)`` under ``choice`` in products with
    ``batch`` rows: its packed panels, the weight itself (vendor, contiguous), or MKL's
    packed form of ``W^T`` (vendor_packed)."""
    weight = weight.contiguous()
    if choice == "packed":
        return pack_panels(weight)
    if choice == "vendor":
        return weight
    size, pack, _ = vendor_packed(weight.dtype)
    G, K = weight.shape
    buf = weight.new_empty(-(-size(_CBLAS_B_MATRIX, batch, G, K) // weight.element_size()))
    pack(_CBLAS_ROW_MAJOR, _CBLAS_B_MATRIX, _CBLAS_TRANS, batch, G, K, 1.0, weight.data_ptr(), K, buf.data_ptr())
    return buf


def vendor_arg(dtype, choice: str) -> int | None:
    """The C sequences' ``vendor`` argument for ``choice``: None for rnnkit's packed GEMM,
    else the address of a ``struct rnnkit_blas`` naming the vendor function."""
    if choice == "packed":
        return None
    key = (str(dtype), choice)
    if key not in _BLAS:
        _BLAS[key] = (_Blas(vendor_gemm(dtype), None) if choice == "vendor"
                      else _Blas(None, vendor_packed(dtype)[2]))
    return ctypes.addressof(_BLAS[key])


def gemm(x, panels, out_features: int, add=None, out=None, choice: str = "packed"):
    """``x (B, K) @ W.T (+ add (B, N))`` with ``W (N = out_features, K)`` in the form
    :func:`gemm_weight` gives for ``choice`` (rows of ``x`` may be strided), into ``out``
    (contiguous ``(B, N)``) or a new tensor: the C GEMM the sequence kernels run per step,
    for tests and benchmarks. Shapes are checked: the C would read or write past a wrong one."""
    import torch  # deferred: the build helpers above need no torch
    B, K = x.shape
    if choice not in available_choices(x.dtype):
        raise RuntimeError(f"gemm: choice {choice!r} is not offered by this torch build for {x.dtype} "
                           f"(offered: {available_choices(x.dtype)})")
    if choice == "vendor":
        if tuple(panels.shape) != (out_features, K) or panels.dtype != x.dtype or not panels.is_contiguous():
            raise ValueError(f"gemm: vendor wants the contiguous ({out_features}, {K}) {x.dtype} weight")
    elif choice == "packed":
        nr = panel_width(x.dtype)
        if panels.numel() != (out_features + nr - 1) // nr * K * nr or panels.dtype != x.dtype:
            raise ValueError(f"gemm: panels of {panels.numel()} {panels.dtype} do not pack a "
                             f"({out_features}, {K}) {x.dtype} weight")
    else:
        need = vendor_packed(x.dtype)[0](_CBLAS_B_MATRIX, B, out_features, K)
        if panels.numel() * panels.element_size() < need or panels.dtype != x.dtype:
            raise ValueError(f"gemm: {panels.numel()} {panels.dtype} values do not hold MKL's packed "
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
    bind("gemm_select", x.dtype)(vendor_arg(x.dtype, choice), B, out_features, K, x.stride(0),
                                 torch.get_num_threads(), x.data_ptr(), panels.data_ptr(),
                                 None if add is None else add.data_ptr(), out.data_ptr())
    return out
