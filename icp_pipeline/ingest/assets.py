"""Dagster wiring of the file-drop ingestion: one asset per raw table, keys `raw/<table>`."""

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from icp_pipeline.config import config_or_defaults, contracts_dir
from icp_pipeline.contracts.spec import load_contracts
from icp_pipeline.dlt_settings import load_settings
from icp_pipeline.ingest.absence import record_presence
from icp_pipeline.ingest.file_drop import TableLoadStats, empty_source_for_specs, file_drop_pipeline, spool
from icp_pipeline.ingest.sources import build_raw_source
from icp_pipeline.ingest.unchanged import record_loaded
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.resources import IcpSettings, partition_date

_CONTRACTS = load_contracts(contracts_dir(config_or_defaults()[0]))


class RawTableTranslator(DagsterDltTranslator):
    """Readable keys (`raw/accounts`), the contract's grain as description, no phantom upstreams."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        table = data.resource.name
        contract = _CONTRACTS[table]
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(
            key=dg.AssetKey(["raw", table]),
            deps=[],
            group_name="ingest",
            description=(
                f"{contract.grain} Raw: every column as delivered in "
                f"`{contract.relative_stem}.*`, merged on {', '.join(contract.primary_key)}."
            ),
        )


def _load_report(table: str, table_stats: TableLoadStats | None) -> tuple[dict[str, Any], str]:
    """The metadata and log line of one raw table's load (no line for a table without a file)."""
    if table_stats is None:
        return {"file": "(missing, skipped)"}, ""
    metadata: dict[str, Any] = {
        "file": table_stats.file,
        "rows_in_file": dg.MetadataValue.int(table_stats.rows_in_file),
        "rows_sent": dg.MetadataValue.int(table_stats.rows_sent),
        "full_load": table_stats.full_load,
        "unchanged_file": table_stats.unchanged,
        "appended_file": table_stats.appended,
    }
    read = table_stats.read
    if read is not None and read.lines is not None:
        metadata["lines_read"] = dg.MetadataValue.int(read.lines)
        metadata["malformed_lines"] = dg.MetadataValue.int(read.malformed)
    if table_stats.unchanged:
        what = "file unchanged since its last load"
    else:
        what = f"{table_stats.rows_sent:,} new or changed"
        if table_stats.appended:
            what += " (only the lines appended since its last load read)"
    if read is not None and read.describe():
        what += f"; {read.describe()}"
    return metadata, f"raw/{table}: {table_stats.rows_in_file:,} rows in {table_stats.file}, {what}"


@dlt_assets(
    dlt_source=empty_source_for_specs(_CONTRACTS),
    dlt_pipeline=file_drop_pipeline(
        Path(tempfile.gettempdir()) / "icp_specs" / "specs.duckdb",
        Path(tempfile.gettempdir()) / "icp_specs" / "pipelines",
    ),
    name="raw_file_drop",
    dagster_dlt_translator=RawTableTranslator(),
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
)
def raw_file_drop(
    context: dg.AssetExecutionContext, dlt: DagsterDltResource, icp: IcpSettings
) -> Iterator[Any]:
    """Check the drop (required files and columns) and the API settings, then load what changed.

    Tables delivered by a configured CRM API or REST feed are read from it; the rest from files.
    """
    contracts = icp.contracts()
    stats: dict[str, TableLoadStats] = {}
    warehouse = icp.warehouse_path()
    pipelines_dir = icp.dlt_pipelines_dir()
    with spool(pipelines_dir) as load_files_dir, load_settings(transient_files=True):
        plan = build_raw_source(
            icp.load_config(), contracts, icp.source_path(), warehouse, stats, spool_dir=load_files_dir
        )
        found = plan.inventory
        context.log.info(f"loading {len(found.files)} table file(s) from {found.source_dir}")
        for table, api in plan.api_tables.items():
            context.log.info(f"{table}: read from {api}")
        for table, impact in found.missing_optional.items():
            context.log.warning(f"{table}: optional file missing; {impact}")
        for result in dlt.run(
            context=context,
            dlt_source=plan.source,
            dlt_pipeline=file_drop_pipeline(warehouse, pipelines_dir),
        ):
            table = result.asset_key.path[-1]
            extra, line = _load_report(table, stats.get(table))
            if line:
                context.log.info(line)
            yield dg.MaterializeResult(
                asset_key=result.asset_key, metadata={**(result.metadata or {}), **extra}
            )
    # Only now is the load committed: the next run may skip these files if they stay the same.
    record_loaded(warehouse, [(s.identity, s.rows_in_file) for s in stats.values() if s.identity is not None])
    as_of = partition_date(context)
    for table, table_stats in stats.items():
        if table_stats.read is not None and table_stats.read.malformed:
            # A malformed line may hold a key: its account is not absent, only unreadable tonight.
            context.log.warning(
                f"raw/{table}: absence not counted tonight, {table_stats.read.malformed:,} malformed "
                f"line(s) in {table_stats.file} may hold keys"
            )
            continue
        absent = record_presence(warehouse, table, table_stats.file, as_of, table_stats.absent_keys)
        if absent:
            context.log.info(f"raw/{table}: {absent:,} key(s) in raw are no longer in {table_stats.file}")
