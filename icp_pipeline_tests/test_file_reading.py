"""Reading drop files that are not quite right: every line is a row, a malformed line, or named.

Protects against losing rows silently: one stray quote once swallowed every line after it into a
single malformed row, and a UTF-16 or mixed-type file was rejected with a misleading message.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from icp_pipeline.cli import main
from icp_pipeline.config import contracts_dir, load_config
from icp_pipeline.contracts.spec import load_contracts
from icp_pipeline.errors import IcpInputError
from icp_pipeline.ingest.files import (
    MALFORMED_ROW,
    ReadReport,
    find_table_file,
    inspect_table_file,
    iter_identified_chunks,
)
from icp_pipeline_tests.conftest import AS_OF, OPPORTUNITIES_CSV, write_drop
from icp_pipeline_tests.staged_demo import materialize_nightly

HEADER = (
    "account_id,name,domain,industry,employee_count,annual_revenue,country,owner_id,created_at,updated_at\n"
)
CONTRACTS = load_contracts(contracts_dir(load_config()))


def account_line(number: int, employees: int = 50, name: str | None = None, quoted: bool = False) -> str:
    fields = [
        f"A{number:05d}",
        name if name is not None else f"Company {number}",
        f"company{number}.com",
        "Software",
        str(employees),
        "1000000",
        "US",
        "",
        "2024-01-01",
        f"2026-10-{1 + employees % 28:02d}T00:00:00",  # recent enough for the freshness rule
    ]
    if quoted:
        fields = [f'"{value}"' for value in fields]
    return ",".join(fields) + "\n"


def accounts_file(lines: list[str], quoted_header: bool = False) -> str:
    header = ",".join(f'"{name}"' for name in HEADER.strip().split(",")) + "\n" if quoted_header else HEADER
    return header + "".join(lines)


def read_accounts(drop: Path) -> tuple[pa.Table, ReadReport]:
    report = ReadReport()
    contract = CONTRACTS["accounts"]
    file = find_table_file(drop, contract)
    assert file is not None
    table_file = inspect_table_file(contract, file)
    table = pa.concat_tables(iter_identified_chunks(table_file, report=report), promote_options="default")
    return table, report


def malformed_lines(table: pa.Table) -> list[str]:
    if MALFORMED_ROW not in table.column_names:
        return []
    return table.column(MALFORMED_ROW).drop_null().to_pylist()


def rows_by_key(table: pa.Table) -> dict[str, dict[str, str | None]]:
    rows = table.filter(pa.compute.is_valid(table.column("account_id"))).to_pylist()
    return {row["account_id"]: row for row in rows}


def test_a_stray_quote_costs_only_its_own_line(tmp_path: Path) -> None:
    lines = [account_line(n) for n in range(1, 1501)]
    lines[99] = account_line(100, name='"Company 100')  # opens a quote that never closes
    drop = write_drop(tmp_path / "drop", {"crm/accounts.csv": accounts_file(lines)})
    table, report = read_accounts(drop)
    keys = rows_by_key(table)
    assert len(keys) == 1499 and "A00100" not in keys
    assert malformed_lines(table) == [lines[99].rstrip("\n")]
    assert (report.lines, report.rows, report.malformed) == (1500, 1499, 1)
    assert report.unexplained == 0
    assert keys["A01500"]["name"] == "Company 1500"


def test_two_stray_quotes_that_make_a_whole_looking_row_are_read_line_by_line(tmp_path: Path) -> None:
    """Lines 100 to 700 once became one row of ten fields: the second quote closed the first."""
    lines = [account_line(n) for n in range(1, 1501)]
    lines[99] = account_line(100, name='"Company 100')
    lines[699] = account_line(700, name='"Company 700')
    lines[399] = account_line(400, name='"Company 400, Inc."')  # a quoted comma among the swallowed
    drop = write_drop(tmp_path / "drop", {"crm/accounts.csv": accounts_file(lines)})
    table, report = read_accounts(drop)
    keys = rows_by_key(table)
    assert (report.lines, report.rows + report.malformed) == (1500, 1500)
    assert all(f"A{n:05d}" in keys for n in range(1, 1501) if n not in (100, 700))
    assert keys["A00350"]["domain"] == "company350.com"
    assert keys["A00400"]["name"] == "Company 400, Inc."
    assert report.resynchronised >= 1 and report.unexplained == 0


def test_a_missing_closing_quote_in_a_quoted_file_costs_one_line(tmp_path: Path) -> None:
    lines = [account_line(n, quoted=True) for n in range(1, 301)]
    lines[49] = lines[49].rstrip('"\n') + "\n"  # the last value's closing quote is missing
    drop = write_drop(tmp_path / "drop", {"crm/accounts.csv": accounts_file(lines, quoted_header=True)})
    table, report = read_accounts(drop)
    keys = rows_by_key(table)
    assert report.lines == 300 and report.rows + report.malformed == 300
    assert len(keys) >= 299 and all(f"A{n:05d}" in keys for n in range(1, 301) if n != 50)


def test_a_quoted_value_with_line_breaks_stays_one_row_and_is_counted(tmp_path: Path) -> None:
    lines = [account_line(n) for n in range(1, 11)]
    lines[4] = account_line(5, name='"Acme, Inc.\nNorth America division"')
    drop = write_drop(tmp_path / "drop", {"crm/accounts.csv": accounts_file(lines)})
    table, report = read_accounts(drop)
    keys = rows_by_key(table)
    assert len(keys) == 10 and keys["A00005"]["name"] == "Acme, Inc.\nNorth America division"
    assert (report.lines, report.rows, report.malformed, report.unexplained) == (11, 10, 0, 1)
    assert "1 line break(s) inside quoted values" in report.describe()


def test_utf16_files_are_read(tmp_path: Path) -> None:
    text = accounts_file([account_line(1, name="Zoë Müller GmbH"), account_line(2)])
    for encoding in ("utf-16", "utf-16-be"):  # with a byte-order mark, and without one
        drop = tmp_path / encoding
        (drop / "crm").mkdir(parents=True)
        (drop / "crm" / "accounts.csv").write_bytes(text.encode(encoding))
        table, report = read_accounts(drop)
        assert rows_by_key(table)["A00001"]["name"] == "Zoë Müller GmbH"
        assert (report.lines, report.rows, report.malformed) == (2, 2, 0)


def test_invalid_utf8_in_a_parquet_text_column_names_the_file_and_column(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    (drop / "crm").mkdir(parents=True)
    table = pa.table(
        {
            "account_id": ["A1", "A2"],
            "name": pa.array([b"Acme", b"Bad \xff name"], pa.binary()),
            "updated_at": ["2026-01-01", "2026-01-01"],
        }
    )
    pq.write_table(table, drop / "crm" / "accounts.parquet")
    with pytest.raises(IcpInputError, match=r"crm/accounts\.parquet: column 'name' .*UTF-8"):
        read_accounts(drop)


def test_jsonl_with_mixed_types_in_a_column_keeps_every_row_as_text(tmp_path: Path) -> None:
    rows = [
        {"account_id": "A1", "name": "Acme", "employee_count": 120, "updated_at": "2026-01-01"},
        {"account_id": "A2", "name": "Beta", "employee_count": "lots", "updated_at": "2026-01-01"},
        {"account_id": "A3", "name": "Gamma", "employee_count": {"min": 5}, "updated_at": "2026-01-01"},
        {"account_id": "A4", "name": "Delta", "employee_count": None, "updated_at": "2026-01-01"},
    ]
    drop = write_drop(tmp_path / "drop", {"crm/accounts.jsonl": "".join(json.dumps(r) + "\n" for r in rows)})
    table, _ = read_accounts(drop)
    keys = rows_by_key(table)
    assert {key: row["employee_count"] for key, row in keys.items()} == {
        "A1": "120",
        "A2": "lots",
        "A3": '{"min":5}',
        "A4": None,
    }


def test_tonights_updates_land_despite_a_stray_quote(tmp_path: Path) -> None:
    """The reported case end to end: night two changes every account and one name has a stray
    quote; every other account's update lands and the bad line alone is quarantined."""
    warehouse = tmp_path / "warehouse.duckdb"
    first = [account_line(n, employees=50) for n in range(1, 1501)]
    drop = write_drop(tmp_path / "drop", {"crm/accounts.csv": accounts_file(first)})
    opportunities = OPPORTUNITIES_CSV.replace(",A1,", ",A00001,").replace(",A2,", ",A00002,")
    write_drop(drop, {"crm/opportunities.csv": opportunities.replace(",A3,", ",A00003,")})
    selection = 'key:"raw/*" or key:"staging/*"'
    materialize_nightly(drop, warehouse, "2026-11-01", selection)
    second = [account_line(n, employees=51) for n in range(1, 1501)]
    second[99] = account_line(100, employees=51, name='"Company 100')
    write_drop(drop, {"crm/accounts.csv": accounts_file(second)})
    materialize_nightly(drop, warehouse, "2026-11-02", selection)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        employees = dict(con.execute("select account_id, employee_count from staging.accounts").fetchall())
        quarantined = con.execute(
            "select rule, raw_row from icp.quarantine where \"table\" = 'accounts'"
        ).fetchall()
        missed = con.execute("select count(*) from icp.raw_absences").fetchall()[0][0]
    assert sum(1 for count in employees.values() if count == 51) == 1499
    assert employees["A00100"] == 50  # the bad line is not an update: yesterday's row stays
    assert [rule for rule, _ in quarantined] == ["row.malformed"]
    assert json.loads(quarantined[0][1])[MALFORMED_ROW] == second[99].rstrip("\n")
    assert missed == 0  # the unreadable line's account is not counted absent from the drop


