"""HubSpot CRM source against a local HubSpot-shaped server: mapping, paging, auth, incremental, retries.

Every test runs the real dlt pipeline into a DuckDB warehouse under tmp_path; only HTTP is fake.
Retry waits go to a recorder instead of the clock, so Retry-After is checked as a number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from icp_pipeline.config import IcpConfig, StageMapping
from icp_pipeline.errors import IcpConfigError, IcpInputError
from icp_pipeline.ingest import hubspot
from icp_pipeline.ingest.hubspot import DealStage, stage_name
from icp_pipeline_tests.fake_crm import (
    FakeHubSpot,
    HubSpotData,
    deal_pipeline,
    icp_error,
    load_raw,
    raw_frame,
    stage_id,
)

TOKEN = "pat-na1-test"
ENV = {"ICP_HUBSPOT_TOKEN": TOKEN}


def portal() -> HubSpotData:
    """Five companies, four contacts (one without company, one with two), four deals, two owners."""
    data = HubSpotData()
    for i in range(1, 6):
        data.add(
            "companies",
            f"900{i}",
            {
                "name": f"Company {i}",
                "domain": f"company{i}.com",
                "industry": "COMPUTER_SOFTWARE",
                "numberofemployees": str(10 * i),
                "annualrevenue": f"{i}000000",
                "country": "US",
                "hubspot_owner_id": "101",
                "createdate": f"2024-01-0{i}T00:00:00.000Z",
                "hs_lastmodifieddate": f"2026-10-0{i}T12:00:00.000Z",
                "icp_segment": "enterprise" if i % 2 else "smb",
            },
        )
    contacts = {"701": ["9001"], "702": ["9002", "9003"], "703": [], "704": ["9004"]}
    for n, (contact, companies) in enumerate(contacts.items(), start=1):
        data.add(
            "contacts",
            contact,
            {
                "email": f"person{n}@example.com",
                "jobtitle": "VP Sales",
                "createdate": "2025-01-01T00:00:00.000Z",
                "lastmodifieddate": f"2026-10-1{n}T08:00:00.000Z",
            },
            companies,
        )
    data.pipelines = [
        deal_pipeline(["Demo", "Closed Won", "Signed", "Lost it"], ["closed won", "signed"], ["lost it"])
    ]
    deals = {
        "801": ("Closed Won", "9001"),
        "802": ("Signed", "9002"),
        "803": ("Lost it", "9003"),
        "804": ("Demo", "9004"),
    }
    for n, (deal, (stage, company)) in enumerate(deals.items(), start=1):
        data.add(
            "deals",
            deal,
            {
                "dealname": f"Deal {deal}",
                "amount": "12500.50",
                "dealstage": stage_id(stage),
                "pipeline": "default",
                "createdate": "2025-02-01T00:00:00.000Z",
                "closedate": "2025-06-30T00:00:00.000Z",
                "hs_lastmodifieddate": f"2026-10-2{n}T09:30:00.000Z",
            },
            [company],
        )
    data.owners = [
        {
            "id": "101",
            "email": "ana@example.com",
            "firstName": "Ana",
            "lastName": "Lopez",
            "userId": 1,
            "archived": False,
        },
        {
            "id": "102",
            "email": "bo@example.com",
            "firstName": "Bo",
            "lastName": "Chen",
            "userId": 2,
            "archived": True,
        },
    ]
    return data


def hubspot_config(url: str, **crm: Any) -> IcpConfig:
    settings = {
        "kind": "hubspot",
        "base_url": url,
        "page_size": 2,
        "retry": {"backoff_s": 0.5, "max_attempts": 3},
    }
    return IcpConfig.model_validate({"sources": {"crm": settings | crm}})


@pytest.fixture
def hub() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(portal(), token=TOKEN) as server:
        yield server


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


def test_first_load_maps_companies_contacts_deals_and_owners(
    hub: FakeHubSpot, tmp_path: Path, warehouse: Path
) -> None:
    config = hubspot_config(hub.url, properties={"accounts": ["icp_segment"]})
    stats = load_raw(config, tmp_path / "no_drop", warehouse, ENV)

    accounts = raw_frame(warehouse, "accounts", "account_id")
    assert list(accounts.index) == ["9001", "9002", "9003", "9004", "9005"]
    assert accounts.loc["9003", "employee_count"] == "30"
    assert accounts.loc["9003", "annual_revenue"] == "3000000"
    assert accounts.loc["9003", "owner_id"] == "101"
    assert accounts.loc["9003", "updated_at"] == "2026-10-03T12:00:00.000Z"
    assert accounts.loc["9003", "icp_segment"] == "enterprise", "custom properties are kept as raw columns"
    assert set(accounts["_source_file"]) == {"hubspot:companies"}
    assert (accounts["_raw_key"] == accounts.index).all()
    assert stats["accounts"].rows_sent == 5

    contacts = raw_frame(warehouse, "contacts", "contact_id")
    assert contacts["account_id"].to_dict() == {"701": "9001", "702": "9002", "704": "9004"}
    assert contacts.loc["702", "title"] == "VP Sales"

    deals = raw_frame(warehouse, "opportunities", "opportunity_id")
    assert deals["stage"].to_dict() == {
        "801": "Closed Won",
        "802": "closed won",
        "803": "closed lost",
        "804": "Demo",
    }
    assert deals["closed_at"].isna().to_dict() == {"801": False, "802": False, "803": False, "804": True}
    assert deals.loc["804", "dealstage"] == "demo", "the stage id stays in raw beside the mapped name"
    assert deals.loc["801", "account_id"] == "9001"

    owners = raw_frame(warehouse, "owners", "owner_id")
    assert owners[["name", "active"]].to_dict("index") == {
        "101": {"name": "Ana Lopez", "active": "true"},
        "102": {"name": "Bo Chen", "active": "false"},
    }
    searches = hub.seen("POST", "/crm/v3/objects/companies/search")
    assert [r.body.get("after") for r in searches] == [None, "2", "4"], "five companies, two per page"
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in hub.requests)


def test_requests_without_the_token_are_refused_and_the_load_says_why(
    hub: FakeHubSpot, tmp_path: Path
) -> None:
    anonymous = requests.post(f"{hub.url}/crm/v3/objects/companies/search", json={}, timeout=5)
    assert anonymous.status_code == 401 and anonymous.json()["category"] == "INVALID_AUTHENTICATION"

    with pytest.raises(Exception) as failed:
        load_raw(
            hubspot_config(hub.url), tmp_path / "drop", tmp_path / "w.duckdb", {"ICP_HUBSPOT_TOKEN": "wrong"}
        )
    message = str(icp_error(failed.value))
    assert message.startswith("hubspot: POST /crm/v3/objects/companies/search: HTTP 401, not authorized")
    assert "ICP_HUBSPOT_TOKEN" in message and "wrong" not in message

    with pytest.raises(IcpConfigError, match="environment variable ICP_HUBSPOT_TOKEN is not set"):
        load_raw(hubspot_config(hub.url), tmp_path / "drop", tmp_path / "w.duckdb", {})


def test_second_run_fetches_only_what_changed(hub: FakeHubSpot, tmp_path: Path, warehouse: Path) -> None:
    drop = tmp_path / "no_drop"
    load_raw(hubspot_config(hub.url), drop, warehouse, ENV)
    before = raw_frame(warehouse, "accounts", "account_id")
    first_requests = len(hub.requests)

    hub.modify("companies", "9002", numberofemployees="250")
    hub.modify("deals", "804", dealstage=stage_id("Closed Won"), closedate="2026-10-30T00:00:00.000Z")
    stats = load_raw(hubspot_config(hub.url), drop, warehouse, ENV)

    second = hub.requests[first_requests:]
    company_search = [r.body for r in second if r.path == "/crm/v3/objects/companies/search"]
    assert len(company_search) == 1
    (gte,) = company_search[0]["filterGroups"][0]["filters"]
    assert gte["operator"] == "GTE" and gte["value"] == "1791201600000", (
        "cursor = newest company, 2026-10-05 12:00Z"
    )
    assert stats["accounts"].rows_sent == 1 and stats["opportunities"].rows_sent == 1
    assert stats["contacts"].rows_sent == 0
    after = raw_frame(warehouse, "accounts", "account_id")
    assert after.loc["9002", "employee_count"] == "250"
    unchanged = after.index != "9002"
    assert (after.loc[unchanged, "_loaded_at"] == before.loc[unchanged, "_loaded_at"]).all()
    deal = raw_frame(warehouse, "opportunities", "opportunity_id").loc["804"]
    assert deal["stage"] == "Closed Won" and deal["closed_at"] == "2026-10-30T00:00:00.000Z"

    quiet = load_raw(hubspot_config(hub.url), drop, warehouse, ENV)
    assert {t: quiet[t].rows_sent for t in ("accounts", "contacts", "opportunities")} == {
        "accounts": 0,
        "contacts": 0,
        "opportunities": 0,
    }


def test_rate_limit_waits_as_long_as_retry_after_says(
    hub: FakeHubSpot, tmp_path: Path, warehouse: Path
) -> None:
    hub.fail_next("POST", "/crm/v3/objects/contacts/search", 429, {"status": "error"}, {"Retry-After": "7"})
    waits: list[float] = []
    stats = load_raw(hubspot_config(hub.url), tmp_path / "drop", warehouse, ENV, waits.append)
    assert waits == [7.0]
    assert stats["contacts"].rows_sent == 3
    assert len(hub.seen("POST", "/crm/v3/objects/contacts/search")) == 3, "the refused page was asked again"


def test_server_error_is_retried_with_backoff(hub: FakeHubSpot, tmp_path: Path, warehouse: Path) -> None:
    hub.fail_next("POST", "/crm/v3/objects/deals/search", 500, times=2)
    waits: list[float] = []
    stats = load_raw(hubspot_config(hub.url), tmp_path / "drop", warehouse, ENV, waits.append)
    assert waits == [0.5, 1.0], "exponential backoff from retry.backoff_s"
    assert stats["opportunities"].rows_sent == 4


def test_persistent_errors_end_in_one_line_and_leave_raw_unchanged(
    hub: FakeHubSpot, tmp_path: Path, warehouse: Path
) -> None:
    drop = tmp_path / "drop"
    load_raw(hubspot_config(hub.url), drop, warehouse, ENV)
    hub.modify("companies", "9001", name="Renamed Inc")

    hub.fail_next("POST", "/crm/v3/objects/deals/search", 503, times=3)
    with pytest.raises(Exception) as failed:
        load_raw(hubspot_config(hub.url), drop, warehouse, ENV)
    assert str(icp_error(failed.value)).startswith(
        "hubspot: POST /crm/v3/objects/deals/search: HTTP 503, server error after 3 attempt(s)"
    )

    hub.modify("deals", "801", amount="1")
    hub.fail_next("POST", "/crm/v3/objects/deals/search", 200, b'{"total": 1, "results": [{"id": ')
    with pytest.raises(Exception) as malformed:
        load_raw(hubspot_config(hub.url), drop, warehouse, ENV)
    assert isinstance(icp_error(malformed.value), IcpInputError)
    assert "hubspot: POST /crm/v3/objects/deals/search: returned invalid JSON" in str(
        icp_error(malformed.value)
    )
    assert raw_frame(warehouse, "accounts", "account_id").loc["9001", "name"] == "Company 1", (
        "companies were read before the failure, but nothing is written"
    )

    stats = load_raw(hubspot_config(hub.url), drop, warehouse, ENV)
    assert stats["accounts"].rows_sent == 1, "the cursor did not move on the failed runs"
    assert raw_frame(warehouse, "accounts", "account_id").loc["9001", "name"] == "Renamed Inc"


def test_retry_after_longer_than_the_cap_fails_at_once(hub: FakeHubSpot, tmp_path: Path) -> None:
    hub.fail_next(
        "POST", "/crm/v3/objects/companies/search", 429, {"status": "error"}, {"Retry-After": "3600"}
    )
    waits: list[float] = []
    config = hubspot_config(hub.url, retry={"max_retry_after_s": 60})
    with pytest.raises(Exception) as failed:
        load_raw(config, tmp_path / "drop", tmp_path / "w.duckdb", ENV, waits.append)
    assert "asks to wait 3600 s, more than retry.max_retry_after_s (60 s)" in str(icp_error(failed.value))
    assert waits == []


def test_search_restarts_past_the_result_cap_without_losing_or_repeating(
    tmp_path: Path, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubspot, "SEARCH_RESULT_CAP", 4)
    data = HubSpotData()
    stamps = ["01", "02", "03", "04", "04", "05", "06", "07", "08"]
    for n, day in enumerate(stamps, start=1):
        data.add(
            "companies", f"{n}", {"name": f"C{n}", "hs_lastmodifieddate": f"2026-09-{day}T00:00:00.000Z"}
        )
    with FakeHubSpot(data, token=TOKEN, result_cap=4) as hub:
        config = hubspot_config(hub.url)
        stats = load_raw(config, tmp_path / "drop", warehouse, ENV)
        searches = [r.body for r in hub.seen("POST", "/crm/v3/objects/companies/search")]
    assert sorted(raw_frame(warehouse, "accounts", "account_id").index, key=int) == [
        str(n) for n in range(1, 10)
    ]
    assert stats["accounts"].rows_sent == 9
    windows = [
        s["filterGroups"][0]["filters"][0]["value"]
        for s in searches
        if s["filterGroups"] and "after" not in s
    ]
    assert len(windows) >= 2, "the 10,000-result cap (4 here) forces new windows from the newest timestamp"


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (DealStage("Closed Won", True, 1.0), "Closed Won"),
        (DealStage("Signed", True, 1.0), "Signed"),
        (DealStage("Won!", True, 1.0), "signed"),
        (DealStage("Closed Won", True, 0.0), "closed lost"),
        (DealStage("Negotiation", False, 0.8), "Negotiation"),
    ],
)
def test_stage_names_follow_the_configured_mapping(stage: DealStage, expected: str) -> None:
    mapping = StageMapping(won=("signed", "closed won"), lost=("closed lost",))
    assert stage_name(stage, mapping) == expected


def test_unreachable_server_is_retried_then_named(tmp_path: Path) -> None:
    with FakeHubSpot(portal(), token=TOKEN) as gone:
        url = gone.url
    waits: list[float] = []
    with pytest.raises(Exception) as failed:
        load_raw(hubspot_config(url), tmp_path / "drop", tmp_path / "w.duckdb", ENV, waits.append)
    assert str(icp_error(failed.value)) == (
        "hubspot: POST /crm/v3/objects/companies/search: connection failed (server unreachable or connection dropped)"
    )
    assert waits == [0.5, 1.0]
