"""The ICP learned from planted demo evidence: right traits, honest when there is none, explainable scores."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from icp_pipeline.config import Criterion, IcpConfig, ProfileConfig, WrittenIcp, contracts_dir
from icp_pipeline.contracts.spec import load_contracts
from icp_pipeline.contracts.staging import stage
from icp_pipeline.demo.generate import DemoSpec
from icp_pipeline.frames import positions
from icp_pipeline.profile.derive import HARD_NO, MUST_HAVE, derive_profile
from icp_pipeline.profile.learn import Evidence, read_evidence, run_evidence
from icp_pipeline.profile.outcomes import opportunity_outcomes
from icp_pipeline.profile.traits import ACCOUNT_POSITION
from icp_pipeline.scoring.score import fit_and_tiers, score_accounts, scored_deals
from icp_pipeline.scoring.validation import auc, holdout_validation
from icp_pipeline_tests.staged_demo import load_evidence, staged_demo

AS_OF = dt.date(2026, 11, 1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Evidence, dict]:
    drop, warehouse, truth = staged_demo(tmp_path_factory.mktemp("planted"), DemoSpec(accounts=4000, seed=11))
    return drop, load_evidence(warehouse), truth


@pytest.fixture(scope="module")
def null_icp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Evidence, dict]:
    # Benjamini-Hochberg at 5% lets about one null data set in twenty show a chance discovery;
    # seed 11 is such a one (Marketo, q=0.045), so the null check runs on seed 12.
    drop, warehouse, truth = staged_demo(
        tmp_path_factory.mktemp("null"), DemoSpec(accounts=4000, seed=12, planted_icp=False)
    )
    return drop, load_evidence(warehouse), truth


def learn(evidence: Evidence, config: IcpConfig | None = None, as_of: dt.date = AS_OF):
    config = config or IcpConfig()
    traits = evidence.traits(config, as_of)
    return derive_profile(
        traits,
        evidence.opportunities,
        evidence.subscriptions,
        config,
        as_of,
        deal_traits=evidence.deal_traits(config),
    )


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(frame[["trait", "value"]].itertuples(index=False, name=None))


def test_planted_traits_are_derived_and_nothing_unrelated_is_a_must_have(planted) -> None:
    _, evidence, truth = planted
    profile, _ = learn(evidence)
    must = pairs(profile.items(MUST_HAVE))
    hard = pairs(profile.items(HARD_NO))
    event = truth["point_in_time"]["event_trait"]  # the CMO departure before the deal
    planted_must = {(t["trait"], t["value"]) for t in truth["must_have"]} | {(event["trait"], event["value"])}
    planted_hard = {(t["trait"], t["value"]) for t in truth["hard_no"]}
    assert must == planted_must, profile.evidence[profile.evidence["verdict"] == MUST_HAVE]
    assert planted_hard <= hard


def test_holdout_auc_is_close_to_the_planted_probabilities_and_tier_a_wins(planted) -> None:
    drop, evidence, _ = planted
    metrics, scored = holdout_validation(
        evidence,
        IcpConfig(),
        AS_OF,
    )
    planted_p = pd.read_parquet(drop / "truth" / "opportunities.parquet")[
        ["opportunity_id", "win_probability"]
    ]
    judged = scored.merge(planted_p, on="opportunity_id")
    assert len(judged) == len(scored) > 300
    won = judged["won"].to_numpy(dtype=bool)
    ours = auc(judged["fit_score"].to_numpy(dtype=float), won)
    oracle = auc(judged["win_probability"].to_numpy(), won)
    values = metrics.set_index("metric")["value"]
    assert ours == pytest.approx(values["auc"])
    assert ours >= oracle - 0.05, (ours, oracle)
    assert values["tier_a_lift"] >= 2.5
    rates = metrics[metrics["metric"] == "win_rate"].set_index("segment")["value"]
    assert rates["A"] > rates["B"] > rates["D"]


def test_outcomes_independent_of_traits_give_no_icp(null_icp) -> None:
    _, evidence, truth = null_icp
    assert truth["must_have"] == [] and truth["hard_no"] == []
    profile, design = learn(evidence)
    assert not profile.evidence["significant"].any(), profile.evidence.nsmallest(3, "q_value")
    assert profile.model.scored_by == "no_signal"
    assert "Insufficient evidence" in profile.summary
    scores = score_accounts(profile, design, AS_OF)
    assert set(scores["fit_score"]) == {50}
    assert profile.items(MUST_HAVE).empty and profile.items(HARD_NO).empty


def test_reason_points_add_up_to_every_score(planted) -> None:
    _, evidence, _ = planted
    profile, design = learn(evidence)
    scores = score_accounts(profile, design, AS_OF)
    listed = scores["reasons"].map(lambda text: sum(item["points"] for item in json.loads(text)))
    assert ((scores["base_points"] + listed) == scores["fit_score"]).all()
    assert scores["fit_score"].between(0, 100).all()
    assert scores["tier"].isin(list("ABCD")).all()
    assert (scores.loc[scores["disqualified"], "tier"] == "D").all()
    assert scores.loc[scores["disqualified"], "disqualified_reason"].str.contains("win rate").all()
    software = scores[scores["top_positive"].str.contains("Industry = Software", na=False)]
    assert len(software) > 100


def test_learning_is_deterministic(planted) -> None:
    _, evidence, _ = planted
    first, design = learn(evidence)
    second, _ = learn(evidence)
    assert first.version == second.version
    pd.testing.assert_frame_equal(score_accounts(first, design, AS_OF), score_accounts(second, design, AS_OF))


def test_profile_version_changes_only_with_content(planted) -> None:
    _, evidence, _ = planted
    base, _ = learn(evidence)
    edited, _ = learn(evidence, IcpConfig(icp=ProfileConfig(points={"industry=Software": 30})))
    assert edited.version != base.version
    assert edited.model.points.set_index(["trait", "value"]).loc[("industry", "Software"), "points"] == 30


def test_point_in_time_uses_only_deals_closed_by_the_date(planted) -> None:
    _, evidence, _ = planted
    earlier = dt.date(2025, 11, 1)
    profile, _ = learn(evidence, as_of=earlier)
    closed_then = evidence.opportunities[
        evidence.opportunities["closed_at"].notna()
        & (evidence.opportunities["closed_at"] < pd.Timestamp(earlier, tz="UTC") + pd.Timedelta(days=1))
        & evidence.opportunities["stage"].str.lower().isin(["closed won", "closed lost"])
    ]
    assert profile.closed_deals == len(closed_then)
    now, _ = learn(evidence)
    assert profile.closed_deals < now.closed_deals


def test_written_icp_audit_marks_support_and_width(planted) -> None:
    _, evidence, _ = planted
    written = WrittenIcp(
        must_have=(
            Criterion(trait="industry", values=("Software", "Retail")),
            Criterion(trait="employee_band", values=("201-1000",)),
            Criterion(trait="industry", values=("Retail",)),
        ),
        hard_no=(Criterion(trait="industry", values=("Software",)),),
    )
    profile, _ = learn(evidence, IcpConfig(icp=ProfileConfig(written=written)))
    audit = profile.audit
    assert list(audit["status"]) == ["supported", "supported", "not supported", "contradicted"] or (
        audit.loc[2, "status"] in {"not supported", "contradicted"}
        and list(audit["status"].iloc[[0, 1, 3]]) == ["supported", "supported", "contradicted"]
    )
    assert "wider than the data supports" in audit.loc[0, "detail"] and "Retail" in audit.loc[0, "detail"]


def test_cold_start_scores_from_the_written_icp(planted) -> None:
    _, evidence, _ = planted
    few = evidence.opportunities.sort_values("closed_at").head(20)
    written = WrittenIcp(must_have=(Criterion(trait="industry", values=("Software",)),))
    config = IcpConfig(icp=ProfileConfig(written=written))
    cold = Evidence(evidence.accounts, few, None, evidence.firmographics, evidence.funding_rounds)
    profile, design = learn(cold, config)
    assert profile.model.scored_by == "written_icp"
    assert any("cold start" in note for note in profile.notes)
    scores = score_accounts(profile, design, AS_OF)
    industry = evidence.accounts.set_index("account_id")["industry"]
    software = scores["account_id"].map(industry).eq("Software").to_numpy()
    assert np.all(
        scores.loc[software, "fit_score"]
        > scores.loc[~software & scores["fit_score"].notna(), "fit_score"].max() - 1
    )


def test_evidence_read_for_a_config_gives_the_same_traits_with_its_custom_ones(planted) -> None:
    drop, evidence, _ = planted
    # A custom trait named like a built-in column is read once, not twice.
    config = IcpConfig(icp=ProfileConfig(custom_columns=("owner_id", "industry")))
    with duckdb.connect(str(drop.parent / "warehouse.duckdb"), read_only=True) as con:
        narrow = read_evidence(con, config.icp.custom_columns)
    assert "owner_id" in narrow.accounts and "name" not in narrow.accounts
    assert narrow.accounts.columns.is_unique
    for as_of in (AS_OF, dt.date(2025, 11, 1)):
        mine, whole = narrow.traits(config, as_of), evidence.traits(config, as_of)
        assert "owner_id" in mine.accounts
        pd.testing.assert_frame_equal(mine.accounts, whole.accounts)
        pd.testing.assert_frame_equal(mine.technologies, whole.technologies)


def test_evidence_is_read_once_per_run_and_again_after_staging(planted, tmp_path: Path) -> None:
    drop, _, _ = planted
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(drop.parent / "warehouse.duckdb", warehouse)
    config = IcpConfig()
    first = run_evidence("run-1", warehouse, (), AS_OF)
    at_as_of, earlier = first.traits(config, AS_OF), first.traits(config, dt.date(2026, 1, 1))
    again = run_evidence("run-1", warehouse, (), AS_OF)  # the next step of the same run
    assert again is first
    assert first.traits(config, AS_OF) is at_as_of  # the run's date is kept, prepared inputs too
    assert [date for date, _ in first._traits] == [AS_OF] and first._inputs  # another date's traits are freed
    assert first.traits(config, dt.date(2026, 1, 1)) is not earlier
    assert run_evidence("run-1", warehouse, ("owner_id",), AS_OF) is not first
    assert run_evidence("run-2", warehouse, (), AS_OF) is not first
    second = run_evidence("run-2", warehouse, (), AS_OF)
    contract = load_contracts(contracts_dir(config))["accounts"]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "delete from staging.accounts where account_id in (select account_id from staging.accounts limit 5)"
        )
        stage(con, contract, config, as_of=AS_OF, now=dt.datetime(2026, 11, 1, 6, tzinfo=dt.UTC))
    restaged = run_evidence("run-2", warehouse, (), AS_OF)
    assert restaged is not second  # staging in this process since the read: read again
    pd.testing.assert_frame_equal(restaged.accounts, second.accounts)  # staged again from raw alike


def test_deals_placed_by_the_account_positions_read_with_them_equal_placing_them_by_id(planted) -> None:
    _, evidence, _ = planted
    config = IcpConfig()
    opportunities = evidence.opportunities
    assert ACCOUNT_POSITION in opportunities
    orphan = opportunities.head(1).assign(account_id="no-such-account", **{ACCOUNT_POSITION: -1})
    deals = pd.concat([opportunities, orphan], ignore_index=True)
    created = evidence.accounts["created_at"].dropna().sort_values()
    halfway = created.iloc[len(created) // 2].date()  # half the accounts did not exist yet
    unplaced = []
    for as_of in (AS_OF, halfway):
        traits = evidence.traits(config, as_of)
        expected = positions(deals["account_id"], traits.accounts["account_id"])
        unplaced.append(int((expected == -1).sum()))
        np.testing.assert_array_equal(traits.rows_of(deals), expected)
        np.testing.assert_array_equal(traits.rows_of(deals.drop(columns=ACCOUNT_POSITION)), expected)
    assert unplaced[0] == 1 and unplaced[1] > 100  # the orphan; then deals of accounts created later
    by_id, _ = learn(replace(evidence, opportunities=opportunities.drop(columns=ACCOUNT_POSITION)))
    by_position, _ = learn(evidence)
    pd.testing.assert_frame_equal(by_position.evidence, by_id.evidence)
    assert by_position.version == by_id.version


def test_deals_scored_by_row_position_equal_an_inner_join_on_account_id(planted) -> None:
    _, evidence, _ = planted
    config = IcpConfig()
    created = evidence.accounts["created_at"].dropna().sort_values()
    later = created.iloc[len(created) * 9 // 10].date()  # deals of later accounts are not scored
    traits = evidence.traits(config, later)
    profile, design = derive_profile(
        traits, evidence.opportunities, evidence.subscriptions, config, later, describe=False
    )
    scores = fit_and_tiers(profile, design)
    deals = opportunity_outcomes(evidence.opportunities, config.stages, AS_OF)
    orphan = deals.head(1).assign(account_id="no-such-account", **{ACCOUNT_POSITION: -1})
    deals = pd.concat([orphan, deals], ignore_index=True)
    expected = deals.join(scores, on="account_id", how="inner").reset_index(drop=True)
    scored = scored_deals(deals, scores, traits)
    assert 0 < len(scored) < len(deals) - 10
    assert scored["tier"].nunique() > 1
    pd.testing.assert_frame_equal(scored, expected)


def test_reasons_shown_to_reps_never_cite_an_unknown_value() -> None:
    """An unknown company age may carry points, but "Company age = unknown: +4" is no reason to call."""
    from scipy import sparse

    from icp_pipeline.scoring.model import Design
    from icp_pipeline.scoring.score import _reason_texts

    features = pd.DataFrame(
        {
            "trait": ["company_age_band", "industry", "employee_band"],
            "value": ["unknown", "Software", "unknown"],
            "group": ["company_age_band", "industry", "employee_band"],
        }
    )
    matrix = sparse.csr_matrix(np.array([[1, 1, 0], [1, 0, 1]]))
    design = Design(matrix, features, pd.Index(["A1", "A2"]))
    texts = _reason_texts(design, np.array([4, 10, -6]))
    assert texts["top_positive"].tolist() == ["Industry = Software: +10", None]  # no reason: NULL, not ""
    assert texts["top_negative"].tolist() == [None, None]
    shown = texts[["top_positive", "top_negative"]].fillna("")
    assert not shown.apply(lambda c: c.str.contains("unknown")).any().any()
    # The points still count: every item, unknown ones included, stays in the JSON reasons.
    assert [sum(i["points"] for i in json.loads(r)) for r in texts["reasons"]] == [14, -2]
