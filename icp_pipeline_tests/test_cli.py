"""The `icp` command as operators use it: exit codes, one-line failures, a summary, runs in the instance;
and two runs on one warehouse, which must not both write it (nor deliver every alert twice)."""

from __future__ import annotations

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
from icp_pipeline_tests.conftest import AS_OF, OPPORTUNITIES_CSV, write_drop


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
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "icp run failed: crm/accounts.csv: missing required column 'updated_at'"


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
