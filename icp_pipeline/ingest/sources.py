"""One dlt source for all raw tables: the configured CRM API, the configured REST feeds, files for the rest.

The Dagster asset graph is fixed (`raw/<table>` for the nine canonical tables), so whatever
delivers a table, the source always has one resource per table under the table's name. The CRM
tables come from HubSpot or Salesforce when `sources.crm.kind` says so (subscriptions stay with
the file drop), a feed listed under `sources.feeds` comes from its API, and every other table is
read from the drop exactly as before; the drop then no longer requires the files an API delivers.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dlt
from dlt.extract.resource import DltResource
from dlt.extract.source import DltSource

from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.ingest.api_client import Sleep
from icp_pipeline.ingest.feeds import feed_resource
from icp_pipeline.ingest.file_drop import TableLoadStats, file_drop_source
from icp_pipeline.ingest.files import DropInventory, inventory
from icp_pipeline.ingest.hubspot import hubspot_resources
from icp_pipeline.ingest.salesforce import salesforce_resources

# The file drop's source name: dlt keys its schema and state by it, so warehouses loaded before
# the APIs existed keep one schema whichever source fills a table.
RAW_SOURCE_NAME = "file_drop"


@dataclass
class RawSourcePlan:
    """The source to load and where each table comes from, for logs and metadata."""

    source: DltSource
    inventory: DropInventory
    api_tables: dict[str, str] = field(default_factory=dict)


@dlt.source(name=RAW_SOURCE_NAME, max_table_nesting=0)
def raw_tables_source(tables: list[DltResource]) -> list[DltResource]:
    """The raw tables' resources, whatever reads each of them."""
    return tables


def drop_inventory(source_dir: Path, contracts: Mapping[str, TableContract]) -> DropInventory:
    """The drop's files for the tables it still delivers; no folder is fine when none is required."""
    if not source_dir.is_dir() and not any(c.file_required for c in contracts.values()):
        found = DropInventory(source_dir=source_dir)
        found.missing_optional = {table: c.missing_file_impact for table, c in contracts.items()}
        return found
    return inventory(source_dir, dict(contracts))


def api_delivered_tables(config: IcpConfig) -> set[str]:
    """The tables an API delivers (so the drop need not hold them): what `api_resources` builds."""
    tables = set(config.sources.crm.tables) if config.sources.crm.kind != "file_drop" else set()
    return tables | set(config.sources.feeds)


def api_resources(
    config: IcpConfig,
    contracts: Mapping[str, TableContract],
    loaded_at: dt.datetime,
    stats: dict[str, TableLoadStats],
    env: Mapping[str, str],
    sleep: Sleep = time.sleep,
) -> dict[str, DltResource]:
    """Resources of the tables an API delivers, by table; empty with the default config."""
    crm = config.sources.crm
    resources: dict[str, DltResource] = {}
    if crm.kind == "hubspot":
        resources |= hubspot_resources(crm, config.stages, contracts, loaded_at, stats, env, sleep)
    elif crm.kind == "salesforce":
        resources |= salesforce_resources(crm, config.stages, contracts, loaded_at, stats, env, sleep)
    for table, feed in config.sources.feeds.items():
        resources[table] = feed_resource(table, contracts[table], feed, loaded_at, stats, env, sleep)
    return resources


def build_raw_source(
    config: IcpConfig,
    contracts: Mapping[str, TableContract],
    source_dir: Path,
    warehouse: Path,
    stats: dict[str, TableLoadStats],
    loaded_at: dt.datetime | None = None,
    env: Mapping[str, str] | None = None,
    sleep: Sleep = time.sleep,
    spool_dir: Path | None = None,
) -> RawSourcePlan:
    """A fresh source for one load: secrets and the drop are checked now, APIs are read at extract.

    `spool_dir`: where the files' tables are written as dlt load files (see `file_drop.load_files`)."""
    stamp = loaded_at or dt.datetime.now(dt.UTC)
    from_api = api_resources(config, contracts, stamp, stats, os.environ if env is None else env, sleep)
    file_contracts = {table: c for table, c in contracts.items() if table not in from_api}
    found = drop_inventory(source_dir, file_contracts)
    files = file_drop_source(
        found, file_contracts, warehouse, stats=stats, loaded_at=stamp, spool_dir=spool_dir
    )
    tables = [from_api[t] if t in from_api else files.resources[t] for t in contracts]
    labels = {table: _label(config, table) for table in from_api}
    return RawSourcePlan(raw_tables_source(tables), found, labels)


def _label(config: IcpConfig, table: str) -> str:
    return f"feed:{table}" if table in config.sources.feeds else config.sources.crm.kind
