"""The local PostgreSQL (127.0.0.1:5432, trust auth) for the tests of the production layout:
fresh databases that are dropped afterwards, queries, and a Dagster home on docker/dagster.yaml."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from recall_pipeline_tests.subprocesses import ROOT

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
DOCKER = ROOT / "docker"


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            return True
    except OSError:
        return False


requires_postgres = pytest.mark.skipif(not postgres_reachable(), reason=f"no PostgreSQL on {PG_HOST}:{PG_PORT}")


def _connect(database: str):
    import psycopg2

    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database)


def admin(sql: str) -> None:
    """One statement on the server's ``postgres`` database, outside a transaction (create/drop)."""
    con = _connect("postgres")
    con.autocommit = True
    try:
        con.cursor().execute(sql)
    finally:
        con.close()


def query(database: str, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of one read on ``database``."""
    con = _connect(database)
    try:
        with con.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        con.close()


def tables(database: str) -> set[str]:
    return {name for (name,) in query(database, "select tablename from pg_tables where schemaname = 'public'")}


@contextmanager
def fresh_database(prefix: str = "recall_test") -> Iterator[str]:
    """A new, empty database of its own name; dropped afterwards (connections and all)."""
    database = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin(f"create database {database}")
    try:
        yield database
    finally:
        admin(f"drop database if exists {database} with (force)")


def sqlalchemy_url(database: str) -> str:
    """The URL of ``database`` for SQLAlchemy 2.1 clients (MLflow): ``postgresql+psycopg2``, as
    a plain ``postgresql`` URL asks for psycopg 3, which is not installed."""
    return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def instance_env(database: str, dagster_home: Path) -> dict[str, str]:
    """The variables docker/dagster.yaml reads: ``database`` on the local server, and the step logs
    in ``dagster_home``."""
    return {"DAGSTER_POSTGRES_HOST": PG_HOST, "DAGSTER_POSTGRES_PORT": str(PG_PORT),
            "DAGSTER_POSTGRES_USER": PG_USER, "DAGSTER_POSTGRES_PASSWORD": "unused-trust-auth",
            "DAGSTER_POSTGRES_DB": database, "DAGSTER_COMPUTE_LOGS_DIR": str(dagster_home / "compute_logs")}


def write_docker_instance(dagster_home: Path, **overrides: dict) -> dict:
    """Write docker/dagster.yaml into ``dagster_home``, with top-level sections updated by
    ``overrides`` (e.g. a shorter ``run_monitoring`` interval); returns what was written."""
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    for section, values in overrides.items():
        instance[section].update(values)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    return instance
