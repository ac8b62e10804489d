"""The recall model's versions in the MLflow model registry, and the champion rule.

Each training is an MLflow run; its model folder (safetensors weights, JSON config, item ids)
is logged as the run's ``model`` artifact and registered as a new version of one registered
model. The alias ``champion`` names the version that serves recall. It moves to a new version
only when that version's figure on the protocol's main metric (warm Recall@50) is at least the
champion's, both measured on the same split in the same run; the first version becomes
champion. mlflow is imported only inside these functions (it is slow to import).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

MODEL_NAME = "recall_two_tower"
CHAMPION = "champion"
MAIN_METRIC = "warm_recall_at_50"


@dataclass(frozen=True)
class Promotion:
    """What the champion rule decided for a candidate version."""

    version: str
    promoted: bool
    champion_before: str | None
    candidate_value: float | None
    champion_value: float | None

    @property
    def reason(self) -> str:
        if self.champion_before is None:
            return f"v{self.version} is the first version: champion"
        verdict = "promoted" if self.promoted else "not promoted"
        return (f"v{self.version} {verdict}: {MAIN_METRIC} {self.candidate_value:.4f} against champion "
                f"v{self.champion_before}'s {self.champion_value:.4f}")


def should_promote(candidate: float, champion: float | None) -> bool:
    """The champion rule: no champion yet, or at least as good on the main metric."""
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


def champion_version(tracking_uri: str, name: str = MODEL_NAME) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client(tracking_uri).get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def resolve(tracking_uri: str, version: str, name: str = MODEL_NAME) -> str:
    """A version number from ``version``: a number, an alias (``champion``) or ``latest``."""
    from mlflow.exceptions import MlflowException

    registry = client(tracking_uri)
    try:
        if version == "latest":
            versions = registry.search_model_versions(f"name = '{name}'")
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


def apply_champion_rule(tracking_uri: str, version: str, candidate_value: float,
                        champion_value: float | None, name: str = MODEL_NAME) -> Promotion:
    """Move the alias to ``version`` when the rule says so; record the figures as tags.

    ``champion_value`` is the current champion's figure measured in the same run (None when
    there is no champion)."""
    registry, version = client(tracking_uri), str(version)
    before = champion_version(tracking_uri, name)
    if before is None:
        champion_value = None
    promoted = should_promote(candidate_value, champion_value)
    registry.set_model_version_tag(name, version, MAIN_METRIC, f"{candidate_value:.6f}")
    if promoted:
        registry.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(version, promoted, before, candidate_value, champion_value)
