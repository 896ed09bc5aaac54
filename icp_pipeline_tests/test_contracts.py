"""Bad input, end to end: every planted bad row is quarantined with its rule, warned and kept, or
stops the run with one line; a bad value in an optional column is nulled and recorded, its row kept;
raw rows = staged + dropped (quarantined) rows + duplicates removed, from the warehouse.

Most cases run through `icp run` in-process (the CLI, the real Dagster job, dlt, DuckDB). The many
single-rule cases are also checked directly on `stage_table`, fed by the real file reader.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from icp_pipeline.cli import main
from icp_pipeline.config import contracts_dir, load_config
from icp_pipeline.contracts.spec import CANONICAL_TABLES, load_contracts
from icp_pipeline.contracts.validate import StagedTable, stage_table
from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline.errors import IcpInputError
from icp_pipeline.ingest.files import inspect_table_file, inventory, iter_identified_chunks
from icp_pipeline_tests.conftest import AS_OF, write_drop

CONTRACTS = load_contracts(contracts_dir(load_config()))
AS_OF_DATE = dt.date.fromisoformat(AS_OF)
DEMO_ACCOUNTS = 300
OLD_MAC = "mac_roman"

# Fresh relative to AS_OF (accounts and opportunities must be updated within 14 days of it).
ACCOUNT_HEADER = (
    "account_id,name,domain,industry,employee_count,annual_revenue,country,owner_id,created_at,updated_at"
)
FRESH_ACCOUNTS_CSV = f"""{ACCOUNT_HEADER}
A1,Acme Inc,acme.com,Software,120,5000000,US,U1,2024-01-01,2026-10-25T00:00:00
A2,Beta GmbH,beta.de,Retail,40,900000,DE,U2,2024-02-01,2026-10-26T00:00:00
A3,Gamma Ltd,gamma.co.uk,Software,900,80000000,GB,,2024-03-01,2026-10-27T00:00:00
"""
OPPORTUNITIES_HEADER = "opportunity_id,account_id,stage,amount,created_at,closed_at,updated_at\n"


# --------------------------------------------------------------------------- helpers


@dataclass
class CliRun:
    code: int
    stderr: str

    @property
    def last_line(self) -> str:
        """The last line, without the "; log: <file>" a failed run's line ends with."""
        lines = self.stderr.strip().splitlines()
        return re.sub(r"; log: \S+$", "", lines[-1]) if lines else ""

    @property
    def failure_lines(self) -> list[str]:
        return [
            re.sub(r"; log: \S+$", "", line)
            for line in self.stderr.splitlines()
            if line.startswith("icp run failed:")
        ]


def run_icp(source: Path, warehouse: Path, config: Path | None = None) -> CliRun:
    """`icp run` in-process, stdout and stderr captured (DAGSTER_HOME must be set by the caller)."""
    args = ["run", "--source-dir", str(source), "--warehouse", str(warehouse), "--as-of", AS_OF]
    if config is not None:
        args += ["--config", str(config)]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return CliRun(code, err.getvalue())


