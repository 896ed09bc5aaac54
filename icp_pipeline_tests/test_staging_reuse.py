"""Staging keeps a table whose inputs did not change, and only then (issue 7, incremental nights).

A demo drop is ingested and staged once; each test stages again in place with `stage()` and
checks what is kept, what is staged again, and that what staging writes stays what a full
restaging would write.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from icp_pipeline.config import IcpConfig, contracts_dir, load_config
from icp_pipeline.contracts.spec import CANONICAL_TABLES, TableContract, load_contracts
from icp_pipeline.contracts.staging import StagingOutcome, inputs_fingerprints, stage
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


# --------------------------------------------------------------------------- changed keys only


def read_rows(file: Path) -> list[dict[str, str]]:
    with file.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(file: Path, rows: list[dict[str, str]]) -> None:
    with file.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def full_restaging(warehouse: Path, tmp_path: Path, as_of: dt.date) -> Path:
    """A copy of the warehouse with every table staged from scratch: what restaging must equal."""
    fresh = tmp_path / "fresh.duckdb"
    shutil.copy(warehouse, fresh)
    with duckdb.connect(str(fresh)) as con:
        con.execute("drop table icp.staging_inputs")
    outcomes = stage_all(fresh, as_of)
    assert all(o.reused_from is None and o.restaged_keys is None for o in outcomes.values())
    return fresh


def icp_rows(warehouse: Path, query: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(query).df()


def assert_same_as_full(warehouse: Path, fresh: Path, as_of: dt.date) -> None:
    """Staged rows, quarantine, findings and rule results equal those of a full staging; sample
    keys may differ (a few of the failing keys either way), so they are checked to be failing keys."""
    for table in CANONICAL_TABLES:
        pd.testing.assert_frame_equal(snapshot(warehouse, table), snapshot(fresh, table), obj=table)
    for query in (
        "select * exclude (loaded_at) from icp.quarantine order by all",
        "select * from icp.staging_findings order by all",
    ):
        pd.testing.assert_frame_equal(icp_rows(warehouse, query), icp_rows(fresh, query), obj=query)
    kept, full = results(warehouse, as_of), results(fresh, as_of)
    pd.testing.assert_frame_equal(kept.drop(columns="sample_keys"), full.drop(columns="sample_keys"))
    findings = icp_rows(fresh, "select * from icp.staging_findings")
    quarantined = icp_rows(fresh, "select * from icp.quarantine")
    for row in kept.itertuples(index=False):
        samples = set(json.loads(row.sample_keys))
        if row.rule == "table.bad_share":
            failing = set(quarantined.loc[quarantined["table"] == row.table, "row_key"])
        else:
            failing = set(
                findings.loc[(findings["table"] == row.table) & (findings["rule"] == row.rule), "row_key"]
            )
        assert samples <= failing, (row.table, row.rule)
        assert len(samples) == min(len(failing), 5) or row.rule.startswith("table."), (row.table, row.rule)


def test_only_keys_with_new_raw_rows_are_staged_again_and_equal_a_full_restaging(
    copy: tuple[Path, Path], tmp_path: Path
) -> None:
    drop, warehouse = copy
    accounts_file = drop / "crm" / "accounts.csv"
    accounts = read_rows(accounts_file)
    accounts[0] |= {"employee_count": "4321", "country": "USA", "updated_at": "2026-11-01T06:00:00"}
    accounts.append(
        accounts[2] | {"employee_count": "77", "updated_at": "2026-11-01T07:00:00"}
    )  # a duplicate
    write_rows(accounts_file, accounts)
    postings_file = drop / "feeds" / "job_postings.csv"
    postings = read_rows(postings_file)
    postings[5] |= {"title": "Head of Revenue Operations"}
    template = postings[-1]
    postings += [
        template | {"posting_id": "N-1", "posted_at": "2026-10-31"},
        template | {"posting_id": "N-2", "posted_at": "1900-01-01"},  # quarantined: before 1990
        template | {"posting_id": "N-3", "posted_at": "2026-10-31", "domain": "not a domain!!"},  # a warning
    ]
    write_rows(postings_file, postings)
    firmographics_file = drop / "feeds" / "firmographics.csv"
    firmographics = read_rows(firmographics_file)
    # Another raw key for a staged key (the domain is normalised): only a full staging decides which wins.
    firmographics.append(
        firmographics[0] | {"domain": firmographics[0]["domain"].upper(), "employee_count": "1"}
    )
    write_rows(firmographics_file, firmographics)
    next_day = AS_OF + dt.timedelta(days=1)
    materialize_nightly(drop, warehouse, next_day.isoformat(), 'key:"raw/*"')

    outcomes = stage_all(warehouse, next_day)
    assert outcomes["accounts"].restaged_keys == 2
    assert outcomes["job_postings"].restaged_keys == 4
    assert outcomes["firmographics"].restaged_keys is None and outcomes["firmographics"].reused_from is None
    assert outcomes["funding_rounds"].reused_from == AS_OF
    assert outcomes["accounts"].staged.duplicates_removed == 1
    assert all(o.staged.rows_add_up for o in outcomes.values())
    job_results = {r.rule_id: r for r in outcomes["job_postings"].staged.results}
    assert "N-2" in job_results["posted_at.range"].sample_keys
    assert "N-3" in job_results["domain.type"].sample_keys
    staged_accounts = snapshot(warehouse, "accounts").set_index("account_id")
    assert staged_accounts.loc[accounts[0]["account_id"], "employee_count"] == 4321
    assert staged_accounts.loc[accounts[2]["account_id"], "employee_count"] == 77

    assert_same_as_full(warehouse, full_restaging(warehouse, tmp_path, next_day), next_day)


def test_raw_rows_that_do_not_add_up_with_the_last_staging_stage_the_whole_table(
    copy: tuple[Path, Path], tmp_path: Path
) -> None:
    drop, warehouse = copy
    accounts_file = drop / "crm" / "accounts.csv"
    accounts = read_rows(accounts_file)
    accounts[0] |= {"employee_count": "4321"}
    write_rows(accounts_file, accounts)
    materialize_nightly(drop, warehouse, AS_OF.isoformat(), 'key:"raw/*"')
    with duckdb.connect(str(warehouse)) as con:  # a raw row removed behind ingest's back
        con.execute("delete from raw.accounts where _raw_key = ?", [accounts[9]["account_id"]])
    outcomes = stage_all(warehouse, AS_OF)
    assert outcomes["accounts"].restaged_keys is None and outcomes["accounts"].reused_from is None
    assert accounts[9]["account_id"] not in set(snapshot(warehouse, "accounts")["account_id"])
    assert_same_as_full(warehouse, full_restaging(warehouse, tmp_path, AS_OF), AS_OF)


def test_a_new_column_in_a_drop_of_new_rows_only_stages_the_whole_table(
    copy: tuple[Path, Path], tmp_path: Path
) -> None:
    drop, warehouse = copy
    postings_file = drop / "feeds" / "job_postings.csv"
    template = read_rows(postings_file)[-1]
    # Tonight's file holds only two new postings, with a column never delivered before: raw keeps
    # the earlier rows (without it), and the staged table needs the column for every row.
    write_rows(
        postings_file,
        [
            template | {"posting_id": f"N-{i}", "posted_at": "2026-10-31", "seniority": "senior"}
            for i in (1, 2)
        ],
    )
    materialize_nightly(drop, warehouse, AS_OF.isoformat(), 'key:"raw/*"')
    outcome = stage_all(warehouse, AS_OF)["job_postings"]
    assert outcome.restaged_keys is None and outcome.reused_from is None
    staged = snapshot(warehouse, "job_postings").set_index("posting_id")
    assert staged.loc["N-1", "seniority"] == "senior" and staged["seniority"].isna().sum() == len(staged) - 2
    assert_same_as_full(warehouse, full_restaging(warehouse, tmp_path, AS_OF), AS_OF)


def test_a_quarter_of_the_rows_changed_stages_the_whole_table(copy: tuple[Path, Path]) -> None:
    drop, warehouse = copy
    accounts_file = drop / "crm" / "accounts.csv"
    accounts = read_rows(accounts_file)
    for row in accounts[: len(accounts) // 3]:
        row["employee_count"] = "12"
    write_rows(accounts_file, accounts)
    materialize_nightly(drop, warehouse, AS_OF.isoformat(), 'key:"raw/*"')
    outcome = stage_all(warehouse, AS_OF)["accounts"]
    assert outcome.restaged_keys is None and outcome.reused_from is None
    # The whole-table staging leaves what the next night's restaging of a few keys builds on.
    accounts[0]["employee_count"] = "13"
    write_rows(accounts_file, accounts)
    materialize_nightly(drop, warehouse, AS_OF.isoformat(), 'key:"raw/*"')
    assert stage_all(warehouse, AS_OF)["accounts"].restaged_keys == 1


def test_raw_rows_are_fingerprinted_by_their_lineage_when_ingest_hashed_them(copy: tuple[Path, Path]) -> None:
    _, warehouse = copy
    contract, config = CONTRACTS["opportunities"], load_config()

    def raw_digest() -> str:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            digests = inputs_fingerprints(con, contract, config)
        assert digests is not None
        return digests[0]

    def edit(sql: str) -> None:
        with duckdb.connect(str(warehouse)) as con:
            con.execute(sql)

    first = raw_digest()
    edit("update raw.opportunities set _row_hash = _row_hash + 1 where rowid = 3")  # a reloaded row
    second = raw_digest()
    assert second != first
    edit("update raw.opportunities set _loaded_at = _loaded_at + interval 1 day where rowid = 4")
    third = raw_digest()
    assert third not in {first, second}
    edit("delete from raw.opportunities where rowid = 5")
    assert raw_digest() not in {first, second, third}
    # A value edited in place, bypassing ingest, keeps its row hash and goes unnoticed: raw is
    # written by ingest only. A raw table without row hashes is fingerprinted by every column.
    before = raw_digest()
    edit("update raw.opportunities set amount = '1' where rowid = 6")
    assert raw_digest() == before
    edit("alter table raw.opportunities drop column _row_hash")
    whole = raw_digest()
    edit("update raw.opportunities set amount = '2' where rowid = 6")
    assert raw_digest() != whole
