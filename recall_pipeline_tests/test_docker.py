"""What can be checked of docker/ without a Docker engine: the files parse, they fit together,
and the image installs the project the way the Makefile does."""

import re
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def test_compose_layout():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "code", "webserver", "daemon"}
    for name in ("code", "webserver", "daemon"):
        env = services[name]["environment"]
        assert env["RECALL_PIPELINE_HOME"] == "/data" and env["DAGSTER_HOME"] == "/opt/dagster/home"
        assert any(v.startswith("recall-home:/data") for v in services[name]["volumes"])
    assert "-m recall_pipeline.definitions" in services["code"]["command"]
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == "code"


def test_instance_serialises_warehouse_writers():
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    assert instance["concurrency"]["pools"]["default_limit"] == 1
    assert instance["storage"]["postgres"]["postgres_db"]["hostname"] == "postgres"
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # crash recovery: the launcher that judges run workers, and the daemon that asks it
    assert (instance["run_launcher"]["module"], instance["run_launcher"]["class"]) == (
        "recall_pipeline.run_recovery", "RecoveringRunLauncher")
    assert instance["run_monitoring"]["enabled"] and instance["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


def test_dockerfile_installs_like_the_makefile():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    makefile = (DOCKER.parent / "Makefile").read_text()
    steps = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install")]
    assert "torch==2.13.0" in steps[0] and "torch==2.13.0" in makefile  # torch first, pinned
    assert re.search(r"pip install --no-cache-dir \. ", steps[1])     # then the project itself
    assert "dagster-postgres==0.29.27" in steps[2]
    pinned = re.search(r'"dagster==([\d.]+)"', (DOCKER.parent / "pyproject.toml").read_text()).group(1)
    assert pinned == "1.13.27"  # dagster-postgres 0.29.27 belongs to Dagster 1.13.27
