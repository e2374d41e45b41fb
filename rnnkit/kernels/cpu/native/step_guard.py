"""``step_guard.cpp`` built into a Python extension on first use: the checks of a
stream's fast step (:func:`rnnkit.nn.native_step.fast_step`) read in C++.

Why: at batch 1 a step's GEMV sweeps an L2's worth of weights (2 MB at H256), so each
tensor getter the Python checks call afterwards runs from code and data fetched back
from L3. Measured on a 2-core AVX-512 Xeon at H256, one thread: the C step alone ~38 us a
step in a loop, with the ~15 getters of the checks ~54 us, through the Python checks ~76 us
(torch.nn.LSTMCell's loop: ~119 us). The C++ reads the same fields inline.

Built like the C steps (:mod:`rnnkit.kernels.cpu.native`): with the system's C++
compiler (``$CXX`` or ``c++``) against the installed torch's headers and libraries,
cached under the same directory, named by a hash of the source, compiler, flags, torch
and Python, written to a temporary file and renamed into place; a compiler's refusal is
remembered (``*.failed``). No compiler, no Python headers, ``RNNKIT_NATIVE=0`` or
``RNNKIT_STEP_GUARD=0``: :func:`module` returns None and the Python checks run (the
same checks, tested against each other).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

from . import _remember_failure, cache_dir, enabled

SOURCE = Path(__file__).with_name("step_guard.cpp")
NAME = "rnnkit_step_guard"
#: tried in order (torch's headers want C++20 features; C++17 compilers warn and cope)
STANDARDS = ("-std=c++20", "-std=c++17")


def _compiler() -> list[str] | None:
    cxx = shlex.split(os.environ.get("CXX", "c++"))
    path = shutil.which(cxx[0]) if cxx else None
    return None if path is None else [path, *cxx[1:]]


def _flags(standard: str) -> list[str]:
    import torch
    root = Path(torch.__file__).parent
    lib = root / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return ["-O2", "-shared", "-fPIC", "-w", standard, f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            f"-I{root / 'include'}", f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
            f"-I{sysconfig.get_paths()['include']}", f"-L{lib}", f"-Wl,-rpath,{lib}",
            "-ltorch_python", "-ltorch", "-lc10"]


def _path(cxx: list[str], flags: list[str]) -> Path:
    import torch
    digest = hashlib.sha256(SOURCE.read_bytes())
    for part in (*cxx, *flags, torch.__version__, sysconfig.get_config_var("EXT_SUFFIX") or ""):
        digest.update(part.encode())
    return cache_dir() / f"{NAME}_{digest.hexdigest()[:16]}.so"


def _build(cxx: list[str], flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([*cxx, str(SOURCE), "-o", tmp, *flags], check=True, capture_output=True, text=True,
                       errors="replace", timeout=300)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@functools.lru_cache(maxsize=None)
def module() -> ModuleType | None:
    """The built extension, building it on the first call; None if unavailable (then
    silently: the Python checks are the same, only slower)."""
    if not enabled() or os.environ.get("RNNKIT_STEP_GUARD", "1") == "0":
        return None
    cxx = _compiler()
    if cxx is None or not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return None
    for standard in STANDARDS:
        flags = _flags(standard)
        path = _path(cxx, flags)
        failed = path.with_suffix(".failed")
        if failed.exists():
            continue
        try:
            if not path.exists():
                _build(cxx, flags, path)
            return _load(path)
        except (OSError, ImportError, subprocess.SubprocessError) as err:
            if isinstance(err, subprocess.CalledProcessError):
                _remember_failure(failed, (err.stderr or str(err)).strip()[:300])
    return None