def query(warehouse: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def frame(warehouse: Path, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).df()


def table_exists(warehouse: Path, schema: str, table: str) -> bool:
    sql = "select count(*) from information_schema.tables where table_schema = ? and table_name = ?"
    return bool(query(warehouse, sql, [schema, table])[0][0])


def warehouse_counts(warehouse: Path) -> dict[str, dict[str, int]]:
    """Per canonical table: rows in raw, staging and icp.quarantine (0 when a table is absent)."""
    counts: dict[str, dict[str, int]] = {}
    for table in CANONICAL_TABLES:
        row = {}
        for schema in ("raw", "staging"):
            exists = table_exists(warehouse, schema, table)
            row[schema] = query(warehouse, f'select count(*) from {schema}."{table}"')[0][0] if exists else 0
        row["quarantine"] = query(
            warehouse,
            'select count(*) from icp.quarantine where "table" = ? and action = ?',
            [table, "drop_row"],
        )[0][0]
        row["nulled"] = query(
            warehouse,
            'select count(*) from icp.quarantine where "table" = ? and action = ?',
            [table, "null_field"],
        )[0][0]
        counts[table] = row
    return counts


def quarantine_of(warehouse: Path, table: str) -> pd.DataFrame:
    return frame(
        warehouse,
        'select row_key, rule, message, raw_row, action from icp.quarantine where "table" = ? order by row_key',
        [table],
    )


def rule_result(warehouse: Path, table: str, rule: str) -> dict[str, Any]:
    rows = frame(
        warehouse,
        'select * from icp.contract_results where "table" = ? and rule = ? and as_of = ?',
        [table, rule, AS_OF_DATE],
    )
    assert len(rows) == 1, f"expected one {table}/{rule} result for {AS_OF}, got {len(rows)}"
    return rows.iloc[0].to_dict()


def read_raw(directory: Path, table: str, text: str) -> pd.DataFrame:
    """Write a table file and read it back through the real reader (text columns, keys, malformed rows)."""
    contract = CONTRACTS[table]
    path = directory / f"{contract.relative_stem}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    chunks = list(iter_identified_chunks(inspect_table_file(contract, path)))
    return pa.concat_tables(chunks, promote_options="default").to_pandas()


# --------------------------------------------------------------------------- demo drop with planted bad rows


@dataclass
class Planted:
    """What was planted into the demo drop, and what each table's outcome must be."""

    demo_rows: dict[str, int]
    # table -> {row_key: rule}; a key of None is the row without an id (its key is `row:<hash>`)
    quarantined: dict[str, dict[str | None, str]] = field(default_factory=dict)
    # table -> {row_key: rule}: a bad optional value, nulled (action null_field), the row staged
    nulled: dict[str, dict[str, str]] = field(default_factory=dict)
    # table -> {row_key: text the message must contain}
    messages: dict[str, dict[str | None, list[str]]] = field(default_factory=dict)
    kept: dict[str, list[str]] = field(default_factory=dict)  # planted rows that must be staged
    duplicates: dict[str, int] = field(default_factory=dict)
    dup_newer: str = ""
    dup_older: str = ""
    dup_older_name: str = ""
    accent_name: str = "Café Münster GmbH"
    truncated_line: str = "F9999999,Trunc"


def _csv(drop: Path, relative: str) -> pd.DataFrame:
    return pd.read_csv(drop / relative, dtype=str, keep_default_na=False)


def plant_bad_rows(drop: Path) -> Planted:
    """Edit a generated demo drop: bad rows appended, one file non-UTF-8 with CR line endings, etc."""
    demo_rows = {t: len(_csv(drop, f"{c.relative_stem}.csv")) for t, c in CONTRACTS.items()}
    planted = Planted(demo_rows=demo_rows)

    # crm/accounts.csv: new ids, so no other table's rows depend on them; an extra column on every row.
    accounts = _csv(drop, "crm/accounts.csv")
    template = accounts.iloc[0].to_dict()
    old = accounts[accounts["updated_at"] < "2026-10-01"]
    planted.dup_newer, planted.dup_older = old["account_id"].iloc[1], old["account_id"].iloc[2]
    # Bad values of optional columns: nulled, the row staged.
    nulled_accounts = [
        ("Z-LOTS", {"employee_count": "lots"}, "employee_count.type", ["employee_count", "lots"]),
        ("Z-FEB30", {"created_at": "2025-02-30"}, "created_at.type", ["created_at", "2025-02-30"]),
        ("Z-NEG", {"annual_revenue": "-5"}, "annual_revenue.range", ["annual_revenue", "-5"]),
        ("Z-HUGE", {"annual_revenue": "1e99"}, "annual_revenue.range", ["annual_revenue", "1e99"]),
    ]
    bad_accounts = [
        # not_future is judged against the wall clock at load time, not the as-of date:
        # 2099 is in the future either way.
        (
            "Z-FUTURE",
            {"updated_at": "2099-01-01T00:00:00"},
            "updated_at.not_future",
            ["updated_at", "2099-01-01"],
        ),
        (None, {}, "account_id.not_null", ["account_id", "is missing"]),
    ]
    extra = []
    for key, changes, rule, words in nulled_accounts:
        extra.append({**template, "account_id": key, "name": f"Planted {key}", **changes})
        planted.nulled.setdefault("accounts", {})[key] = rule
        planted.messages.setdefault("accounts", {})[key] = words
    for key, changes, rule, words in bad_accounts:
        extra.append({**template, "account_id": key or "", "name": f"Planted {key}", **changes})
        planted.quarantined.setdefault("accounts", {})[key] = rule
        planted.messages.setdefault("accounts", {})[key] = words
    newer = accounts[accounts["account_id"] == planted.dup_newer].iloc[0].to_dict()
    older = accounts[accounts["account_id"] == planted.dup_older].iloc[0].to_dict()
    planted.dup_older_name = older["name"]
    extra.append({**newer, "name": "Renamed By Later Row", "updated_at": "2026-10-31T08:00:00"})
    extra.append({**older, "name": "Stale Older Row", "updated_at": "2019-01-01T00:00:00"})
    planted.duplicates["accounts"] = 2
    accounts = pd.concat([accounts, pd.DataFrame(extra)], ignore_index=True)
    accounts["crm_segment"] = ["enterprise" if i % 2 else "smb" for i in range(len(accounts))]
    accounts.to_csv(drop / "crm/accounts.csv", index=False)

    # crm/opportunities.csv: range, reference, type, missing id; an unknown stage is only a warning.
    opportunities = _csv(drop, "crm/opportunities.csv")
    good_account = accounts["account_id"].iloc[3]
    opp = {**opportunities.iloc[0].to_dict(), "account_id": good_account}
    nulled_opps = [
        ("OZ-NEG", {"amount": "-5"}, "amount.range", ["amount", "-5"]),
        ("OZ-HUGE", {"amount": "1e99"}, "amount.range", ["amount", "1e99"]),
        # an account whose only bad value is optional is staged, so its deals are not orphans
        ("OZ-OF-NULLED", {"account_id": "Z-LOTS"}, "", []),
    ]
    bad_opps = [
        ("OZ-ORPHAN", {"account_id": "A9999999"}, "account_id.references", ["account_id", "A9999999"]),
        (
            "OZ-OF-QUARANTINED",
            {"account_id": "Z-FUTURE"},
            "account_id.references",
            ["account_id", "Z-FUTURE"],
        ),
        ("OZ-FEB30", {"created_at": "2025-02-30"}, "created_at.type", ["created_at", "2025-02-30"]),
        (None, {}, "opportunity_id.not_null", ["opportunity_id", "is missing"]),
    ]
    rows = []
    for key, changes, rule, words in nulled_opps:
        rows.append({**opp, "opportunity_id": key, **changes})
        if rule:
            planted.nulled.setdefault("opportunities", {})[key] = rule
            planted.messages.setdefault("opportunities", {})[key] = words
        else:
            planted.kept.setdefault("opportunities", []).append(key)
    for key, changes, rule, words in bad_opps:
        rows.append({**opp, "opportunity_id": key or "", **changes})
        planted.quarantined.setdefault("opportunities", {})[key] = rule
        planted.messages.setdefault("opportunities", {})[key] = words
    rows.append({**opp, "opportunity_id": "OZ-STAGE", "stage": "Verbal Yes"})
    planted.kept["opportunities"].append("OZ-STAGE")
    pd.concat([opportunities, pd.DataFrame(rows)], ignore_index=True).to_csv(
        drop / "crm/opportunities.csv", index=False
    )

    # feeds/funding_rounds.csv as an old Mac exported it: Mac Roman, bare CR line endings; an accented
    # name and a truncated last line. (Bare-CR files are decoded as Mac Roman, see detect_encoding.)
    rounds = _csv(drop, "feeds/funding_rounds.csv")
    rounds.loc[5, "company_name"] = planted.accent_name
    path = drop / "feeds/funding_rounds.csv"
    rounds.to_csv(path, index=False, encoding=OLD_MAC, lineterminator="\r")
    with path.open("ab") as handle:
        handle.write(planted.truncated_line.encode(OLD_MAC))
    planted.quarantined["funding_rounds"] = {None: "row.malformed"}
    planted.messages["funding_rounds"] = {None: ["does not parse"]}

    # Optional column missing (job_postings.department), optional file missing (contacts),
    # optional file with a header and no rows (leadership_changes).
    postings = _csv(drop, "feeds/job_postings.csv").drop(columns=["department"])
    postings.to_csv(drop / "feeds/job_postings.csv", index=False)
    (drop / "crm/contacts.csv").unlink()
    leadership = drop / "feeds/leadership_changes.csv"
    leadership.write_text(leadership.read_text().splitlines()[0] + "\n")
    planted.demo_rows["contacts"] = planted.demo_rows["leadership_changes"] = 0
    return planted


@dataclass
class DemoRuns:
    root: Path
    drop: Path
    warehouse: Path
    planted: Planted
    runs: list[CliRun]
    counts: list[dict[str, dict[str, int]]]
    quarantines: list[pd.DataFrame]
    results_rows: list[int]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRuns]:
    """A 300-account demo drop with planted bad rows, run twice through `icp run`."""
    root = tmp_path_factory.mktemp("bad_demo")
    drop, warehouse = root / "drop", root / "warehouse.duckdb"
    generate_demo(drop, DemoSpec(accounts=DEMO_ACCOUNTS))
    planted = plant_bad_rows(drop)
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    runs, counts, quarantines, results_rows = [], [], [], []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("ICP_SOURCE_DIR", "ICP_WAREHOUSE", "ICP_CONFIG"):
            mp.delenv(name, raising=False)
        mp.setenv("DAGSTER_HOME", str(home))
        mp.chdir(root)
        for _ in range(2):
            runs.append(run_icp(drop, warehouse))
            counts.append(warehouse_counts(warehouse))
            quarantines.append(
                frame(warehouse, 'select "table", row_key, rule, message from icp.quarantine order by all')
            )
            results_rows.append(query(warehouse, "select count(*) from icp.contract_results")[0][0])
    yield DemoRuns(root, drop, warehouse, planted, runs, counts, quarantines, results_rows)