def test_a_file_that_loses_too_many_lines_blocks_on_its_own_table(
    tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A quarter of the accounts' lines lack a field, and the first of them has a stray quote too.
    The run stops naming accounts (351 of 1,500 lines lost), not the contacts left without their
    accounts: the stray quote once made the 1,401 lines after it one malformed row of 100."""
    lines = [account_line(n) for n in range(1, 1501)]
    for n in range(100, 1501, 4):
        lines[n - 1] = account_line(n).replace(",Software,", ",")
    lines[99] = lines[99].replace("Company 100", '"Company 100')
    contacts = "contact_id,account_id,email,title,created_at,updated_at\n" + "".join(
        f"C{n},A{n:05d},p{n}@company{n}.com,CTO,2024-01-01,2026-10-20T00:00:00\n" for n in range(1, 1501)
    )
    drop = write_drop(
        tmp_path / "drop",
        {
            "crm/accounts.csv": accounts_file(lines),
            "crm/contacts.csv": contacts,
            "crm/opportunities.csv": OPPORTUNITIES_CSV.replace(",A1,", ",A00001,")
            .replace(",A2,", ",A00002,")
            .replace(",A3,", ",A00003,"),
        },
    )
    args = ["run", "--source-dir", str(drop), "--warehouse", str(tmp_path / "wh.duckdb"), "--as-of", AS_OF]
    assert main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("icp run failed: accounts: blocking rule table.bad_share failed (23.4% of rows")
