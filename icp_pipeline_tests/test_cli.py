"""The `icp` command as operators use it: exit codes, one-line failures, a summary, runs in the instance;
and two runs on one warehouse, which must not both write it (nor deliver every alert twice)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from icp_pipeline.cli import main
from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline.warehouse_lock import holder
from icp_pipeline_tests.conftest import ACCOUNTS_CSV, AS_OF, OPPORTUNITIES_CSV, write_drop


def test_run_prints_summary_and_records_the_run(
    minimal_drop: Path, tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "wh.duckdb"
    args = ["run", "--source-dir", str(minimal_drop), "--warehouse", str(warehouse), "--as-of", AS_OF]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "raw.accounts" in out and "3 rows" in out
    assert f"ICP document: {tmp_path / 'reports' / 'icp_profile.html'}" in out
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].job_name == "nightly_icp"
        assert runs[0].tags["dagster/partition"] == AS_OF


def test_missing_required_column_exits_non_zero_with_one_line(
    tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop = write_drop(
        tmp_path / "drop",
        {"crm/accounts.csv": "account_id,name\nA1,Acme\n", "crm/opportunities.csv": OPPORTUNITIES_CSV},
    )
    code = main(
        ["run", "--source-dir", str(drop), "--warehouse", str(tmp_path / "wh.duckdb"), "--as-of", AS_OF]
    )
    assert code == 1
    # Headers are checked before Dagster starts: the one line is all of stderr, and no run is recorded.
    assert capsys.readouterr().err.splitlines() == [
        "icp run: crm/accounts.csv: missing required column 'updated_at'"
    ]
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []


def test_bad_config_file_is_reported_before_running(
    minimal_drop: Path, tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "icp.yaml"
    config.write_text("stages:\n  wonn: [yes]\n")
    code = main(["run", "--source-dir", str(minimal_drop), "--config", str(config), "--as-of", AS_OF])
    assert code == 1
    assert "stages.wonn" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            "stages:\n  won: [closed won, won]\n  lost: [closed won, lost]\n",
            "stages.lost: stage 'closed won' is listed under both won and lost; list each stage once",
        ),
        (
            'schedule: {cron: "0 2 * *"}\n',
            "schedule.cron: not a cron expression Dagster accepts: '0 2 * *' (5 fields, e.g. '0 2 * * *')",
        ),
        (b"stages:\n  won: [gewonnen \xfc]\n", "not UTF-8 text (byte 0xfc on line 2); save it as UTF-8"),
        (None, "is a directory, not a YAML file"),
        (
            "first_partition_date: 2999-01-01\n",
            "first_partition_date: 2999-01-01 is in the future; the partitions must start on or before today",
        ),
    ],
)
def test_a_config_that_would_change_results_stops_the_run_with_one_line(
    content: str | bytes | None,
    reason: str,
    minimal_drop: Path,
    tmp_path: Path,
    dagster_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "icp.yaml"
    if content is None:
        config.mkdir()
    elif isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    warehouse = tmp_path / "wh.duckdb"
    args = ["run", "--source-dir", str(minimal_drop), "--warehouse", str(warehouse), "--config", str(config)]
    assert main([*args, "--as-of", AS_OF]) == 1
    assert capsys.readouterr().err.splitlines() == [f"icp run: {config}: {reason}"]
    assert not warehouse.exists()


def test_invalid_as_of_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--as-of", "2025-02-30"])
    assert exited.value.code == 2
    assert "not a date" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["raw.duckdb", "staging.duckdb", "ICP.duckdb"])
def test_a_warehouse_named_like_a_schema_is_refused_before_running(
    name: str, minimal_drop: Path, tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # DuckDB names the database after the file: `raw.accounts` would be ambiguous in `raw.duckdb`.
    warehouse = tmp_path / name
    code = main(["run", "--source-dir", str(minimal_drop), "--warehouse", str(warehouse), "--as-of", AS_OF])
    assert code == 1
    assert f"warehouse file '{name}' is named like the schema" in capsys.readouterr().err
    assert not warehouse.exists()
    assert main(["report", "--warehouse", str(warehouse)]) == 1


# --- two `icp run` on one warehouse: the warehouse lock ------------------------------------------


@pytest.fixture(scope="module")
def demo_drop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    drop = tmp_path_factory.mktemp("lock") / "drop"
    generate_demo(drop, DemoSpec(accounts=300, seed=21))
    return drop


def icp_run(drop: Path, warehouse: Path, config: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "icp"), "run", "--source-dir", str(drop)] + [
        "--warehouse", str(warehouse), "--config", str(config), "--as-of", AS_OF,
    ]  # fmt: skip


def start_holding(args: list[str], warehouse: Path, cwd: Path) -> subprocess.Popen[str]:
    """Start a run and return once it holds the warehouse lock (its pid is in the lock file)."""
    env = {**os.environ, "DAGSTER_HOME": "", "RUNTIME__DLTHUB_TELEMETRY": "false"}
    process = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while holder(warehouse).get("pid") != process.pid:
        assert process.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.05)
    return process


def assert_each_alert_once(warehouse: Path) -> int:
    """Outbox lines and ledger rows: every alert exactly once."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("select alert_id, status from icp.alerts where channel = 'outbox'").fetchall()
    lines = (warehouse.parent / "outbox" / "alerts.jsonl").read_text().splitlines()
    keys = sorted(json.loads(line)["idempotency_key"] for line in lines)
    digested = [json.loads(line) for line in lines if json.loads(line)["type"] == "icp_digest"]
    assert len(keys) == len(set(keys)), "an outbox line was written twice"
    assert {status for _, status in rows} == {"sent"}
    assert len({alert for alert, _ in rows}) == len(rows)
    assert sum(len(d["alerts"]) for d in digested) + len(keys) - len(digested) == len(rows)
    return len(rows)


