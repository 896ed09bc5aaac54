"""Skip a drop file that is byte for byte the file loaded last time into an untouched raw table.

Finding the changed keys of a file means parsing and hashing every row: seconds per million
rows, spent every night on files that often did not change at all (owners, subscriptions, a
quiet CRM table). A file is skipped only when its content digest, its path, the way it is read
(contract, ingest code, libraries) and the raw table's row count and row-hash sum are what they
were right after it was last loaded; anything else reads it as before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.digests import code_digest
from icp_pipeline.ingest.files import ROW_HASH
from icp_pipeline.warehouse import connect, replace_slice, table_exists, to_frame

LOADED_FILES = "loaded_files"  # icp.loaded_files: one row per raw table loaded from a file
_INGEST_CODE = tuple(Path(__file__).parent / name for name in ("files.py", "file_drop.py", "unchanged.py"))
_LIBRARIES = ("pyarrow", "duckdb", "dlt")


@dataclass(frozen=True)
class FileIdentity:
    """What a raw table loaded from a file depends on: the file's bytes and how they are read."""

    table: str
    file: str
    size: int
    sha256: str
    reading: str


def identify(contract: TableContract, path: Path, file: str) -> FileIdentity:
    """The file's identity: sha256 of its bytes (about 1 GB/s), its size and how it is read."""
    with path.open("rb") as handle:
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    return FileIdentity(
        contract.table,
        file,
        path.stat().st_size,
        sha256,
        code_digest(_INGEST_CODE, _LIBRARIES, prefix=contract.model_dump_json()),
    )


def _raw_state(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> tuple[int, str]:
    """Row count and row-hash sum of a raw table: a load, or a row deleted or added, changes them.

    A value edited in place with its `_row_hash` left as it was goes unnoticed: raw is written by
    ingest only, which hashes every row it writes.
    """
    count, total = con.execute(
        f'select count(*), sum("{ROW_HASH}"::hugeint) from {schema}."{table}"'
    ).fetchall()[0]
    return int(count), str(total)


def unchanged_rows(warehouse: Path, identity: FileIdentity, raw_schema: str = "raw") -> int | None:
    """The file's row count when it is the file last loaded into an untouched raw table, else None."""
    if not warehouse.exists():
        return None
    with duckdb.connect() as con:
        con.execute("attach ? as wh (read_only)", [str(warehouse)])
        try:
            if not table_exists(con, "icp", LOADED_FILES) or not table_exists(
                con, raw_schema, identity.table
            ):
                return None
            kept = to_frame(
                con.sql(
                    f'select * from wh.icp.{LOADED_FILES} where "table" = ? and file = ? and size = ? '
                    "and sha256 = ? and reading = ?",
                    params=[identity.table, identity.file, identity.size, identity.sha256, identity.reading],
                )
            )
            if kept.empty or _raw_state(con, f"wh.{raw_schema}", identity.table) != (
                int(kept["raw_rows"].iloc[0]),
                str(kept["raw_hash_sum"].iloc[0]),
            ):
                return None
            return int(kept["rows_in_file"].iloc[0])
        finally:
            con.execute("detach wh")


def record_loaded(warehouse: Path, loaded: list[tuple[FileIdentity, int]], raw_schema: str = "raw") -> None:
    """Remember each file just loaded (identity, rows) with its raw table's state after the load."""
    if not loaded:
        return
    with connect(warehouse) as con:
        for identity, rows_in_file in loaded:
            if not table_exists(con, raw_schema, identity.table):
                continue
            raw_rows, raw_hash_sum = _raw_state(con, raw_schema, identity.table)
            row = pd.DataFrame(
                {
                    "table": [identity.table],
                    "file": [identity.file],
                    "size": [identity.size],
                    "sha256": [identity.sha256],
                    "reading": [identity.reading],
                    "rows_in_file": [rows_in_file],
                    "raw_rows": [raw_rows],
                    "raw_hash_sum": [raw_hash_sum],
                    "recorded_at": [pd.Timestamp(dt.datetime.now(dt.UTC))],
                }
            )
            replace_slice(con, "icp", LOADED_FILES, row, {"table": identity.table})
