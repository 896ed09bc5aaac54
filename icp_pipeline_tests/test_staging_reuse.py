"""Staging keeps a table whose inputs did not change, and only then (issue 7, incremental nights).

A demo drop is ingested and staged once; each test stages again in place with `stage()` and
checks what is kept, what is staged again, and that what staging writes stays what a full
restaging would write.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from icp_pipeline.config import IcpConfig, contracts_dir, load_config
from icp_pipeline.contracts.spec import CANONICAL_TABLES, TableContract, load_contracts
from icp_pipeline.contracts.staging import StagingOutcome, stage
from icp_pipeline.demo.generate import DemoSpec
from icp_pipeline_tests.staged_demo import materialize_nightly, staged_demo

AS_OF = dt.date(2026, 11, 1)
CONTRACTS = load_contracts(contracts_dir(load_config()))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    drop, warehouse, _ = staged_demo(
        tmp_path_factory.mktemp("reuse"), DemoSpec(accounts=800, seed=3, as_of=AS_OF)
    )
    return drop, warehouse


@pytest.fixture
def copy(demo: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the staged demo (drop and warehouse) for one test to change."""
    drop, warehouse = demo
    shutil.copytree(drop, tmp_path / "drop")
    shutil.copy(warehouse, tmp_path / "warehouse.duckdb")
    return tmp_path / "drop", tmp_path / "warehouse.duckdb"


def stage_all(
    warehouse: Path, as_of: dt.date, config: IcpConfig | None = None, now: dt.datetime | None = None
) -> dict[str, StagingOutcome]:
    """Stage every table in place; the clock defaults to the wall clock, as in the nightly job
    (a clock earlier than the last staging's stages everything again)."""
    clock = now or dt.datetime.now(dt.UTC)
    with duckdb.connect(str(warehouse)) as con:
        return {
            table: stage(con, CONTRACTS[table], config or load_config(), as_of=as_of, now=clock)
            for table in CANONICAL_TABLES
        }


def snapshot(warehouse: Path, table: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(f"select * from staging.{table} order by all").df()


def results(warehouse: Path, as_of: dt.date) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(
            'select "table", rule, severity, evaluated, failed, passed, sample_keys, detail '
            'from icp.contract_results where as_of = ? order by "table", rule',
            [as_of],
        ).df()


def test_unchanged_inputs_keep_every_staged_table_and_report_the_same_rules(copy: tuple[Path, Path]) -> None:
    _, warehouse = copy
    before = {table: snapshot(warehouse, table) for table in ("accounts", "opportunities", "job_postings")}
    next_day = AS_OF + dt.timedelta(days=1)
    outcomes = stage_all(warehouse, next_day)
    assert {table: o.reused_from for table, o in outcomes.items()} == dict.fromkeys(CANONICAL_TABLES, AS_OF)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(snapshot(warehouse, table), frame)
    assert all(o.staged.rows_add_up for o in outcomes.values())
    for table, frame in before.items():
        assert len(outcomes[table].staged.frame) == len(frame), table
    kept = results(warehouse, next_day)
    first = results(warehouse, AS_OF)
    # Every rule is reported for the new date; only freshness texts name the date they judged.
    assert kept["rule"].tolist() == first["rule"].tolist()
    same = ~kept["rule"].str.endswith(".freshness")
    pd.testing.assert_frame_equal(kept[same].reset_index(drop=True), first[same].reset_index(drop=True))
    assert kept.loc[~same, "detail"].str.contains(str(next_day)).all()
    # A reused feed still reports how its rows matched accounts.
    summary = outcomes["job_postings"].match_summary
    assert summary is not None and summary["rows"].sum() == len(before["job_postings"])


def test_a_changed_table_is_staged_again_with_what_reads_it_and_equals_a_full_restaging(
    copy: tuple[Path, Path], tmp_path: Path
) -> None:
    drop, warehouse = copy
    accounts_file = drop / "crm" / "accounts.csv"
    rows = list(csv.DictReader(accounts_file.open(newline="")))
    rows[0]["employee_count"] = "4321"
    rows[0]["updated_at"] = "2026-11-01T06:00:00"
    rows[1]["domain"] = "renamed-example.com"
    with accounts_file.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    materialize_nightly(drop, warehouse, AS_OF.isoformat(), 'key:"raw/*"')
    outcomes = stage_all(warehouse, AS_OF)
    restaged = {table for table, o in outcomes.items() if o.reused_from is None}
    # Accounts changed, a domain among them: the feeds are matched on account domains and names, so
    # they are staged again. The CRM tables that reference accounts read only their keys, unchanged.
    assert restaged == {"accounts", "firmographics", "funding_rounds", "job_postings", "leadership_changes"}
    # What the kept tables hold equals what staging everything again from scratch gives.
    fresh = tmp_path / "fresh.duckdb"
    shutil.copy(warehouse, fresh)
    with duckdb.connect(str(fresh)) as con:
        con.execute("drop table icp.staging_inputs")
    stage_all(fresh, AS_OF)
    for table in CANONICAL_TABLES:
        pd.testing.assert_frame_equal(snapshot(warehouse, table), snapshot(fresh, table), obj=table)
    assert (
        snapshot(warehouse, "accounts").set_index("account_id").loc[rows[0]["account_id"], "employee_count"]
        == 4321
    )


def test_a_config_change_stages_everything_again(copy: tuple[Path, Path]) -> None:
    _, warehouse = copy
    config = load_config().model_copy(deep=True)
    config.contracts.max_bad_share["accounts"] = 0.25
    outcomes = stage_all(warehouse, AS_OF, config)
    assert all(o.reused_from is None for o in outcomes.values())
    assert all(o.reused_from == AS_OF for o in stage_all(warehouse, AS_OF, config).values())


def test_future_dated_rows_are_judged_again_by_a_later_clock(copy: tuple[Path, Path]) -> None:
    _, warehouse = copy
    # Staged with a clock set a year back, rows dated since then were future-dated then.
    early = dt.datetime.now(dt.UTC) - dt.timedelta(days=365)
    first = stage_all(warehouse, AS_OF, now=early)
    flagged = {
        table
        for table, o in first.items()
        if any(r.rule_id.endswith(".not_future") and r.failed for r in o.staged.results)
    }
    assert flagged, "the year-old clock finds future-dated rows"
    later = stage_all(warehouse, AS_OF)
    for table in flagged:
        assert later[table].reused_from is None, table
        assert not any(r.rule_id.endswith(".not_future") and r.failed for r in later[table].staged.results)


def test_staleness_is_judged_at_the_new_date_even_when_rows_are_kept(copy: tuple[Path, Path]) -> None:
    _, warehouse = copy
    contract: TableContract = CONTRACTS["funding_rounds"]
    assert contract.freshness is not None
    late = AS_OF + dt.timedelta(days=3 * 365)
    outcome = stage_all(warehouse, late)["funding_rounds"]
    assert outcome.reused_from == AS_OF
    rule = next(r for r in outcome.staged.results if r.rule_id.endswith(".freshness"))
    assert rule.failed == 1 and str(late) in rule.detail
