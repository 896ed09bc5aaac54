"""API records as raw tables: text columns plus the file drop's lineage, and a per-source cursor.

Staging and the contracts read raw the same way whatever delivered it, so API rows become what
a file would have given: every value as text (numbers and booleans as written, lists joined with
";", objects as JSON), empty strings as null, column names normalized like file headers, and the
lineage columns `_raw_key`, `_row_hash`, `_source_file` (e.g. "hubspot:companies") and `_loaded_at`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dlt
import numpy as np
import pandas as pd
import pyarrow as pa
from dlt.extract.resource import DltResource

from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.ingest.file_drop import TableLoadStats
from icp_pipeline.ingest.files import RAW_KEY, ROW_HASH, normalize_column_name, with_identity, with_lineage


def text_value(value: Any) -> str | None:
    """One delivered value as raw text; None for missing and empty."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        parts = [text_value(item) for item in value]
        joined = ";".join(part for part in parts if part is not None)
        return joined or None
    return json.dumps(value, sort_keys=True, default=str)


def text_table(columns: Mapping[str, Sequence[Any]]) -> pa.Table:
    """Columns of delivered values as a table of nullable text with normalized names.

    The first column wins when two names normalize alike (`AnnualRevenue` vs `annual_revenue`), so
    callers put mapped canonical columns first and extra provider fields after them.
    """
    arrays: dict[str, pa.Array] = {}
    for name, values in columns.items():
        normalized = normalize_column_name(name)
        if normalized and normalized not in arrays:
            arrays[normalized] = pa.array([text_value(v) for v in values], pa.string())
    return pa.table(arrays)


def raw_chunk(
    table: pa.Table, contract: TableContract, source_label: str, loaded_at: dt.datetime
) -> pa.Table:
    """A text chunk with the lineage columns the file drop adds, so staging cannot tell them apart."""
    return with_lineage(with_identity(table, contract.primary_key), source_label, loaded_at)


def rows_of(produce: Callable[..., Iterator[pa.Table]], *args: Any) -> Callable[[], Iterator[pa.Table]]:
    """A generator function without parameters, so dlt has no argument to fill from config or env."""

    def rows() -> Iterator[pa.Table]:
        yield from produce(*args)

    return rows


def raw_api_resource(table: str, rows: Callable[[], Iterator[pa.Table]]) -> DltResource:
    """A resource loading into `raw.<table>` with the file drop's merge rules and column hints."""
    return dlt.resource(
        rows,
        name=table,
        table_name=table,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        merge_key=RAW_KEY,
        columns={
            RAW_KEY: {"data_type": "text", "nullable": False},
            ROW_HASH: {"data_type": "bigint", "nullable": False},
        },
    )


def api_stats(stats: dict[str, TableLoadStats], table: str, source_label: str) -> TableLoadStats:
    """The load statistics of one API table, shown in the asset's metadata like a file's."""
    return stats.setdefault(table, TableLoadStats(file=source_label, full_load=True))


def parse_timestamps(values: Iterable[Any]) -> pd.Series:
    """Provider timestamps (ISO with Z or +0000, dates, epoch milliseconds) as UTC; bad ones NaT."""
    text = pd.Series([text_value(v) for v in values], dtype="str")
    numeric = text.str.fullmatch(r"\d{12,14}").fillna(False).astype(bool)
    parsed = pd.to_datetime(text.where(~numeric), format="ISO8601", utc=True, errors="coerce")
    if numeric.any():
        millis = pd.to_datetime(text[numeric].astype("int64"), unit="ms", utc=True)
        parsed = parsed.where(~numeric, millis)
    return parsed.astype("datetime64[us, UTC]")


def iso_millis(value: pd.Timestamp) -> str:
    """A UTC instant as `2026-01-02T03:04:05.678Z`, the form kept in dlt state."""
    return value.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass
