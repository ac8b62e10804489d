"""What can be checked of docker/ without a Docker engine: the files parse, they fit together,
and the image installs the project the way the Makefile does. (test_production_layout.py runs
the services' commands and settings on this machine.)"""

import re
import shlex
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
DAGSTER_SERVICES = ("code", "worker", "webserver", "daemon")


def env_references(node) -> set[str]:
    """Every ``{env: NAME}`` in a parsed Dagster YAML file."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(value) for value in node.values()))
    return set()


def mounted(service: str, host_file: str) -> str:
    """Where the service mounts ``./<host_file>`` (read-only)."""
    for volume in SERVICES[service]["volumes"]:
        source, target, *mode = volume.split(":")
        if source == f"./{host_file}":
            assert mode == ["ro"]
            return target
    raise AssertionError(f"{service} does not mount {host_file}")


def test_compose_layout():
    assert set(SERVICES) == {"postgres", "redis", "mlflow", "code", "worker", "webserver", "daemon"}
    for name in DAGSTER_SERVICES:
        env = SERVICES[name]["environment"]
        assert env["RECALL_PIPELINE_HOME"] == "/data" and env["DAGSTER_HOME"] == "/opt/dagster/home"
        assert any(v.startswith("recall-home:/data") for v in SERVICES[name]["volumes"])
        assert mounted(name, "dagster.yaml") == "/opt/dagster/home/dagster.yaml"
    assert "-m recall_pipeline.definitions" in SERVICES["code"]["command"]
    for name in ("webserver", "daemon", "worker"):
        assert SERVICES[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    code = shlex.split(SERVICES["code"]["command"])
    assert (server["host"], str(server["port"])) == ("code", code[code.index("-p") + 1])
    for name in ("webserver", "daemon"):
        assert SERVICES[name]["command"].endswith(f"-w {mounted(name, 'workspace.yaml')}")


def test_every_setting_the_instance_reads_is_set():
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    env = SERVICES["code"]["environment"]
    assert env_references(instance) <= set(env)
    assert env["DAGSTER_COMPUTE_LOGS_DIR"].startswith("/data/")  # on the shared volume
    assert env["DAGSTER_POSTGRES_HOST"] == "postgres" and env["DAGSTER_POSTGRES_PORT"] == "5432"
    assert env["DAGSTER_POSTGRES_DB"] == SERVICES["postgres"]["environment"]["POSTGRES_DB"]
    # SQLAlchemy 2.1 reads a plain "postgresql" URL as psycopg 3; dagster-postgres installs psycopg2
    assert instance["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_mlflow_keeps_its_store_in_postgres():
    mlflow = SERVICES["mlflow"]["environment"]
    assert re.fullmatch(r"postgresql\+psycopg2://dagster:dagster@postgres:5432/mlflow", mlflow["MLFLOW_BACKEND_STORE_URI"])
    init = [v for v in SERVICES["postgres"]["volumes"] if "/docker-entrypoint-initdb.d/" in v]
    assert init and init[0].startswith("./postgres-init.sql:")
    assert "CREATE DATABASE mlflow;" in (DOCKER / "postgres-init.sql").read_text()
    assert SERVICES["mlflow"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "mlflow:5000" in mlflow["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    port = mlflow["MLFLOW_PORT"]
    assert SERVICES["code"]["environment"]["RECALL_PIPELINE_MLFLOW_URI"] == f"http://mlflow:{port}"


def test_celery_workers_share_the_executors_broker():
    env = SERVICES["worker"]["environment"]
    assert env["RECALL_PIPELINE_EXECUTOR"] == "celery"
    assert env["RECALL_PIPELINE_CELERY_BROKER"].startswith("redis://redis:6379/")
    worker = shlex.split(SERVICES["worker"]["command"])
    assert worker[:3] == ["dagster-celery", "worker", "start"]
    assert worker[worker.index("-A") + 1] == "dagster_celery.app" and worker[worker.index("-q") + 1] == "dagster"
    assert worker[worker.index("-y") + 1] == mounted("worker", "celery.yaml")
    celery = yaml.safe_load((DOCKER / "celery.yaml").read_text())
    assert env_references(celery) == {"RECALL_PIPELINE_CELERY_BROKER", "RECALL_PIPELINE_CELERY_BACKEND"} <= set(env)
    assert SERVICES["worker"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_instance_serialises_warehouse_writers():
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    assert instance["concurrency"]["pools"]["default_limit"] == 1
    assert instance["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_POSTGRES_HOST"}
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # crash recovery: the launcher that judges run workers, and the daemon that asks it
    assert (instance["run_launcher"]["module"], instance["run_launcher"]["class"]) == (
        "recall_pipeline.runtime.run_recovery", "RecoveringRunLauncher")
    assert instance["run_monitoring"]["enabled"] and instance["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


def test_dockerfile_installs_like_the_makefile():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    makefile = (DOCKER.parent / "Makefile").read_text()
    steps = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install")]
    assert "torch==2.13.0" in steps[0] and "torch==2.13.0" in makefile  # torch first, pinned
    assert re.search(r"pip install --no-cache-dir \. ", steps[1])     # then the project itself
    assert "dagster-postgres==0.29.27" in steps[2] and "dagster-celery==0.29.27" in steps[2]
    pinned = re.search(r'"dagster==([\d.]+)"', (DOCKER.parent / "pyproject.toml").read_text()).group(1)
    assert pinned == "1.13.27"  # dagster-postgres and dagster-celery 0.29.27 belong to Dagster 1.13.27
