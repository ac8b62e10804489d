"""Environment variables are read in one place: every ``RECALL_PIPELINE_*`` name in the package is
registered in ``settings.ENVIRONMENT`` (which the configuration reference is generated from), and
only ``settings.py`` reads the process environment for one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recall_pipeline import settings

PACKAGE = Path(settings.__file__).parent
NAME = re.compile(r"RECALL_PIPELINE_[A-Z_]*[A-Z]")


def sources() -> dict[Path, str]:
    return {path: path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_variable_named_in_the_package_is_registered():
    named = {name for text in sources().values() for name in NAME.findall(text)}
    assert named - set(settings.ENVIRONMENT) == set()
    assert len(settings.ENVIRONMENT) >= 16  # the registry is the real list, not a stub


def test_only_settings_reads_them_from_the_environment():
    reads = re.compile(r"(os\.environ|os\.getenv|environ)(\.get)?\s*[\[(]\s*[\"']RECALL_PIPELINE_")
    offenders = [str(path.relative_to(PACKAGE)) for path, text in sources().items()
                 if path.name != "settings.py" and reads.search(text)]
    assert offenders == []


def test_a_blank_or_missing_variable_gives_its_default_and_a_set_one_wins():
    name = settings.HOME_ENV
    assert settings.env(name, {}) == settings.DEFAULT_HOME
    assert settings.env(name, {name: "  "}) == settings.DEFAULT_HOME
    assert settings.env(name, {name: " /srv/recall "}) == "/srv/recall"
    with pytest.raises(KeyError):
        settings.env("RECALL_PIPELINE_NOT_A_SETTING", {})
