"""The warehouse writer lock: a second writer is told who holds it, a dead holder never blocks, the
holder's own in-process run re-enters it, and Dagster runs (not sensors) take it through the resource."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from icp_pipeline.resources import IcpSettings
from icp_pipeline.warehouse_lock import WarehouseBusyError, holder, lock_path, warehouse_lock

HOLD = """
import sys, time
from pathlib import Path
from icp_pipeline.warehouse_lock import warehouse_lock
with warehouse_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""
IN_USE = r"warehouse (?P<wh>\S+) is in use by run (?P<run>\S+) \(pid (?P<pid>\d+)\) since (?P<since>\S+)"


def hold(warehouse: Path, run_id: str, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the lock for `seconds` (it says so once it holds it)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(warehouse), run_id, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    warehouse = tmp_path / "warehouse.duckdb"
    process = hold(warehouse, "run-A", 120)
    yield warehouse, process
    process.kill()
    process.wait(10)


def test_a_second_writer_fails_at_once_naming_the_holder(held: tuple[Path, subprocess.Popen[str]]) -> None:
    warehouse, process = held
    started = time.monotonic()
    with pytest.raises(WarehouseBusyError) as busy, warehouse_lock(warehouse, "run-B"):
        pytest.fail("the lock was acquired while another process holds it")
    assert time.monotonic() - started < 2
    match = re.fullmatch(IN_USE, str(busy.value))
    assert match, str(busy.value)
    assert match["wh"] == str(warehouse) and match["run"] == "run-A" and int(match["pid"]) == process.pid
    assert lock_path(warehouse) == warehouse.with_name("warehouse.duckdb.lock")


def test_a_killed_holder_releases_the_lock_though_its_file_remains(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    warehouse, process = held
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert holder(warehouse)["pid"] == process.pid, "the stale holder text is still there"
    with warehouse_lock(warehouse, "run-B"):
        assert holder(warehouse)["run_id"] == "run-B"


def test_a_second_writer_waits_for_the_holder_when_a_wait_is_configured(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    process = hold(warehouse, "run-A", 1.5)
    heard: list[str] = []
    started = time.monotonic()
    with warehouse_lock(warehouse, "run-B", wait_s=60, notify=heard.append):
        waited = time.monotonic() - started
    process.wait(10)
    assert 0.5 < waited < 30
    assert len(heard) == 1 and re.match(IN_USE, heard[0]) and heard[0].endswith("waiting up to 60 s")
    with pytest.raises(WarehouseBusyError, match=r"\(waited 0.5 s\)$"):
        blocker = hold(warehouse, "run-C", 30)
        try:
            with warehouse_lock(warehouse, "run-D", wait_s=0.5):
                pass
        finally:
            blocker.kill()
            blocker.wait(10)


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_outermost_exit(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with warehouse_lock(warehouse, "outer"):
        with warehouse_lock(warehouse, "inner"):
            assert holder(warehouse)["run_id"] == "outer"
        probe = subprocess.run(
            [sys.executable, "-c", HOLD, str(warehouse), "probe", "0"], capture_output=True
        )
        assert probe.returncode != 0 and b"is in use by run outer" in probe.stderr
    process = hold(warehouse, "after", 0)
    process.wait(10)
    assert process.returncode == 0


@dg.asset
def touches_warehouse(icp: IcpSettings) -> None:
    """Stands for any asset of a run that writes the warehouse."""


def test_a_dagster_run_takes_the_lock_through_the_icp_resource(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    from icp_pipeline.alerts.assets import pending_alerts_sensor

    warehouse, process = held
    settings = IcpSettings(warehouse=str(warehouse))
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [touches_warehouse], resources={"icp": settings}, instance=instance, raise_on_error=False
        )
    assert not result.success
    errors = [str(event.event_specific_data) for event in result.all_events if event.is_failure]
    assert any(f"is in use by run run-A (pid {process.pid})" in text for text in errors), errors
    # Sensors only read: evaluating one does not need (or wait for) the lock.
    with dg.build_sensor_context(resources={"icp": settings}) as context:
        tick = pending_alerts_sensor(context)
    assert "no pending" in tick.skip_reason.skip_message