def _expected_counts(planted: Planted, table: str) -> dict[str, int]:
    bad = len(planted.quarantined.get(table, {}))
    nulled = len(planted.nulled.get(table, {}))
    dups = planted.duplicates.get(table, 0)
    kept = len(planted.kept.get(table, []))
    raw = planted.demo_rows[table] + bad + nulled + kept + dups
    return {"raw": raw, "staging": raw - bad - dups, "quarantine": bad, "nulled": nulled}


def test_demo_drop_with_planted_bad_rows_runs_to_the_end_twice(demo_runs: DemoRuns) -> None:
    """Bad rows below max_bad_share never stop the run: both runs exit 0."""
    for run in demo_runs.runs:
        assert run.code == 0, run.failure_lines or run.last_line
        assert run.failure_lines == []


def test_demo_drop_counts_add_up_exactly(demo_runs: DemoRuns) -> None:
    counts = demo_runs.counts[0]
    for table in CANONICAL_TABLES:
        expected = _expected_counts(demo_runs.planted, table)
        assert counts[table] == expected, table
        # The invariant, from warehouse counts: raw = staged + dropped rows + duplicates removed;
        # nulled fields are findings on staged rows, not rows of their own.
        c = counts[table]
        assert c["raw"] == c["staging"] + c["quarantine"] + demo_runs.planted.duplicates.get(table, 0), table


@pytest.mark.parametrize("table", ["accounts", "opportunities", "funding_rounds"])
def test_every_planted_bad_row_is_quarantined_with_its_rule_and_a_message(
    demo_runs: DemoRuns, table: str
) -> None:
    everything = quarantine_of(demo_runs.warehouse, table)
    quarantine = everything[everything["action"] == "drop_row"]
    expected = demo_runs.planted.quarantined[table]
    assert len(quarantine) == len(expected)
    nulled = everything[everything["action"] == "null_field"].set_index("row_key")
    assert nulled["rule"].to_dict() == demo_runs.planted.nulled.get(table, {})
    for key, row in nulled.iterrows():
        for word in [*demo_runs.planted.messages[table][key], "nulled"]:
            assert word in row["message"], (key, row["message"])
    for key, rule in expected.items():
        if key is None:
            rows = quarantine[quarantine["row_key"].str.startswith("row:")]
        else:
            rows = quarantine[quarantine["row_key"] == key]
        assert len(rows) == 1, f"{table}: {key} not quarantined once"
        row = rows.iloc[0]
        assert row["rule"] == rule, (key, row["message"])
        for word in demo_runs.planted.messages[table][key]:
            assert word in row["message"], (key, row["message"])
        assert row["raw_row"], "the quarantined row keeps what the source delivered"


