"""The one root: assembles every domain's assets, the nightly job, its schedule and resources."""

import dagster as dg
from dagster_dlt import DagsterDltResource

from icp_pipeline.alerts.assets import alerts, deliver_pending_alerts, pending_alerts_sensor
from icp_pipeline.config import config_or_defaults
from icp_pipeline.contracts.assets import staging_assets
from icp_pipeline.drift.assets import drift_metrics_asset
from icp_pipeline.governance.assets import model_comparison
from icp_pipeline.ingest.assets import raw_file_drop
from icp_pipeline.ops.sensors import (
    nightly_late_sensor,
    ops_run_failure_sensor,
    score_freshness_checks,
    score_freshness_sensor,
)
from icp_pipeline.partitions import nightly_partitions
from icp_pipeline.publish.assets import published
from icp_pipeline.report.assets import icp_report
from icp_pipeline.resources import IcpSettings
from icp_pipeline.runner import NIGHTLY_JOB, WAREHOUSE_WRITER
from icp_pipeline.scoring.assets import icp_profile_and_scores, score_validation
from icp_pipeline.triggers.assets import trigger_events
from icp_pipeline.writeback.assets import crm_writeback

nightly_icp = dg.define_asset_job(
    NIGHTLY_JOB,
    selection=dg.AssetSelection.all(),
    partitions_def=nightly_partitions,
    description="Ingest, validate, learn the ICP, score, detect triggers, alert, watch drift, publish.",
    tags=WAREHOUSE_WRITER,
)

_config, _config_error = config_or_defaults()
_schedule = _config.schedule


@dg.schedule(
    job=nightly_icp,
    cron_schedule=_schedule.cron,
    execution_timezone=_schedule.timezone,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    name="nightly_icp_schedule",
    description=(
        f"Default schedule, icp.yaml is invalid (runs fail until it is fixed): {_config_error}"
        if _config_error
        else None
    ),
)
def nightly_icp_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Score as of the tick's own date, with everything the sources hold by then."""
    as_of = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_key=as_of, partition_key=as_of)


defs = dg.Definitions(
    assets=[
        raw_file_drop,
        *staging_assets,
        icp_profile_and_scores,
        score_validation,
        trigger_events,
        model_comparison,
        alerts,
        drift_metrics_asset,
        icp_report,
        crm_writeback,
        published,
    ],
    asset_checks=[*score_freshness_checks],
    jobs=[nightly_icp, deliver_pending_alerts],
    schedules=[nightly_icp_schedule],
    sensors=[pending_alerts_sensor, ops_run_failure_sensor, nightly_late_sensor, score_freshness_sensor],
    resources={"dlt": DagsterDltResource(), "icp": IcpSettings()},
    executor=dg.in_process_executor,
)
