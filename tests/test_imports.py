"""Import hygiene: no import cycles inside rnnkit, a light ``import rnnkit``, and
the one atomic writer as used by :meth:`rnnkit.data.Vocab.save`.

The cycle check reads the source with :mod:`ast` instead of importing it, so it
sees *every* import: module level, inside functions (a "deferred" import only
hides a cycle until the function runs), under ``try`` and under ``if
TYPE_CHECKING`` (a type-only cycle still means two modules that each need the
other to be understood; break it with a Protocol or by moving code instead).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rnnkit
from rnnkit.data import Vocab

PACKAGE_DIR = Path(rnnkit.__file__).resolve().parent
ROOT = PACKAGE_DIR.parent


# --- the import graph -----------------------------------------------------------------------

def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package_dir: Path) -> dict[str, Path]:
    """Every module of a package by dotted name (``rnnkit.nn`` is ``rnnkit/nn/__init__.py``)."""
    return {_module_name(p, package_dir.parent): p
            for p in sorted(package_dir.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    """The absolute name ``from {'.' * level}{module} import ...`` refers to inside ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()  # a plain module's "." is its package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source.

    ``import a.b.c`` is an edge to ``a.b.c``; ``from pkg import x`` is an edge to
    ``pkg.x`` when that is a module, else to ``pkg``. Implicit edges from a module
    to its parent packages (which Python imports first) are not added: with them
    every package ``__init__`` that imports its own submodules would be a cycle.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, is_package, node.module, node.level)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
    return {m for m in found if m in modules and m != name}


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, for every module under ``package_dir``."""
    modules = _modules(package_dir)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        color[start] = GREY
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        while stack:
            node, todo = stack[-1]
            if not todo:
                color[node] = BLACK
                stack.pop()
                continue
            nxt = todo.pop(0)
            if color[nxt] == GREY:
                path = [n for n, _ in stack]
                return path[path.index(nxt):] + [nxt]
            if color[nxt] == WHITE:
                color[nxt] = GREY
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_graph_sees_every_kind_of_import(tmp_path):
    """The checker itself, on a toy package: relative levels, ``from pkg import submodule``
    versus ``from pkg import name``, and imports hidden in functions or TYPE_CHECKING."""
    files = {
        "pkg/__init__.py": "from .sub import thing\n",
        "pkg/a.py": "import pkg.b\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n",
        "pkg/b.py": "def f():\n    from . import c\n",
        "pkg/c.py": "from pkg import a\nimport os\n",
        "pkg/sub/__init__.py": "from .. import c\nfrom . import leaf\n",
        "pkg/sub/leaf.py": "from ..sub import thing\nfrom ... import outside\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(tmp_path / "pkg")
    assert graph == {"pkg": {"pkg.sub"}, "pkg.a": {"pkg.b", "pkg.c"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"},
                     "pkg.sub": {"pkg.c", "pkg.sub.leaf"}, "pkg.sub.leaf": {"pkg.sub"}}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(set(cycle)) == len(cycle) - 1
    assert all(b in graph[a] for a, b in zip(cycle, cycle[1:]))
    assert set(cycle) <= {"pkg.a", "pkg.b", "pkg.c"}
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    real = import_graph()
    assert {"rnnkit.kernels", "rnnkit.kernels.reference"} <= real["rnnkit.nn.scan"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# --- a light `import rnnkit` ------------------------------------------------------------------

def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_data_and_checkpoint_do_not_import_the_kernels():
    """``rnnkit sample`` or ``rnnkit data list`` need no kernels (nor their Triton checks)."""
    out = _run("""
        import sys
        import rnnkit, rnnkit.data, rnnkit.train.checkpoint
        print(sorted(m for m in sys.modules if m == "rnnkit.kernels" or m.startswith(("rnnkit.kernels.", "rnnkit.nn"))))
        from rnnkit import LSTM
        print(LSTM.__module__, "rnnkit.kernels" in sys.modules, rnnkit.LSTM is LSTM)
    """)
    loaded, resolved = out.splitlines()
    assert loaded == "[]"
    assert resolved == "rnnkit.nn.lstm True True"


def test_lazy_names_match_all_and_dir():
    for name in rnnkit.__all__:
        assert getattr(rnnkit, name) is not None
        assert name in dir(rnnkit)
    assert rnnkit.nn.LSTM is rnnkit.LSTM and rnnkit.cells.LSTMCell is rnnkit.LSTMCell
    with pytest.raises(AttributeError, match="no_such_name"):
        rnnkit.no_such_name  # noqa: B018


# --- Vocab.save through rnnkit.atomic ---------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_vocab_save_leaves_no_temp_file_and_honours_umask(tmp_path, umask):
    path = tmp_path / "vocab.json"
    old = os.umask(umask)
    try:
        Vocab.build(["a", "b"]).save(path)
        Vocab.build(["c"]).save(path)  # replacing an existing file too
    finally:
        os.umask(old)
    assert os.listdir(tmp_path) == ["vocab.json"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert Vocab.load(path) == Vocab.build(["c"])