def test_good_rows_are_all_staged_and_planted_keys_are_not(demo_runs: DemoRuns) -> None:
    wh = demo_runs.warehouse
    staged = {r[0] for r in query(wh, "select account_id from staging.accounts")}
    demo_ids = set(_csv_original_ids(demo_runs))
    assert staged == demo_ids | set(demo_runs.planted.nulled["accounts"])
    nulled = query(
        wh, "select employee_count, annual_revenue from staging.accounts where account_id = 'Z-LOTS'"
    )
    assert nulled[0][0] is None and nulled[0][1] is not None, "only the bad value is nulled"
    opps = {r[0] for r in query(wh, "select opportunity_id from staging.opportunities")}
    assert {"OZ-STAGE", "OZ-OF-NULLED", "OZ-NEG"} <= opps
    assert not {k for k in demo_runs.planted.quarantined["opportunities"] if k} & opps
    assert query(wh, "select count(*) from staging.opportunities where opportunity_id is null")[0][0] == 0


def _csv_original_ids(demo_runs: DemoRuns) -> list[str]:
    accounts = pd.read_csv(demo_runs.drop / "crm/accounts.csv", dtype=str, keep_default_na=False)
    return accounts["account_id"].iloc[: demo_runs.planted.demo_rows["accounts"]].tolist()


def test_duplicate_ids_latest_updated_at_wins_and_the_other_is_counted_not_quarantined(
    demo_runs: DemoRuns,
) -> None:
    wh, planted = demo_runs.warehouse, demo_runs.planted
    names = dict(
        query(
            wh,
            "select account_id, name from staging.accounts where account_id in (?, ?)",
            [planted.dup_newer, planted.dup_older],
        )
    )
    assert names[planted.dup_newer] == "Renamed By Later Row"
    assert names[planted.dup_older] == planted.dup_older_name != "Stale Older Row"
    raw = query(
        wh,
        "select count(*) from raw.accounts where account_id in (?, ?)",
        [planted.dup_newer, planted.dup_older],
    )
    assert raw[0][0] == 4, "raw keeps both versions of each duplicated key"
    quarantined = set(quarantine_of(wh, "accounts")["row_key"])
    assert not {planted.dup_newer, planted.dup_older} & quarantined
    assert rule_result(wh, "accounts", "table.key_unique")["passed"]


def test_unknown_stage_name_is_warned_and_the_row_kept(demo_runs: DemoRuns) -> None:
    wh = demo_runs.warehouse
    stage = query(wh, "select stage from staging.opportunities where opportunity_id = 'OZ-STAGE'")
    assert stage == [("Verbal Yes",)]
    result = rule_result(wh, "opportunities", "stage.allowed")
    assert result["severity"] == "warn" and result["failed"] == 1
    assert json.loads(result["sample_keys"]) == ["OZ-STAGE"]
    assert "OZ-STAGE" not in set(quarantine_of(wh, "opportunities")["row_key"])


def test_opportunity_of_unknown_or_quarantined_account_fails_references(demo_runs: DemoRuns) -> None:
    result = rule_result(demo_runs.warehouse, "opportunities", "account_id.references")
    assert result["severity"] == "error" and result["failed"] == 2
    assert set(json.loads(result["sample_keys"])) == {"OZ-ORPHAN", "OZ-OF-QUARANTINED"}


def test_extra_columns_are_kept_in_raw_and_staging(demo_runs: DemoRuns) -> None:
    wh = demo_runs.warehouse
    for schema in ("raw", "staging"):
        values = {r[0] for r in query(wh, f"select distinct crm_segment from {schema}.accounts")}
        assert values == {"enterprise", "smb"}, schema


def test_missing_optional_column_file_and_header_only_optional_file_are_fine(demo_runs: DemoRuns) -> None:
    wh, counts = demo_runs.warehouse, demo_runs.counts[0]
    # job_postings came without `department`: every row staged, the column there and empty.
    assert counts["job_postings"]["staging"] == demo_runs.planted.demo_rows["job_postings"] > 0
    assert query(wh, "select count(department) from staging.job_postings")[0][0] == 0
    # contacts.csv missing, leadership_changes.csv header only:
    # no raw table, an empty staging table, no freshness block.
    for table in ("contacts", "leadership_changes"):
        assert not table_exists(wh, "raw", table)
        assert table_exists(wh, "staging", table) and counts[table]["staging"] == 0
    failed = query(
        wh,
        "select count(*) from icp.contract_results "
        "where \"table\" in ('contacts', 'leadership_changes') and not passed",
    )
    assert failed[0][0] == 0


