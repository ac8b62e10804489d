"""bench/ stays runnable: every script's ``--help``, no import-path edits, every import declared.

The scripts under ``bench/perf``, ``bench/tuning`` and ``bench/experiments`` are run as modules
from the repository root (``python -m bench.perf.scale``). Here each one's ``--help`` runs in this
process (``runpy``), so the heavy libraries are imported once; a script that does real work before
parsing its arguments, or whose imports fail, fails its case. A helper module (no ``__main__``
block) is imported by the scripts that use it, so it is covered through them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import runpy
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPT_FOLDERS = ("perf", "tuning", "experiments")
FIRST_PARTY = {"bench", "recall_pipeline"}
# import names of declared distributions that may be absent (an optional extra not installed),
# where the name differs from the distribution's
KNOWN_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def _has_main_block(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("__name__ == '__main__'",
                                                                   "'__main__' == __name__"):
            return True
    return False


def script_modules() -> list[str]:
    """Every script module under the three folders: a .py file with a ``__main__`` block."""
    modules = []
    for folder in SCRIPT_FOLDERS:
        for path in sorted((BENCH / folder).glob("*.py")):
            if path.name != "__init__.py" and _has_main_block(path):
                modules.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return modules


def bench_sources() -> list[Path]:
    return sorted(p for p in BENCH.rglob("*.py") if "__pycache__" not in p.parts)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> tuple[set[str], set[str]]:
    """(the project's required distributions, those of its optional extras), normalised."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(specs: list[str]) -> set[str]:
        return {_normalise(re.match(r"[A-Za-z0-9._-]+", spec).group(0)) for spec in specs}

    optional = set().union(*(names(specs) for specs in project.get("optional-dependencies", {}).values()))
    return names(project["dependencies"]), optional


def imported_names() -> dict[str, list[str]]:
    """Top-level name of every absolute import in bench/ -> the files importing it."""
    found: dict[str, list[str]] = {}
    for path in bench_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(ROOT)))
    return found


def test_every_folder_has_scripts():
    modules = script_modules()
    for folder in SCRIPT_FOLDERS:
        assert (BENCH / folder / "__init__.py").exists()
        assert any(m.startswith(f"bench.{folder}.") for m in modules), folder
    assert (BENCH / "__init__.py").exists()


@pytest.mark.parametrize("module", script_modules())
def test_help(module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exited.value.code in (0, None)
    assert "usage" in capsys.readouterr().out


def test_no_import_path_edits():
    edited = [str(p.relative_to(ROOT)) for p in BENCH.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and ".cache" not in p.parts
              and "sys.path" in p.read_text(errors="replace")]
    assert not edited, f"bench/ runs as packages from the repository root; sys.path is edited in {edited}"


def test_every_import_is_declared_and_resolves():
    required, optional = declared_distributions()
    providers = importlib.metadata.packages_distributions()
    problems = []
    for name, files in sorted(imported_names().items()):
        if name in sys.stdlib_module_names or name in FIRST_PARTY:
            if importlib.util.find_spec(name) is None:
                problems.append(f"{name} ({files[0]}) does not resolve")
            continue
        dists = {_normalise(d) for d in providers.get(name, [])} or {_normalise(KNOWN_DISTRIBUTIONS.get(name, name))}
        if not dists & (required | optional):
            problems.append(f"{name} ({', '.join(sorted(set(files)))}) comes from {sorted(dists)}, "
                            "which pyproject.toml does not declare")
        elif importlib.util.find_spec(name) is None and dists & required:
            problems.append(f"{name} ({files[0]}) is declared but does not resolve")
    assert not problems, "\n".join(problems)


def test_project_imports_exist():
    """Every import of the project's own code in bench/, inside functions too (the imports a
    script makes only once it runs), names a module and attributes that exist: a renamed or
    moved module fails here, not in the middle of a long benchmark."""
    problems = []
    for path in bench_sources():
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                pairs = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                pairs = [(node.module, alias.name) for alias in node.names]
            else:
                continue
            for module, name in pairs:
                if module.split(".")[0] not in FIRST_PARTY:
                    continue
                try:
                    imported = importlib.import_module(module)
                except ImportError as exc:
                    problems.append(f"{where}:{node.lineno}: {module}: {exc}")
                    continue
                if name is not None and not hasattr(imported, name) \
                        and importlib.util.find_spec(f"{module}.{name}") is None:
                    problems.append(f"{where}:{node.lineno}: {module} has no {name}")
    assert not problems, "\n".join(problems)


def test_scale_stages_are_the_graph_in_order():
    """``bench.perf.scale`` materializes one stage per process in the order of ``STAGES``: a stage
    missing from it, or run before its upstream, breaks a long run at the first stage that reads it."""
    import dagster as dg

    from bench.perf.scale import STAGE_KEYS, STAGES
    from recall_pipeline.definitions import build_definitions
    from recall_pipeline.settings import home_layout

    graph = build_definitions(home_layout()).resolve_asset_graph()
    keys = [key for stage in STAGES for key in STAGE_KEYS.get(stage, (stage,))]
    position = {key: i for i, key in enumerate(keys)}
    jobs = {k.to_user_string() for k in graph.materializable_asset_keys} - {"run_failures"}
    assert set(keys) == jobs
    for key in keys:
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys} - {"run_failures"}
        assert all(position[p] < position[key] for p in parents), (key, parents)
