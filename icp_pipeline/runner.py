"""Run the nightly job in-process for one as-of date: what `icp run` and the tests call."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

NIGHTLY_JOB = "nightly_icp"
# Runs carrying this tag write the DuckDB warehouse, which allows one writer: the production
# instance (deploy/dagster.yaml) limits runs with this tag to one at a time.
WAREHOUSE_WRITER = {"icp/warehouse": "writer"}
# Which warehouse and drop a run used, so runs in a shared instance can be told apart. Not
# `icp/warehouse` itself: that tag is the writer-concurrency key above.
WAREHOUSE_PATH_TAG = "icp/warehouse_path"
SOURCE_DIR_TAG = "icp/source_dir"


def run_nightly(
    source_dir: Path,
    warehouse: Path,
    as_of: dt.date,
    instance: dg.DagsterInstance,
    config_file: Path | None = None,
    selection: str | None = None,
    log_level: str = "INFO",
    run_id: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the nightly job's partition for `as_of`; failures are in the result, not raised.

    The run takes the warehouse lock (see `warehouse_lock`) through the `icp` resource; it is tagged
    with the warehouse and source directory it used."""
    from icp_pipeline.definitions import defs
    from icp_pipeline.errors import IcpInputError

    job = defs.resolve_job_def(NIGHTLY_JOB)
    partitions = job.partitions_def
    if partitions is not None and not partitions.has_partition_key(as_of.isoformat()):
        first = partitions.get_first_partition_key()
        raise IcpInputError(
            f"as-of {as_of} is outside the nightly partitions (from {first} to today); "
            "set first_partition_date in icp.yaml for older dates"
        )
    keys = (
        list(dg.AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph()))
        if selection
        else None
    )
    return job.execute_in_process(
        partition_key=as_of.isoformat(),
        instance=instance,
        raise_on_error=False,
        asset_selection=keys,
        run_id=run_id,
        tags={WAREHOUSE_PATH_TAG: str(warehouse.resolve()), SOURCE_DIR_TAG: str(source_dir.resolve())},
        run_config={
            "resources": {
                "icp": {
                    "config": {
                        "source_dir": str(source_dir.resolve()),
                        "warehouse": str(warehouse.resolve()),
                        "config_file": str(config_file.resolve()) if config_file else "",
                    }
                }
            },
            "loggers": {"console": {"config": {"log_level": log_level}}},
        },
    )