def test_non_utf8_file_with_old_mac_cr_line_endings_and_a_truncated_last_line(demo_runs: DemoRuns) -> None:
    wh, planted = demo_runs.warehouse, demo_runs.planted
    delivered = (demo_runs.drop / "feeds/funding_rounds.csv").read_bytes()
    assert b"\n" not in delivered and b"\r" in delivered
    assert planted.accent_name.encode(OLD_MAC) in delivered
    with pytest.raises(UnicodeDecodeError):
        delivered.decode("utf-8")
    names = {r[0] for r in query(wh, "select company_name from staging.funding_rounds")}
    assert planted.accent_name in names, "8-bit text decoded, not mangled"
    quarantine = quarantine_of(wh, "funding_rounds")
    assert quarantine["rule"].tolist() == ["row.malformed"]
    assert json.loads(quarantine["raw_row"].iloc[0])["_malformed_row"] == planted.truncated_line


def test_a_second_run_on_the_same_drop_leaves_identical_counts(demo_runs: DemoRuns) -> None:
    assert demo_runs.counts[1] == demo_runs.counts[0]
    pd.testing.assert_frame_equal(demo_runs.quarantines[1], demo_runs.quarantines[0])
    assert demo_runs.results_rows[1] == demo_runs.results_rows[0] > 0


def test_more_bad_rows_than_max_bad_share_blocks_with_one_line_and_keeps_staging(
    demo_runs: DemoRuns, tmp_path: Path, dagster_home: Path
) -> None:
    """Yesterday's staging is not overwritten; the quarantine (the evidence) is written anyway."""
    copy = tmp_path / "copy"
    shutil.copytree(demo_runs.root, copy, ignore=shutil.ignore_patterns("dagster_home"))
    drop, warehouse = copy / "drop", copy / "warehouse.duckdb"
    before = frame(
        warehouse, "select account_id, name, employee_count from staging.accounts order by account_id"
    )
    opportunities_before = warehouse_counts(warehouse)["opportunities"]["staging"]
    accounts = pd.read_csv(drop / "crm/accounts.csv", dtype=str, keep_default_na=False)
    spoiled = accounts["account_id"].iloc[:100].tolist()
    accounts.loc[:99, "updated_at"] = "many"
    accounts.to_csv(drop / "crm/accounts.csv", index=False)

    run = run_icp(drop, warehouse)

    assert run.code == 1
    assert run.failure_lines == [run.last_line]
    assert run.last_line.startswith("icp run failed: accounts: blocking rule table.bad_share failed (")
    assert "limit 20%" in run.last_line
    after = frame(
        warehouse, "select account_id, name, employee_count from staging.accounts order by account_id"
    )
    pd.testing.assert_frame_equal(after, before)
    assert warehouse_counts(warehouse)["opportunities"]["staging"] == opportunities_before
    quarantine = quarantine_of(warehouse, "accounts").set_index("row_key")
    assert set(spoiled) <= set(quarantine.index)
    assert (quarantine.loc[spoiled, "rule"] == "updated_at.type").all()
    assert query(warehouse, "select count(*) from raw.accounts where updated_at = 'many'")[0][0] == 100
    dropped = quarantine[quarantine["action"] == "drop_row"]
    assert rule_result(warehouse, "accounts", "table.bad_share")["failed"] == len(dropped)


def test_header_only_required_file_blocks_on_freshness(tmp_path: Path, dagster_home: Path) -> None:
    """Zero rows is no crash; a required table with a freshness rule and no rows at all is stale."""
    drop = write_drop(
        tmp_path / "drop",
        {"crm/accounts.csv": FRESH_ACCOUNTS_CSV, "crm/opportunities.csv": OPPORTUNITIES_HEADER},
    )
    warehouse = tmp_path / "wh.duckdb"
    run = run_icp(drop, warehouse)
    assert run.code == 1
    assert run.failure_lines == [run.last_line]
    assert run.last_line == (
        "icp run failed: opportunities: blocking rule updated_at.freshness failed "
        f"(newest updated_at known at {AS_OF} is none; must be within 14 days)"
    )
    assert query(warehouse, "select count(*) from staging.accounts")[0][0] == 3
    assert not table_exists(warehouse, "staging", "opportunities")
    assert rule_result(warehouse, "opportunities", "table.bad_share")["failed"] == 0


def test_empty_required_file_stops_the_run_with_one_line(tmp_path: Path, dagster_home: Path) -> None:
    drop = write_drop(
        tmp_path / "drop", {"crm/accounts.csv": "", "crm/opportunities.csv": OPPORTUNITIES_HEADER}
    )
    run = run_icp(drop, tmp_path / "wh.duckdb")
    assert run.code == 1
    # Found before Dagster starts: the one line is all there is.
    assert run.stderr.splitlines() == ["icp run: accounts.csv: the file is empty (no header line)"]


def test_empty_optional_file_is_an_error_too(tmp_path: Path) -> None:
    drop = write_drop(
        tmp_path / "drop",
        {
            "crm/accounts.csv": FRESH_ACCOUNTS_CSV,
            "crm/opportunities.csv": OPPORTUNITIES_HEADER,
            "feeds/firmographics.csv": "",
        },
    )
    with pytest.raises(IcpInputError, match=r"^firmographics.csv: the file is empty \(no header line\)$"):
        inventory(drop, CONTRACTS)


# --------------------------------------------------------------------------- single rules, on stage_table

NOW = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
GOOD_ACCOUNT = "{id},Good {id},{id}.example.com,Software,10,1000,US,U1,2024-01-01,2026-10-20T00:00:00"
GOOD_IDS = [f"G{i}" for i in range(30)]

