"""Dagster wiring of publishing: the last step of the nightly job, off unless `publish.enabled`."""

import time

import dagster as dg

from icp_pipeline.alerts.assets import ALERTS
from icp_pipeline.drift.assets import DRIFT
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.publish.tables import TABLES, publish
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.scoring.assets import EVIDENCE, PROFILE, SCORES, VALIDATION
from icp_pipeline.triggers.assets import TRIGGER_EVENTS

PUBLISHED = dg.AssetKey(["icp", "published"])


@dg.asset(
    key=PUBLISHED,
    deps=[SCORES, PROFILE, EVIDENCE, VALIDATION, TRIGGER_EVENTS, ALERTS, DRIFT],
    group_name="publish",
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    description=(
        "One load per as-of date into the team's warehouse (a dlt destination named in icp.yaml): "
        f"{', '.join(TABLES)}. Per-date tables replace that date's slice, trigger events and alerts "
        "upsert on their ids, so reruns and backfills duplicate nothing. Off unless publish.enabled."
    ),
)
def published(context: dg.AssetExecutionContext, icp: IcpSettings) -> dg.MaterializeResult:
    config = icp.load_config().publish
    if not config.enabled:
        context.log.info("publishing is off (publish.enabled: false in icp.yaml)")
        return dg.MaterializeResult(metadata={"enabled": False})
    as_of = partition_date(context)
    context.log.info(f"publishing {len(config.tables)} table(s) for {as_of} to {config.destination}")
    started = time.perf_counter()
    stats, load_id = publish(icp.warehouse_path(), as_of, config, icp.dlt_pipelines_dir())
    seconds = time.perf_counter() - started
    context.log.info(
        f"published {sum(stats.rows.values()):,} rows to {config.destination} dataset {config.dataset} "
        f"in {seconds:.1f} s"
    )
    for table, reason in stats.skipped.items():
        context.log.warning(f"{table}: not published, {reason}")
    return dg.MaterializeResult(
        metadata={
            "enabled": True,
            "destination": config.destination,
            "dataset": config.dataset,
            "load_id": load_id,
            "seconds": dg.MetadataValue.float(round(seconds, 2)),
            "rows_published": dg.MetadataValue.int(sum(stats.rows.values())),
            "rows_by_table": dg.MetadataValue.md(
                "\n".join(
                    ["| table | rows |", "|---|---|"] + [f"| {t} | {n:,} |" for t, n in stats.rows.items()]
                )
            ),
            **({"skipped": dg.MetadataValue.json(stats.skipped)} if stats.skipped else {}),
        }
    )
