"""The route settings a full refresh chose (``route_selection``), stored for the runs that follow.

One JSON file, replaced atomically: the settings as ``RouteSettings.to_json`` wrote them, how they
were chosen (``searched`` or ``pinned``), the run that chose them and the selection's record
(every single route's and every candidate's validation figures, the guard's decision). The
recall run of the same refresh serves them; feedback refreshes reuse them until the next full
refresh chooses again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from recall_pipeline.core.recall.routes import RouteSettings

SEARCHED, PINNED = "searched", "pinned"


@dataclass(frozen=True)
class ChosenSettings:
    settings: RouteSettings
    how: str            # SEARCHED or PINNED
    run_id: str
    record: dict        # route_selection.Selection.record() (empty when pinned)

    @property
    def decision(self) -> str:
        return self.record.get("decision", "pinned by config: no search") if self.how == SEARCHED else \
            "pinned by config: no search"


def save_choice(path: Path, choice: ChosenSettings) -> None:
    """Write ``choice`` beside ``path`` and rename it onto ``path``: readers see one whole choice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"settings": choice.settings.to_json(), "how": choice.how, "run_id": choice.run_id,
                               "record": choice.record}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def load_choice(path: Path) -> ChosenSettings | None:
    """The stored choice (None before the first ``route_settings`` materialization); a file that
    does not parse is an error naming it."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
        return ChosenSettings(RouteSettings.from_json(stored["settings"]), stored["how"], stored["run_id"],
                              stored.get("record", {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a stored route-settings choice ({exc}); re-materialize route_settings") from None