# (key, changes to a good row, rule, words the message must contain); the keys in ACCOUNT_NULLED are
# bad values of optional columns (nulled, the row kept), the others drop the row.
ACCOUNT_ERRORS = [
    (
        "E-LOTS",
        {"employee_count": "lots"},
        "employee_count.type",
        "employee_count is not a valid integer: lots",
    ),
    (
        "E-FRACTION",
        {"employee_count": "12.5"},
        "employee_count.type",
        "employee_count is not a valid integer: 12.5",
    ),
    (
        "E-ZERO-STAFF",
        {"employee_count": "0"},
        "employee_count.range",
        "employee_count is not between 1 and 3e+06: 0",
    ),
    (
        "E-FEB30",
        {"created_at": "2025-02-30"},
        "created_at.type",
        "created_at is not a valid timestamp: 2025-02-30",
    ),
    (
        "E-NOT-A-DATE",
        {"updated_at": "yesterday"},
        "updated_at.type",
        "updated_at is not a valid timestamp: yesterday",
    ),
    (
        "E-2099",
        {"updated_at": "2099-01-01"},
        "updated_at.not_future",
        "updated_at is in the future: 2099-01-01",
    ),
    (
        "E-9999",
        {"created_at": "9999-12-31"},
        "created_at.not_future",
        "created_at is in the future: 9999-12-31",
    ),
    (
        "E-1850",
        {"created_at": "1850-06-01"},
        "created_at.range",
        "created_at is not in the years 1900-...: 1850-06-01",
    ),
    (
        "E-NEG",
        {"annual_revenue": "-5"},
        "annual_revenue.range",
        "annual_revenue is not between 0 and 1e+13: -5",
    ),
    (
        "E-1E99",
        {"annual_revenue": "1e99"},
        "annual_revenue.range",
        "annual_revenue is not between 0 and 1e+13: 1e99",
    ),
    (
        "E-INF",
        {"annual_revenue": "1e999"},
        "annual_revenue.type",
        "annual_revenue is not a valid number: 1e999",
    ),
    ("E-NO-NAME", {"name": ""}, "name.not_null", "name is missing"),
    ("E-NO-UPDATED", {"updated_at": ""}, "updated_at.not_null", "updated_at is missing"),
    (None, {"account_id": ""}, "account_id.not_null", "account_id is missing"),
]
ACCOUNT_NULLED = {
    "E-LOTS",
    "E-FRACTION",
    "E-ZERO-STAFF",
    "E-FEB30",
    "E-9999",
    "E-1850",
    "E-NEG",
    "E-1E99",
    "E-INF",
}
ACCOUNT_DROPPED = [c for c in ACCOUNT_ERRORS if c[0] not in ACCOUNT_NULLED]
# (key, changes, rule): kept in staging and reported
ACCOUNT_WARNINGS = [
    ("W-COUNTRY", {"country": "USA"}, "country.pattern"),
    ("W-DOMAIN", {"domain": "not a domain"}, "domain.type"),
    ("W-OWNER", {"owner_id": "U404"}, "owner_id.references"),
]


def _account_line(key: str, changes: dict[str, str]) -> str:
    values = dict(zip(ACCOUNT_HEADER.split(","), GOOD_ACCOUNT.format(id=key).split(","), strict=True))
    values.update(changes)
    return ",".join(values.values())


@pytest.fixture(scope="module")
def staged_accounts(tmp_path_factory: pytest.TempPathFactory) -> StagedTable:
    lines = [GOOD_ACCOUNT.format(id=i) for i in GOOD_IDS]
    lines += [_account_line(key or "NOID", changes) for key, changes, _, _ in ACCOUNT_ERRORS]
    lines += [_account_line(key, changes) for key, changes, _ in ACCOUNT_WARNINGS]
    lines += [
        _account_line("G1", {"name": "Good G1 renamed", "updated_at": "2026-10-30T00:00:00"})
    ]  # later wins
    lines += [
        _account_line("G2", {"name": "Good G2 older", "updated_at": "2026-01-01T00:00:00"})
    ]  # earlier loses
    lines += [
        _account_line("G3", {"employee_count": "lots", "updated_at": "2026-10-30T00:00:00"})
    ]  # later, with a bad optional value: wins, with employee_count nulled
    lines += [
        _account_line("G4", {"updated_at": "2099-01-01T00:00:00"})
    ]  # dropped: a later bad row never wins
    lines += ["G99,Truncated"]
    raw = read_raw(
        tmp_path_factory.mktemp("unit_accounts"), "accounts", ACCOUNT_HEADER + "\n" + "\n".join(lines) + "\n"
    )
    return stage_table(
        raw, CONTRACTS["accounts"], as_of=AS_OF_DATE, now=NOW, reference_keys={"owners": pd.Index(["U1"])}
    )


@pytest.mark.parametrize(
    ("key", "changes", "rule", "message"),
    ACCOUNT_ERRORS,
    ids=[c[2] + ":" + str(c[0]) for c in ACCOUNT_ERRORS],
)
def test_error_rule_quarantines_the_row_or_nulls_the_optional_value_naming_column_and_value(
    staged_accounts: StagedTable, key: str | None, changes: dict[str, str], rule: str, message: str
) -> None:
    quarantine = staged_accounts.quarantine
    if key in ACCOUNT_NULLED:
        rows = quarantine[quarantine["row_key"] == key]
        assert rows[["rule", "action"]].values.tolist() == [[rule, "null_field"]]
        assert message in rows.iloc[0]["message"]
        staged = staged_accounts.frame.set_index("account_id")
        column = rule.split(".")[0]
        assert pd.isna(staged.loc[key, column]), "the bad value is nulled"
        assert staged.loc[key, "name"] == f"Good {key}", "the rest of the row is kept"
        return
    if key is None:  # the keyless row; the truncated line is keyless too, but row.malformed
        rows = quarantine[
            quarantine["row_key"].str.startswith("row:") & (quarantine["rule"] != "row.malformed")
        ]
    else:
        rows = quarantine[quarantine["row_key"] == key]
    assert len(rows) == 1
    assert rows.iloc[0]["rule"] == rule
    assert rows.iloc[0]["action"] == "drop_row"
    assert message in rows.iloc[0]["message"]
    assert rows.iloc[0]["table"] == "accounts"
    if key is not None:
        assert key not in set(staged_accounts.frame["account_id"])


