"""What can be checked of docker/ without a Docker engine: the files parse, they fit together,
and the image installs the project the way the Makefile does. (test_production_layout.py runs
the services' commands and settings on this machine.)"""

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

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


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each Dockerfile instruction, continuation lines joined,
    comments and blank lines dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


OPTIONS_WITH_VALUES = {"-i", "--index-url", "--extra-index-url", "-r", "--requirement", "-c", "--constraint",
                       "-e", "--editable"}


@dataclass(frozen=True)
class PipInstall:
    """One ``pip install`` of a shell command line: what it installs and its options with values."""

    targets: tuple[str, ...]
    options: dict

    def requirements(self) -> dict[str, Requirement]:
        """The installed packages by canonical name (a path such as ``.`` is not one)."""
        return {canonicalize_name(r.name): r for r in map(Requirement, self.targets) if not r.name.startswith(".")}


def pip_installs(command_line: str) -> list[PipInstall]:
    """Every ``pip install`` among the commands of a shell line (split at ``&&``, ``||``, ``;``)."""
    commands, current = [], []
    for word in shlex.split(command_line):
        if word in ("&&", "||", ";"):
            commands.append(current)
            current = []
        else:
            current.append(word)
    commands.append(current)
    installs = []
    for words in commands:
        if len(words) < 2 or Path(words[0]).name != "pip" or words[1] != "install":
            continue
        targets, options, rest = [], {}, iter(words[2:])
        for word in rest:
            if word in OPTIONS_WITH_VALUES:
                options[word] = next(rest)
            elif not word.startswith("-"):
                targets.append(word)
        installs.append(PipInstall(tuple(targets), options))
    return installs


def test_dockerfile_installs_like_the_makefile():
    instructions = dockerfile_instructions((DOCKER / "Dockerfile").read_text())
    runs = [(position, install) for position, (keyword, arguments) in enumerate(instructions) if keyword == "RUN"
            for install in pip_installs(arguments)]
    made = [install for line in (DOCKER.parent / "Makefile").read_text().splitlines()  # its pip recipe lines
            if line.startswith("\t") and Path(line.split()[0]).name == "pip" for install in pip_installs(line)]
    project = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["project"]
    dependencies = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    assert len(runs) == 3 and len(made) == 2

    # the base image's Python is one the project accepts
    [base] = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "python" and SpecifierSet(project["requires-python"]).contains(tag.split("-")[0])

    # torch first, alone, pinned as the Makefile pins it, within the project's range, from the CPU wheels
    (_, torch_step), (_, project_step), (_, services_step) = runs
    torch = torch_step.requirements()
    assert set(torch) == {"torch"} and set(made[0].requirements()) == {"torch"}
    [pin] = torch["torch"].specifier
    assert pin.operator == "==" and str(torch["torch"].specifier) == str(made[0].requirements()["torch"].specifier)
    assert dependencies["torch"].specifier.contains(pin.version)
    assert torch_step.options == {"--index-url": "https://download.pytorch.org/whl/cpu"}

    # then the project itself, from the folder its files were copied to, after them (the image
    # installs it whole; the Makefile editable, with the test extra)
    assert (project_step.targets, project_step.options) == ((".",), {})
    assert (made[1].targets, made[1].options) == ((), {"-e": ".[test]"})
    copied = {source: position for position, (keyword, arguments) in enumerate(instructions) if keyword == "COPY"
              for source in shlex.split(arguments)[:-1]}
    assert {"pyproject.toml", "recall_pipeline"} <= set(copied)
    assert max(copied["pyproject.toml"], copied["recall_pipeline"]) < runs[1][0]

    # then the production services' packages, each pinned to a version the project accepts
    services = services_step.requirements()
    assert set(services) == {"dagster-postgres", "dagster-celery", "redis"}
    for name, requirement in services.items():
        [pin] = requirement.specifier
        assert pin.operator == "==" and dependencies[name].specifier.contains(pin.version), name
    # the Dagster integration libraries 0.X.Z belong to Dagster 1.(X - 16).Z
    [dagster] = dependencies["dagster"].specifier
    major, minor, patch = map(int, dagster.version.split("."))
    for name in ("dagster-postgres", "dagster-celery"):
        [pin] = services[name].specifier
        assert (dagster.operator, major, pin.version) == ("==", 1, f"0.{minor + 16}.{patch}"), name
