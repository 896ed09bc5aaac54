"""Fresh PostgreSQL databases for tests; a test that needs one skips with the reason when no server answers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

HOST = os.environ.get("ICP_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("ICP_TEST_PG_PORT", "5432"))
USER = os.environ.get("ICP_TEST_PG_USER", "postgres")
# Trust auth ignores the password, but dlt's credentials insist on one being present.
PASSWORD = os.environ.get("ICP_TEST_PG_PASSWORD", "unused")


def _admin() -> Any:
    import psycopg2

    connection = psycopg2.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, dbname="postgres", connect_timeout=3
    )
    connection.autocommit = True
    return connection


def require_postgres() -> None:
    try:
        _admin().close()
    except Exception as exc:  # any failure to connect means: no server for this test
        pytest.skip(f"PostgreSQL not reachable on {HOST}:{PORT} as {USER}: {str(exc).strip()[:120]}")


@contextmanager
def fresh_database(prefix: str = "icp_test") -> Iterator[str]:
    """Create a uniquely named database and drop it afterwards; yields its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'create database "{name}"')
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def url(database: str) -> str:
    return f"postgresql://{USER}:{PASSWORD}@{HOST}:{PORT}/{database}"


def query(database: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg2

    with psycopg2.connect(url(database), connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    connection.close()
    return rows


def dagster_env(database: str) -> dict[str, str]:
    """The variables deploy/dagster.yaml reads."""
    return {
        "DAGSTER_PG_HOST": HOST,
        "DAGSTER_PG_PORT": str(PORT),
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USER": USER,
        "DAGSTER_PG_PASSWORD": PASSWORD,
    }