@pytest.mark.parametrize(("key", "changes", "rule"), ACCOUNT_WARNINGS, ids=[c[2] for c in ACCOUNT_WARNINGS])
def test_warn_rule_keeps_the_row_and_reports_it(
    staged_accounts: StagedTable, key: str, changes: dict[str, str], rule: str
) -> None:
    assert key in set(staged_accounts.frame["account_id"])
    assert key not in set(staged_accounts.quarantine["row_key"])
    result = next(r for r in staged_accounts.results if r.rule_id == rule)
    assert result.severity == "warn" and result.failed == 1 and result.sample_keys == [key]


def test_unit_duplicates_truncated_line_and_counts(staged_accounts: StagedTable) -> None:
    staged = staged_accounts.frame.set_index("account_id")
    assert staged.loc["G1", "name"] == "Good G1 renamed"
    assert staged.loc["G2", "name"] == "Good G2"
    assert staged.loc["G3", "updated_at"] == pd.Timestamp("2026-10-30", tz="UTC"), "latest row wins"
    assert pd.isna(staged.loc["G3", "employee_count"]), "with its bad optional value nulled"
    assert staged.loc["G4", "name"] == "Good G4", "a later row that is dropped does not replace a good one"
    assert staged_accounts.duplicates_removed == 3  # G1 and G3 earlier rows, G2 later older row
    malformed = staged_accounts.quarantine[staged_accounts.quarantine["rule"] == "row.malformed"]
    assert len(malformed) == 1 and "G99,Truncated" in malformed.iloc[0]["raw_row"]
    expected_quarantined = len(ACCOUNT_DROPPED) + 2  # + G4 in the future + the truncated line
    assert staged_accounts.quarantined_rows == expected_quarantined
    assert staged_accounts.nulled_fields == len(ACCOUNT_NULLED) + 1  # + G3 "lots"
    assert len(staged_accounts.frame) == len(GOOD_IDS) + len(ACCOUNT_WARNINGS) + len(ACCOUNT_NULLED)
    assert staged_accounts.raw_rows == len(staged_accounts.frame) + expected_quarantined + 3
    assert staged_accounts.rows_add_up


def test_unit_bad_share_blocks_above_the_limit_and_an_override_lifts_it(tmp_path: Path) -> None:
    lines = [GOOD_ACCOUNT.format(id=f"G{i}") for i in range(7)] + [
        _account_line(f"B{i}", {"updated_at": "x"}) for i in range(3)
    ]
    raw = read_raw(tmp_path, "accounts", ACCOUNT_HEADER + "\n" + "\n".join(lines) + "\n")
    blocked = stage_table(raw, CONTRACTS["accounts"], as_of=AS_OF_DATE, now=NOW)
    assert [r.rule_id for r in blocked.blocking_failures] == ["table.bad_share"]
    assert "30.0% of rows quarantined (limit 20%)" in blocked.blocking_failures[0].detail
    allowed = stage_table(raw, CONTRACTS["accounts"], as_of=AS_OF_DATE, now=NOW, max_bad_share=0.5)
    assert allowed.blocking_failures == []
    assert allowed.quarantined_rows == 3 and len(allowed.frame) == 7


def test_not_future_is_judged_against_the_wall_clock_at_load_time_not_the_as_of_date(tmp_path: Path) -> None:
    """updated_at after the as-of date but before `now` is kept (the asset passes the wall clock as `now`);
    freshness only looks at values known at the as-of date."""
    lines = [
        _account_line("BEFORE-AS-OF", {"updated_at": "2026-10-30T00:00:00"}),
        _account_line("AFTER-AS-OF", {"updated_at": "2026-11-10T00:00:00"}),
        _account_line("AFTER-NOW", {"updated_at": "2026-11-25T00:00:00"}),
    ]
    raw = read_raw(tmp_path, "accounts", ACCOUNT_HEADER + "\n" + "\n".join(lines) + "\n")
    contract = CONTRACTS["accounts"]
    late_clock = stage_table(raw, contract, as_of=AS_OF_DATE, now=NOW, max_bad_share=1.0)
    assert set(late_clock.frame["account_id"]) == {"BEFORE-AS-OF", "AFTER-AS-OF"}
    assert late_clock.quarantine.set_index("row_key")["rule"].to_dict() == {
        "AFTER-NOW": "updated_at.not_future"
    }
    freshness = next(r for r in late_clock.results if r.rule_id == "updated_at.freshness")
    assert "is 2026-10-30" in freshness.detail and freshness.passed
    early_clock = stage_table(
        raw, contract, as_of=AS_OF_DATE, now=dt.datetime(2026, 11, 5, tzinfo=dt.UTC), max_bad_share=1.0
    )
    assert set(early_clock.frame["account_id"]) == {"BEFORE-AS-OF"}


OPP_HEADER = "opportunity_id,account_id,stage,amount,created_at,closed_at,updated_at"


