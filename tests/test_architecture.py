"""The shape of the code: the layers import downwards only (service -> monitoring -> registry, and
inside service, cli -> the app -> protocols -> api -> serving -> processes -> settings and errors), and
no module imports itself back through others.

Imports are read from the source, at module level, ``TYPE_CHECKING`` blocks included (a reader
follows those too); an import inside a function (a factory choosing its backend, a heavy
dependency loaded late) is not an arrow of the module's shape.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("registry", "monitoring", "service")  # each may import only those before it


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    names: set[str] = set()
    for node in _top_level(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            names.update(submodules)
            if not submodules <= set(known):  # `from package import module` is an arrow to the module
                names.add(node.module)
    return {name for name in names if name in known}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {module: _imports(path, known) - {module} for module, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while (top := stack.pop()) != module:
                component.append(top)
            if component:
                found.append(sorted([module, *component]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_back_through_others():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: service's own layers, top first; a module may import only its own layer and those below it
SERVICE_LAYERS = (
    ("service.cli", "service.__main__"),
    ("service.app", "service.routes", "service.server", "service.gateway"),
    ("service.protocols",),
    ("service.api",),
    ("service.ui",),
    ("service.explain",),
    ("service.serving",),
    ("service.processes",),
    ("service.settings", "service.errors", "service"),
)


def _service_layer(module: str) -> int:
    for depth, prefixes in enumerate(SERVICE_LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in prefixes if p != "service"):
            return depth
    assert module == "service", f"{module}: place it in one of service's layers (SERVICE_LAYERS)"
    return len(SERVICE_LAYERS) - 1


def test_service_layers_import_downwards_only():
    graph = _graph()
    upward = [
        f"{module} imports {other}"
        for module, imports in graph.items()
        if module.startswith("service")
        for other in imports
        if other.startswith("service") and _service_layer(other) < _service_layer(module)
    ]
    assert upward == []


def test_layers_import_downwards_only():
    upward = [
        f"{module} imports {other}"
        for module, imports in _graph().items()
        for other in imports
        if PACKAGES.index(other.split(".")[0]) > PACKAGES.index(module.split(".")[0])
    ]
    assert upward == []


def _loaded_by(modules: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of ``heavy`` importing ``modules`` (comma-separated) loads, in a fresh interpreter."""
    probe = f"import sys, {modules}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                               cwd=ROOT, timeout=120)  # fmt: skip
    return completed.stdout.split()


def test_the_helper_processes_load_only_what_they_use():
    """The log writer and the monitor run beside every worker: neither runs a model or reads a
    reference, so neither loads ONNX Runtime or scikit-learn (the writer not even pandas or scipy),
    which held 200 MiB in each, nor pandas until a trigger exports a window (another 60 MiB in the
    monitor; load_tests/results/monitoring-memory.md)."""
    assert (
        _loaded_by("service.processes.log_writer", ("onnxruntime", "onnx", "sklearn", "pandas", "scipy"))
        == []
    )
    monitor = "service.processes.monitor, monitoring.monitor, monitoring.notify, monitoring.controller, "
    wired = monitor + "monitoring.triggers, monitoring.metrics"  # what the leading monitor imports
    assert _loaded_by(wired, ("onnxruntime", "onnx", "sklearn", "pandas")) == []
