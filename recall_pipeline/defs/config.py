"""Run configuration derived from the library's settings dataclasses.

The recommender logic keeps its parameters in frozen dataclasses (``SplitProtocol``,
``IndexSettings``, ...) with the defaults it was tuned with. The Launchpad needs them as
``dg.Config`` classes; deriving those here keeps one source of truth for every default.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any

import dagster as dg
import pydantic


def config_from(settings: type, name: str, doc: str, exclude: tuple[str, ...] = (),
                **extra: tuple[type, Any]) -> type[dg.Config]:
    """A ``dg.Config`` class with the fields, types and defaults of the ``settings`` dataclass
    (less ``exclude``), plus ``extra`` fields given as ``name=(type, default)``."""
    hints = typing.get_type_hints(settings)
    fields: dict[str, tuple[type, Any]] = {}
    for field in dataclasses.fields(settings):
        if field.name in exclude:
            continue
        if field.default is dataclasses.MISSING:
            raise TypeError(f"{settings.__name__}.{field.name} has no plain default to offer as config")
        fields[field.name] = (hints[field.name], field.default)
    config = pydantic.create_model(name, __base__=dg.Config, __doc__=doc, **fields, **extra)
    config.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)
    return config