def test_a_second_run_on_a_busy_warehouse_exits_at_once_with_one_line(
    demo_drop: Path, tmp_path: Path
) -> None:
    warehouse, config = tmp_path / "warehouse.duckdb", tmp_path / "icp.yaml"
    config.write_text("alerts:\n  channels: [{kind: outbox}]\n")
    args = icp_run(demo_drop, warehouse, config)
    first = start_holding(args, warehouse, tmp_path)
    holder_run = holder(warehouse)["run_id"]
    env = {**os.environ, "DAGSTER_HOME": ""}
    started = time.monotonic()
    second = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    refused_in = time.monotonic() - started
    out, err = first.communicate(timeout=900)

    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 1 and second.stdout == ""
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert re.fullmatch(
        rf"icp run: warehouse {re.escape(str(warehouse))} is in use by run {holder_run} "
        rf"\(pid {first.pid}\) since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00",
        lines[0],
    ), lines[0]
    assert f"(run {holder_run}," in out, "the lock names the Dagster run id of the holder"
    assert assert_each_alert_once(warehouse) > 0
    print(f"\nsecond run refused in {refused_in:.1f} s")


def test_a_second_run_waits_for_the_first_when_a_wait_is_configured(demo_drop: Path, tmp_path: Path) -> None:
    warehouse, config = tmp_path / "warehouse.duckdb", tmp_path / "icp.yaml"
    config.write_text("warehouse_lock_wait_s: 900\nalerts:\n  channels: [{kind: outbox}]\n")
    args = icp_run(demo_drop, warehouse, config)
    first = start_holding(args, warehouse, tmp_path)
    env = {**os.environ, "DAGSTER_HOME": ""}
    second = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    _, err = first.communicate(timeout=900)

    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(rf"\(pid {first.pid}\) since \S+; waiting up to 900 s", second.stderr)
    assert assert_each_alert_once(warehouse) > 0


# --- what is checked before Dagster starts, and where a run's logs go ----------------------------


