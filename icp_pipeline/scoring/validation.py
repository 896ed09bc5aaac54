"""Does the score predict wins? Two checks, each named in `icp.score_validation`'s `method`.

- `forward_backtest`, the figure to trust: score every account as of a past date D with a
  profile learned only from what was known by D (deals closed by then, each described as its
  account was when the deal was created), then judge those scores on the deals created after D
  and closed by the as-of date. This is how a score is used: before the deal exists.
- `time_split_holdout`: re-learn from deals closed before a split date and judge the deals
  that closed after it, scored with traits as known at the split (a deal created before the
  split but closed after it counts).

Both report AUC (with a Hanley-McNeil interval), win rate by tier, tier-A lift over the base
rate, and the share of wins that tiers A+B capture against their share of deals.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.profile.derive import IcpProfile, derive_profile
from icp_pipeline.profile.learn import Evidence
from icp_pipeline.profile.outcomes import opportunity_outcomes
from icp_pipeline.profile.traits import AccountTraits
from icp_pipeline.scoring.score import fit_and_tiers, scored_deals

HOLDOUT_SHARE = 0.25
MIN_TEST_DEALS = 30
GAINS_POINTS = 20
BACKTEST, HOLDOUT = "forward_backtest", "time_split_holdout"


def auc(scores: np.ndarray, won: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    from scipy import stats

    positives, negatives = int(won.sum()), int((~won).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[won].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auc_standard_error(value: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC estimate."""
    if positives == 0 or negatives == 0 or np.isnan(value):
        return float("nan")
    q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
    variance = (
        value * (1 - value) + (positives - 1) * (q1 - value**2) + (negatives - 1) * (q2 - value**2)
    ) / (positives * negatives)
    return float(np.sqrt(max(variance, 0.0)))


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


def _judged(scored: pd.DataFrame, status: str) -> list[tuple[str, str, float, str]]:
    """The metric rows of deals scored beforehand (`fit_score`, `tier`) and their outcome (`won`)."""
    won = scored["won"].to_numpy(dtype=bool)
    tiers = tier_table(scored["tier"], scored["won"])
    base = won.mean() if len(won) else np.nan
    value = auc(scored["fit_score"].to_numpy(dtype=float), won)
    error = auc_standard_error(value, int(won.sum()), int((~won).sum()))
    interval = (
        "" if np.isnan(error) else f"95% interval {value - 1.96 * error:.3f}-{value + 1.96 * error:.3f}"
    )
    rows = [
        ("status", "all", np.nan, status),
        ("auc", "all", value, interval),
        ("auc_low", "all", value - 1.96 * error, ""),
        ("auc_high", "all", value + 1.96 * error, ""),
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
    return rows


def _metrics(
    rows: list[tuple[str, str, float, str]],
    method: str,
    as_of: dt.date,
    split: dt.date | None,
    version: str | None,
) -> pd.DataFrame:
    metrics = pd.DataFrame(rows, columns=["metric", "segment", "value", "note"])
    metrics.insert(0, "as_of", as_of)
    metrics.insert(1, "method", method)
    metrics["split_date"] = split
    metrics["profile_version"] = version
    return metrics


def _insufficient(method: str, as_of: dt.date, note: str, split: dt.date | None = None) -> pd.DataFrame:
    return _metrics([("status", "all", np.nan, f"insufficient data: {note}")], method, as_of, split, None)


def _scores_at(
    evidence: Evidence, config: IcpConfig, when: dt.date
) -> tuple[IcpProfile, AccountTraits, pd.DataFrame]:
    """A profile learned from what was known by `when` (each deal as it was when created), the
    traits at that date, and every account's score and tier with it."""
    traits = evidence.traits(config, when)
    profile, design = derive_profile(
        traits,
        evidence.opportunities,
        evidence.subscriptions,
        config,
        when,
        describe=False,
        deal_traits=evidence.deal_traits(config),
    )
    return profile, traits, fit_and_tiers(profile, design)


def holdout_validation(
    evidence: Evidence, config: IcpConfig, as_of: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics rows, per-deal test scores); metrics say 'insufficient data' when the holdout is small."""
    opportunities = evidence.opportunities
    closed = opportunity_outcomes(opportunities, config.stages, as_of)
    closed = closed[closed["closed"]]
    if len(closed) < 4 * MIN_TEST_DEALS:
        note = f"{len(closed)} closed deals (need {4 * MIN_TEST_DEALS})"
        return _insufficient(HOLDOUT, as_of, note), pd.DataFrame()
    split = closed["closed_at"].quantile(1 - HOLDOUT_SHARE).date()
    profile, traits, scores = _scores_at(evidence, config, split)
    test = closed[closed["closed_at"] > pd.Timestamp(split, tz="UTC") + pd.Timedelta(days=1)]
    scored = scored_deals(test, scores, traits)[["opportunity_id", "account_id", "won", "fit_score", "tier"]]
    status = f"learned on deals closed by {split}, tested on {len(scored):,} closed after"
    return _metrics(_judged(scored, status), HOLDOUT, as_of, split, profile.version), scored


def forward_backtest(
    evidence: Evidence, config: IcpConfig, as_of: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics rows, per-deal scores): scores as of `backtest_months` before the as-of date,
    judged on the deals created after that date and closed by the as-of date."""
    then = (pd.Timestamp(as_of) - pd.DateOffset(months=config.icp.backtest_months)).date()
    deals = opportunity_outcomes(evidence.opportunities, config.stages, as_of)
    after = deals[
        (deals["created_at"] >= pd.Timestamp(then, tz="UTC") + pd.Timedelta(days=1)) & deals["closed"]
    ]
    if len(after) < MIN_TEST_DEALS:
        note = f"{len(after)} deals created after {then} and closed by {as_of} (need {MIN_TEST_DEALS})"
        return _insufficient(BACKTEST, as_of, note, then), pd.DataFrame()
    profile, traits, scores = _scores_at(evidence, config, then)
    scored = scored_deals(after, scores, traits)[["opportunity_id", "account_id", "won", "fit_score", "tier"]]
    unscored = len(after) - len(scored)
    status = (
        f"scored as of {then} by a profile learned from {profile.closed_deals:,} deals closed by then; "
        f"judged on {len(scored):,} deals created after it and closed by {as_of}"
        + (f" ({unscored:,} of accounts created later, not scored then)" if unscored else "")
    )
    return _metrics(_judged(scored, status), BACKTEST, as_of, then, profile.version), scored


def validate_scores(evidence: Evidence, config: IcpConfig, as_of: dt.date) -> pd.DataFrame:
    """The `icp.score_validation` rows of the as-of date: the forward backtest, then the holdout."""
    backtest, _ = forward_backtest(evidence, config, as_of)
    holdout, _ = holdout_validation(evidence, config, as_of)
    return pd.concat([backtest, holdout], ignore_index=True)
