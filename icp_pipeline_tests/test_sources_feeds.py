"""REST feeds through dlt's rest_api against a provider-shaped server, and API sources wired through Dagster.

The feed pages with a cursor, nests records under `data.companies` and wants an API key header;
icp.yaml maps its fields onto firmographics. The wiring test runs the raw and staging assets with
HubSpot for the CRM and the feed for firmographics, and checks staging treats them like files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from icp_pipeline.config import IcpConfig
from icp_pipeline.errors import IcpInputError
from icp_pipeline_tests.conftest import AS_OF
from icp_pipeline_tests.fake_crm import (
    FakeFeed,
    FakeHubSpot,
    HubSpotData,
    deal_pipeline,
    icp_error,
    load_raw,
    raw_frame,
    stage_id,
)
from icp_pipeline_tests.staged_demo import materialize_nightly

KEY = "feed-secret-123"
FIELDS = {
    "domain": "company.domain",
    "company_name": "company.name",
    "employee_count": "headcount",
    "annual_revenue": "revenue_usd",
    "country": "hq.country_code",
    "founded_year": "founded",
    "tech_stack": "technologies",
    "observed_at": "as_of",
}


def provider_companies(count: int = 5) -> list[dict[str, Any]]:
    return [
        {
            "id": f"co_{n}",
            "company": {"name": f"Company {n}", "domain": f"https://www.Company{n}.com/"},
            "industry": "Software",
            "headcount": 40 * n,
            "revenue_usd": 1250000 * n,
            "hq": {"country_code": "US", "city": "Austin"},
            "founded": 2010 + n,
            "technologies": ["AWS", "Snowflake"][: 1 + n % 2],
            "as_of": "2026-10-20T00:00:00Z",
            "linkedin_url": f"https://linkedin.com/company/company{n}",
        }
        for n in range(1, count + 1)
    ]


def feed_settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "path": "v2/companies",
        "auth": "api_key",
        "token_env": "ICP_FIRMO_KEY",
        "api_key_name": "X-Api-Key",
        "paginator": {"type": "cursor", "cursor_path": "meta.next_cursor", "cursor_param": "cursor"},
        "data_selector": "data.companies",
        "fields": FIELDS,
        "retry": {"backoff_s": 0.5, "max_attempts": 3},
    } | overrides


def feed_config(url: str, **overrides: Any) -> IcpConfig:
    return IcpConfig.model_validate(
        {"sources": {"feeds": {"firmographics": feed_settings(url, **overrides)}}}
    )


@pytest.fixture
def feed() -> Iterator[FakeFeed]:
    with FakeFeed(provider_companies(), api_key=KEY, page_size=2) as server:
        yield server


@pytest.fixture
def drop(minimal_drop: Path) -> Path:
    return minimal_drop


def test_provider_records_are_paged_and_mapped_onto_firmographics(
    feed: FakeFeed, drop: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    stats = load_raw(feed_config(feed.url), drop, warehouse, {"ICP_FIRMO_KEY": KEY})
    rows = raw_frame(warehouse, "firmographics", "id")
    assert len(rows) == 5 and stats["firmographics"].rows_sent == 5
    first = rows.loc["co_1"]
    assert (first["domain"], first["company_name"], first["employee_count"], first["tech_stack"]) == (
        "https://www.Company1.com/",
        "Company 1",
        "40",
        "AWS;Snowflake",
    )
    assert (first["country"], first["founded_year"], first["observed_at"]) == (
        "US",
        "2011",
        "2026-10-20T00:00:00Z",
    )
    assert first["industry"] == "Software", "a provider field named like a canonical column fills it"
    assert first["linkedin_url"].startswith("https://linkedin.com"), "unmapped fields are kept"
    assert set(rows["_source_file"]) == {"feed:firmographics"}
    assert set(rows["_raw_key"]) == {f"https://www.Company{n}.com/|2026-10-20T00:00:00Z" for n in range(1, 6)}
    assert [r.query.get("cursor") for r in feed.requests] == [None, ["2"], ["4"]]
    assert all(r.headers.get("x-api-key") == KEY for r in feed.requests)
    assert len(raw_frame(warehouse, "accounts", "account_id")) == 3, "the CRM still comes from the drop"


def test_wrong_key_fails_with_the_variable_name_not_the_key(
    feed: FakeFeed, drop: Path, tmp_path: Path
) -> None:
    with pytest.raises(Exception) as failed:
        load_raw(feed_config(feed.url), drop, tmp_path / "w.duckdb", {"ICP_FIRMO_KEY": "wrong-key"})
    message = str(icp_error(failed.value))
    assert message.startswith("feed firmographics: GET /v2/companies: HTTP 401, not authorized")
    assert "ICP_FIRMO_KEY" in message and "wrong-key" not in message


def test_rate_limit_is_honoured_through_rest_api(feed: FakeFeed, drop: Path, tmp_path: Path) -> None:
    feed.fail_next("GET", "/v2/companies", 429, {"error": {"type": "rate_limit"}}, {"Retry-After": "3"})
    waits: list[float] = []
    stats = load_raw(feed_config(feed.url), drop, tmp_path / "w.duckdb", {"ICP_FIRMO_KEY": KEY}, waits.append)
    assert waits == [3.0]
    assert stats["firmographics"].rows_sent == 5


def test_malformed_page_fails_clearly_and_writes_nothing(feed: FakeFeed, drop: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    load_raw(IcpConfig(), drop, warehouse, {})
    accounts = raw_frame(warehouse, "accounts", "account_id")
    feed.fail_next("GET", "/v2/companies", 200, b'{"data": {"companies": [{"id": "co_3"', skip=1)
    with pytest.raises(Exception) as failed:
        load_raw(feed_config(feed.url), drop, warehouse, {"ICP_FIRMO_KEY": KEY})
    error = icp_error(failed.value)
    assert isinstance(error, IcpInputError)
    assert str(error).startswith("feed firmographics: GET /v2/companies: returned invalid JSON")
    assert len(feed.requests) == 2, "the first page was read, the second was broken"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = {
            r[0]
            for r in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'raw'"
            ).fetchall()
        }
    assert "firmographics" not in tables, "the good first page was not written either"
    assert raw_frame(warehouse, "accounts", "account_id").equals(accounts)


def test_unmapped_required_column_names_the_setting(feed: FakeFeed, drop: Path, tmp_path: Path) -> None:
    fields = {k: v for k, v in FIELDS.items() if k != "observed_at"}
    with pytest.raises(Exception) as failed:
        load_raw(feed_config(feed.url, fields=fields), drop, tmp_path / "w.duckdb", {"ICP_FIRMO_KEY": KEY})
    assert str(icp_error(failed.value)) == (
        "feed firmographics: no provider field for required column 'observed_at'; "
        "map it under sources.feeds.firmographics.fields"
    )


def recent_portal() -> HubSpotData:
    """Two companies matching the feed's domains, deals closed won and lost, all modified recently."""
    data = HubSpotData()
    for n in (1, 2):
        data.add(
            "companies",
            f"50{n}",
            {
                "name": f"Company {n}",
                "domain": f"company{n}.com",
                "industry": "Software",
                "numberofemployees": "120",
                "country": "US",
                "createdate": "2024-03-01T00:00:00.000Z",
                "hs_lastmodifieddate": f"2026-10-2{n}T10:00:00.000Z",
            },
        )
    data.pipelines = [deal_pipeline(["Closed Won", "Closed Lost"], ["closed won"], ["closed lost"])]
    for n, stage in ((1, "Closed Won"), (2, "Closed Lost")):
        data.add(
            "deals",
            f"70{n}",
            {
                "amount": "9000",
                "dealstage": stage_id(stage),
                "createdate": "2026-01-10T00:00:00.000Z",
                "closedate": "2026-05-01T00:00:00.000Z",
                "hs_lastmodifieddate": f"2026-10-2{n}T11:00:00.000Z",
            },
            [f"50{n}"],
        )
    return data