def listing(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def icp_env() -> dict[str, str]:
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    env.pop("DAGSTER_HOME", None)
    return env


def test_a_missing_source_dir_is_one_line_at_once_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # Before: 83-93 lines (two Dagster stack traces, 18 "Not executing" lines) after 24-54 s.
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    before = listing(tmp_path)
    icp = str(Path(sys.executable).parent / "icp")
    args = [
        icp,
        "run",
        "--source-dir",
        str(tmp_path / "nowhere"),
        "--warehouse",
        str(warehouse),
        "--as-of",
        AS_OF,
    ]
    started = time.monotonic()
    done = subprocess.run(args, env=icp_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"icp run: source directory not found or not a directory: {tmp_path / 'nowhere'}"
    ]
    assert listing(tmp_path) == before, (
        "no .dagster, lock file, logs or dlt folder for a run that never began"
    )
    assert took < 20, f"{took:.1f} s: Dagster must not start for a path that does not exist"
    print(f"\nmissing --source-dir refused in {took:.1f} s")


@pytest.mark.parametrize("from_env", [False, True])
def test_a_warehouse_in_a_missing_directory_is_refused_and_nothing_is_created(
    from_env: bool,
    minimal_drop: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warehouse = tmp_path / "typo" / "deeper" / "warehouse.duckdb"
    args = ["run", "--source-dir", str(minimal_drop), "--as-of", AS_OF]
    if from_env:
        monkeypatch.setenv("ICP_WAREHOUSE", str(warehouse))
    else:
        args += ["--warehouse", str(warehouse)]
    before = listing(tmp_path)
    assert main(args) == 1
    origin = "ICP_WAREHOUSE" if from_env else "--warehouse"
    assert capsys.readouterr().err.splitlines() == [
        f"icp run: warehouse directory {warehouse.parent} does not exist; create it or fix {origin}"
    ]
    assert listing(tmp_path) == before


def test_an_as_of_outside_the_partitions_is_one_line(
    minimal_drop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["run", "--source-dir", str(minimal_drop), "--warehouse", str(tmp_path / "wh.duckdb")]
    assert main([*base, "--as-of", "2017-12-31"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "icp run: as-of 2017-12-31 is before the first partition date 2020-01-01; "
        "set first_partition_date in icp.yaml"
    ]
    assert main([*base, "--as-of", "2999-01-01"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("icp run: as-of 2999-01-01 is after today (")
    assert not (tmp_path / "wh.duckdb").exists() and not (tmp_path / ".dagster").exists()


def test_tables_an_api_delivers_are_not_required_as_files(tmp_path: Path) -> None:
    from icp_pipeline.cli import _check_drop
    from icp_pipeline.config import IcpConfig
    from icp_pipeline.errors import IcpInputError

    drop = write_drop(tmp_path / "drop", {"crm/subscriptions.csv": "subscription_id\n"})
    with pytest.raises(IcpInputError, match="crm/accounts: required file missing"):
        _check_drop(drop, IcpConfig())
    hubspot = IcpConfig.model_validate(
        {"sources": {"crm": {"kind": "hubspot", "token_env": "ICP_HUBSPOT_TOKEN"}}}
    )
    _check_drop(tmp_path / "no_drop_at_all", hubspot)


@pytest.mark.slow  # `icp run` as a process: a fresh import builds the partitions from --config
def test_history_before_2020_is_scored_with_first_partition_date(tmp_path: Path) -> None:
    """A 2016-2017 CRM export: before, `DagsterUnknownPartitionError` for any as-of before 2020."""
    nine_years_back = {"2024-": "2015-", "2025-": "2016-", "2026-": "2017-"}
    files = {"crm/accounts.csv": ACCOUNTS_CSV, "crm/opportunities.csv": OPPORTUNITIES_CSV}
    for old, new in nine_years_back.items():
        files = {name: text.replace(old, new) for name, text in files.items()}
    drop = write_drop(tmp_path / "drop", files)
    config = tmp_path / "icp.yaml"
    config.write_text("first_partition_date: 2016-01-01\n")
    warehouse = tmp_path / "warehouse.duckdb"
    args = [str(Path(sys.executable).parent / "icp"), "run", "--source-dir", str(drop)]
    args += ["--warehouse", str(warehouse), "--config", str(config), "--as-of", "2017-11-01"]
    done = subprocess.run(args, env=icp_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        scored = con.execute("select count(*), min(as_of), max(as_of) from icp.account_scores").fetchone()
    assert scored is not None and scored[0] == 3 and str(scored[1]) == str(scored[2]) == "2017-11-01"


def test_a_failed_run_ends_with_one_line_naming_the_log_and_how_to_fix_the_date(
    demo_drop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`icp demo` then `icp run` without --as-of: the demo ends on 2026-11-01, the run scores today."""
    import pandas as pd

    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    assert main(["run", "--source-dir", str(demo_drop), "--warehouse", str(warehouse)]) == 1
    lines = capsys.readouterr().err.splitlines()
    newest = pd.to_datetime(pd.read_csv(demo_drop / "crm" / "accounts.csv")["updated_at"]).max().date()
    header, progress, failure = lines[0], lines[1:-1], lines[-1]
    assert header.startswith("icp run: as of ")
    assert progress and all(re.fullmatch(r"  \S+ done in \d+\.\ds", line) for line in progress), progress
    # One line after the per-step progress: the reason, what to do, and where the log is.
    logs = list((warehouse.parent / "logs").glob("icp-run-*.log"))
    assert len(logs) == 1
    assert failure == (
        "icp run failed: accounts: blocking rule updated_at.freshness failed (newest updated_at known at "
        f"{header.split()[4].rstrip(',')} is {newest}; must be within 14 days; the newest data is from "
        f"{newest}: pass --as-of {newest + dt.timedelta(days=1)} or deliver fresher data); log: {logs[0]}"
    )
    log = logs[0].read_text()
    assert "STEP_FAILURE" in log and "Stack Trace" in log and "Not executing" in log


def test_verbose_keeps_dagster_logs_on_the_terminal(
    tmp_path: Path, dagster_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    drop = write_drop(
        tmp_path / "drop",
        {
            "crm/accounts.csv": ACCOUNTS_CSV.replace("2026-10-25", "2026-01-03"),
            "crm/opportunities.csv": OPPORTUNITIES_CSV,
        },
    )
    args = ["run", "--source-dir", str(drop), "--warehouse", str(tmp_path / "wh.duckdb"), "--as-of", AS_OF]
    assert main([*args, "--verbose"]) == 1
    err = capfd.readouterr().err
    assert "STEP_FAILURE" in err and "Stack Trace" in err
    assert err.splitlines()[-1].startswith("icp run failed: accounts: blocking rule updated_at.freshness")
    assert not (tmp_path / "logs").exists()


def test_each_warehouse_has_its_own_dagster_instance_and_runs_name_their_warehouse(
    minimal_drop: Path, tmp_path: Path
) -> None:
    stale = write_drop(
        tmp_path / "stale",
        {
            "crm/accounts.csv": ACCOUNTS_CSV.replace("2026-10-25", "2026-01-03"),
            "crm/opportunities.csv": OPPORTUNITIES_CSV,
        },
    )
    runs = {}
    for name, drop, code in (("a", minimal_drop, 0), ("b", stale, 1)):
        warehouse = tmp_path / name / "warehouse.duckdb"
        warehouse.parent.mkdir()
        assert (
            main(["run", "--source-dir", str(drop), "--warehouse", str(warehouse), "--as-of", AS_OF]) == code
        )
        home = warehouse.parent / ".dagster"
        assert (home / "dagster.yaml").exists()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (run,) = instance.get_runs()
        assert run.tags["icp/warehouse_path"] == str(warehouse.resolve())
        assert run.tags["icp/source_dir"] == str(drop.resolve())
        assert run.tags["icp/warehouse"] == "writer", "the writer-concurrency tag is kept"
        runs[name] = run.run_id
    assert runs["a"] != runs["b"]
    assert not (tmp_path / ".dagster").exists(), "no instance shared through the working directory"
    assert "DAGSTER_HOME" not in os.environ


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_the_log(
    minimal_drop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import icp_pipeline.runner

    def broken(*_args: object, **_kwargs: object) -> None:
        print("said by a library on stdout")
        raise RuntimeError("boom\nsent Authorization: Bearer s3cr3t-t0ken-value")

    monkeypatch.setattr(icp_pipeline.runner, "run_nightly", broken)
    warehouse = tmp_path / "warehouse.duckdb"
    assert (
        main(["run", "--source-dir", str(minimal_drop), "--warehouse", str(warehouse), "--as-of", AS_OF]) == 1
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    header, failure = captured.err.splitlines()
    (log,) = (tmp_path / "logs").glob("icp-run-*.log")
    assert failure == f"icp run failed: RuntimeError: boom sent Authorization: ***; log: {log}"
    text = log.read_text()
    assert "said by a library on stdout" in text and "Traceback" in text and "in broken" in text
    assert "s3cr3t-t0ken-value" not in text
