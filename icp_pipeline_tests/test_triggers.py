"""Triggers and alerts on planted demo data: found, not invented, never alerted twice."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from icp_pipeline.config import IcpConfig
from icp_pipeline.demo.generate import DemoSpec
from icp_pipeline.triggers.detect import (
    detect_all,
    headcount_events,
    latest_observations,
    tech_change_events,
    title_level,
)
from icp_pipeline.triggers.net_new import model_from_profile_rows, net_new_accounts
from icp_pipeline_tests.staged_demo import materialize_nightly, staged_demo

AS_OF = dt.date(2026, 11, 1)
FEEDS = ("funding_rounds", "job_postings", "leadership_changes", "firmographics")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return staged_demo(tmp_path_factory.mktemp("triggers"), DemoSpec(accounts=3000, seed=5))


def read(warehouse: Path, sql: str, params: list | None = None) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).df()


def test_planted_triggers_are_found_and_few_are_invented(demo) -> None:
    _, warehouse, truth = demo
    feeds = {feed: read(warehouse, f"select * from staging.{feed}") for feed in FEEDS}
    events, skipped = detect_all(feeds, AS_OF, IcpConfig().triggers)
    assert skipped == []
    for trigger_type, planted in truth["triggers"].items():
        found = set(events.loc[events["trigger_type"] == trigger_type, "account_id"])
        planted = set(planted)
        assert planted, trigger_type
        assert len(found & planted) / len(planted) >= 0.95, trigger_type
        assert len(found - planted) <= 0.05 * max(len(found), 1), (trigger_type, sorted(found - planted)[:5])


def test_events_already_in_the_ledger_are_left_out_and_the_others_kept_as_they_were(demo) -> None:
    _, warehouse, _ = demo
    feeds = {feed: read(warehouse, f"select * from staging.{feed}") for feed in FEEDS}
    events, _ = detect_all(feeds, AS_OF, IcpConfig().triggers)
    known = pd.Index(events["event_id"].iloc[::2], dtype="str")
    rest, _ = detect_all(feeds, AS_OF, IcpConfig().triggers, known)
    expected = events[~events["event_id"].isin(set(known))].reset_index(drop=True)
    pd.testing.assert_frame_equal(rest, expected)
    assert set(rest["trigger_type"]) == set(events["trigger_type"]) and len(set(events["trigger_type"])) == 5
    everything, _ = detect_all(feeds, AS_OF, IcpConfig().triggers, pd.Index(events["event_id"], dtype="str"))
    assert everything.empty


@pytest.mark.parametrize("as_of", [AS_OF, AS_OF - dt.timedelta(days=75), AS_OF - dt.timedelta(days=200)])
def test_observations_kept_only_where_compared_give_the_events_all_observations_give(demo, as_of) -> None:
    _, warehouse, _ = demo
    firmographics = read(warehouse, "select * from staging.firmographics")
    defaults = IcpConfig().triggers
    config = defaults.model_copy(
        update={
            "headcount_growth": defaults.headcount_growth.model_copy(update={"window_days": 30}),
            "tech_change": defaults.tech_change.model_copy(update={"window_days": 90}),
        }
    )
    every = latest_observations(firmographics, as_of)
    compared = latest_observations(firmographics, as_of, compared_within_days=90)
    assert 0 < len(compared) < len(every)
    expected = []
    for detector in (headcount_events, tech_change_events):
        expected.append(detector(firmographics, as_of, config, observations=every))
        found = detector(firmographics, as_of, config, observations=compared)
        pd.testing.assert_frame_equal(found.reset_index(drop=True), expected[-1].reset_index(drop=True))
    # detect_all keeps what the wider of the two windows compares.
    events, _ = detect_all({"firmographics": firmographics}, as_of, config)
    assert sorted(events["event_id"]) == sorted(pd.concat(expected)["event_id"])


@pytest.mark.parametrize(
    ("title", "level"),
    [
        ("Chief Revenue Officer", "c_level"),
        ("CRO", "c_level"),
        ("VP Sales", "vp"),
        ("SVP, Marketing", "vp"),
        ("Vice President of Engineering", "vp"),
        ("Head of Data", "head"),
        ("Sales Manager", None),
        ("Account Executive", None),
        ("Data Analyst", None),
    ],
)
def test_titles_are_parsed_into_levels(title: str, level: str | None) -> None:
    parsed = title_level(pd.Series([title])).iloc[0]
    assert (parsed if pd.notna(parsed) else None) == level


def test_event_ids_are_stable_and_reruns_add_nothing(demo) -> None:
    drop, warehouse, _ = demo
    materialize_nightly(drop, warehouse, AS_OF.isoformat())
    events = read(warehouse, "select * from icp.trigger_events")
    alerts = read(warehouse, "select * from icp.alerts")
    assert len(events) > 0 and len(alerts) > 0
    materialize_nightly(drop, warehouse, AS_OF.isoformat())
    assert len(read(warehouse, "select * from icp.trigger_events")) == len(events)
    again = read(warehouse, "select * from icp.alerts")
    assert len(again) == len(alerts)
    assert not again.duplicated(subset=["event_id", "recipient", "channel"]).any()


def test_alerts_go_only_to_fitting_accounts_and_their_owners(demo) -> None:
    drop, warehouse, _ = demo
    materialize_nightly(drop, warehouse, AS_OF.isoformat())
    alerts = read(warehouse, "select * from icp.alerts")
    scores = read(
        warehouse, "select account_id, tier, disqualified from icp.account_scores where as_of = ?", [AS_OF]
    )
    joined = alerts.merge(scores, on="account_id")
    assert len(joined) == len(alerts)
    assert joined["tier"].isin(["A", "B"]).all() and not joined["disqualified"].any()
    accounts = read(warehouse, "select account_id, owner_id from staging.accounts")
    owners = read(warehouse, "select owner_id, active from staging.owners")
    expected = accounts.merge(owners, on="owner_id", how="left")
    expected["recipient"] = expected["owner_id"].where(
        expected["active"].fillna(False).astype(bool), "revops"
    )
    routed = alerts.merge(expected[["account_id", "recipient"]], on="account_id", suffixes=("", "_expected"))
    assert (routed["recipient"] == routed["recipient_expected"]).all()
    outbox = (warehouse.parent / "outbox" / "alerts.jsonl").read_text().splitlines()
    sent = alerts[alerts["status"] == "sent"]
    digests = sent[sent["digest"]].groupby(["recipient", "channel"]).ngroups
    assert len(outbox) == int((~sent["digest"]).sum()) + digests
    assert {json.loads(line)["alert_id"] for line in outbox if "alert_id" in json.loads(line)} <= set(
        sent["alert_id"]
    )


def test_backfill_of_an_earlier_date_adds_only_events_known_then(demo) -> None:
    drop, warehouse, _ = demo
    earlier = AS_OF - dt.timedelta(days=45)
    materialize_nightly(drop, warehouse, earlier.isoformat())
    added = read(warehouse, "select * from icp.trigger_events where as_of = ?", [earlier])
    assert len(added) > 0
    assert (
        pd.to_datetime(added["occurred_at"], utc=True)
        < pd.Timestamp(earlier, tz="UTC") + pd.Timedelta(days=1)
    ).all()


def test_net_new_companies_reach_the_tier_with_their_top_three_reasons() -> None:
    observed = pd.Timestamp("2026-10-01", tz="UTC")
    firmographics = pd.DataFrame(
        {
            "account_id": pd.Series([None, None, None, "A1", None], dtype="str"),
            "norm_domain": pd.Series(["fit.io", "fit.io", "meh.io", "crm.io", "far.io"], dtype="str"),
            "company_name": pd.Series(["Fit", "Fit", "Meh", "Crm", "Far"], dtype="str"),
            "observed_at": [observed - pd.Timedelta(days=30), observed, observed, observed, observed],
            "industry": pd.Series(["Retail", "Software", "Software", "Software", "Software"], dtype="str"),
            "employee_count": pd.array([20, 300, 20, 300, 300], dtype="Int64"),
            "annual_revenue": pd.array([None] * 5, dtype="Float64"),
            "country": pd.Series(["US", "US", "US", "US", "US"], dtype="str"),
            "founded_year": pd.array([None] * 5, dtype="Int64"),
            "tech_stack": pd.Series(["", "Snowflake;dbt", "", "Snowflake", "Snowflake"], dtype="str"),
        }
    )
    firmographics.loc[4, "observed_at"] = pd.Timestamp("2026-12-01", tz="UTC")  # after the as-of date
    rows = pd.DataFrame(
        {
            "section": ["model", "points", "points", "points", "points", "tier_cutoff", "tier_cutoff"],
            "trait": [None, "industry", "employee_band", "technology", "technology", None, None],
            "value": [None, "Software", "201-1000", "Snowflake", "dbt", "A", "B"],
            "points": [10, 12, 12, 10, 5, 45, 40],
        }
    )
    model, cutoffs = model_from_profile_rows(rows)
    found = net_new_accounts(firmographics, model, cutoffs, dt.date(2026, 11, 1), "B")
    # fit.io at its latest observation: 10 + 12 + 12 + 10 + 5 = 49 (tier A); meh.io scores 22; the
    # CRM account and the company observed after the as-of date are not net new.
    assert found["domain"].tolist() == ["fit.io"]
    assert found["fit_score"].tolist() == [49]
    assert found["tier"].tolist() == ["A"]
    assert found["top_positive"].tolist() == [
        "employee_band=201-1000 +12; industry=Software +12; technology=Snowflake +10"
    ]
    # An unknown founding date may add points, but it is never named as a reason.
    unknown_age = pd.DataFrame(
        {"section": ["points"], "trait": ["company_age_band"], "value": ["unknown"], "points": [20]}
    )
    model, cutoffs = model_from_profile_rows(pd.concat([rows, unknown_age], ignore_index=True))
    found = net_new_accounts(firmographics, model, cutoffs, dt.date(2026, 11, 1), "B")
    assert found["fit_score"].tolist()[0] == 69
    assert "unknown" not in found["top_positive"].iloc[0]
