"""The recall model's versions in the MLflow model registry, and the champion rule.

Each training is an MLflow run; its model folder (safetensors weights, JSON config, item ids)
is logged as the run's ``model`` artifact and registered as a new version of one registered
model. The alias ``champion`` names the version that serves recall. It moves to a new version
only when that version's validation Recall@50 is at least the champion's, both measured on
training data alone (never the test split; :class:`Judgement` says which data judged, see
``core.training.recall_model.judge``); the first version becomes champion, and a champion
trained on another encoder's embeddings loses. mlflow is imported only inside these functions
(it is slow to import).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

MODEL_NAME = "recall_two_tower"
CHAMPION = "champion"
JUDGED_METRIC = "judged_recall_at_50"
VALIDATION_METRIC = "validation_recall_at_50"
VALIDATION_CUT = "validation_sha256"

# What judged a candidate against the champion (``Judgement.judged_on``)
FIRST_VERSION = "first version"
OTHER_ENCODER = "champion trained on another encoder"
SAME_CUT = "same validation cut"
FRESH_HOLDOUT = "current holdout less champion training pairs"


@dataclass(frozen=True)
class Judgement:
    """The figures the champion rule compares, and which data gave them.

    ``candidate_value`` / ``champion_value``: validation Recall@50 (None where nothing was
    measured); ``users`` / ``interactions``: the held-out users and relevant interactions they
    were measured on."""

    judged_on: str
    candidate_value: float | None
    champion_value: float | None = None
    users: int = 0
    interactions: int = 0

    @property
    def promotes(self) -> bool:
        """The champion rule: no champion yet, a champion that cannot serve, or a candidate at
        least as good on the same held-out data; with no held-out data to judge on, the
        champion stays."""
        if self.judged_on in (FIRST_VERSION, OTHER_ENCODER):
            return True
        if self.candidate_value is None or self.champion_value is None:
            return False
        return should_promote(self.candidate_value, self.champion_value)


@dataclass(frozen=True)
class Promotion:
    """What the champion rule decided for a candidate version."""

    version: str
    promoted: bool
    champion_before: str | None
    judgement: Judgement

    @property
    def candidate_value(self) -> float | None:
        return self.judgement.candidate_value

    @property
    def champion_value(self) -> float | None:
        return self.judgement.champion_value

    @property
    def reason(self) -> str:
        j = self.judgement
        if self.champion_before is None:
            return f"v{self.version} is the first version: champion"
        if j.judged_on == OTHER_ENCODER:
            return (f"v{self.version} promoted: champion v{self.champion_before} was trained on another "
                    f"encoder's embeddings and cannot serve")
        if j.candidate_value is None or j.champion_value is None:
            return (f"v{self.version} not promoted: no held-out interaction that neither version trained on "
                    f"({j.judged_on}); champion v{self.champion_before} stays")
        verdict = "promoted" if self.promoted else "not promoted"
        return (f"v{self.version} {verdict}: validation Recall@50 {j.candidate_value:.4f} against champion "
                f"v{self.champion_before}'s {j.champion_value:.4f} ({j.judged_on}: {j.users} users, "
                f"{j.interactions} held-out interactions)")


def should_promote(candidate: float, champion: float | None) -> bool:
    """No champion yet, or at least as good on the same held-out data."""
    return champion is None or candidate >= champion


def client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def register_version(tracking_uri: str, run_id: str, model_folder: Path, tags: dict[str, str],
                     name: str = MODEL_NAME) -> str:
    """Log ``model_folder`` as run ``run_id``'s ``model`` artifact and register it; the version."""
    from mlflow.exceptions import MlflowException

    registry = client(tracking_uri)
    registry.log_artifacts(run_id, str(model_folder), "model")
    try:
        registry.create_registered_model(name, description="Two-tower recall model on frozen LM item embeddings")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{registry.get_run(run_id).info.artifact_uri}/model"
    return str(registry.create_model_version(name, source, run_id=run_id, tags=tags).version)


def name_filter(name: str) -> str:
    """An MLflow search filter for one registered model name. MLflow's filter language has no
    parameters, so a name that could end the quoted string is refused instead of pasted in."""
    if any(quote in name for quote in "'\"`\\"):
        raise ValueError(f"registered model name {name!r} holds a quote or backslash; use a plain name")
    return f"name = '{name}'"


class RegistryUnavailableError(RuntimeError):
    """The registry could not be read (locked, unreachable, broken): the champion is unknown."""


