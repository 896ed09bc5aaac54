"""Accounts removed from the drop, or flagged deleted by the CRM, stop being scored.

Raw is a merge mirror, so a key missing from tonight's file keeps its rows: without the absence
rule an account deleted in the CRM would be scored, alerted and written back for ever.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from icp_pipeline.cli import main
from icp_pipeline_tests.conftest import ACCOUNTS_CSV, OPPORTUNITIES_CSV, write_drop

NIGHTS = [dt.date(2026, 11, 1) + dt.timedelta(days=n) for n in range(6)]


def _scored(warehouse: Path, as_of: dt.date) -> set[str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("select account_id from icp.account_scores where as_of = ?", [as_of]).fetchall()
    return {row[0] for row in rows}


def _run(
    drop: Path, warehouse: Path, as_of: dt.date, config: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    args = ["run", "--source-dir", str(drop), "--warehouse", str(warehouse), "--config", str(config)]
    assert main([*args, "--as-of", as_of.isoformat()]) == 0
    return capsys.readouterr().out


def test_an_account_missing_from_n_loads_is_not_scored_until_it_comes_back(
    tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop = write_drop(
        tmp_path / "drop", {"crm/accounts.csv": ACCOUNTS_CSV, "crm/opportunities.csv": OPPORTUNITIES_CSV}
    )
    config = tmp_path / "icp.yaml"
    config.write_text("deletions:\n  absent_after_loads: 2\n")
    warehouse = tmp_path / "wh.duckdb"
    out = _run(drop, warehouse, NIGHTS[0], config, capsys)
    assert _scored(warehouse, NIGHTS[0]) == {"A1", "A2", "A3"}
    assert "not scored: 0 account(s) deleted in the CRM, 0 absent" in out

    without_a3 = "".join(
        line for line in ACCOUNTS_CSV.splitlines(keepends=True) if not line.startswith("A3,")
    )
    (drop / "crm" / "accounts.csv").write_text(without_a3, encoding="utf-8")
    _run(drop, warehouse, NIGHTS[1], config, capsys)
    assert "A3" in _scored(warehouse, NIGHTS[1])  # one night missing: still scored
    _run(drop, warehouse, NIGHTS[1], config, capsys)  # a rerun of the same night counts once
    assert "A3" in _scored(warehouse, NIGHTS[1])

    out = _run(drop, warehouse, NIGHTS[2], config, capsys)  # the file is unchanged: not read again
    assert _scored(warehouse, NIGHTS[2]) == {"A1", "A2"}
    assert "not scored: 0 account(s) deleted in the CRM, 1 absent" in out
    with duckdb.connect(str(warehouse), read_only=True) as con:
        kept = con.execute("select count(*) from raw.accounts where account_id = 'A3'").fetchall()[0][0]
        staged = con.execute("select count(*) from staging.accounts where account_id = 'A3'").fetchall()[0][0]
        excluded = con.execute(
            "select account_id, reason, missed_loads, last_seen_as_of from icp.absent_accounts where as_of = ?",
            [NIGHTS[2]],
        ).fetchall()
    assert kept == 1 and staged == 1  # nothing lost
    assert excluded == [("A3", "absent", 2, NIGHTS[0])]

    (drop / "crm" / "accounts.csv").write_text(ACCOUNTS_CSV, encoding="utf-8")
    out = _run(drop, warehouse, NIGHTS[3], config, capsys)
    assert _scored(warehouse, NIGHTS[3]) == {"A1", "A2", "A3"}
    assert "0 absent" in out


def test_an_account_flagged_deleted_is_not_scored_at_once_and_returns_when_unflagged(
    tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ACCOUNTS_CSV.splitlines()
    flagged = [
        lines[0] + ",is_deleted",
        *(f"{line},{'true' if line.startswith('A2,') else ''}" for line in lines[1:]),
    ]
    drop = write_drop(
        tmp_path / "drop",
        {"crm/accounts.csv": "\n".join(flagged) + "\n", "crm/opportunities.csv": OPPORTUNITIES_CSV},
    )
    config = tmp_path / "icp.yaml"
    config.write_text("deletions:\n  absent_after_loads: 0\n")
    warehouse = tmp_path / "wh.duckdb"
    out = _run(drop, warehouse, NIGHTS[0], config, capsys)
    assert _scored(warehouse, NIGHTS[0]) == {"A1", "A3"}
    assert "not scored: 1 account(s) deleted in the CRM, 0 absent (absence never counts)" in out

    unflagged = [flagged[0], *(line.replace(",true", ",false") for line in flagged[1:])]
    (drop / "crm" / "accounts.csv").write_text("\n".join(unflagged) + "\n", encoding="utf-8")
    _run(drop, warehouse, NIGHTS[1], config, capsys)
    assert _scored(warehouse, NIGHTS[1]) == {"A1", "A2", "A3"}
