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


def config_from(settings: type | tuple[type, ...], name: str, doc: str, exclude: tuple[str, ...] = (),
                **extra: tuple[type, Any]) -> type[dg.Config]:
    """A ``dg.Config`` class with the fields, types and defaults of the ``settings`` dataclass
    (or of several, in order; names must not repeat), less ``exclude``, plus ``extra`` fields
    given as ``name=(type, default)``."""
    fields: dict[str, tuple[type, Any]] = {}
    for source in settings if isinstance(settings, tuple) else (settings,):
        hints = typing.get_type_hints(source)
        for field in dataclasses.fields(source):
            if field.name in exclude:
                continue
            if field.default is dataclasses.MISSING or field.name in fields:
                raise TypeError(f"{source.__name__}.{field.name}: no plain default, or a repeated name")
            fields[field.name] = (hints[field.name], field.default)
    config = pydantic.create_model(name, __base__=dg.Config, __doc__=doc, **fields, **extra)
    config.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)
    return config
