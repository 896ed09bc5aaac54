"""Learning from what was true when each deal was created: history, event traits, the backtest."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from icp_pipeline.config import EventTraitConfig, IcpConfig, ProfileConfig
from icp_pipeline.contracts.history import ACCOUNT_HISTORY, record_account_history
from icp_pipeline.demo.generate import LEAK_TECHNOLOGY, DemoSpec
from icp_pipeline.profile.derive import MUST_HAVE, NICE_TO_HAVE, derive_profile, trait_label
from icp_pipeline.profile.learn import Evidence
from icp_pipeline.profile.timeline import Timeline, seconds_of
from icp_pipeline.profile.traits import TraitInputs
from icp_pipeline.scoring.score import fit_and_tiers, score_accounts
from icp_pipeline.scoring.validation import BACKTEST, HOLDOUT, auc, validate_scores
from icp_pipeline_tests.staged_demo import load_evidence, staged_demo

AS_OF = dt.date(2026, 11, 1)
UTC = "UTC"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Evidence, dict]:
    drop, warehouse, truth = staged_demo(tmp_path_factory.mktemp("pit"), DemoSpec(accounts=5000, seed=7))
    return drop, load_evidence(warehouse), truth


def learn(evidence: Evidence, config: IcpConfig, as_of: dt.date = AS_OF, point_in_time: bool = True):
    traits = evidence.traits(config, as_of)
    deal_traits = evidence.deal_traits(config) if point_in_time else None
    return derive_profile(
        traits, evidence.opportunities, evidence.subscriptions, config, as_of, deal_traits=deal_traits
    )


def test_the_leak_gets_nothing_and_the_event_trait_is_found_and_named(demo) -> None:
    drop, evidence, truth = demo
    config = IcpConfig()
    profile, design = learn(evidence, config)
    evidence_table = profile.evidence.set_index(["trait", "value"])
    leak = ("technology", LEAK_TECHNOLOGY)
    assert truth["point_in_time"]["leak"]["accounts"] > 200
    if leak in evidence_table.index:
        assert evidence_table.loc[leak, "points"] == 0
        assert evidence_table.loc[leak, "verdict"] not in (MUST_HAVE, NICE_TO_HAVE)
    points = profile.model.points.set_index(["trait", "value"])["points"]
    assert points.get(leak, 0) == 0
    event = truth["point_in_time"]["event_trait"]
    key = (event["trait"], event["value"])
    assert evidence_table.loc[key, "points"] > 0
    assert evidence_table.loc[key, "verdict"] in (MUST_HAVE, NICE_TO_HAVE)
    scores = score_accounts(profile, design, AS_OF)
    named = scores["reasons"].astype("str").str.contains(event["value"], regex=False)
    assert named.sum() > 100
    assert trait_label(*key) == "CMO left in the last 12 months"
    # Read as of the as-of date (today's traits for every deal), the leak is credited: what the
    # point-in-time description prevents.
    leaky, _ = learn(evidence, config, point_in_time=False)
    leaky_table = leaky.evidence.set_index(["trait", "value"])
    assert leaky_table.loc[leak, "points"] > 0 and leaky_table.loc[leak, "verdict"] == MUST_HAVE


def test_as_of_scores_rank_the_deals_created_later_like_the_planted_probabilities(demo) -> None:
    drop, evidence, _ = demo
    config = IcpConfig()
    profile, design = learn(evidence, config)
    scores = fit_and_tiers(profile, design)
    future = pd.read_parquet(drop / "truth" / "future_opportunities.parquet")
    judged = future.join(scores, on="account_id", how="inner")
    assert len(judged) > 1000
    won = judged["won"].to_numpy(dtype=bool)
    planted = auc(judged["win_probability"].to_numpy(), won)
    learned = auc(judged["fit_score"].to_numpy(dtype=float), won)
    assert planted > 0.7
    assert abs(learned - planted) <= 0.05, (learned, planted)


def test_forward_backtest_is_reported_beside_the_holdout(demo) -> None:
    _, evidence, _ = demo
    metrics = validate_scores(evidence, IcpConfig(), AS_OF)
    assert set(metrics["method"]) == {BACKTEST, HOLDOUT}
    backtest = metrics[metrics["method"] == BACKTEST].set_index("metric")
    assert (backtest["split_date"] == dt.date(2026, 5, 1)).all()
    assert 0.65 < backtest.loc["auc", "value"] < 0.9
    assert backtest.loc["auc_low", "value"] < backtest.loc["auc", "value"] < backtest.loc["auc_high", "value"]
    assert backtest.loc["tier_a_lift", "value"] > 1.5
    assert backtest.loc["test_deals", "value"] > 500
    assert "created after it" in backtest.loc["status", "note"]


def test_the_demo_deals_are_mostly_described_without_fallback_and_the_count_is_kept(demo) -> None:
    _, evidence, _ = demo
    profile, _ = learn(evidence, IcpConfig())
    counts = profile.point_in_time
    assert counts["deals"] == profile.closed_deals > 1000
    # Firmographic observations reach back before every deal; the CRM's history starts at each
    # record's last change, so deals before it are described by it and counted.
    assert counts["later_firmographics"] < 0.05 * counts["deals"]
    assert 0 < counts["later_crm_version"] < counts["deals"]
    assert any("point in time" in note for note in profile.notes)


def test_without_any_account_history_learning_runs_and_counts_every_deal(demo) -> None:
    _, evidence, _ = demo
    assert evidence.account_history is not None and len(evidence.account_history) == len(evidence.accounts)
    bare = replace(evidence, account_history=None)
    profile, _ = learn(bare, IcpConfig())
    counts = profile.point_in_time
    assert counts["later_crm_version"] == counts["deals"] == profile.closed_deals > 1000
    assert any(
        f"{counts['deals']:,} by a CRM version recorded after the deal" in note for note in profile.notes
    )
    assert profile.items(MUST_HAVE)["trait"].isin(["industry", "employee_band"]).sum() == 2


def test_lookback_limits_learning_to_recent_deals(demo) -> None:
    _, evidence, _ = demo
    full, _ = learn(evidence, IcpConfig())
    recent, _ = learn(evidence, IcpConfig(icp=ProfileConfig(lookback_months=6)))
    assert 0 < recent.closed_deals < full.closed_deals / 2


# ----------------------------------------------------------------------------- small frames


def _accounts(employees: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": pd.Series(["A1", "A2"], dtype="str"),
            "industry": pd.Series(["Software", "Retail"], dtype="str"),
            "employee_count": pd.array([employees, 30], dtype="Int64"),
            "annual_revenue": pd.array([None, None], dtype="Float64"),
            "country": pd.Series(["US", "DE"], dtype="str"),
            "segment": pd.Series(["enterprise", "smb"], dtype="str"),
            "created_at": pd.to_datetime(["2023-01-01", "2023-01-01"], utc=True),
            "updated_at": pd.to_datetime(["2024-01-01", "2024-01-01"], utc=True),
        }
    )


def _deals() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "opportunity_id": pd.Series(["O1", "O2"], dtype="str"),
            "account_id": pd.Series(["A1", "A2"], dtype="str"),
            "created_at": pd.to_datetime(["2024-06-01", "2024-06-01"], utc=True),
        }
    )


def _history(tmp_path: Path, nights: list[tuple[pd.DataFrame, dt.date]], config: IcpConfig) -> pd.DataFrame:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("create schema if not exists staging")
        for accounts, night in nights:
            con.register("frame", accounts)
            con.execute("create or replace table staging.accounts as select * from frame")
            con.unregister("frame")
            record_account_history(con, config, night)
        return con.sql(f"select * from staging.{ACCOUNT_HISTORY} order by account_id, valid_from").df()


def test_a_later_change_does_not_reach_an_earlier_deal_and_scoring_today_uses_it(tmp_path: Path) -> None:
    config = IcpConfig()
    before = _accounts(employees=150)
    after = _accounts(employees=5000).assign(
        updated_at=pd.to_datetime(["2025-03-01", "2024-01-01"], utc=True)
    )
    history = _history(tmp_path, [(before, dt.date(2024, 12, 1)), (after, dt.date(2025, 3, 2))], config)
    assert history.groupby("account_id").size().to_dict() == {"A1": 2, "A2": 1}  # A2 did not change
    first = history[history["account_id"] == "A1"].iloc[0]
    assert first["employee_count"] == 150 and first["valid_to"] == pd.Timestamp("2025-03-01", tz=UTC)
    inputs = TraitInputs.prepare(after, history=history)
    deal = inputs.deal_traits(_deals())
    assert deal.traits.accounts["employee_band"].astype("str").tolist()[0] == "51-200"
    assert not deal.later_crm.any()
    today = inputs.traits(dt.date(2025, 6, 1)).accounts.set_index("account_id")
    assert today.loc["A1", "employee_band"] == "1001-5000"
    # A night that changes nothing adds no version.
    again = _history(tmp_path, [(after, dt.date(2025, 3, 3))], config)
    assert len(again) == len(history)


def test_without_history_the_run_uses_todays_values_and_counts_every_deal(tmp_path: Path) -> None:
    inputs = TraitInputs.prepare(_accounts(employees=5000))
    deal = inputs.deal_traits(_deals())
    assert deal.later_crm.all()
    assert deal.fallback_counts()["later_crm_version"] == 2
    assert deal.traits.accounts["employee_band"].astype("str").tolist()[0] == "1001-5000"


def test_custom_columns_without_history_are_unknown_for_deals_unless_declared_static() -> None:
    accounts = _accounts(employees=100)
    unsafe = TraitInputs.prepare(accounts, custom_columns=("segment",)).deal_traits(_deals())
    assert set(unsafe.traits.accounts["segment"].astype("str")) == {"unknown"}
    static = TraitInputs.prepare(accounts, custom_columns=("segment",), static_columns=("segment",))
    assert static.deal_traits(_deals()).traits.accounts["segment"].astype("str").tolist() == [
        "enterprise",
        "smb",
    ]
    # Scoring today always uses today's value.
    assert TraitInputs.prepare(accounts, custom_columns=("segment",)).traits(AS_OF).accounts[
        "segment"
    ].astype("str").tolist() == ["enterprise", "smb"]


def test_static_columns_must_be_custom_columns() -> None:
    with pytest.raises(ValueError, match="not in icp.custom_columns"):
        ProfileConfig(custom_columns=("segment",), static_columns=("region",))


def test_firmographics_and_events_are_taken_as_of_each_deal() -> None:
    accounts = _accounts(employees=None).assign(industry=pd.Series([None, None], dtype="str"))
    firmographics = pd.DataFrame(
        {
            "account_id": pd.Series(["A1", "A1", "A2"], dtype="str"),
            "observed_at": pd.to_datetime(["2024-01-01", "2024-09-01", "2024-09-01"], utc=True),
            "industry": pd.Series(["Software", "Fintech", "Retail"], dtype="str"),
            "employee_count": pd.array([100, 160, 40], dtype="Int64"),
            "annual_revenue": pd.array([None, None, None], dtype="Float64"),
            "country": pd.Series(["US", "US", "DE"], dtype="str"),
            "founded_year": pd.array([2010, 2010, 2015], dtype="Int64"),
            "tech_stack": pd.Series(["Snowflake", "Snowflake;Gainsight", "AWS"], dtype="str"),
        }
    )
    leadership = pd.DataFrame(
        {
            "account_id": pd.Series(["A1", "A1", "A2"], dtype="str"),
            "title": pd.Series(["CMO", "VP Sales", "Chief Marketing Officer"], dtype="str"),
            "change_type": pd.Series(["left", "joined", "left"], dtype="str"),
            "effective_at": pd.to_datetime(["2024-02-01", "2024-08-01", "2022-01-01"], utc=True),
        }
    )
    inputs = TraitInputs.prepare(
        accounts, firmographics, leadership_changes=leadership, events=EventTraitConfig()
    )
    deal = inputs.deal_traits(_deals())
    frame = deal.traits.accounts.set_index("account_id")
    assert frame.loc["A1", "industry"] == "Software"  # the January observation, not September's
    assert frame.loc["A2", "industry"] == "Retail"  # none before the deal: the oldest, counted
    assert deal.later_firmographics.tolist() == [False, True]
    technologies = deal.traits.technologies
    assert technologies["technology"].astype("str").tolist() == ["Snowflake"]  # never from later
    assert frame.loc["A1", "leadership_change"] == "CMO left in the last 12 months"
    assert frame.loc["A2", "leadership_change"] == "no executive change in the last 12 months"
    today = inputs.traits(dt.date(2024, 12, 1)).accounts.set_index("account_id")
    assert today.loc["A1", "industry"] == "Fintech"
    assert today.loc["A1", "leadership_change"] == "VP Sales joined in the last 12 months"
    assert today.loc["A1", "headcount_trend"] == "unknown"  # no observation 12 months before
    later = inputs.traits(dt.date(2025, 6, 1)).accounts.set_index("account_id")
    assert later.loc["A1", "headcount_trend"] == "headcount up 20% or more in 12 months"


def test_timeline_answers_per_query_like_a_filter_and_sort() -> None:
    rng = np.random.default_rng(5)
    rows, accounts = 2000, 50
    account = rng.integers(0, accounts, rows)
    moments = pd.Series(
        pd.Timestamp("2024-01-01", tz=UTC) + pd.to_timedelta(rng.integers(0, 400, rows), unit="D"),
        dtype="datetime64[us, UTC]",
    )
    line = Timeline.of(account, seconds_of(moments))
    queries = rng.integers(0, accounts + 3, 300)
    at = seconds_of(
        pd.Series(pd.Timestamp("2024-01-01", tz=UTC) + pd.to_timedelta(rng.integers(-20, 420, 300), unit="D"))
    )
    frame = pd.DataFrame({"account": account, "seconds": seconds_of(moments), "row": np.arange(rows)})
    last, counts = line.last_at(queries, at), line.count_within(queries, at - 30 * 86400, at)
    rank = rng.integers(0, 5, rows)
    best = line.running_best(rank)
    for i, (a, t) in enumerate(zip(queries, at, strict=True)):
        mine = frame[(frame["account"] == a) & (frame["seconds"] <= t)].sort_values(["seconds", "row"])
        assert last[i] == (mine["row"].iloc[-1] if len(mine) else -1)
        assert counts[i] == int((mine["seconds"] > t - 30 * 86400).sum())
        at_key = line.positions_at(np.array([a]), np.array([t]))[0]
        if len(mine):
            expected = (
                mine.assign(rank=rank[mine["row"]]).sort_values(["rank", "seconds", "row"])["row"].iloc[-1]
            )
            assert best[at_key] == expected
        else:
            assert at_key == -1
    assert (last >= 0).sum() > 100 and (last == -1).sum() > 5


def test_deals_are_found_by_index_label_and_by_id_when_the_labels_are_of_another_frame() -> None:
    inputs = TraitInputs.prepare(_accounts(employees=100))
    deals = _deals().set_axis([10, 20])
    described = inputs.deal_traits(deals)
    assert described.rows_of(deals).tolist() == [0, 1]
    other = deals.iloc[::-1].reset_index(drop=True)  # labels 0, 1: not the ones described
    assert described.rows_of(other).tolist() == [1, 0]
    swapped = deals.assign(opportunity_id=pd.Series(["O2", "O1"], dtype="str", index=deals.index))
    assert described.rows_of(swapped).tolist() == [1, 0]  # same labels, other deals: by id
