"""Salesforce REST source against a local Salesforce-shaped server: SOQL, paging, auth, incremental, retries.

The real dlt pipeline loads into DuckDB under tmp_path; only HTTP is fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from icp_pipeline.config import IcpConfig
from icp_pipeline.errors import IcpConfigError
from icp_pipeline_tests.fake_crm import FakeSalesforce, icp_error, load_raw, raw_frame, sf_datetime

TOKEN = "00Dxx0000001gEH!AQ4AQFakeToken"


def org() -> dict[str, list[dict[str, Any]]]:
    """Four accounts, three contacts (one private), four opportunities, two users."""
    stamp = lambda day: sf_datetime(f"2026-10-{day:02d}T12:00:00Z")  # noqa: E731
    accounts = [
        {
            "Id": f"001A0000000000{i}",
            "Name": f"Account {i}",
            "Website": f"https://www.account{i}.com/",
            "Industry": "Technology",
            "NumberOfEmployees": 100 * i,
            "AnnualRevenue": 2500000.0 * i,
            "BillingCountry": "US",
            "OwnerId": "005U00000000001",
            "CreatedDate": stamp(1),
            "LastModifiedDate": stamp(i),
            "SystemModstamp": stamp(i),
            "Tier__c": "Gold" if i % 2 else "Silver",
        }
        for i in range(1, 5)
    ]
    contacts = [
        {
            "Id": f"003C0000000000{i}",
            "AccountId": account,
            "Email": f"buyer{i}@example.com",
            "Title": "CFO",
            "CreatedDate": stamp(2),
            "LastModifiedDate": stamp(10 + i),
            "SystemModstamp": stamp(10 + i),
        }
        for i, account in enumerate(["001A00000000001", None, "001A00000000003"], start=1)
    ]
    deals = [
        ("006O00000000001", "Closed Won", True, True),
        ("006O00000000002", "Contract Signed", True, True),
        ("006O00000000003", "Closed Lost", True, False),
        ("006O00000000004", "Prospecting", False, False),
    ]
    opportunities = [
        {
            "Id": deal_id,
            "AccountId": "001A00000000002",
            "Name": f"Renewal {n}",
            "StageName": stage,
            "IsClosed": closed,
            "IsWon": won,
            "Amount": 48000.0,
            "CloseDate": "2026-12-31" if not closed else "2026-06-30",
            "CreatedDate": stamp(3),
            "LastModifiedDate": stamp(20 + n),
            "SystemModstamp": stamp(20 + n),
            "OwnerId": "005U00000000001",
        }
        for n, (deal_id, stage, closed, won) in enumerate(deals, start=1)
    ]
    users = [
        {"Id": "005U00000000001", "Name": "Rita Rep", "Email": "rita@example.com", "IsActive": True},
        {"Id": "005U00000000002", "Name": "Old Rep", "Email": "old@example.com", "IsActive": False},
    ]
    for user in users:
        user["SystemModstamp"] = stamp(1)
    return {"Account": accounts, "Contact": contacts, "Opportunity": opportunities, "User": users}


def salesforce_config(**crm: Any) -> IcpConfig:
    settings = {"kind": "salesforce", "page_size": 2, "retry": {"backoff_s": 0.5, "max_attempts": 3}}
    return IcpConfig.model_validate({"sources": {"crm": settings | crm}})


@pytest.fixture
def sf() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(org(), token=TOKEN) as server:
        yield server


def env_for(server: FakeSalesforce, token: str = TOKEN) -> dict[str, str]:
    return {"ICP_SALESFORCE_TOKEN": token, "ICP_SALESFORCE_INSTANCE_URL": server.url}


def soql_sent(server: FakeSalesforce, sobject: str) -> list[str]:
    return [
        unquote(r.query["q"][0])
        for r in server.seen("GET", "/services/data/v62.0/query")
        if "q" in r.query and f" FROM {sobject} " in r.query["q"][0]
    ]


def test_first_load_maps_sobjects_and_follows_next_records_url(sf: FakeSalesforce, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    stats = load_raw(
        salesforce_config(properties={"accounts": ["Tier__c"]}), tmp_path / "none", warehouse, env_for(sf)
    )

    accounts = raw_frame(warehouse, "accounts", "account_id")
    assert len(accounts) == 4
    row = accounts.loc["001A00000000003"]
    assert (row["name"], row["domain"], row["employee_count"], row["annual_revenue"]) == (
        "Account 3",
        "https://www.account3.com/",
        "300",
        "7500000.0",
    )
    assert row["updated_at"] == "2026-10-03T12:00:00.000+0000" and row["tier_c"] == "Gold"
    assert set(accounts["_source_file"]) == {"salesforce:Account"}

    contacts = raw_frame(warehouse, "contacts", "contact_id")
    assert list(contacts.index) == ["003C00000000001", "003C00000000003"], "a private contact has no account"

    deals = raw_frame(warehouse, "opportunities", "opportunity_id")
    assert deals["stage"].to_list() == ["Closed Won", "closed won", "Closed Lost", "Prospecting"]
    assert deals["closed_at"].to_list()[:3] == ["2026-06-30"] * 3
    assert deals["closed_at"].isna().to_list()[3], "an open deal's CloseDate is a forecast, not closed_at"

    owners = raw_frame(warehouse, "owners", "owner_id")
    assert owners["active"].to_dict() == {"005U00000000001": "true", "005U00000000002": "false"}

    assert soql_sent(sf, "Account") == [
        "SELECT Id, Name, Website, Industry, NumberOfEmployees, AnnualRevenue, BillingCountry, OwnerId, "
        "CreatedDate, LastModifiedDate, SystemModstamp, Tier__c FROM Account ORDER BY SystemModstamp ASC"
    ]
    locators = [r for r in sf.requests if r.path.startswith("/services/data/v62.0/query/01gFAKE")]
    assert len(locators) == 3, "batches of two: accounts, contacts and opportunities each need a second"
    assert all(r.headers.get("sforce-query-options") == "batchSize=2" for r in sf.requests)
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in sf.requests)
    assert stats["accounts"].rows_sent == 4


def test_second_run_queries_from_the_cursor_and_loads_only_changes(
    sf: FakeSalesforce, tmp_path: Path
) -> None:
    warehouse, drop = tmp_path / "warehouse.duckdb", tmp_path / "none"
    load_raw(salesforce_config(), drop, warehouse, env_for(sf))
    before = len(sf.requests)
    sf.modify("Account", "001A00000000002", NumberOfEmployees=260)

    stats = load_raw(salesforce_config(), drop, warehouse, env_for(sf))
    queries = [unquote(r.query["q"][0]) for r in sf.requests[before:] if "q" in r.query]
    account_query = next(q for q in queries if " FROM Account " in q)
    assert " WHERE SystemModstamp >= 2026-10-04T12:00:00Z ORDER BY" in account_query
    assert stats["accounts"].rows_sent == 1 and stats["opportunities"].rows_sent == 0
    assert raw_frame(warehouse, "accounts", "account_id").loc["001A00000000002", "employee_count"] == "260"


def test_expired_token_is_one_clear_line(sf: FakeSalesforce, tmp_path: Path) -> None:
    with pytest.raises(Exception) as failed:
        load_raw(salesforce_config(), tmp_path / "none", tmp_path / "w.duckdb", env_for(sf, "stale"))
    message = str(icp_error(failed.value))
    assert message.startswith("salesforce: GET /services/data/v62.0/query: HTTP 401, not authorized")
    assert "INVALID_SESSION_ID" in message and "ICP_SALESFORCE_TOKEN" in message and "stale" not in message


def test_server_error_then_success(sf: FakeSalesforce, tmp_path: Path) -> None:
    sf.fail_next("GET", "/services/data/v62.0/query/", 500, [{"errorCode": "UNKNOWN_EXCEPTION"}])
    waits: list[float] = []
    stats = load_raw(salesforce_config(), tmp_path / "none", tmp_path / "w.duckdb", env_for(sf), waits.append)
    assert waits == [0.5]
    assert stats["accounts"].rows_sent == 4


def test_instance_url_and_field_names_are_checked(sf: FakeSalesforce, tmp_path: Path) -> None:
    with pytest.raises(IcpConfigError, match="ICP_SALESFORCE_INSTANCE_URL is not set"):
        load_raw(
            salesforce_config(), tmp_path / "none", tmp_path / "w.duckdb", {"ICP_SALESFORCE_TOKEN": TOKEN}
        )
    injected = salesforce_config(base_url=sf.url, properties={"accounts": ["Name FROM User --"]})
    with pytest.raises(IcpConfigError, match="is not a Salesforce field name"):
        load_raw(injected, tmp_path / "none", tmp_path / "w.duckdb", env_for(sf))
