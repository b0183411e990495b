"""The package's architecture, checked on its source: layers, no import cycles, third-party rooms.

Every ``import`` statement of every module under ``onnx_sk/`` is read with :mod:`ast` (module
level, function-local, under ``if TYPE_CHECKING:``, inside ``try``), nothing is executed except in
the public-API test. An import is an edge ``importer -> target`` where ``from P import n``
targets the module ``P.n`` when it is a file of the package and ``P`` otherwise. Importing
``onnx_sk.maths.spec`` also runs ``onnx_sk/__init__.py`` and ``onnx_sk/maths/__init__.py``; those
implicit parent imports are not edges.

A module's layer is the first path component under ``onnx_sk/`` (a folder, or the module name for
a top-level module). A module imports its own layer and lower layers, never a higher one.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE_DIR = ROOT / "onnx_sk"
PACKAGE = PACKAGE_DIR.name

# Lowest first. The package itself ("onnx_sk", its __init__) is the public API layer.
LAYERS = (
    "maths",
    "errors",
    "options",
    "graph",
    "width",
    "runtime",
    "training",
    "report",
    "passes",
    "pipeline",
    PACKAGE,
    "cli",
    "__main__",
)

# Third-party packages that only one layer may import.
ROOMS = {
    "onnxruntime": "runtime",
    "threadpoolctl": "runtime",
    "torch": "training",
    "typer": "cli",
    "rich": "cli",
    "click": "cli",
    "matplotlib": "cli",
}

# What the bottom layers may import besides the standard library and their own package layers.
THIRD_PARTY_ALLOWED = {
    "maths": {"numpy"},
    "graph": {"numpy", "onnx"},
}

# onnx_sk modules that may be imported inside a function: each imports an optional dependency at
# its top, so callers defer the import on purpose (the package works without that extra).
DEFERRED_IMPORTS_ALLOWED = {
    "onnx_sk.training.module",  # imports torch (the [torch] extra) at module level
    "onnx_sk.training.fit",  # imports torch (the [torch] extra) at module level
    "onnx_sk.training.partial",  # imports training.module (torch) at module level
}

MAX_TOP_LEVEL_ENTRIES = 12
NOT_ENTRIES = {"__init__.py", "__main__.py", "__pycache__"}

PUBLIC_API_NAMES = {"__version__", "__all__"}


# --- the helper: every import of a package, as edges ---------------------------------------------


@dataclass(frozen=True)
class Import:
    """One imported name of one import statement."""

    module: str  # the importing module, e.g. "onnx_sk.graph.load"
    path: str  # its file, relative to the package's parent folder
    line: int
    statement: str  # the statement as written (unparsed), e.g. "from onnx_sk.maths import spec"
    target: str  # resolved module: "onnx_sk.maths.spec", or the full external name "numpy.linalg"
    internal: bool  # the target is a module of the package (it may not exist as a file)
    local: bool  # inside a function (deferred until called)

    @property
    def root(self) -> str:
        """The top-level package of the target ("numpy" for "numpy.linalg")."""
        return self.target.split(".")[0]

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.statement}"


def module_name(path: Path, package_dir: Path) -> str:
    """``onnx_sk/a/b.py`` -> ``onnx_sk.a.b``; ``onnx_sk/a/__init__.py`` -> ``onnx_sk.a``."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package (``__pycache__`` excluded), by dotted name."""
    return {
        module_name(path, package_dir): path
        for path in sorted(package_dir.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _function_local(tree: ast.Module) -> set[int]:
    """ids of the import nodes that sit inside a function or lambda."""
    local: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    local.add(id(inner))
    return local


def _base_of_relative(module: str, is_package: bool, level: int) -> str:
    """The package that ``from .`` (level 1), ``from ..`` (level 2), ... names inside ``module``."""
    parts = module.split(".")
    if not is_package:
        parts.pop()
    if level - 1 > len(parts) - 1:
        raise ValueError(f"relative import beyond the top-level package in {module}")
    return ".".join(parts[: len(parts) - (level - 1)])


def collect_imports(package_dir: Path) -> list[Import]:
    """Every import of every module of the package at ``package_dir``, one entry per name."""
    package = package_dir.name
    modules = package_modules(package_dir)
    imports: list[Import] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        local = _function_local(tree)
        rel = path.relative_to(package_dir.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _base_of_relative(module, path.name == "__init__.py", node.level)
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                targets = []
                for alias in node.names:
                    candidate = f"{source}.{alias.name}"
                    targets.append(candidate if candidate in modules else source)
            else:
                continue
            for target in dict.fromkeys(targets):  # one edge per target and statement
                imports.append(
                    Import(
                        module=module,
                        path=rel,
                        line=node.lineno,
                        statement=ast.unparse(node),
                        target=target,
                        internal=target.split(".")[0] == package,
                        local=id(node) in local,
                    )
                )
    return sorted(imports, key=lambda imp: (imp.path, imp.line, imp.target))


def layer_of(module: str) -> str:
    """``onnx_sk.graph.load`` -> ``graph``; ``onnx_sk.errors`` -> ``errors``; ``onnx_sk`` itself
    -> ``onnx_sk``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def top_level_entries(package_dir: Path) -> list[str]:
    """The modules (without ``.py``) and folders at the top of the package, except ``__init__``,
    ``__main__``, ``__pycache__``, hidden entries and non-Python files."""
    entries = []
    for entry in sorted(package_dir.iterdir()):
        if entry.name in NOT_ENTRIES or entry.name.startswith("."):
            continue
        if entry.is_dir():
            entries.append(entry.name)
        elif entry.suffix == ".py":
            entries.append(entry.stem)
    return entries


def unknown_layers(package_dir: Path, layers: Iterable[str] = LAYERS) -> list[str]:
    """Top-level entries (``__main__`` included) that the layer list does not place."""
    known = set(layers)
    names = top_level_entries(package_dir)
    if (package_dir / "__main__.py").exists():
        names.append("__main__")
    return [name for name in names if name not in known]


def layer_violations(imports: Iterable[Import], layers: tuple[str, ...] = LAYERS) -> list[str]:
    """Imports of a module of a higher layer (edges between known layers only)."""
    rank = {name: i for i, name in enumerate(layers)}
    bad = []
    for imp in imports:
        if not imp.internal:
            continue
        src, dst = layer_of(imp.module), layer_of(imp.target)
        if src in rank and dst in rank and rank[dst] > rank[src]:
            bad.append(f"{imp.where()}  ({src} imports the higher layer {dst}: {imp.target})")
    return bad


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = lowlink[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    lowlink[node] = min(lowlink[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def import_cycles(imports: Iterable[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each cycle between package modules: its members and the imports that close it."""
    imports = [imp for imp in imports if imp.internal]
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        graph[imp.module].add(imp.target)
    cycles = []
    for component in strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue  # a single module that does not import itself
        edges = [imp for imp in imports if imp.module in members and imp.target in members]
        cycles.append((component, edges))
    return sorted(cycles)


def room_violations(imports: Iterable[Import]) -> list[str]:
    """Third-party packages outside their room; maths and graph importing outside their lists."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    stdlib = sys.stdlib_module_names
    bad = []
    for imp in imports:
        layer = layer_of(imp.module)
        if not imp.internal and imp.root in ROOMS and ROOMS[imp.root] != layer:
            bad.append(f"{imp.where()}  ({imp.root} only under onnx_sk/{ROOMS[imp.root]}/)")
            continue
        if layer not in THIRD_PARTY_ALLOWED:
            continue
        if imp.internal:
            dst = layer_of(imp.target)
            lower = dst in rank and rank[dst] < rank[layer]
            if dst != layer and not (layer == "graph" and lower):
                bad.append(f"{imp.where()}  ({layer} may not import {imp.target})")
        elif imp.root not in stdlib and imp.root not in THIRD_PARTY_ALLOWED[layer]:
            allowed = ", ".join(sorted(THIRD_PARTY_ALLOWED[layer]))
            bad.append(f"{imp.where()}  ({layer} imports only the stdlib and {allowed})")
    return bad


def deferred_violations(imports: Iterable[Import]) -> list[str]:
    """Function-local imports of package modules outside the allow-list."""
    return [
        f"{imp.where()}  (function-local import of {imp.target})"
        for imp in imports
        if imp.internal and imp.local and imp.target not in DEFERRED_IMPORTS_ALLOWED
    ]


def _report(title: str, lines: list[str]) -> str:
    return f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)


# --- the package's rules ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return collect_imports(PACKAGE_DIR)


def test_layers(imports: list[Import]) -> None:
    """a. Each module imports its own layer and lower ones; every top-level entry has a layer."""
    problems = []
    unknown = unknown_layers(PACKAGE_DIR)
    if unknown:
        problems.append(
            _report(
                "top-level entries without a layer: place each new entry in LAYERS "
                "(tests/test_layering.py), lowest first",
                [f"onnx_sk/{name}" for name in unknown],
            )
        )
    violations = layer_violations(imports)
    if violations:
        order = " < ".join(LAYERS)
        problems.append(_report(f"imports of a higher layer ({order})", violations))
    assert not problems, "\n".join(problems)


def test_no_import_cycles(imports: list[Import]) -> None:
    """b. No cycle between package modules, counting every import (function-local too)."""
    cycles = import_cycles(imports)
    message = [f"{len(cycles)} import cycle(s):"]
    for members, edges in cycles:
        message.append(f"  cycle of {len(members)}: {', '.join(members)}")
        closing: dict[str, list[str]] = defaultdict(list)  # one line per statement
        for imp in edges:
            closing[imp.where()].append(imp.target)
        message += [f"    {where}  (-> {', '.join(t)})" for where, t in closing.items()]
    assert not cycles, "\n".join(message)


def test_third_party_rooms(imports: list[Import]) -> None:
    """c. onnxruntime/threadpoolctl only in runtime, torch only in training, typer/rich/click/
    matplotlib only in cli; maths imports stdlib + numpy + maths, graph stdlib + numpy + onnx +
    lower layers."""
    bad = room_violations(imports)
    assert not bad, _report("imports outside their room", bad)


def test_no_function_local_imports_of_the_package(imports: list[Import]) -> None:
    """d. Deferred imports of package modules only for those that import an optional extra."""
    bad = deferred_violations(imports)
    allowed = ", ".join(sorted(DEFERRED_IMPORTS_ALLOWED))
    assert not bad, _report(
        f"function-local imports of onnx_sk modules (allowed only for: {allowed}; import at the "
        "top, or add the module to DEFERRED_IMPORTS_ALLOWED with the reason)",
        bad,
    )


def test_few_top_level_entries() -> None:
    """e. The top of the package stays small: layers live in folders."""
    entries = top_level_entries(PACKAGE_DIR)
    assert len(entries) <= MAX_TOP_LEVEL_ENTRIES, (
        f"{len(entries)} entries at the top of onnx_sk/ (at most {MAX_TOP_LEVEL_ENTRIES}): "
        + ", ".join(entries)
    )


def test_imports_resolve_to_package_files(imports: list[Import]) -> None:
    """Every import of a package module names a file of the package (else the graph has holes)."""
    modules = package_modules(PACKAGE_DIR)
    bad = [
        f"{imp.where()}  (no module {imp.target})"
        for imp in imports
        if imp.internal and imp.target not in modules
    ]
    assert not bad, _report("imports of onnx_sk modules that do not exist", bad)


def test_public_api_module() -> None:
    """f. onnx_sk/__init__.py holds a docstring, imports, __version__ and __all__ only, and every
    name of __all__ imports."""
    path = PACKAGE_DIR / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = []
    all_names: list[str] | None = None
    for i, node in enumerate(tree.body):
        where = f"onnx_sk/__init__.py:{node.lineno}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                continue  # the docstring
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if len(names) == len(targets) and set(names) <= PUBLIC_API_NAMES:
                if "__all__" in names:
                    try:
                        all_names = list(ast.literal_eval(node.value or ast.Constant(None)))
                    except (TypeError, ValueError):
                        bad.append(f"{where}: __all__ is not a literal list of strings")
                continue
        bad.append(f"{where}: {ast.unparse(node).splitlines()[0]}")
    assert not bad, _report(
        "onnx_sk/__init__.py holds only a docstring, imports, __version__ and __all__", bad
    )
    assert all_names is not None, "onnx_sk/__init__.py defines no __all__"
    assert all(isinstance(name, str) for name in all_names), all_names
    assert len(set(all_names)) == len(all_names), f"duplicates in __all__: {all_names}"

    missing = []
    for name in all_names:
        try:
            module = __import__(PACKAGE, fromlist=[name])  # as `from onnx_sk import name`
            getattr(module, name)
        except Exception as exc:  # noqa: BLE001 - any failure is reported with its name
            missing.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not missing, _report("names of onnx_sk.__all__ that do not import", missing)


# --- the helper checked on a synthetic package (so the rules above can fail) ---------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / PACKAGE


SYNTHETIC = {
    "onnx_sk/__init__.py": '"""API."""\nfrom onnx_sk.pipeline import run\n',
    "onnx_sk/maths/__init__.py": "",
    "onnx_sk/maths/spec.py": (
        '"""Docstrings naming `import onnx_sk.cli` or `from torch import nn` are no imports."""\n'
        "from __future__ import annotations\n"
        "import math\n"
        "from typing import TYPE_CHECKING\n"
        "import numpy as np\n"
        "from onnx_sk.maths import efficiency\n"
        "if TYPE_CHECKING:\n"
        "    from onnx_sk.training.module import Net  # a layer violation, even for typing\n"
        'TEXT = "import onnx; from onnx_sk.cli import app"\n'
    ),
    "onnx_sk/maths/efficiency.py": "from .spec import np  # relative: onnx_sk.maths.spec\n",
    "onnx_sk/graph/__init__.py": "",
    "onnx_sk/graph/load.py": (
        "import onnx\n"
        "from ..maths import spec\n"
        "def f():\n"
        "    from onnx_sk.pipeline import run  # function-local, higher layer, closes a cycle\n"
        "    import onnxruntime\n"
    ),
    "onnx_sk/pipeline.py": (
        "try:\n    import torch\nexcept ImportError:\n    torch = None\n"
        "from onnx_sk.graph import load\n"
        "def run():\n    from onnx_sk.training import module\n"
    ),
    "onnx_sk/training/__init__.py": "",
    "onnx_sk/training/module.py": "import torch\n",
    "onnx_sk/fit.py": "",
}


def test_helper_resolves_imports(tmp_path: Path) -> None:
    imports = collect_imports(_write(tmp_path, SYNTHETIC))
    edges = {(imp.module, imp.target, imp.local) for imp in imports}
    assert edges == {
        ("onnx_sk", "onnx_sk.pipeline", False),
        ("onnx_sk.maths.spec", "__future__", False),
        ("onnx_sk.maths.spec", "math", False),
        ("onnx_sk.maths.spec", "typing", False),
        ("onnx_sk.maths.spec", "numpy", False),
        ("onnx_sk.maths.spec", "onnx_sk.maths.efficiency", False),
        ("onnx_sk.maths.spec", "onnx_sk.training.module", False),
        ("onnx_sk.maths.efficiency", "onnx_sk.maths.spec", False),
        ("onnx_sk.graph.load", "onnx", False),
        ("onnx_sk.graph.load", "onnx_sk.maths.spec", False),
        ("onnx_sk.graph.load", "onnx_sk.pipeline", True),
        ("onnx_sk.graph.load", "onnxruntime", True),
        ("onnx_sk.pipeline", "torch", False),
        ("onnx_sk.pipeline", "onnx_sk.graph.load", False),
        ("onnx_sk.pipeline", "onnx_sk.training.module", True),
        ("onnx_sk.training.module", "torch", False),
    }


def test_helper_finds_layer_violations_and_unknown_entries(tmp_path: Path) -> None:
    package_dir = _write(tmp_path, SYNTHETIC)
    imports = collect_imports(package_dir)
    bad = layer_violations(imports)
    assert len(bad) == 2, bad
    assert bad[0].startswith("onnx_sk/graph/load.py:4: from onnx_sk.pipeline import run")
    assert "(graph imports the higher layer pipeline" in bad[0]
    assert bad[1].startswith("onnx_sk/maths/spec.py:8: from onnx_sk.training.module import Net")
    assert "(maths imports the higher layer training" in bad[1]
    assert unknown_layers(package_dir) == ["fit"]
    assert top_level_entries(package_dir) == ["fit", "graph", "maths", "pipeline", "training"]


def test_helper_finds_cycles(tmp_path: Path) -> None:
    imports = collect_imports(_write(tmp_path, SYNTHETIC))
    cycles = {tuple(members): edges for members, edges in import_cycles(imports)}
    assert set(cycles) == {
        ("onnx_sk.graph.load", "onnx_sk.pipeline"),  # via a function-local import
        ("onnx_sk.maths.efficiency", "onnx_sk.maths.spec"),  # via a relative import
    }
    lines = {imp.where() for imp in cycles[("onnx_sk.graph.load", "onnx_sk.pipeline")]}
    assert lines == {
        "onnx_sk/graph/load.py:4: from onnx_sk.pipeline import run",
        "onnx_sk/pipeline.py:5: from onnx_sk.graph import load",
    }


def test_helper_finds_room_and_deferred_violations(tmp_path: Path) -> None:
    imports = collect_imports(_write(tmp_path, SYNTHETIC))
    rooms = room_violations(imports)
    assert [line.split("  (")[0] for line in rooms] == [
        "onnx_sk/graph/load.py:4: from onnx_sk.pipeline import run",
        "onnx_sk/graph/load.py:5: import onnxruntime",
        "onnx_sk/maths/spec.py:8: from onnx_sk.training.module import Net",
        "onnx_sk/pipeline.py:2: import torch",
    ]
    deferred = deferred_violations(imports)  # training.module is allowed, pipeline is not
    assert deferred == [
        "onnx_sk/graph/load.py:4: from onnx_sk.pipeline import run  "
        "(function-local import of onnx_sk.pipeline)"
    ]


def test_tarjan_on_a_long_chain_and_a_self_loop() -> None:
    chain = {f"m{i}": {f"m{i + 1}"} for i in range(5000)}  # deeper than the recursion limit
    chain["m5000"] = {"m0"}
    chain["solo"] = {"solo"}
    components = sorted(strongly_connected(chain), key=len)
    assert components[-1] == sorted(chain.keys() - {"solo"})
    assert ["solo"] in components
