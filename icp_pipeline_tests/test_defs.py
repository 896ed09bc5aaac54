"""Pins the Definitions: asset keys, jobs, schedules and resources, so a rename is a visible change."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from icp_pipeline.definitions import NIGHTLY_JOB, defs

RAW_TABLES = [
    "accounts",
    "contacts",
    "opportunities",
    "subscriptions",
    "owners",
    "firmographics",
    "funding_rounds",
    "job_postings",
    "leadership_changes",
]


def test_asset_keys_are_pinned() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {f"raw/{table}" for table in RAW_TABLES} <= keys


def test_raw_assets_are_in_the_ingest_group_with_their_grain() -> None:
    graph = defs.resolve_asset_graph()
    for table in RAW_TABLES:
        node = graph.get(dg.AssetKey(["raw", table]))
        assert node.group_name == "ingest"
        assert node.description and node.description.startswith("One row per")


def test_nightly_job_covers_every_asset_in_process() -> None:
    job = defs.resolve_job_def(NIGHTLY_JOB)
    all_keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert set(job.asset_layer.selected_asset_keys) == set(all_keys)
    assert job.executor_def.name == "in_process"
    assert job.partitions_def is not None


def test_schedule_runs_at_two_and_starts_stopped() -> None:
    schedule = defs.resolve_schedule_def("nightly_icp_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == NIGHTLY_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_schedule_scores_as_of_the_tick_date() -> None:
    schedule = defs.resolve_schedule_def("nightly_icp_schedule")
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 2, 2, 0), repository_def=defs.get_repository_def()
    )
    request = schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2026-11-02"


def test_jobs_and_sensors_are_pinned() -> None:
    jobs = {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    assert jobs == {NIGHTLY_JOB, "deliver_pending_alerts"}
    sensor = defs.resolve_sensor_def("pending_alerts_sensor")
    assert sensor.job_name == "deliver_pending_alerts"
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_every_asset_in_the_nightly_job_is_pinned() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {f"raw/{t}" for t in RAW_TABLES} | {f"staging/{t}" for t in RAW_TABLES} | {
        "icp/icp_evidence",
        "icp/icp_profile",
        "icp/account_scores",
        "icp/score_validation",
        "icp/trigger_events",
        "icp/model_comparison",
        "icp/alerts",
        "icp/drift_metrics",
        "icp/report",
        "icp/published",
        "icp/crm_writeback",
    }


def test_definitions_load_with_an_invalid_config_and_name_the_error(tmp_path: Path) -> None:
    """A bad cron in icp.yaml used to break the import, so the whole code location vanished from the UI.

    Now the definitions are built with the default schedule, which names the error; runs fail on it.
    """
    config = tmp_path / "icp.yaml"
    config.write_text('schedule: {cron: "0 2 * *", timezone: Mars/Olympus}\n')
    probe = (
        "from icp_pipeline.definitions import defs; "
        "s = defs.resolve_schedule_def('nightly_icp_schedule'); "
        "print(s.cron_schedule, s.execution_timezone); print(s.description)"
    )
    env = {**os.environ, "ICP_CONFIG": str(config), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reason = f"{config}: schedule.cron: not a cron expression Dagster accepts: '0 2 * *' (5 fields, e.g. '0 2 * * *')"
    assert done.stdout.splitlines() == [
        "0 2 * * * UTC",
        f"Default schedule, icp.yaml is invalid (runs fail until it is fixed): {reason}",
    ]
    assert f"Dagster definitions built with default settings: {reason}" in done.stderr
