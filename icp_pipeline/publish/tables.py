"""Publish the icp.* output tables to the team's warehouse through dlt.

DuckDB stays the engine of the nightly computation; publishing copies its results to where BI and
reverse-ETL tools read. Every table merges on keys, so a rerun or a backfill duplicates nothing:
tables written per as-of date replace that date's slice (delete-insert on `as_of`), event and
alert ledgers upsert on their ids. Rows stream from DuckDB in arrow batches, never as dicts.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dlt
import duckdb
import pyarrow as pa
from dlt.common.destination import Destination
from dlt.extract.resource import DltResource

from icp_pipeline.config import PublishConfig
from icp_pipeline.dlt_settings import load_settings
from icp_pipeline.errors import IcpConfigError, IcpError
from icp_pipeline.secrets import register_url, scrub
from icp_pipeline.warehouse import table_exists

log = logging.getLogger(__name__)

PIPELINE_NAME = "icp_publish"


@dataclass(frozen=True)
class PublishedTable:
    """One output table: how to select it and how it merges at the destination."""

    name: str
    query: str
    per_as_of: bool
    primary_key: tuple[str, ...] = ()
    source_table: str | None = None

    @property
    def reads(self) -> str:
        return self.source_table or self.name

    @property
    def keys(self) -> tuple[str, ...]:
        return ("as_of",) if self.per_as_of else self.primary_key


def _slice(table: str) -> PublishedTable:
    return PublishedTable(table, f'select * from icp."{table}" where as_of = $as_of', per_as_of=True)


TABLES: dict[str, PublishedTable] = {
    spec.name: spec
    for spec in (
        _slice("account_scores"),
        _slice("icp_profile"),
        _slice("icp_evidence"),
        _slice("score_validation"),
        _slice("drift_metrics"),
        _slice("drift_flags"),
        PublishedTable("trigger_events", "select * from icp.trigger_events", False, ("event_id",)),
        PublishedTable("alerts", "select * from icp.alerts", False, ("alert_id",)),
        PublishedTable(
            "quarantine_summary",
            """
            select $as_of::date as as_of, "table", rule, count(*) as rows,
                   min(row_key) as example_row_key, min(message) as example_message,
                   max(loaded_at) as last_loaded_at
            from icp.quarantine group by "table", rule
            """,
            per_as_of=True,
            source_table="quarantine",
        ),
    )
}


@dataclass
class PublishStats:
    """Rows sent per table, for the asset's metadata and the note to ops."""

    rows: dict[str, int]
    skipped: dict[str, str]


def _batches(
    warehouse: Path, spec: PublishedTable, as_of: dt.date, chunk_rows: int, stats: PublishStats
) -> Iterator[pa.RecordBatch]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        if not table_exists(con, "icp", spec.reads):
            stats.skipped[spec.name] = f"icp.{spec.reads} does not exist yet"
            return
        params = {"as_of": as_of} if "$as_of" in spec.query else None
        reader = con.sql(spec.query, params=params).to_arrow_reader(chunk_rows)
        schema = _publishable_schema(reader.schema, spec.keys)
        stats.rows[spec.name] = 0
        for batch in reader:
            if batch.num_rows:
                stats.rows[spec.name] += batch.num_rows
                yield batch.cast(schema) if schema != batch.schema else batch
        if not stats.rows[spec.name]:
            # An empty table still gets its columns at the destination, so BI queries do not break.
            yield schema.empty_table()


def _publishable_schema(schema: pa.Schema, keys: tuple[str, ...]) -> pa.Schema:
    """Key columns non-nullable, as dlt declares them; a column DuckDB typed NULL (nothing seen yet,
    e.g. no delivery error so far) is published as text."""
    fields = []
    for field in schema:
        if pa.types.is_null(field.type):
            field = field.with_type(pa.string())
        fields.append(field.with_nullable(False) if field.name in keys else field)
    return pa.schema(fields)


def _resource(
    warehouse: Path, spec: PublishedTable, as_of: dt.date, chunk_rows: int, stats: PublishStats
) -> DltResource:
    if spec.per_as_of:
        # Replace the date's slice: delete every destination row of this as_of, then insert.
        disposition = {"disposition": "merge", "strategy": "delete-insert"}
        keys: dict[str, object] = {"merge_key": "as_of"}
    else:
        disposition = {"disposition": "merge", "strategy": "upsert"}
        keys = {"primary_key": list(spec.primary_key)}
    return dlt.resource(
        _batches(warehouse, spec, as_of, chunk_rows, stats),
        name=spec.name,
        table_name=spec.name,
        write_disposition=disposition,
        **keys,
    )


def destination(config: PublishConfig) -> Destination:
    """The dlt destination; a connection string from `credentials_env` when that variable is set."""
    credentials = os.environ.get(config.credentials_env) if config.credentials_env else None
    register_url(credentials)
    if config.destination == "postgres" and not credentials:
        raise IcpConfigError(
            f"publish.enabled is true but ${config.credentials_env or 'ICP_PUBLISH_CREDENTIALS'} is not set "
            "(a postgresql://user:password@host:5432/database connection string)"
        )
    try:
        return Destination.from_reference(config.destination, credentials=credentials)
    except Exception as exc:  # dlt raises its own unknown-destination errors
        failure = scrub(f"publish.destination {config.destination!r}: {exc}")
    # Raised outside the handler: Dagster and dlt keep an exception's context, whose text may hold the DSN.
    raise IcpConfigError(failure)


def publish_pipeline(config: PublishConfig, pipelines_dir: Path) -> dlt.Pipeline:
    """A dlt pipeline whose state lives beside the warehouse; a killed load is not replayed.

    dlt's `run` loads a previous run's pending packages *instead of* the new data. The warehouse is
    the source of truth, so a package left by a killed run is dropped and everything is sent anew.
    """
    pipeline = dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=destination(config),
        dataset_name=config.dataset,
        pipelines_dir=str(pipelines_dir),
    )
    if pipeline.has_pending_data:
        log.warning("dropping the unfinished publish left by an interrupted run; republishing")
        pipeline.drop_pending_packages()
    return pipeline


def publish(
    warehouse: Path, as_of: dt.date, config: PublishConfig, pipelines_dir: Path
) -> tuple[PublishStats, str]:
    """Load the configured tables for one as-of date; returns rows sent and the dlt load id."""
    stats = PublishStats(rows={}, skipped={})
    resources = [
        _resource(warehouse, TABLES[name], as_of, config.chunk_rows, stats) for name in config.tables
    ]
    pipeline = publish_pipeline(config, pipelines_dir)
    try:
        with load_settings():
            info = pipeline.run(resources)
    except Exception as exc:
        failure = scrub(f"publishing to {config.destination} failed: {_first_line(exc)}")
    else:
        return stats, info.loads_ids[-1] if info.loads_ids else ""
    # Raised outside the handler: Dagster and dlt keep an exception's context, whose text may hold the DSN.
    raise IcpError(failure)


def _first_line(exc: BaseException) -> str:
    """The innermost cause's first meaningful line: dlt wraps the driver's error in a step error."""
    inner: BaseException = exc
    while True:
        nested = getattr(inner, "exception", None) or inner.__cause__
        if not isinstance(nested, BaseException) or nested is inner:
            break
        inner = nested
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith(("NOTICE:", "WARNING:"))]
    return (meaningful or lines or [inner.__class__.__name__])[0]
