"""A bad value in an optional column costs that value, not the account: it is nulled and recorded
as a field finding, the row is staged and scored, and the rows that refer to it stay. A bad key or
required value still drops the row, and the report then blames the parent's rule, not the
references its children fail as a consequence.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from icp_pipeline.config import contracts_dir, load_config
from icp_pipeline.contracts.spec import ColumnSpec, load_contracts
from icp_pipeline.contracts.validate import stage_table
from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline.report.data import read_health
from icp_pipeline.report.sections import fix_first
from icp_pipeline_tests.staged_demo import materialize_nightly

CONFIG = load_config()
CONTRACTS = load_contracts(contracts_dir(CONFIG))
SPEC = DemoSpec(accounts=400)
BAD = 50


def _spoil(drop: Path, column: str, value: str) -> list[str]:
    """Set `column` to `value` on the first BAD accounts that have opportunities; their ids."""
    accounts = pd.read_csv(drop / "crm/accounts.csv", dtype=str, keep_default_na=False)
    opportunities = pd.read_csv(drop / "crm/opportunities.csv", dtype=str, keep_default_na=False)
    chosen = accounts["account_id"][accounts["account_id"].isin(opportunities["account_id"])].head(BAD)
    accounts.loc[chosen.index, column] = value
    accounts.to_csv(drop / "crm/accounts.csv", index=False)
    return chosen.tolist()


@pytest.fixture(scope="module")
def nulled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("nulled")
    drop, warehouse = root / "drop", root / "warehouse.duckdb"
    generate_demo(drop, SPEC)
    spoiled = _spoil(drop, "employee_count", "lots")
    materialize_nightly(drop, warehouse, SPEC.as_of.isoformat())
    return warehouse, spoiled


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> object:
    return con.execute(sql, params or []).fetchall()[0][0]


def test_bad_optional_values_are_nulled_and_the_accounts_staged_and_scored(
    nulled_run: tuple[Path, list[str]],
) -> None:
    warehouse, spoiled = nulled_run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert _one(con, "select count(*) from staging.accounts") == SPEC.accounts
        staged = con.execute(
            "select account_id, employee_count from staging.accounts where list_contains(?, account_id)",
            [spoiled],
        ).df()
        assert len(staged) == BAD and staged["employee_count"].isna().all()
        findings = con.execute(
            """select row_key, rule, action from icp.quarantine where "table" = 'accounts'"""
        ).df()
        assert len(findings) == BAD
        assert set(findings["row_key"]) == set(spoiled)
        assert set(findings["rule"]) == {"employee_count.type"} and set(findings["action"]) == {"null_field"}
        referring = _one(con, "select count(*) from icp.quarantine where rule like '%.references'")
        assert referring == 0, "no contact, deal or subscription lost its account"
        scored = _one(
            con,
            "select count(distinct account_id) from icp.account_scores where list_contains(?, account_id)",
            [spoiled],
        )
        assert scored == BAD
        bad_share = con.execute(
            """select failed, detail from icp.contract_results
            where "table" = 'accounts' and rule = 'table.bad_share'"""
        ).fetchall()
        assert bad_share == [(0, "0.0% of rows quarantined (limit 20%)")], "nulled values are no dropped rows"
        rule = con.execute(
            """select failed from icp.contract_results where "table" = 'accounts' and rule = 'employee_count.type'"""
        ).fetchall()
        assert rule == [(BAD,)], "the rule still reports every bad value"


def test_a_required_value_still_drops_the_row_and_the_report_blames_the_parent_rule(tmp_path: Path) -> None:
    drop, warehouse = tmp_path / "drop", tmp_path / "warehouse.duckdb"
    generate_demo(drop, SPEC)
    spoiled = _spoil(drop, "updated_at", "yesterday")
    materialize_nightly(drop, warehouse, SPEC.as_of.isoformat(), 'key:"raw/*" or key:"staging/*"')
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert _one(con, "select count(*) from staging.accounts") == SPEC.accounts - BAD
        dropped = con.execute(
            """select row_key from icp.quarantine where "table" = 'accounts'
            and rule = 'updated_at.type' and action = 'drop_row'"""
        ).fetchall()
        assert sorted(key for (key,) in dropped) == sorted(spoiled)
        orphans = _one(
            con,
            """select count(*) from icp.quarantine where "table" = 'opportunities'
            and rule = 'account_id.references'""",
        )
        assert orphans > BAD, "every deal of a dropped account fails its reference"
        health = read_health(con, SPEC.as_of, CONFIG)
    quarantine = health.quarantine
    top = quarantine.iloc[0]
    assert (top["table"], top["rule"], top["cause"]) == ("accounts", "updated_at.type", "")
    caused = quarantine[quarantine["table"] == "opportunities"].set_index("rule")
    assert caused.loc["account_id.references", "cause"] == "accounts: updated_at.type"
    sentence = fix_first(quarantine)
    assert sentence.startswith("The rule to fix at the source first: accounts: updated_at.type (50 rows; ")
    assert (
        f"opportunities: {orphans} rows refer to accounts quarantined by accounts: updated_at.type"
        in sentence
    )


def test_a_contract_can_drop_the_row_for_a_bad_optional_value(tmp_path: Path) -> None:
    header = "account_id,name,employee_count,updated_at\n"
    rows = "".join(f"A{i},Acme {i},{'lots' if i < 2 else 10},2026-10-25T00:00:00\n" for i in range(10))
    raw = pd.read_csv(pd.io.common.StringIO(header + rows), dtype=str, keep_default_na=False)
    contract = CONTRACTS["accounts"]
    now = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    default = stage_table(raw, contract, as_of=SPEC.as_of, now=now)
    assert len(default.frame) == 10 and default.quarantined_rows == 0 and default.nulled_fields == 2
    columns = dict(contract.columns)
    columns["employee_count"] = ColumnSpec.model_validate(
        {**columns["employee_count"].model_dump(), "action": {"type": "drop_row"}}
    )
    strict = contract.model_copy(update={"columns": columns})
    dropped = stage_table(raw, strict, as_of=SPEC.as_of, now=now)
    assert len(dropped.frame) == 8 and dropped.quarantined_rows == 2 and dropped.nulled_fields == 0
    assert set(dropped.quarantine["action"]) == {"drop_row"} and dropped.rows_add_up


def test_a_contract_cannot_null_a_key_or_a_not_nullable_column() -> None:
    raw = CONTRACTS["accounts"].model_dump()
    raw["columns"]["updated_at"]["action"] = {"type": "null_field"}
    with pytest.raises(ValueError, match="key or cursor column cannot be nulled"):
        type(CONTRACTS["accounts"]).model_validate(raw)
    raw = CONTRACTS["accounts"].model_dump()
    raw["columns"]["name"]["action"] = {"not_null": "null_field"}
    with pytest.raises(ValueError, match="nullable: false cannot be nulled"):
        type(CONTRACTS["accounts"]).model_validate(raw)
