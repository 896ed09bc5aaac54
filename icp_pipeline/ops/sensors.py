"""Dagster wiring of ops notifications: one message per failed run, one per missed deadline."""

import datetime as dt
from pathlib import Path

import dagster as dg

from icp_pipeline.config import config_or_defaults
from icp_pipeline.ops.notices import (
    FRESHNESS_WINDOW,
    failure_reason,
    is_late,
    late_notice,
    latest_deadline,
    run_failure_notice,
    send_ops,
)
from icp_pipeline.resources import IcpSettings
from icp_pipeline.runner import NIGHTLY_JOB
from icp_pipeline.scoring.assets import SCORES

_config, _ = config_or_defaults()


def _outbox(icp: IcpSettings) -> Path:
    return icp.warehouse_path().parent / "outbox"


@dg.run_failure_sensor(
    name="ops_run_failure_sensor",
    minimum_interval_seconds=_config.ops.sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One message per failed run (job, failed step, reason, link) through the alert channels.",
)
def ops_run_failure_sensor(context: dg.RunFailureSensorContext, icp: IcpSettings) -> None:
    config = icp.load_config()
    step, reason, _ = failure_reason(context.get_step_failure_events())
    run = context.dagster_run
    message = run_failure_notice(
        run.job_name, run.run_id, step, reason, config.ops.run_url_template, dt.datetime.now(dt.UTC)
    )
    results = send_ops(config, _outbox(icp), message, context.log)
    context.log.info(f"run {run.run_id} failed at {step}: ops told through {sorted(results)}")


_deadline_hour, _deadline_minute = (int(part) for part in _config.ops.fresh_by.split(":"))

score_freshness_checks = dg.build_last_update_freshness_checks(
    assets=[SCORES],
    lower_bound_delta=FRESHNESS_WINDOW,
    deadline_cron=f"{_deadline_minute} {_deadline_hour} * * *",
    timezone=_config.schedule.timezone,
    severity=dg.AssetCheckSeverity.WARN,
)

score_freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=score_freshness_checks, name="score_freshness_checks_sensor"
)


@dg.sensor(
    name="nightly_late_sensor",
    minimum_interval_seconds=max(60, _config.ops.sensor_interval_s),
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Tells ops once per missed deadline when no nightly run succeeded by ops.fresh_by "
        "(schedule timezone). Turn it on with the schedule."
    ),
)
def nightly_late_sensor(context: dg.SensorEvaluationContext, icp: IcpSettings) -> dg.SkipReason:
    config = icp.load_config()
    deadline = latest_deadline(dt.datetime.now(dt.UTC), config.ops.fresh_by, config.schedule.timezone)
    if context.cursor == deadline.isoformat():
        return dg.SkipReason(f"ops already told about the {deadline:%Y-%m-%d %H:%M} deadline")
    records = context.instance.get_run_records(
        dg.RunsFilter(job_name=NIGHTLY_JOB, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1
    )
    last = records[0].end_time if records else None
    last_success = dt.datetime.fromtimestamp(last, dt.UTC) if last else None
    if not is_late(last_success, deadline):
        return dg.SkipReason(f"a nightly run succeeded in time for {deadline:%Y-%m-%d %H:%M}")
    send_ops(config, _outbox(icp), late_notice(deadline, last_success, NIGHTLY_JOB), context.log)
    context.update_cursor(deadline.isoformat())
    return dg.SkipReason(f"no nightly run succeeded by {deadline:%Y-%m-%d %H:%M}: ops told")
