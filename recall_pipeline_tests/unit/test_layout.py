"""The layout's rules, checked on the source: core/ never imports Dagster, only runtime/ imports
Dagster's private API, and the package's imports (module-level and inside functions alike) form
no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "recall_pipeline"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every module a file imports, as dotted names: ``from a import b`` counts as ``a.b`` when
    that is a module of the package (a submodule), else as ``a``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


GRAPH = {name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("recall_pipeline.core")))
def test_core_never_imports_dagster(name):
    assert not {m for m in imports(MODULES[name]) if m.split(".")[0].startswith("dagster")}


def test_defs_layout_mirrors_core_groups():
    groups = {p.name for p in (PACKAGE / "core").iterdir() if (p / "__init__.py").exists()}
    assert groups == {p.name for p in (PACKAGE / "defs").iterdir() if (p / "__init__.py").exists()}
    assert groups == {"ingest", "features", "training", "recall", "evaluation", "operations"}


def test_only_the_runtime_package_imports_dagsters_private_api():
    private = {name: sorted(m for m in imports(path) if m.startswith("dagster._"))
               for name, path in MODULES.items() if not name.startswith("recall_pipeline.runtime")}
    assert {name: found for name, found in private.items() if found} == {}
    # and the runtime package does use it, so the rule above is not vacuous
    assert any(m.startswith("dagster._") for m in imports(PACKAGE / "runtime" / "run_recovery.py"))


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [name, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