class ModifiedCursor:
    """Where the last successful load stopped: the newest last-modified instant and the ids at it.

    Reads start at the cursor inclusive (minus an optional lookback for late-indexed records), so
    a record modified in the same millisecond as the last one loaded is never missed; the ids
    already loaded at exactly that instant are skipped instead of loaded twice. The cursor lives in
    dlt's resource state, which dlt commits with the load: a failed run leaves it where it was.
    `fingerprint` names the requested fields; when they change, the next read starts over so new
    columns are filled for every record, not just the changed ones.
    """

    value: pd.Timestamp | None = None
    ids_at_value: set[str] = field(default_factory=set)
    fingerprint: str = ""

    @classmethod
    def load(cls, state: Mapping[str, Any], fingerprint: str) -> ModifiedCursor:
        if not state.get("cursor") or state.get("fingerprint") != fingerprint:
            return cls(fingerprint=fingerprint)
        return cls(pd.Timestamp(state["cursor"]), set(state.get("ids_at_cursor", [])), fingerprint)

    def save(self, state: dict[str, Any]) -> None:
        if self.value is None:
            return
        state.update(
            cursor=iso_millis(self.value),
            ids_at_cursor=sorted(self.ids_at_value),
            fingerprint=self.fingerprint,
        )

    def start(self, lookback_s: int) -> pd.Timestamp | None:
        """The instant to read from: the cursor, moved back by the lookback."""
        return None if self.value is None else self.value - pd.Timedelta(seconds=lookback_s)

    def unseen(self, ids: Sequence[str], modified: pd.Series) -> pd.Series:
        """Mask of records not already loaded at exactly the cursor instant."""
        ids_series = pd.Series(list(ids), dtype="str", index=modified.index)
        if self.value is None or not self.ids_at_value:
            return pd.Series(True, index=modified.index)
        return ~((modified == self.value) & ids_series.isin(self.ids_at_value))

    def advance(self, ids: Sequence[str], modified: pd.Series) -> None:
        """Move past a chunk of loaded records (any order)."""
        valid = modified.dropna()
        if valid.empty:
            return
        newest = valid.max()
        at_newest = set(pd.Series(list(ids), dtype="str", index=modified.index)[modified == newest])
        if self.value is None or newest > self.value:
            self.value, self.ids_at_value = newest, at_newest
        elif newest == self.value:
            self.ids_at_value |= at_newest


def incremental_records(
    pages: Callable[[pd.Timestamp | None], Iterator[list[dict[str, Any]]]],
    record_id: Callable[[Mapping[str, Any]], str],
    record_modified: Callable[[Mapping[str, Any]], Any],
    state: dict[str, Any],
    fingerprint: str,
    lookback_s: int,
    table_stats: TableLoadStats,
) -> Iterator[list[dict[str, Any]]]:
    """Pages of records changed since the cursor in `state`; the cursor moves only when all are read.

    `pages(start)` reads the provider from `start` (None: everything). The new cursor is written
    into `state` after the last page, and dlt persists that state only with a successful load.
    """
    previous = ModifiedCursor.load(state, fingerprint)
    progress = ModifiedCursor(previous.value, set(previous.ids_at_value), fingerprint)
    table_stats.full_load = previous.value is None
    sent: set[str] = set()
    for records in pages(previous.start(lookback_s)):
        ids = [record_id(r) for r in records]
        modified = parse_timestamps(record_modified(r) for r in records)
        # Offset paging over a non-unique sort key may repeat a record; one row per id per run.
        repeated = np.fromiter((i in sent for i in ids), dtype=bool, count=len(ids))
        keep = previous.unseen(ids, modified).to_numpy() & ~repeated
        table_stats.rows_in_file += len(records)
        progress.advance(ids, modified)
        kept = [record for record, fresh in zip(records, keep, strict=True) if fresh]
        sent.update(record_id(r) for r in kept)
        if kept:
            yield kept
    progress.save(state)
