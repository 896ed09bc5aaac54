"""dlt source for the file drop: one resource per canonical table, merged into `raw.*`.

Raw is a mirror of what the drop says about each key. Tables merge with delete-insert on
`_raw_key` (the natural key): a changed row in a later drop replaces the old version in place,
a rerun of the same drop duplicates nothing, and rows that share a key inside one drop are all
kept, so staging can count and report duplicates instead of dlt folding them away unseen.

Loading is incremental by content, not by `updated_at`: only keys whose rows differ from raw
(by count and content hash) are sent to dlt. A cursor on `updated_at` would skip a new row with
an old timestamp and, with delete-insert, could drop one of two rows sharing a key; comparing
content has neither hazard and works for tables without timestamps (owners, feeds) too.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dlt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dlt.extract.items import DataItemWithMeta
from dlt.extract.resource import DltResource
from dlt.extract.source import DltSource

from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.ingest.absence import presence_known
from icp_pipeline.ingest.files import (
    RAW_KEY,
    ROW_HASH,
    DropInventory,
    ReadReport,
    TableFile,
    iter_identified_chunks,
    with_lineage,
)
from icp_pipeline.ingest.unchanged import FileIdentity, appended_at, identify, last_load, unchanged_rows
from icp_pipeline.warehouse import attached

log = logging.getLogger(__name__)

PIPELINE_NAME = "icp_file_drop"
RAW_DATASET = "raw"
# DuckDB stores a table in row groups of 122,880 rows. A parquet file whose row groups are
# multiples of that is inserted in parallel and written compressed as it goes; other sizes leave
# the compression to a single-threaded checkpoint, which doubled a million-account load.
DUCKDB_ROW_GROUP_ROWS = 122_880
LOAD_BATCH_ROWS = 2 * DUCKDB_ROW_GROUP_ROWS
SPOOL_DIR = ".icp_load_files"


@dataclass
class TableLoadStats:
    """What one table's load did; reported in the asset's metadata."""

    file: str = ""
    rows_in_file: int = 0
    rows_sent: int = 0
    keys_changed: int = 0
    full_load: bool = True
    unchanged: bool = False  # the file is the one loaded last time: not read again
    appended: bool = False  # the file is the one loaded last time plus new lines: only they were read
    identity: FileIdentity | None = None  # set for files read, recorded once the load succeeded
    read: ReadReport | None = None  # how the lines read became rows (files read only)
    # Raw keys the file does not hold, when it was read whole (none at a first load); None when
    # the file was not read whole (unchanged or appended: the keys absent are those of last time).
    absent_keys: pa.Array | None = None


def _changed_keys(
    table_file: TableFile,
    warehouse: Path,
    chunks: list[pa.Table] | None = None,
    report: ReadReport | None = None,
) -> tuple[pa.Array, pa.Array] | None:
    """Keys whose rows in the drop differ from raw, and raw keys the drop no longer holds; None
    when raw has no such table yet.

    The file's chunks are read to find them; they are appended to `chunks` when given, so the
    caller sends the changed rows without parsing and hashing the file a second time. The absent
    keys come from the same join (a full one where a left one found the changed keys): a file read
    whole says which keys it holds, at no extra scan (see `absence`).
    """
    if not warehouse.exists():
        return None
    table = table_file.contract.table
    with attached(warehouse) as con:
        columns = {
            row[0]
            for row in con.execute(
                "select column_name from duckdb_columns() "
                "where database_name = 'wh' and schema_name = ? and table_name = ?",
                [RAW_DATASET, table],
            ).fetchall()
        }
        if not {RAW_KEY, ROW_HASH} <= columns:
            return None  # checked before reading the file: a first load reads it once
        read = list(iter_identified_chunks(table_file, report=report))
        identities = pa.concat_tables(chunk.select([RAW_KEY, ROW_HASH]) for chunk in read)
        if chunks is not None:
            chunks.extend(read)
        con.register("drop_rows", identities)
        changed = con.sql(
            f"""
            with incoming as (
                select _raw_key, count(*) as n, sum(_row_hash::hugeint) as h
                from drop_rows group by _raw_key
            ), stored as (
                select _raw_key, count(*) as n, sum(_row_hash::hugeint) as h
                from wh.{RAW_DATASET}."{table}" group by _raw_key
            )
            select _raw_key, incoming._raw_key is null as absent from incoming
            full join stored using (_raw_key)
            where incoming._raw_key is null or stored._raw_key is null
                or stored.n <> incoming.n or stored.h <> incoming.h
            """
        ).to_arrow_table()
    absent = changed.column("absent")
    return (
        changed.filter(pc.invert(absent)).column(RAW_KEY).combine_chunks(),
        changed.filter(absent).column(RAW_KEY).combine_chunks(),
    )


def _new_appended_keys(chunks: list[pa.Table], warehouse: Path, table: str) -> int | None:
    """How many keys the appended rows hold when none of them is in raw yet, else None: then they
    load without the file's other rows (a key also in the old part would need its old rows sent
    with the new, as a whole read sends them)."""
    keys = pa.concat_tables(chunk.select([RAW_KEY]) for chunk in chunks)
    with attached(warehouse) as con:
        con.register("appended_keys", keys)
        distinct, found = con.execute(
            f"select (select count(distinct {RAW_KEY}) from appended_keys), "
            f'(select count(*) from wh.{RAW_DATASET}."{table}" '
            f"where {RAW_KEY} in (select {RAW_KEY} from appended_keys))"
        ).fetchall()[0]
    return None if found else int(distinct)


def _drain(chunks: list[pa.Table]) -> Iterator[pa.Table]:
    """The chunks in order, each released once handed out (a large drop is never held twice)."""
    chunks.reverse()
    while chunks:
        yield chunks.pop()


def aligned_batches(tables: Iterator[pa.Table], rows: int = LOAD_BATCH_ROWS) -> Iterator[pa.Table]:
    """The same rows in the same order, as tables of exactly `rows` rows but the last.

    dlt writes each table it is handed as one parquet row group; these sizes are what DuckDB
    inserts fastest (see `DUCKDB_ROW_GROUP_ROWS`). Slicing and concatenating copy no data. A
    table with other columns (the malformed lines, which come last) ends the batch before it.
    """
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        if pending and not table.schema.equals(pending[0].schema):
            yield pa.concat_tables(pending)
            pending, held = [], 0
        pending.append(table)
        held += table.num_rows
        if held < rows:
            continue
        joined = pa.concat_tables(pending)
        whole = held - held % rows
        for offset in range(0, whole, rows):
            yield joined.slice(offset, rows)
        pending, held = ([joined.slice(whole)] if held > whole else []), held - whole
    if held:
        yield pa.concat_tables(pending)


def load_files(tables: Iterator[pa.Table], directory: Path, stem: str) -> Iterator[DataItemWithMeta]:
    """The tables written as parquet load files in `directory`, each handed to dlt to import as is.

    Handed arrow tables, dlt writes its load files on the extract's one main thread, table after
    table: a million-account first extract took 13-14 s. Here each table's file is written by the
    worker thread that reads its source, beside the other tables' reads, and without column
    statistics (a load file is loaded whole, never filtered on them): 10.7 s, with the same raw
    tables and dlt schema. dlt links the file into its load package, so `directory` must outlive
    the extract and should sit on the same file system as the pipeline. Each run of tables with
    one schema (the malformed lines, which come last, have a column of their own) becomes a file
    of its own; each table is a row group, as dlt writes them. No tables, no file.
    """
    runs = itertools.groupby(tables, key=lambda table: table.schema)
    for part, (schema, run) in enumerate(runs):
        path = directory / f"{stem}.{part}.parquet"
        rows = 0
        with pq.ParquetWriter(
            path, schema, version="2.4", compression="none", write_statistics=False
        ) as writer:
            for table in run:
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
                rows += table.num_rows
        yield dlt.mark.with_file_import(str(path), "parquet", items_count=rows, hints=schema.empty_table())


@contextmanager
def spool(pipelines_dir: Path) -> Iterator[Path]:
    """An empty folder for one load's files (`load_files`), beside the pipelines so dlt can link
    them into its packages; removed afterwards. A killed load's leftovers go with the next one."""
    directory = pipelines_dir / SPOOL_DIR
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _loaded_raw_tables(warehouse: Path) -> set[str]:
    """The raw tables the warehouse holds already; none when there is no warehouse yet."""
    if not warehouse.exists():
        return set()
    with attached(warehouse) as con:
        rows = con.execute(
            "select table_name from duckdb_tables() where database_name = 'wh' and schema_name = ?",
            [RAW_DATASET],
        ).fetchall()
    return {row[0] for row in rows}


