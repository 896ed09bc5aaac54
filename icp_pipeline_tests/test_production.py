"""The production profile for real: PostgreSQL-backed Dagster with the daemon firing the schedule,
publishing to a PostgreSQL warehouse, and a run killed mid-way that leaves everything consistent.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth); every test skips with the reason where none answers.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from icp_pipeline.config import PROJECT_ROOT
from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline_tests import postgres
from icp_pipeline_tests.dagster_server import (
    daemon_args,
    dagster_process,
    free_port,
    graphql,
    repository_selector,
    wait_for_webserver,
    webserver_args,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ACCOUNTS = 1500
SCHEDULE_TIMEOUT_S = 180

START_SCHEDULE = """
mutation($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    postgres.require_postgres()


def write_config(path: Path, publish_db: str | None, cron: str = "0 2 * * *") -> Path:
    config: dict[str, object] = {"schedule": {"cron": cron, "timezone": "UTC"}}
    if publish_db:
        config["publish"] = {"enabled": True, "destination": "postgres", "dataset": "icp"}
    path.write_text(yaml.safe_dump(config))
    return path


def scores_by_day(database: str) -> dict[str, int]:
    rows = postgres.query(database, "select as_of::text, count(*) from icp.account_scores group by 1")
    return {str(day): int(n) for day, n in rows}


def test_daemon_fires_the_schedule_and_the_run_publishes_to_postgres(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    drop = tmp_path / "drop"
    generate_demo(drop, DemoSpec(accounts=ACCOUNTS, seed=11, as_of=today))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())
    with postgres.fresh_database("icp_dagster") as instance_db, postgres.fresh_database("icp_wh") as wh_db:
        env = {
            **postgres.dagster_env(instance_db),
            "DAGSTER_HOME": str(home),
            "ICP_SOURCE_DIR": str(drop),
            "ICP_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
            "ICP_CONFIG": str(write_config(tmp_path / "icp.yaml", wh_db, cron="* * * * *")),
            "ICP_PUBLISH_CREDENTIALS": postgres.url(wh_db),
        }
        port = free_port()
        started = time.monotonic()
        with (
            dagster_process(webserver_args(port), env, tmp_path / "webserver.log") as web,
            dagster_process(daemon_args(), env, tmp_path / "daemon.log") as daemon,
        ):
            wait_for_webserver(port, web, tmp_path / "webserver.log")
            selector = {**repository_selector(port), "scheduleName": "nightly_icp_schedule"}
            started_schedule = graphql(port, START_SCHEDULE, {"selector": selector})["startSchedule"]
            assert started_schedule["scheduleState"]["status"] == "RUNNING", started_schedule
            run = _wait_for_scheduled_success(instance_db, daemon, tmp_path / "daemon.log")
            elapsed = time.monotonic() - started
        assert web.poll() is not None and daemon.poll() is not None, "processes still running after stop"
        print(
            f"\nscheduled run {run[0]}: {run[1]} in {run[2]:.0f} s, {elapsed:.0f} s after the daemon started"
        )
        assert run[1] == "SUCCESS"
        assert scores_by_day(wh_db) == {today.isoformat(): ACCOUNTS}


def _wait_for_scheduled_success(
    instance_db: str, daemon: subprocess.Popen[bytes], log: Path
) -> tuple[str, str, float]:
    """Poll Dagster's run storage in PostgreSQL until a run launched by the schedule has finished."""
    deadline = time.monotonic() + SCHEDULE_TIMEOUT_S
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"daemon exited:\n{log.read_text(errors='replace')[-3000:]}"
        rows = (
            postgres.query(
                instance_db,
                """
            select runs.run_id, runs.status, runs.end_time - runs.start_time from runs
            join run_tags on run_tags.run_id = runs.run_id
            where run_tags.key = 'dagster/schedule_name' and run_tags.value = 'nightly_icp_schedule'
            """,
            )
            if _has_runs_table(instance_db)
            else []
        )
        finished = [
            (str(run_id), str(status), float(seconds or 0))
            for run_id, status, seconds in rows
            if status in ("SUCCESS", "FAILURE")
        ]
        if finished:
            return finished[0]
        time.sleep(2)
    raise AssertionError(f"no scheduled run finished in {SCHEDULE_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _has_runs_table(database: str) -> bool:
    return bool(postgres.query(database, "select 1 from information_schema.tables where table_name = 'runs'"))


def icp_run(drop: Path, warehouse: Path, config: Path, as_of: dt.date, env: dict[str, str]) -> list[str]:
    return [
        str(Path(sys.executable).parent / "icp"),
        "run",
        "--source-dir",
        str(drop),
        "--warehouse",
        str(warehouse),
        "--config",
        str(config),
        "--as-of",
        as_of.isoformat(),
    ]


def run_icp(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_publishing_a_date_twice_keeps_counts_and_a_new_date_adds_its_partition(tmp_path: Path) -> None:
    first, second = dt.date(2026, 10, 31), dt.date(2026, 11, 1)
    drop = tmp_path / "drop"
    generate_demo(drop, DemoSpec(accounts=ACCOUNTS, seed=5, as_of=second))
    with postgres.fresh_database("icp_wh") as wh_db:
        env = {"ICP_PUBLISH_CREDENTIALS": postgres.url(wh_db), "DAGSTER_HOME": ""}
        config = write_config(tmp_path / "icp.yaml", wh_db)
        warehouse = tmp_path / "warehouse.duckdb"
        for as_of in (first, first):
            done = run_icp(icp_run(drop, warehouse, config, as_of, env), env, tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
        once = _published_counts(wh_db)
        assert once["account_scores"] == {first.isoformat(): ACCOUNTS}
        done = run_icp(icp_run(drop, warehouse, config, second, env), env, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        twice = _published_counts(wh_db)
        assert twice["account_scores"] == {first.isoformat(): ACCOUNTS, second.isoformat(): ACCOUNTS}
        assert twice["icp_profile"][first.isoformat()] == once["icp_profile"][first.isoformat()]
        events = postgres.query(wh_db, "select count(*), count(distinct event_id) from icp.trigger_events")
        assert events[0][0] == events[0][1] > 0
        alerts = postgres.query(wh_db, "select count(*), count(distinct alert_id) from icp.alerts")
        assert alerts[0][0] == alerts[0][1]


def _published_counts(database: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for table in ("account_scores", "icp_profile", "icp_evidence", "drift_metrics"):
        rows = postgres.query(database, f"select as_of::text, count(*) from icp.{table} group by 1")
        counts[table] = {str(day): int(n) for day, n in rows}
    return counts


@pytest.mark.parametrize("kill_at", ["raw_file_drop", "icp__published"])
def test_a_run_killed_mid_way_leaves_everything_consistent_and_the_next_run_succeeds(
    tmp_path: Path, kill_at: str
) -> None:
    first, second = dt.date(2026, 10, 31), dt.date(2026, 11, 1)
    drop = tmp_path / "drop"
    generate_demo(drop, DemoSpec(accounts=ACCOUNTS, seed=3, as_of=second))
    with postgres.fresh_database("icp_wh") as wh_db:
        env = {"ICP_PUBLISH_CREDENTIALS": postgres.url(wh_db), "DAGSTER_HOME": ""}
        config = write_config(tmp_path / "icp.yaml", wh_db)
        warehouse = tmp_path / "warehouse.duckdb"
        done = run_icp(icp_run(drop, warehouse, config, first, env), env, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]

        # --verbose: the kill waits for the step's first Dagster log line on stderr.
        args = [*icp_run(drop, warehouse, config, second, env), "--verbose"]
        killed_log = _run_and_kill(args, env, tmp_path, kill_at)

        _assert_consistent(warehouse, wh_db, first, second)
        done = run_icp(icp_run(drop, warehouse, config, second, env), env, tmp_path)
        assert done.returncode == 0, f"after the kill:\n{killed_log[-1500:]}\nrerun:\n{done.stderr[-2000:]}"
        _assert_consistent(warehouse, wh_db, first, second)
        assert scores_by_day(wh_db) == {first.isoformat(): ACCOUNTS, second.isoformat(): ACCOUNTS}


def _run_and_kill(args: list[str], env: dict[str, str], cwd: Path, step: str) -> str:
    """Start `icp run`, SIGKILL it shortly after `step` logs its first line; return what it printed."""
    process = subprocess.Popen(
        args, env={**os.environ, **env}, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert process.stderr is not None
    seen: list[str] = []
    for line in process.stderr:
        seen.append(line)
        if f" - {step} - " in line:
            time.sleep(0.5)
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before {step}:\n{''.join(seen)[-2000:]}"
    return "".join(seen)


def _assert_consistent(warehouse: Path, wh_db: str, first: dt.date, second: dt.date) -> None:
    """Every stored date holds a whole slice, in DuckDB and in the published tables; ids stay unique."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        local = dict(
            con.execute("select as_of::varchar, count(*) from icp.account_scores group by 1").fetchall()
        )
        events = con.execute("select count(*), count(distinct event_id) from icp.trigger_events").fetchall()[
            0
        ]
    assert local.get(first.isoformat()) == ACCOUNTS and local.get(second.isoformat(), ACCOUNTS) == ACCOUNTS
    assert events[0] == events[1]
    published = scores_by_day(wh_db)
    assert published.get(first.isoformat()) == ACCOUNTS
    assert published.get(second.isoformat(), ACCOUNTS) == ACCOUNTS
    tables = {row[0] for row in postgres.query(wh_db, "select table_name from information_schema.tables")}
    assert {"account_scores", "trigger_events", "alerts"} <= tables
