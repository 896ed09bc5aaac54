"""Every `icp.*` output table has the column types declared in `icp_pipeline/schemas.py`, whatever
the rows of a run held (an all-null column, an empty quarantine), and a warehouse written by older
code is migrated to them on the next run instead of crashing it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline.schemas import DDL_TABLES, OUTPUT_SCHEMAS
from icp_pipeline_tests.staged_demo import materialize_nightly

SPEC = DemoSpec(accounts=300)


def _types(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    rows = con.execute(
        """select table_name, column_name, data_type from information_schema.columns
        where table_schema = 'icp' order by table_name, ordinal_position"""
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        tables.setdefault(table, {})[column] = kind
    return tables


def _assert_declared(tables: dict[str, dict[str, str]]) -> None:
    for table, columns in tables.items():
        nulls = [c for c, kind in columns.items() if kind.strip('"') == "NULL"]
        assert not nulls, f"icp.{table} has NULL-typed columns: {nulls}"
        if table in DDL_TABLES:
            continue
        assert table in OUTPUT_SCHEMAS, f"icp.{table} is written but its schema is not declared"
        assert columns == OUTPUT_SCHEMAS[table], table


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("schemas")
    drop, warehouse = root / "drop", root / "warehouse.duckdb"
    generate_demo(drop, SPEC)
    materialize_nightly(drop, warehouse, SPEC.as_of.isoformat())
    return warehouse


def test_every_output_table_has_its_declared_column_types(nightly: Path) -> None:
    with duckdb.connect(str(nightly), read_only=True) as con:
        tables = _types(con)
        quarantined = con.execute("select count(*) from icp.quarantine").fetchall()[0][0]
        never_failed = con.execute("select count(last_error) from icp.alerts").fetchall()[0][0]
    # The cases that used to come out mistyped: no error yet, no quarantined row.
    assert never_failed == 0 and quarantined == 0
    for table in ("account_scores", "alerts", "quarantine", "contract_results", "trigger_events"):
        assert table in tables
    _assert_declared(tables)
    assert tables["alerts"]["last_error"] == "VARCHAR"
    assert tables["alerts"]["as_of"] == "DATE"
    assert tables["quarantine"]["loaded_at"] == "TIMESTAMP WITH TIME ZONE"


def test_account_scores_carry_name_and_owner_and_no_empty_reasons(nightly: Path) -> None:
    with duckdb.connect(str(nightly), read_only=True) as con:
        empty = con.execute(
            "select count(*) from icp.account_scores where top_negative = '' or top_positive = ''"
        ).fetchall()[0][0]
        without_negative = con.execute(
            "select count(*) from icp.account_scores where top_negative is null"
        ).fetchall()[0][0]
        mismatched = con.execute(
            """select count(*) from icp.account_scores s join staging.accounts a using (account_id)
            where s.name is distinct from a.name or s.owner_id is distinct from a.owner_id"""
        ).fetchall()[0][0]
        named = con.execute("select count(name) from icp.account_scores").fetchall()[0][0]
    assert empty == 0, "an account without a negative reason has NULL, not ''"
    assert without_negative > 0
    assert mismatched == 0 and named == SPEC.accounts


def test_a_warehouse_written_with_the_old_types_is_migrated_by_the_next_run(tmp_path: Path) -> None:
    drop, warehouse = tmp_path / "drop", tmp_path / "warehouse.duckdb"
    generate_demo(drop, SPEC)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema icp")
        # As older code left them: loaded_at VARCHAR and no action; last_error NULL-typed and as_of a
        # TIMESTAMP; scores without name and owner, an all-null hard-no reason.
        con.execute(
            """create table icp.quarantine as select 'owners' as "table", 'k1' as row_key,
            'owner_id.not_null' as rule, 'owner_id is missing' as message, '{}' as raw_row,
            '2026-10-01 00:00:00+00' as loaded_at"""
        )
        con.execute(
            """create table icp.alerts as select 'x1' as alert_id, 'e1' as event_id, 'A0' as account_id,
            'funding' as trigger_type, 'U1' as owner_id, 'U1' as recipient, 'outbox' as channel,
            'sent' as status, false as digest, 0.5::double as priority, 1::bigint as attempts,
            timestamptz '2026-10-01 00:00:00+00' as created_at, timestamptz '2026-10-01 00:00:00+00' as sent_at,
            null as last_error, timestamp '2026-10-01 00:00:00' as as_of"""
        )
        con.execute(
            """create table icp.account_scores as select 'A-OLD' as account_id, date '2026-10-01' as as_of,
            50::bigint as fit_score, 'B' as tier, false as disqualified, null as disqualified_reason,
            0::bigint as base_points, 'v0' as profile_version, 'model' as scored_by, '[]' as reasons,
            'x: +1' as top_positive, '' as top_negative"""
        )
        old = _types(con)
    assert old["alerts"]["last_error"] == '"NULL"' and old["quarantine"]["loaded_at"] == "VARCHAR"

    materialize_nightly(drop, warehouse, SPEC.as_of.isoformat())

    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = _types(con)
        kept = con.execute(
            "select as_of, name, top_negative from icp.account_scores where account_id = 'A-OLD'"
        ).fetchall()
        old_alert = con.execute("select as_of, last_error from icp.alerts where alert_id = 'x1'").fetchall()
    _assert_declared(tables)
    assert len(kept) == 1 and kept[0][1] is None, "an earlier slice keeps its rows, the new columns NULL"
    assert [(str(d), e) for d, e in old_alert] == [("2026-10-01", None)]
