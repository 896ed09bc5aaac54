"""Short-lived DuckDB access to the warehouse: DuckDB allows one writer, so never hold a connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd


@contextmanager
def connect(warehouse: Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(warehouse), read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    rows = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return bool(rows[0][0])


def read_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> pd.DataFrame | None:
    """The whole table as a DataFrame, or None when it does not exist."""
    if not table_exists(con, schema, table):
        return None
    return con.sql(f'select * from "{schema}"."{table}"').df()


def replace_table(con: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pd.DataFrame) -> None:
    """Write a frame as the table's full new content, atomically."""
    con.execute(f'create schema if not exists "{schema}"')
    con.register("_replacement", frame)
    try:
        con.execute(f'create or replace table "{schema}"."{table}" as select * from _replacement')
    finally:
        con.unregister("_replacement")


def replace_slice(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    table: str,
    frame: pd.DataFrame,
    where: dict[str, object],
) -> None:
    """Replace the rows matching `where` (e.g. one table's quarantine, one as-of date) in one transaction."""
    con.execute(f'create schema if not exists "{schema}"')
    con.register("_slice", frame)
    try:
        con.execute("begin transaction")
        if not table_exists(con, schema, table):
            con.execute(f'create table "{schema}"."{table}" as select * from _slice limit 0')
        condition = " and ".join(f'"{column}" = ?' for column in where)
        con.execute(f'delete from "{schema}"."{table}" where {condition}', list(where.values()))
        con.execute(f'insert into "{schema}"."{table}" by name select * from _slice')
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    finally:
        con.unregister("_slice")