def test_hubspot_and_a_feed_stage_like_files_through_dagster(
    feed: FakeFeed, tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeHubSpot(recent_portal(), token="pat-wiring") as hub:
        settings = {
            "sources": {
                "crm": {"kind": "hubspot", "base_url": hub.url},
                "feeds": {"firmographics": feed_settings(feed.url)},
            }
        }
        (tmp_path / "icp.yaml").write_text(yaml.safe_dump(settings))
        monkeypatch.setenv("ICP_HUBSPOT_TOKEN", "pat-wiring")
        monkeypatch.setenv("ICP_FIRMO_KEY", KEY)
        warehouse = tmp_path / "warehouse.duckdb"
        result = materialize_nightly(tmp_path / "no_drop", warehouse, AS_OF, 'key:"raw/*" or key:"staging/*"')
    files = {
        m.asset_key.path[-1]: m.metadata["file"].value
        for m in result.asset_materializations_for_node("raw_file_drop")
        if "file" in m.metadata
    }
    assert files["accounts"] == "hubspot:companies" and files["firmographics"] == "feed:firmographics"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        staged = con.execute("select account_id, domain from staging.accounts order by 1").fetchall()
        deals = con.execute("select opportunity_id, stage from staging.opportunities order by 1").fetchall()
        matched = con.execute(
            "select account_id, match_method from staging.firmographics where account_id is not null order by 1"
        ).fetchall()
        quarantined = con.execute("select count(*) from icp.quarantine").fetchall()[0][0]
    assert staged == [("501", "company1.com"), ("502", "company2.com")]
    assert deals == [("701", "Closed Won"), ("702", "Closed Lost")]
    assert matched == [("501", "domain"), ("502", "domain")], "feed rows match HubSpot accounts by domain"
    assert quarantined == 0
