"""The `icp` command as operators use it: exit codes, one-line failures, a summary, runs in the instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from icp_pipeline.cli import main
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
