"""The documentation site: the generated configuration reference is current, and the site builds
strictly (a broken link or anchor fails the build).

A new environment variable or a new config field fails the first test until the page is
regenerated (``make docs``, or ``python docs/scripts/config_reference.py``). mkdocs comes with the
``test`` extra: if it is missing, the build test fails rather than being skipped.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

from recall_pipeline.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "scripts" / "config_reference.py"
PAGE = ROOT / "docs" / "reference" / "configuration.md"


def _render() -> str:
    return runpy.run_path(str(SCRIPT))["render"]()


def test_configuration_reference_is_generated_from_the_code():
    assert PAGE.read_text() == _render(), (
        "docs/reference/configuration.md differs from what the code says: run `make docs` "
        "(or `python docs/scripts/config_reference.py`) and commit the page")


def test_every_environment_variable_is_documented():
    page = PAGE.read_text()
    missing = [name for name in ENVIRONMENT if f"`{name}`" not in page]
    assert not missing, f"not in docs/reference/configuration.md: {missing}"


def test_site_builds_strictly(tmp_path):
    # no -q: in mkdocs 1.6.1 it raises the log level above WARNING, so --strict never sees the
    # warnings of broken links and anchors and the build passes
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").exists()