def _table_resource(
    contract: TableContract,
    inventory: DropInventory,
    warehouse: Path,
    loaded_at: dt.datetime,
    stats: dict[str, TableLoadStats],
    first_load: bool = False,
    spool_dir: Path | None = None,
) -> DltResource:
    """One raw table's resource; `first_load` (a file and no raw table yet) inserts without merging;
    with `spool_dir`, its rows reach dlt as parquet load files written there (see `load_files`).

    A merge copies every row through a staging table and deletes by key first; with nothing in
    raw there is nothing to delete, so the first load of a file is a plain insert (`replace` of a
    table that does not exist), which is what a million-row drop spends most of its load time on.
    """
    table_file = inventory.files.get(contract.table)

    def rows() -> Iterator[pa.Table | DataItemWithMeta]:
        batches = aligned_batches(_rows())
        yield from batches if spool_dir is None else load_files(batches, spool_dir, contract.table)

    def _rows() -> Iterator[pa.Table]:
        if table_file is None:
            impact = inventory.missing_optional.get(contract.table, "")
            log.info("%s: no file, skipped; %s", contract.relative_stem, impact)
            return
        source_file = str(table_file.path.relative_to(inventory.source_dir))
        table_stats = stats.setdefault(contract.table, TableLoadStats(file=source_file))
        last = None if first_load else last_load(warehouse, contract.table, source_file)
        if last is not None and not presence_known(warehouse, contract.table, source_file):
            last = None  # read whole once, so that the keys it no longer holds are known
        identity = identify(contract, table_file.path, source_file, table_file.encoding, last)
        rows_before = unchanged_rows(identity, last)
        if rows_before is not None:
            log.info("%s: unchanged since it was last loaded, not read again", source_file)
            table_stats.rows_in_file, table_stats.full_load, table_stats.unchanged = rows_before, False, True
            return
        table_stats.identity = identity
        start = appended_at(identity, table_file.path, last) if table_file.path.suffix == ".csv" else None
        read: list[pa.Table] = []
        changed: pa.Array | None = None
        if start is not None and last is not None:
            table_stats.read = ReadReport()
            read = list(iter_identified_chunks(table_file, start, table_stats.read))
            new_keys = _new_appended_keys(read, warehouse, contract.table)
            if new_keys is not None:
                log.info("%s: lines appended since it was last loaded, only they are read", source_file)
                table_stats.full_load, table_stats.appended = False, True
                table_stats.rows_in_file = last.rows_in_file
                table_stats.keys_changed = new_keys
            else:
                read = []
        if not table_stats.appended:
            table_stats.read = ReadReport()
            found = _changed_keys(table_file, warehouse, read, table_stats.read)
            changed = None if found is None else found[0]
            table_stats.full_load = changed is None
            table_stats.keys_changed = -1 if changed is None else len(changed)
            if found is not None:
                table_stats.absent_keys = found[1]
            elif first_load:
                table_stats.absent_keys = pa.array([], pa.string())
        # The appended lines, or the file's chunks `_changed_keys` read, or else a first read.
        whole = iter_identified_chunks(table_file, report=table_stats.read)
        for chunk in _drain(read) if read or table_stats.appended else whole:
            table_stats.rows_in_file += chunk.num_rows
            if changed is not None:
                chunk = chunk.filter(pc.is_in(chunk.column(RAW_KEY), value_set=changed))
            if chunk.num_rows:
                table_stats.rows_sent += chunk.num_rows
                yield with_lineage(chunk, source_file, loaded_at)

    return dlt.resource(
        rows,
        name=contract.table,
        table_name=contract.table,
        write_disposition="replace"
        if first_load and table_file is not None
        else {"disposition": "merge", "strategy": "delete-insert"},
        merge_key=RAW_KEY,
        parallelized=True,
        columns={
            RAW_KEY: {"data_type": "text", "nullable": False},
            ROW_HASH: {"data_type": "bigint", "nullable": False},
        },
    )