def store_unavailable(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) says the MLflow store itself is locked,
    unreachable or broken, rather than something about the request."""
    while exc is not None:
        code = getattr(exc, "error_code", "")
        text = str(exc).lower()
        if code == "TEMPORARILY_UNAVAILABLE" or any(sign in text for sign in (
                "database is locked", "unable to open database", "file is not a database",
                "could not connect", "connection refused")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def unavailable_message(tracking_uri: str, exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return (f"the MLflow store {tracking_uri} is locked, unreachable or broken ({type(exc).__name__}: "
            f"{first_line}); nothing was registered or promoted. Close whatever holds it (another "
            "process writing the sqlite file), or fix RECALL_PIPELINE_MLFLOW_URI, and run again.")


def champion_version(tracking_uri: str, name: str = MODEL_NAME) -> str | None:
    """The champion's version number; None only when the registry says there is none (no
    registered model or no alias). Any other failure (a locked or unreachable store) raises:
    taking it for "no champion" would promote a new version without judging it."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(tracking_uri).get_model_version_by_alias(name, CHAMPION).version)
    except Exception as exc:
        if (isinstance(exc, MlflowException) and "not found" in str(exc)
                and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")):
            return None
        if isinstance(exc, MlflowException) or store_unavailable(exc):
            raise RegistryUnavailableError(
                unavailable_message(tracking_uri, exc) + " (the champion is unknown: no version was judged)") from exc
        raise


def resolve(tracking_uri: str, version: str, name: str = MODEL_NAME) -> str:
    """A version number from ``version``: a number, an alias (``champion``) or ``latest``."""
    from mlflow.exceptions import MlflowException

    registry = client(tracking_uri)
    try:
        if version == "latest":
            versions = registry.search_model_versions(name_filter(name))
            if not versions:
                raise LookupError(f"no version of {name!r} is registered yet; materialize recall_model first")
            return str(max(int(v.version) for v in versions))
        if version.isdigit():
            return str(registry.get_model_version(name, version).version)
        return str(registry.get_model_version_by_alias(name, version).version)
    except MlflowException as error:
        raise LookupError(f"model {name!r} has no version or alias {version!r} in {tracking_uri}: "
                          f"{error.message}") from error


def download(tracking_uri: str, version: str, destination: Path | None = None,
             name: str = MODEL_NAME) -> Path:
    """The registered version's model folder, downloaded (copied for a local store)."""
    import mlflow.artifacts

    source = client(tracking_uri).get_model_version(name, version).source
    target = destination or Path(tempfile.mkdtemp(prefix=f"{name}-v{version}-"))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target),
                                                    tracking_uri=tracking_uri))


def version_tags(tracking_uri: str, version: str, name: str = MODEL_NAME) -> dict[str, str]:
    return dict(client(tracking_uri).get_model_version(name, str(version)).tags)


def apply_champion_rule(tracking_uri: str, version: str, judgement: Judgement,
                        name: str = MODEL_NAME) -> Promotion:
    """Move the alias to ``version`` when the judgement says so; record what judged as tags.

    ``judgement`` compares ``version`` with the current champion (``core.training.recall_model.judge``)."""
    registry, version = client(tracking_uri), str(version)
    before = champion_version(tracking_uri, name)
    promoted = before is None or judgement.promotes
    tags = {"judged_on": judgement.judged_on, "judged_users": str(judgement.users),
            "judged_interactions": str(judgement.interactions), "champion_before": before or ""}
    for key, value in ((JUDGED_METRIC, judgement.candidate_value),
                       (f"champion_{JUDGED_METRIC}", judgement.champion_value)):
        if value is not None:
            tags[key] = f"{value:.6f}"
    for key, value in tags.items():
        registry.set_model_version_tag(name, version, key, value)
    if promoted:
        registry.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(version, promoted, before, judgement)


def versions(tracking_uri: str, name: str = MODEL_NAME) -> list[str]:
    """Every registered version number, newest first."""
    found = client(tracking_uri).search_model_versions(name_filter(name))
    return [str(v) for v in sorted((int(v.version) for v in found), reverse=True)]


@dataclass(frozen=True)
class Rejudgement:
    """Registered versions scored again on today's data: validation Recall@50 by version, all on
    the same held-out users and interactions, and the champion before and after."""

    values: dict[str, float]
    users: int
    interactions: int
    champion_before: str | None
    champion_after: str | None
    skipped: dict[str, str]   # version -> why it was not scored

    @property
    def reason(self) -> str:
        if not self.values:
            return f"nothing re-judged ({self.skipped or 'no version'}); the champion stays"
        scores = ", ".join(f"v{v} {value:.4f}" for v, value in sorted(self.values.items(), key=lambda kv: -int(kv[0])))
        moved = (f"champion moves from v{self.champion_before} to v{self.champion_after}"
                 if self.champion_after != self.champion_before else f"champion v{self.champion_before} stays")
        return f"{moved}: validation Recall@50 {scores} ({REJUDGED_ON}: {self.users} users, {self.interactions} interactions)"


REJUDGED_ON = "current holdout less every judged version's training pairs"


def rejudged_champion(values: dict[str, float], champion: str | None) -> str | None:
    """The champion after a re-judgement: another version only when strictly better than the
    champion on the same held-out data (a tie keeps it); no scored champion: the best version."""
    if not values:
        return champion
    best = max(values, key=lambda version: (values[version], int(version)))
    if champion in values and values[best] <= values[champion]:
        return champion
    return best


def apply_rejudgement(tracking_uri: str, rejudgement: Rejudgement, name: str = MODEL_NAME) -> None:
    """Record each version's figure as tags and move the alias when the champion changed."""
    registry = client(tracking_uri)
    for version, value in rejudgement.values.items():
        registry.set_model_version_tag(name, version, f"rejudged_{JUDGED_METRIC}", f"{value:.6f}")
        registry.set_model_version_tag(name, version, "rejudged_users", str(rejudgement.users))
    if rejudgement.champion_after and rejudgement.champion_after != rejudgement.champion_before:
        registry.set_registered_model_alias(name, CHAMPION, rejudgement.champion_after)
