"""Ops notifications: one message per failed run naming the step, and a late-night warning."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from icp_pipeline.definitions import defs
from icp_pipeline.ops.notices import is_late, latest_deadline
from icp_pipeline.ops.sensors import nightly_late_sensor, ops_run_failure_sensor, score_freshness_checks
from icp_pipeline.resources import IcpSettings
from icp_pipeline.runner import run_nightly
from icp_pipeline.scoring.assets import SCORES

UTC = dt.UTC


@pytest.mark.parametrize(
    ("now", "timezone", "expected"),
    [
        (dt.datetime(2026, 11, 23, 7, 0, tzinfo=UTC), "UTC", dt.datetime(2026, 11, 23, 6, 0, tzinfo=UTC)),
        (dt.datetime(2026, 11, 23, 5, 59, tzinfo=UTC), "UTC", dt.datetime(2026, 11, 22, 6, 0, tzinfo=UTC)),
        # 06:00 in New York is 11:00 UTC in November.
        (
            dt.datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
            "America/New_York",
            dt.datetime(2026, 11, 22, 11, 0, tzinfo=UTC),
        ),
    ],
)
def test_the_deadline_is_the_latest_fresh_by_in_the_schedule_timezone(
    now: dt.datetime, timezone: str, expected: dt.datetime
) -> None:
    assert latest_deadline(now, "06:00", timezone) == expected


def test_a_run_is_late_without_a_success_in_the_day_before_the_deadline() -> None:
    deadline = dt.datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    assert is_late(None, deadline)
    assert is_late(dt.datetime(2026, 11, 22, 5, 0, tzinfo=UTC), deadline)
    assert not is_late(dt.datetime(2026, 11, 23, 2, 40, tzinfo=UTC), deadline)


def _outbox_messages(warehouse: Path) -> list[dict[str, object]]:
    outbox = warehouse.parent / "outbox" / "alerts.jsonl"
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines() if line.strip()]


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Sensors get the `icp` resource from the Definitions, which reads ICP_WAREHOUSE."""
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("ICP_WAREHOUSE", str(path))
    return path


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None) -> Any:
    """One evaluation; the `icp` resource has a lifecycle (the warehouse lock), so the context is
    opened as a context manager, as the daemon does."""
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources={"icp": IcpSettings()},
    ) as context:
        return sensor.evaluate_tick(context)


def test_a_failed_run_sends_exactly_one_ops_message_naming_the_failed_step(
    tmp_path: Path, warehouse: Path
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        first = _tick(ops_run_failure_sensor, instance, None)
        result = run_nightly(tmp_path / "no_such_drop", warehouse, dt.date(2026, 11, 1), instance)
        assert not result.success
        second = _tick(ops_run_failure_sensor, instance, first.cursor)
        _tick(ops_run_failure_sensor, instance, second.cursor)
    messages = [m for m in _outbox_messages(warehouse) if m["alert"]["trigger_type"] == "ops_notice"]
    assert len(messages) == 1, messages
    text = json.dumps(messages[0])
    assert "raw_file_drop" in text and result.run_id in text and "no_such_drop" in text


def test_no_message_for_a_successful_run_of_the_failure_sensor(tmp_path: Path, warehouse: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        first = _tick(ops_run_failure_sensor, instance, None)
        _tick(ops_run_failure_sensor, instance, first.cursor)
    assert _outbox_messages(warehouse) == []


def test_late_nightly_run_notifies_ops_once_per_deadline(tmp_path: Path, warehouse: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        first = _tick(nightly_late_sensor, instance, None)
        second = _tick(nightly_late_sensor, instance, first.cursor)
    assert first.cursor and second.cursor == first.cursor
    messages = _outbox_messages(warehouse)
    assert len(messages) == 1
    assert "No successful `nightly_icp` run by" in json.dumps(messages[0])


def test_freshness_check_warns_when_scores_were_never_materialized() -> None:
    check_keys = [key for checks in score_freshness_checks for key in checks.check_keys]
    assert check_keys and all(key.asset_key == SCORES for key in check_keys)
    job = dg.define_asset_job("freshness_only", selection=dg.AssetSelection.checks(*check_keys))
    resolved = dg.Definitions(
        assets=defs.assets, asset_checks=score_freshness_checks, jobs=[job], resources=defs.resources
    ).resolve_job_def("freshness_only")
    with dg.DagsterInstance.ephemeral() as instance:
        result = resolved.execute_in_process(instance=instance, raise_on_error=False)
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 1
    assert not evaluations[0].passed
    assert evaluations[0].severity == dg.AssetCheckSeverity.WARN
