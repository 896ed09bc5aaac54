"""Skip a drop file loaded before, or read only what was appended to it, when raw is untouched.

Finding the changed keys of a file means parsing and hashing every row: seconds per million
rows, spent every night on files that often did not change at all (owners, subscriptions, a
quiet CRM table) or only grew at the end (feeds delivered as a log: a day of new rows appended).
What was recorded right after a file's last load (`icp.loaded_files`: its digest, size, how it is
read, and the raw table's row count and row-hash sum) decides:
- the same bytes, read the same way, raw as the load left it: the file is skipped;
- the old bytes followed by new lines, read the same way, raw as the load left it: only the new
  lines are read (and they are loaded that way only when none of their keys is in raw yet, see
  `file_drop`); anything else reads the whole file as before.
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
from icp_pipeline.warehouse import attached, connect, replace_slice, table_exists, to_frame

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
    # sha256 of the first `LastLoad.size` bytes, when the file is longer than the last one loaded
    prefix_sha256: str | None = None


@dataclass(frozen=True)
class LastLoad:
    """The last load of a raw table from a file, recorded in `icp.loaded_files`, with raw still as
    that load left it."""

    size: int
    sha256: str
    reading: str
    rows_in_file: int


def _sha256s(path: Path, mark: int | None) -> tuple[str, str | None]:
    """sha256 of the file and, when `mark` is inside it, of its first `mark` bytes: one pass."""
    whole, prefix, done = hashlib.sha256(), None, 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            if mark is not None and prefix is None and done + len(block) >= mark:
                whole.update(block[: mark - done])
                prefix = whole.hexdigest()
                whole.update(block[mark - done :])
            else:
                whole.update(block)
            done += len(block)
    return whole.hexdigest(), prefix


def identify(
    contract: TableContract, path: Path, file: str, encoding: str, last: LastLoad | None = None
) -> FileIdentity:
    """The file's identity: sha256 of its bytes (about 1 GB/s), its size and how it is read (the
    encoding included: text decoded otherwise is other raw values); with `last`, also the digest
    of the part the last loaded file had."""
    size = path.stat().st_size
    mark = last.size if last is not None and last.size < size else None
    sha256, prefix = _sha256s(path, mark)
    reading = code_digest(_INGEST_CODE, _LIBRARIES, prefix=contract.model_dump_json() + encoding)
    return FileIdentity(contract.table, file, size, sha256, reading, prefix)


def _raw_state(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> tuple[int, str]:
    """Row count and row-hash sum of a raw table: a load, or a row deleted or added, changes them.

    A value edited in place with its `_row_hash` left as it was goes unnoticed: raw is written by
    ingest only, which hashes every row it writes.
    """
    count, total = con.execute(
        f'select count(*), sum("{ROW_HASH}"::hugeint) from {schema}."{table}"'
    ).fetchall()[0]
    return int(count), str(total)


def last_load(warehouse: Path, table: str, file: str, raw_schema: str = "raw") -> LastLoad | None:
    """The table's last load from this file when raw is still as it left it, else None."""
    if not warehouse.exists():
        return None
    with attached(warehouse) as con:
        if not table_exists(con, "icp", LOADED_FILES) or not table_exists(con, raw_schema, table):
            return None
        kept = to_frame(
            con.sql(
                f'select * from wh.icp.{LOADED_FILES} where "table" = ? and file = ?',
                params=[table, file],
            )
        )
        if kept.empty or _raw_state(con, f"wh.{raw_schema}", table) != (
            int(kept["raw_rows"].iloc[0]),
            str(kept["raw_hash_sum"].iloc[0]),
        ):
            return None
        row = kept.iloc[0]
        return LastLoad(int(row["size"]), str(row["sha256"]), str(row["reading"]), int(row["rows_in_file"]))


def unchanged_rows(identity: FileIdentity, last: LastLoad | None) -> int | None:
    """The file's row count when it is the file last loaded, read the same way, else None."""
    if last is None or (identity.size, identity.sha256, identity.reading) != (
        last.size,
        last.sha256,
        last.reading,
    ):
        return None
    return last.rows_in_file


def appended_at(identity: FileIdentity, path: Path, last: LastLoad | None) -> int | None:
    """The byte offset where new lines start when the file is the file last loaded plus lines
    appended after its last line break, read the same way; else None."""
    if (
        last is None
        or last.size == 0
        or identity.prefix_sha256 != last.sha256
        or identity.reading != last.reading
    ):
        return None
    with path.open("rb") as handle:
        handle.seek(last.size - 1)
        ends_a_line = handle.read(1) in (b"\n", b"\r")
    return last.size if ends_a_line else None


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
