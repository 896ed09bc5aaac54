"""Does the score predict wins? Checked the way scoring vendors do: on a time-based holdout.

The profile is re-learned from deals closed before a split date (with traits as known then)
and judged on the deals that closed after it: AUC, win rate by tier, tier-A lift over the
base rate, and the share of wins that tiers A+B capture against their share of deals.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.profile.derive import derive_profile
from icp_pipeline.profile.learn import Evidence
from icp_pipeline.profile.outcomes import opportunity_outcomes
from icp_pipeline.scoring.score import fit_and_tiers, scored_deals

HOLDOUT_SHARE = 0.25
MIN_TEST_DEALS = 30
GAINS_POINTS = 20


def auc(scores: np.ndarray, won: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    from scipy import stats

    positives, negatives = int(won.sum()), int((~won).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[won].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def tier_table(tiers: pd.Series, won: pd.Series) -> pd.DataFrame:
    """Deals, wins, win rate and share of wins per tier."""
    frame = pd.DataFrame({"tier": tiers.to_numpy(), "won": won.to_numpy()})
    table = (
        frame.groupby("tier")
        .agg(deals=("won", "size"), wins=("won", "sum"))
        .reindex(list("ABCD"), fill_value=0)
    )
    table["win_rate"] = table["wins"] / table["deals"].where(table["deals"] > 0)
    table["share_of_deals"] = table["deals"] / max(len(frame), 1)
    table["share_of_wins"] = table["wins"] / max(int(frame["won"].sum()), 1)
    return table


def gains_curve(scores: np.ndarray, won: np.ndarray, points: int = GAINS_POINTS) -> pd.DataFrame:
    """Share of wins captured by the top-scored share of deals, at evenly spaced shares.

    Deals with equal scores are one step, interpolated linearly: the expected capture when ties
    are called at random, so the curve does not depend on row order.
    """
    shares = np.linspace(0, 1, points + 1)
    if len(scores) == 0 or won.sum() == 0:
        return pd.DataFrame({"share_of_deals": shares, "share_of_wins": np.nan})
    frame = pd.DataFrame({"score": scores, "won": won.astype(int)})
    steps = frame.groupby("score")["won"].agg(["size", "sum"]).sort_index(ascending=False)
    deals = np.concatenate([[0.0], steps["size"].cumsum().to_numpy() / len(frame)])
    wins = np.concatenate([[0.0], steps["sum"].cumsum().to_numpy() / won.sum()])
    return pd.DataFrame({"share_of_deals": shares, "share_of_wins": np.interp(shares, deals, wins)})


def holdout_validation(
    evidence: Evidence, config: IcpConfig, as_of: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics rows, per-deal test scores); metrics say 'insufficient data' when the holdout is small."""
    opportunities = evidence.opportunities
    closed = opportunity_outcomes(opportunities, config.stages, as_of)
    closed = closed[closed["closed"]]
    if len(closed) < 4 * MIN_TEST_DEALS:
        note = f"insufficient data: {len(closed)} closed deals (need {4 * MIN_TEST_DEALS})"
        return pd.DataFrame(
            [{"as_of": as_of, "metric": "status", "segment": "all", "value": np.nan, "note": note}]
        ), pd.DataFrame()
    split = closed["closed_at"].quantile(1 - HOLDOUT_SHARE).date()
    traits = evidence.traits(config, split)
    profile, design = derive_profile(
        traits, opportunities, evidence.subscriptions, config, split, describe=False
    )
    scores = fit_and_tiers(profile, design)
    test = closed[closed["closed_at"] > pd.Timestamp(split, tz="UTC") + pd.Timedelta(days=1)]
    scored = scored_deals(test, scores, traits)[["opportunity_id", "account_id", "won", "fit_score", "tier"]]
    won = scored["won"].to_numpy(dtype=bool)
    tiers = tier_table(scored["tier"], scored["won"])
    base = won.mean() if len(won) else np.nan
    rows = [
        (
            "status",
            "all",
            np.nan,
            f"learned on deals closed by {split}, tested on {len(scored):,} closed after",
        ),
        ("auc", "all", auc(scored["fit_score"].to_numpy(dtype=float), won), ""),
        ("base_win_rate", "all", base, ""),
        ("test_deals", "all", float(len(scored)), ""),
        ("tier_a_lift", "A", tiers.loc["A", "win_rate"] / base if base else np.nan, ""),
        ("ab_share_of_wins", "A+B", tiers.loc[["A", "B"], "share_of_wins"].sum(), ""),
        ("ab_share_of_deals", "A+B", tiers.loc[["A", "B"], "share_of_deals"].sum(), ""),
    ]
    rows += [
        ("win_rate", tier, tiers.loc[tier, "win_rate"], f"n={tiers.loc[tier, 'deals']}") for tier in "ABCD"
    ]
    gains = gains_curve(scored["fit_score"].to_numpy(dtype=float), won)
    rows += [("gains", f"{share:.2f}", captured, "") for share, captured in gains.itertuples(index=False)]
    metrics = pd.DataFrame(rows, columns=["metric", "segment", "value", "note"])
    metrics.insert(0, "as_of", as_of)
    metrics["split_date"] = split
    metrics["profile_version"] = profile.version
    return metrics, scored
