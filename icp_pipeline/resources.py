"""The one Dagster resource every asset shares: where to read, where to write, which config."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from icp_pipeline import config as settings
from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.spec import TableContract, load_contracts
from icp_pipeline.warehouse import checked_warehouse
from icp_pipeline.warehouse_lock import warehouse_lock


class IcpSettings(dg.ConfigurableResource):
    """Paths for a run; empty values fall back to ICP_SOURCE_DIR, ICP_WAREHOUSE, ICP_CONFIG, then defaults."""

    source_dir: str = ""
    warehouse: str = ""
    config_file: str = ""

    def source_path(self) -> Path:
        return Path(self.source_dir) if self.source_dir else settings.default_source_dir()

    def warehouse_path(self) -> Path:
        return checked_warehouse(Path(self.warehouse) if self.warehouse else settings.default_warehouse())

    def dlt_pipelines_dir(self) -> Path:
        """dlt state lives beside the warehouse it describes."""
        return self.warehouse_path().parent / "dlt_pipelines"

    def load_config(self) -> IcpConfig:
        return settings.load_config(self.config_file or None)

    def contracts(self) -> dict[str, TableContract]:
        return load_contracts(settings.contracts_dir(self.load_config()))

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[Any]:
        """A run holds the warehouse lock from before its first step to after its last, so two runs
        never write (or deliver alerts) at once; sensors and schedules (no run) only read."""
        if context.run_id is None:
            with super().yield_for_execution(context) as resource:
                yield resource
            return
        log = context.log
        with (
            warehouse_lock(
                self.warehouse_path(),
                context.run_id,
                self.load_config().warehouse_lock_wait_s,
                notify=log.warning if log is not None else None,
            ),
            super().yield_for_execution(context) as resource,
        ):
            yield resource


def partition_date(context: dg.AssetExecutionContext) -> dt.date:
    """The as-of date of a run: its daily partition."""
    return dt.date.fromisoformat(context.partition_key)
