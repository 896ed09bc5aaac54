"""`icp demo --messy`: the planted bad rows are written as truth.json says, leave the clean demo
as it was, and each lands in the quarantine (or the duplicate count) under the rule it was planted
for, so a new user sees the data-health checks catch something. The drift half of the messy demo
is checked at the size drift needs, in test_drift.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from icp_pipeline.cli import main
from icp_pipeline.config import IcpConfig
from icp_pipeline.demo.generate import MESSY_ROWS, DemoSpec, generate_demo
from icp_pipeline.report.data import read_health
from icp_pipeline_tests.staged_demo import staged_demo

ACCOUNTS = 1500
CRM_FILES = ("accounts", "contacts", "opportunities")


def test_messy_rows_are_appended_and_the_clean_rows_do_not_change(tmp_path: Path) -> None:
    spec = DemoSpec(accounts=300, seed=5, drift_date=dt.date(2026, 3, 1))
    clean = generate_demo(tmp_path / "clean", spec)
    messy = generate_demo(tmp_path / "messy", dataclasses.replace(spec, messy=True))

    assert "messy" not in clean
    for file in sorted((tmp_path / "clean").rglob("*.*")):
        relative = file.relative_to(tmp_path / "clean")
        if relative.name == "truth.json":
            continue
        planted = (tmp_path / "messy" / relative).read_bytes()
        if relative.parent.name == "crm" and relative.stem in CRM_FILES:
            assert planted.startswith(file.read_bytes()) and len(planted) > file.stat().st_size, relative
        else:
            assert planted == file.read_bytes(), relative

    added = {rel: messy["counts"][rel] - clean["counts"][rel] for rel in clean["counts"]}
    planted_per_file: dict[str, int] = {}
    for table, _, rows in MESSY_ROWS.values():
        planted_per_file[f"crm/{table}.csv"] = planted_per_file.get(f"crm/{table}.csv", 0) + rows
    assert {rel: rows for rel, rows in added.items() if rows} == planted_per_file
    assert {key: value for key, value in messy.items() if key not in ("messy", "counts")} == {
        key: value for key, value in clean.items() if key != "counts"
    }
    for kind, (table, rule, rows) in MESSY_ROWS.items():
        entry = messy["messy"][kind]
        assert (entry["table"], entry["rule"], entry["rows"]) == (table, rule, rows)
        assert len(entry["keys"]) == (0 if rule == "row.malformed" else rows)


def test_icp_demo_messy_writes_the_planted_rows(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--accounts", "200", "--messy"]) == 0
    truth = json.loads((tmp_path / "demo" / "truth.json").read_text())
    assert {kind: entry["rows"] for kind, entry in truth["messy"].items()} == {
        kind: rows for kind, (_, _, rows) in MESSY_ROWS.items()
    }


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    _, warehouse, truth = staged_demo(
        tmp_path_factory.mktemp("messy"), DemoSpec(accounts=ACCOUNTS, seed=5, messy=True)
    )
    return warehouse, truth


def test_quarantine_holds_each_planted_row_under_its_rule(messy: tuple[Path, dict[str, Any]]) -> None:
    warehouse, truth = messy
    with duckdb.connect(str(warehouse), read_only=True) as con:
        quarantine = con.execute('select "table", rule, row_key from icp.quarantine').df()
    per_rule = quarantine.groupby(["table", "rule"]).size().to_dict()
    planted = {
        (entry["table"], entry["rule"]): entry["rows"]
        for entry in truth["messy"].values()
        if entry["rule"] != "row.duplicate"
    }
    assert per_rule == planted
    for entry in truth["messy"].values():
        if entry["keys"] and entry["rule"] != "row.duplicate":
            held = quarantine[(quarantine["table"] == entry["table"]) & (quarantine["rule"] == entry["rule"])]
            assert sorted(held["row_key"]) == sorted(entry["keys"])


def test_repeated_keys_are_removed_as_duplicates_and_staged_once(messy: tuple[Path, dict[str, Any]]) -> None:
    warehouse, truth = messy
    repeated = truth["messy"]["duplicate_key"]["keys"]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        staged = con.execute(
            "select account_id, count(*) from staging.accounts where account_id in (select unnest(?)) group by 1",
            [repeated],
        ).fetchall()
        staged_accounts = con.execute("select count(*) from staging.accounts").fetchone()[0]
    assert sorted(staged) == sorted((key, 1) for key in repeated)
    # Every clean account is staged, and so is each account whose only fault is a non-numeric
    # employee count: an optional value is nulled and its row kept (contract action null_field).
    assert staged_accounts == ACCOUNTS + truth["messy"]["non_numeric_employee_count"]["rows"]


def test_data_health_section_reads_the_planted_counts(messy: tuple[Path, dict[str, Any]]) -> None:
    warehouse, truth = messy
    with duckdb.connect(str(warehouse), read_only=True) as con:
        health = read_health(con, dt.date.fromisoformat(truth["as_of"]), IcpConfig())
    accounts = health.table_rows.set_index("table").loc["accounts"]
    assert accounts["duplicates_removed"] == truth["messy"]["duplicate_key"]["rows"]
    nulled = truth["messy"]["non_numeric_employee_count"]
    assert accounts["nulled"] == nulled["rows"]
    assert accounts["quarantined"] == sum(
        entry["rows"]
        for entry in truth["messy"].values()
        if entry["table"] == "accounts" and entry["rule"] not in ("row.duplicate", nulled["rule"])
    )
    assert int(health.quarantine["rows"].sum()) == sum(
        entry["rows"]
        for entry in truth["messy"].values()
        if entry["rule"] not in ("row.duplicate", nulled["rule"])
    )
    assert int(health.nulled["rows"].sum()) == nulled["rows"]