# (key, line, rule, words the message must contain); one staged frame for all of them.
# X-NEG and X-1E99 are bad optional amounts: nulled, the deal kept.
OPPORTUNITY_NULLED = {"X-NEG", "X-1E99"}
OPPORTUNITY_ERRORS = [
    (
        "X-NEG",
        "X-NEG,A1,Proposal,-5,2026-01-01,,2026-10-20",
        "amount.range",
        "amount is not between 0 and 1e+10: -5",
    ),
    (
        "X-1E99",
        "X-1E99,A1,Proposal,1e99,2026-01-01,,2026-10-20",
        "amount.range",
        "amount is not between 0 and 1e+10: 1e99",
    ),
    (
        "X-REF",
        "X-REF,A404,Proposal,5,2026-01-01,,2026-10-20",
        "account_id.references",
        "account_id is not a known accounts.account_id: A404",
    ),
    (
        "X-FEB30",
        "X-FEB30,A1,Proposal,5,2025-02-30,,2026-10-20",
        "created_at.type",
        "created_at is not a valid timestamp: 2025-02-30",
    ),
    (
        "X-NOACCT",
        "X-NOACCT,,Proposal,5,2026-01-01,,2026-10-20",
        "account_id.not_null",
        "account_id is missing",
    ),
    ("X-NOSTAGE", "X-NOSTAGE,A1,,5,2026-01-01,,2026-10-20", "stage.not_null", "stage is missing"),
]


@pytest.fixture(scope="module")
def staged_opportunities(tmp_path_factory: pytest.TempPathFactory) -> StagedTable:
    good = [f"O{i},A1,Closed Won,100,2026-01-01,2026-02-01,2026-10-20" for i in range(30)]
    lines = [OPP_HEADER, *good, *(line for _, line, _, _ in OPPORTUNITY_ERRORS)]
    raw = read_raw(tmp_path_factory.mktemp("unit_opportunities"), "opportunities", "\n".join(lines) + "\n")
    return stage_table(
        raw,
        CONTRACTS["opportunities"],
        as_of=AS_OF_DATE,
        now=NOW,
        stages=load_config().stages.known,
        reference_keys={"accounts": pd.Index(["A1"])},
    )


@pytest.mark.parametrize(
    ("key", "line", "rule", "message"), OPPORTUNITY_ERRORS, ids=[c[0] for c in OPPORTUNITY_ERRORS]
)
def test_opportunity_errors(
    staged_opportunities: StagedTable, key: str, line: str, rule: str, message: str
) -> None:
    rows = staged_opportunities.quarantine[staged_opportunities.quarantine["row_key"] == key]
    assert rows["rule"].tolist() == [rule]
    assert message in rows.iloc[0]["message"]
    nulled = key in OPPORTUNITY_NULLED
    assert rows.iloc[0]["action"] == ("null_field" if nulled else "drop_row")
    assert (key in set(staged_opportunities.frame["opportunity_id"])) == nulled


def test_opportunity_counts_add_up(staged_opportunities: StagedTable) -> None:
    assert len(staged_opportunities.frame) == 30 + len(OPPORTUNITY_NULLED)
    assert staged_opportunities.quarantined_rows == len(OPPORTUNITY_ERRORS) - len(OPPORTUNITY_NULLED)
    assert staged_opportunities.raw_rows == 30 + len(OPPORTUNITY_ERRORS) and staged_opportunities.rows_add_up


def test_unknown_stage_is_a_warning_and_stage_names_are_case_insensitive(tmp_path: Path) -> None:
    lines = [
        OPP_HEADER,
        "O1,A1,CLOSED WON,5,2026-01-01,2026-02-01,2026-10-20",
        "O2,A1,Verbal Yes,5,2026-01-01,,2026-10-20",
    ]
    raw = read_raw(tmp_path, "opportunities", "\n".join(lines) + "\n")
    staged = stage_table(
        raw, CONTRACTS["opportunities"], as_of=AS_OF_DATE, now=NOW, stages=load_config().stages.known
    )
    assert sorted(staged.frame["opportunity_id"]) == ["O1", "O2"]
    allowed = next(r for r in staged.results if r.rule_id == "stage.allowed")
    assert (allowed.severity, allowed.failed, allowed.sample_keys) == ("warn", 1, ["O2"])


def test_latin1_bytes_with_cr_line_endings_are_read_as_mac_roman(tmp_path: Path) -> None:
    """A latin-1 file with bare-CR line endings: every row loads and a truncated line is quarantined,
    but the text is decoded as Mac Roman (the detector's rule for old-Mac files), so 'é' reads as 'È'."""
    lines = [ACCOUNT_HEADER, _account_line("L1", {"name": "Café Münster GmbH"}), "L2,Truncated"]
    path = tmp_path / "crm" / "accounts.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes("\r".join(lines).encode("latin-1"))
    table_file = inspect_table_file(CONTRACTS["accounts"], path)
    assert table_file.encoding == "mac_roman"
    raw = pa.concat_tables(iter_identified_chunks(table_file), promote_options="default").to_pandas()
    staged = stage_table(raw, CONTRACTS["accounts"], as_of=AS_OF_DATE, now=NOW)
    assert staged.frame["name"].tolist() == ["Café Münster GmbH".encode("latin-1").decode("mac_roman")]
    assert staged.frame["name"].iloc[0] != "Café Münster GmbH"
    assert staged.quarantine["rule"].tolist() == ["row.malformed"] and staged.rows_add_up