@dlt.source(name="file_drop", max_table_nesting=0)
def file_drop_source(
    inventory: DropInventory,
    contracts: dict[str, TableContract],
    warehouse: Path,
    stats: dict[str, TableLoadStats] | None = None,
    loaded_at: dt.datetime | None = None,
    spool_dir: Path | None = None,
) -> list[DltResource]:
    """All canonical tables of a checked drop; a missing optional file yields no rows.

    `spool_dir`: where the tables' parquet load files are written (see `load_files`); it must
    outlive the extract. Without one, dlt is handed arrow tables and writes the files itself.
    """
    stamp = loaded_at or dt.datetime.now(dt.UTC)
    sink = stats if stats is not None else {}
    loaded = _loaded_raw_tables(warehouse) if inventory.files else set()
    return [
        _table_resource(
            contract,
            inventory,
            warehouse,
            stamp,
            sink,
            first_load=contract.table not in loaded,
            spool_dir=spool_dir,
        )
        for contract in contracts.values()
    ]


def file_drop_pipeline(warehouse: Path, pipelines_dir: Path) -> dlt.Pipeline:
    """A dlt pipeline into the DuckDB warehouse, its state kept beside it (not in ~/.dlt)."""
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=dlt.destinations.duckdb(str(warehouse)),
        dataset_name=RAW_DATASET,
        pipelines_dir=str(pipelines_dir),
    )


def empty_source_for_specs(contracts: dict[str, TableContract]) -> DltSource:
    """A source over an empty inventory: enough for Dagster to build asset specs at import time."""
    return file_drop_source(DropInventory(source_dir=Path(".")), contracts, Path("unused.duckdb"))
