"""Drift at the size a mid-market team has: pooled windows, CUSUMs, calibration by trait, early estimates.

A 5,000-account CRM closes about 230 deals a month; no monthly cohort alone can show a moderate
loss of fit. These tests check, on staged demo data (no full pipeline run), that the pooled and
sequential tests name the traits that moved soon after a planted drift, stay quiet on a stable
ICP, and say plainly when there are too few deals to judge. The five-seed stable sweep and the
detection delays at 2,000/5,000/15,000 accounts are in benchmarks/drift_detection.py."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from icp_pipeline.config import IcpConfig
from icp_pipeline.demo.generate import DemoSpec
from icp_pipeline.drift.assets import first_flagged, notice_text
from icp_pipeline.drift.calibration import close_probability, early_estimate, weighted_auc
from icp_pipeline.drift.metrics import drift_metrics
from icp_pipeline.drift.sequential import benjamini_hochberg, cusum_path, tier_counts, trait_cusum
from icp_pipeline.profile.outcomes import opportunity_outcomes
from icp_pipeline.scoring.validation import auc
from icp_pipeline_tests.staged_demo import load_evidence, staged_demo

DRIFT_DATE = dt.date(2026, 3, 1)
STABLE_AS_OF = dt.date(2026, 11, 1)  # the demo's as-of: 24 months of deals


def months_after(day: dt.date, months: int) -> dt.date:
    return (pd.Timestamp(day) + pd.DateOffset(months=months)).date()


@pytest.fixture(scope="module")
def drifted_5k(tmp_path_factory: pytest.TempPathFactory):
    """(evidence, truth, first flagged monthly check within six months of the drift, its report)."""
    _, warehouse, truth = staged_demo(
        tmp_path_factory.mktemp("drift5k"), DemoSpec(accounts=5000, seed=3, drift_date=DRIFT_DATE)
    )
    evidence = load_evidence(warehouse)
    for k in range(1, 7):
        as_of = months_after(DRIFT_DATE, k)
        report = drift_metrics(evidence, IcpConfig(), as_of)
        if report.flagged:
            return evidence, truth, as_of, report
    return evidence, truth, None, None


@pytest.fixture(scope="module")
def stable_5k(tmp_path_factory: pytest.TempPathFactory):
    _, warehouse, _ = staged_demo(tmp_path_factory.mktemp("stable5k"), DemoSpec(accounts=5000, seed=1))
    return drift_metrics(load_evidence(warehouse), IcpConfig(), STABLE_AS_OF)


@pytest.mark.xfail(
    strict=True,
    reason="measured: at 5,000 accounts (seed 3) the first monthly check that flags is 6 months after the "
    "drift date (1,135 of 1,866 post-drift deals closed); at 4 months the CUSUMs stand below their thresholds",
)
def test_planted_drift_at_5000_accounts_is_flagged_within_four_months(drifted_5k) -> None:
    _, _, when, _ = drifted_5k
    assert when is not None and when <= months_after(DRIFT_DATE, 4)


def test_planted_drift_at_5000_accounts_is_flagged_and_the_moved_traits_named(drifted_5k) -> None:
    evidence, truth, when, report = drifted_5k
    assert when is not None, "no flag within six months of the drift date"
    deals = opportunity_outcomes(evidence.opportunities, IcpConfig().stages, when)
    after = deals[deals["created_at"] >= pd.Timestamp(DRIFT_DATE, tz="UTC")]
    assert after["closed"].sum() > 0  # the flag rests on post-drift deals that have closed
    rising = f"trait outside the profile now wins: Industry = {truth['drift']['after']['value']}"
    falling = f"ICP trait stopped lifting: Industry = {truth['drift']['before']['value']}"
    named = " ".join(report.findings)
    assert rising in named or falling in named
    # By the demo's as-of date, eight months on, both traits that moved are named.
    later = " ".join(drift_metrics(evidence, IcpConfig(), STABLE_AS_OF).findings)
    assert rising in later and falling in later
    # Before the drift date the same checks raise nothing.
    assert not drift_metrics(evidence, IcpConfig(), DRIFT_DATE).flagged


def test_stable_5000_accounts_raise_no_flag_and_show_every_test(stable_5k) -> None:
    report = stable_5k
    metrics = report.metrics
    assert not report.flagged and report.findings == []
    assert not metrics.loc[metrics["metric"].isin(["auc", "cusum", "trait_cusum"]), "flagged"].any()
    assert {"last_3_months", "last_6_months"} <= set(metrics.loc[metrics["metric"] == "auc", "cohort"])
    sequential = metrics[(metrics["cohort"] == "sequential") & (metrics["metric"] == "cusum")]
    assert len(sequential) == 1 and sequential["threshold"].iloc[0] > 0
    calibration = metrics[metrics["metric"] == "calibration"]
    assert {"Tier A", "Tier D"} <= set(calibration["segment"])
    assert calibration["note"].str.contains(r"predicted \d+%, observed \d+%, n=", regex=True).all()
    estimates = metrics[metrics["metric"].isin(["auc_estimate", "win_rate_estimate"])]
    assert len(estimates) and estimates["note"].str.startswith("estimate:").all()
    assert not estimates["flagged"].any()
    assert report.judgeable


@pytest.fixture(scope="module")
def small_2k(tmp_path_factory: pytest.TempPathFactory):
    _, warehouse, _ = staged_demo(tmp_path_factory.mktemp("small2k"), DemoSpec(accounts=2000, seed=3))
    return drift_metrics(load_evidence(warehouse), IcpConfig(), STABLE_AS_OF)


def test_2000_accounts_say_there_is_too_little_data(small_2k) -> None:
    report = small_2k
    verdict = report.metrics[report.metrics["metric"] == "too_little_data"]
    assert not report.judgeable and len(verdict) == 1
    assert verdict["note"].iloc[0].startswith("too little data to judge")
    assert verdict["value"].iloc[0] > verdict["threshold"].iloc[0]


def test_tier_cusum_threshold_holds_its_false_alarm_rate_and_sees_flattened_tiers() -> None:
    rng = np.random.default_rng(11)
    reference = pd.DataFrame(
        {"deals": [400, 800, 1200, 2000], "wins": [200, 240, 240, 200]},
        index=pd.Index(list("ABCD"), name="tier"),
    )
    reference["p0"] = reference["wins"] / reference["deals"]
    sizes = np.array([20, 40, 60, 100])

    def months(rates: np.ndarray, count: int = 12) -> pd.DataFrame:
        frame = {"month": [f"m{i:02d}" for i in range(count)]}
        wins = rng.binomial(sizes, rates, size=(count, 4))
        for j, tier in enumerate("ABCD"):
            frame[f"deals_{tier}"] = np.full(count, sizes[j])
            frame[f"wins_{tier}"] = wins[:, j]
        return pd.DataFrame(frame)

    alarms = 0
    for seed in range(40):
        path, threshold = cusum_path(months(reference["p0"].to_numpy()), reference, 0.05, seed=seed)
        alarms += int(path["statistic"].max() > threshold)
    assert alarms <= 6  # 5% of 40 is 2; binomial slack, and the threshold allows for reference error
    flat = np.full(4, 0.16)
    path, threshold = cusum_path(months(flat), reference, 0.05)
    assert path["statistic"].iloc[-1] > threshold


def test_trait_cusum_names_a_trait_whose_rate_halves_and_ignores_a_steady_one() -> None:
    months = [f"2026-{m:02d}" for m in range(1, 9)]
    rng = np.random.default_rng(5)
    rows = []
    for i, month in enumerate(months):
        falling_rate = 0.4 if i < 4 else 0.15
        rows.append(("industry", "Software", month, 60, rng.binomial(60, falling_rate), 24.0))
        rows.append(("industry", "Retail", month, 60, rng.binomial(60, 0.2), 12.0))
    monthly = pd.DataFrame(rows, columns=["trait", "value", "month", "size", "wins", "exp"])
    reference = pd.DataFrame(
        {
            "trait": ["industry"] * 2,
            "value": ["Software", "Retail"],
            "wins": [200.0, 100],
            "exp": [200.0, 100],
        }
    ).assign(var=lambda t: t["exp"] * 0.7)
    sides = pd.Series([-1, -1], index=pd.MultiIndex.from_frame(reference[["trait", "value"]]))
    paths = trait_cusum(monthly, reference, sides, 0.01).set_index("value")
    assert paths.loc["Software", "path"][-1] > paths.loc["Software", "threshold"]
    assert paths.loc["Retail", "path"][-1] < paths.loc["Retail", "threshold"]


def test_early_estimate_undoes_quick_losses_closing_first() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    won = rng.random(n) < 0.3
    score = rng.normal(0, 1, n) + won
    cycle = np.where(won, rng.integers(60, 180, n), rng.integers(5, 120, n))
    reference = pd.DataFrame({"won": won, "cycle_days": cycle.astype(float)})
    curves = close_probability(reference)
    age = np.full(n, 90)
    closed = cycle <= age
    cohort = pd.DataFrame({"won": won[closed], "fit_score": score[closed]})
    naive = cohort["won"].mean()
    estimate = early_estimate(cohort, age[closed], curves)
    assert naive < 0.22 and abs(estimate["win_rate"] - 0.3) < 0.04


def test_weighted_auc_and_bh_behave() -> None:
    rng = np.random.default_rng(0)
    scores, won = rng.integers(0, 20, 500).astype(float), rng.random(500) < 0.4
    assert weighted_auc(scores, won, np.ones(500)) == pytest.approx(auc(scores, won))
    rejected = benjamini_hochberg(pd.Series([0.001, 0.2, np.nan, 0.004]), 0.05)
    assert rejected.tolist() == [True, False, False, True]


def test_tier_counts_fill_missing_tiers() -> None:
    closed = pd.DataFrame({"tier": ["A", "A", "D"], "won": [True, False, False]})
    counts = tier_counts(closed, pd.Series(["2026-01", "2026-01", "2026-02"]))
    assert counts.set_index("month").loc["2026-01", ["deals_A", "wins_A", "deals_B"]].tolist() == [2, 1, 0]
    empty = tier_counts(closed.iloc[0:0], pd.Series([], dtype=str))
    assert empty.empty and {"month", "deals_A", "wins_D"} <= set(empty.columns)


def test_first_flagged_keeps_the_start_of_the_current_flag_run() -> None:
    flags = pd.DataFrame(
        {
            "as_of": pd.to_datetime(["2026-05-01", "2026-06-01", "2026-07-01", "2026-08-01"]).date,
            "flagged": [True, False, True, True],
        }
    )
    assert first_flagged(flags, dt.date(2026, 9, 1), True) == dt.date(2026, 7, 1)
    assert first_flagged(flags, dt.date(2026, 9, 1), False) is None
    assert first_flagged(None, dt.date(2026, 9, 1), True) == dt.date(2026, 9, 1)


def test_the_notice_carries_finding_evidence_and_recommendation(drifted_5k) -> None:
    _, _, when, report = drifted_5k
    assert when is not None
    text = notice_text(when, report)
    assert "Finding: " in text and "Evidence: " in text and "Recommendation: " in text
    assert report.findings[0].split(": ", 1)[1] in text


def render_drift(report, as_of: dt.date, history: pd.DataFrame) -> str:
    from pathlib import Path

    from icp_pipeline.report.data import CallData, DriftData, HealthData, IcpData, ReportData, ScoreData
    from icp_pipeline.report.sections import drift_section

    flag = history.iloc[-1].to_dict() if len(history) else {}
    drift = DriftData(metrics=report.metrics, flag=flag, history=history)
    data = ReportData(
        as_of, as_of, Path("w.duckdb"), 0, IcpData(), ScoreData(), CallData(), drift, HealthData()
    )
    return drift_section(data).render()


def test_report_shows_detection_delay_pooled_tests_calibration_and_estimates(drifted_5k) -> None:
    _, _, when, report = drifted_5k
    assert when is not None
    earlier = months_after(when, -1)
    history = pd.DataFrame(
        {
            "as_of": [earlier, when],
            "flagged": [True, True],
            "reason": ["first", report.reason],
            "recommendation": ["", report.recommendation],
            "first_flagged": [earlier, earlier],
            "evidence": ["CUSUM 9.0 > 8.0: the evidence on the first night", report.evidence],
            "findings": ["", "\n".join(report.findings)],
            "judgeable": [True, report.judgeable],
        }
    )
    page = render_drift(report, when, history)
    assert f"Detection: first raised on {earlier}, flagged on 2 run(s) since" in page
    assert "the evidence on the first night" in page
    assert "Pooled and sequential tests" in page and "last 6 months: auc" in page
    assert "Calibration: predicted and observed win rates" in page
    assert "Early estimates for cohorts still closing (estimates, never flags)" in page
    assert report.findings[0].split(":")[0] in page


def test_report_says_too_little_data_at_2000_accounts(small_2k) -> None:
    report = small_2k
    page = render_drift(report, STABLE_AS_OF, pd.DataFrame())
    assert "Too little data.</span> too little data to judge" in page
