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
    _run(drop, warehouse, NIGHTS[0], config, capsys)
    assert _scored(warehouse, NIGHTS[0]) == {"A1", "A2", "A3"}

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
    assert _scored(warehouse, NIGHTS[0]) == {"A1", "A3"}, "a deleted account is not scored"
    assert "not scored: 1 account(s) deleted in the CRM, 0 absent (absence never counts)" in out

    unflagged = [flagged[0], *(line.replace(",true", ",false") for line in flagged[1:])]
    (drop / "crm" / "accounts.csv").write_text("\n".join(unflagged) + "\n", encoding="utf-8")
    _run(drop, warehouse, NIGHTS[1], config, capsys)
    assert _scored(warehouse, NIGHTS[1]) == {"A1", "A2", "A3"}


def test_absence_is_counted_on_the_appended_and_unchanged_paths_without_reading_the_file_again(
    tmp_path: Path,
) -> None:
    import dagster as dg
    from dagster_dlt import DagsterDltResource

    from icp_pipeline.ingest.assets import raw_file_drop
    from icp_pipeline.resources import IcpSettings

    drop = write_drop(
        tmp_path / "drop", {"crm/accounts.csv": ACCOUNTS_CSV, "crm/opportunities.csv": OPPORTUNITIES_CSV}
    )
    warehouse = tmp_path / "wh.duckdb"
    resources = {
        "dlt": DagsterDltResource(),
        "icp": IcpSettings(source_dir=str(drop), warehouse=str(warehouse)),
    }

    def load(as_of: dt.date) -> dict[str, object]:
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize(
                [raw_file_drop], partition_key=as_of.isoformat(), instance=instance, resources=resources
            )
        return next(
            m.metadata
            for m in result.asset_materializations_for_node("raw_file_drop")
            if m.asset_key.path[-1] == "accounts"
        )

    def absences() -> list[tuple[object, ...]]:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return con.execute(
                "select _raw_key, missed_loads, last_seen_as_of from icp.raw_absences order by _raw_key"
            ).fetchall()

    load(NIGHTS[0])
    assert absences() == []
    accounts = drop / "crm" / "accounts.csv"
    accounts.write_text(
        "".join(line for line in ACCOUNTS_CSV.splitlines(keepends=True) if not line.startswith("A3,")),
        encoding="utf-8",
    )
    load(NIGHTS[1])
    assert absences() == [("A3", 1, NIGHTS[0])]
    with accounts.open("a", encoding="utf-8") as handle:
        handle.write("A4,Delta BV,delta.nl,Software,60,2000000,NL,U1,2024-04-01,2026-10-30T00:00:00\n")
    assert load(NIGHTS[2])["appended_file"].value is True
    assert absences() == [("A3", 2, NIGHTS[0])]
    assert load(NIGHTS[3])["unchanged_file"].value is True
    assert absences() == [("A3", 3, NIGHTS[0])]


def test_the_latest_row_decides_and_deleted_at_counts_from_its_date() -> None:
    from icp_pipeline.ingest.absence import excluded_accounts

    with duckdb.connect() as con:
        con.execute("create schema raw")
        con.execute(
            """create table raw.accounts as select * from (values
                ('A1', 'A1', '2026-10-01T00:00:00', '2026-10-31T12:00:00Z'),
                ('A2', 'A2', '2026-10-01T00:00:00', '2026-11-02'),
                ('A3', 'A3', '2026-10-01T00:00:00', ''),
                ('A4', 'A4', '2026-10-01T00:00:00', '2026-10-01'),
                ('A4', 'A4', '2026-10-05T00:00:00', null),
                ('A5', 'A5', '2026-10-01T00:00:00', 'yes, not a date')
            ) t(account_id, _raw_key, updated_at, deleted_at)"""
        )
        excluded = excluded_accounts(con, dt.date(2026, 11, 1), 3)
    assert excluded[["account_id", "reason"]].values.tolist() == [["A1", "deleted"], ["A5", "deleted"]]
