"""Champion against challenger on the same deals and the same accounts, before anyone switches.

AUC of each with DeLong's paired test (both scores rank the same deals, so their AUCs are
correlated and an unpaired test would be far too cautious), tier-A lift and A+B capture of each,
and what a switch would change: accounts changing tier, accounts crossing the alert line, and the
recent trigger events whose alert would differ.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from icp_pipeline.config import ModelsConfig
from icp_pipeline.scoring.validation import tier_table

MIN_COMPARISON_DEALS = 30
TIER_ORDER = {"A": 0, "B": 1, "C": 2, "D": 3}


def _midranks(values: np.ndarray) -> np.ndarray:
    from scipy import stats

    return stats.rankdata(values)


def delong_test(won: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple[float, float, float]:
    """(AUC of `first`, AUC of `second`, two-sided p of their difference) by DeLong et al. (1988),
    with the midrank structural components of Sun & Xu (2014): O(n log n), no per-deal loop."""
    from scipy import stats

    won = won.astype(bool)
    m, n = int(won.sum()), int((~won).sum())
    if m < 2 or n < 2:
        return float("nan"), float("nan"), float("nan")
    aucs, v10, v01 = [], [], []
    for scores in (first, second):
        positive, negative = scores[won].astype(float), scores[~won].astype(float)
        every = _midranks(np.concatenate([positive, negative]))
        within_positive, within_negative = _midranks(positive), _midranks(negative)
        aucs.append((every[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((every[:m] - within_positive) / n)
        v01.append(1.0 - (every[m:] - within_negative) / m)
    s10, s01 = np.cov(np.vstack(v10)), np.cov(np.vstack(v01))
    variance = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    difference = aucs[1] - aucs[0]
    if variance <= 0:
        p = 1.0 if difference == 0 else 0.0
    else:
        p = float(2 * stats.norm.sf(abs(difference) / np.sqrt(variance)))
    return float(aucs[0]), float(aucs[1]), p


@dataclass(frozen=True)
class Comparison:
    """The comparison rows (one per metric) and the figures the promotion policy reads."""

    rows: pd.DataFrame
    auc_gain: float
    p_value: float
    deals: int


def compare_models(
    deals: pd.DataFrame,
    champion_scores: pd.DataFrame,
    challenger_scores: pd.DataFrame,
    events: pd.DataFrame,
    alert_min_tier: str,
    champion_trained: dt.date | None,
    as_of: dt.date,
) -> Comparison:
    """Both models on the same closed deals (`deals`: account_id, won, closed_at) and accounts.

    The deals are those closed after the champion was learned when there are enough of them (the
    champion has not seen them; the challenger has, so its figures are in-sample and the note
    says so), else every closed deal."""
    champion_scores = champion_scores.set_index("account_id")
    challenger_scores = challenger_scores.set_index("account_id")
    both = champion_scores.index.intersection(challenger_scores.index)
    scored = deals[deals["account_id"].isin(both)]
    note = "all closed deals (both models learned on most of them)"
    if champion_trained is not None:
        after = scored[scored["closed_at"] > pd.Timestamp(champion_trained, tz="UTC") + pd.Timedelta(days=1)]
        if (
            after["won"].sum() >= MIN_COMPARISON_DEALS / 3
            and (~after["won"]).sum() >= MIN_COMPARISON_DEALS / 3
        ):
            scored, note = (
                after,
                f"deals closed after the champion was learned ({champion_trained}); in-sample for the challenger",
            )
    won = scored["won"].to_numpy(dtype=bool)
    rows: list[tuple[str, float, float, float, str]] = []
    champion_deals = champion_scores.loc[scored["account_id"]]
    challenger_deals = challenger_scores.loc[scored["account_id"]]
    a, b, p = delong_test(
        won, champion_deals["fit_score"].to_numpy(float), challenger_deals["fit_score"].to_numpy(float)
    )
    rows.append(("deals", float(len(scored)), float(len(scored)), np.nan, note))
    rows.append(("auc", a, b, p, "DeLong paired test"))
    base = won.mean() if len(won) else np.nan
    for name, frame in (("champion", champion_deals), ("challenger", challenger_deals)):
        table = tier_table(frame["tier"], pd.Series(won))
        if name == "champion":
            lift_a = table.loc["A", "win_rate"] / base if base else np.nan
            capture_a = table.loc[["A", "B"], "share_of_wins"].sum()
        else:
            lift_b = table.loc["A", "win_rate"] / base if base else np.nan
            capture_b = table.loc[["A", "B"], "share_of_wins"].sum()
    rows.append(("tier_a_lift", lift_a, lift_b, np.nan, ""))
    rows.append(("ab_share_of_wins", capture_a, capture_b, np.nan, ""))
    now, then = champion_scores.loc[both], challenger_scores.loc[both]
    changed = now["tier"].to_numpy() != then["tier"].to_numpy()
    limit = TIER_ORDER[alert_min_tier]

    def alerted(frame: pd.DataFrame) -> np.ndarray:
        return (frame["tier"].map(TIER_ORDER).to_numpy() <= limit) & ~frame["disqualified"].astype(
            bool
        ).to_numpy()

    crossing = alerted(now) != alerted(then)
    crossed = pd.Index(both[crossing])
    # Churn against the champion: 0 for the champion itself, the count for the challenger.
    rows.append(
        (
            "tier_changes",
            0.0,
            float(changed.sum()),
            np.nan,
            f"{changed.mean() if len(both) else 0:.1%} of {len(both):,} accounts",
        )
    )
    rows.append(
        (
            "alert_line_crossings",
            0.0,
            float(crossing.sum()),
            np.nan,
            f"{crossing.mean() if len(both) else 0:.1%} of accounts cross tier {alert_min_tier}-or-better vs below",
        )
    )
    differ = int(events["account_id"].isin(crossed).sum()) if len(events) else 0
    rows.append(
        (
            "alerts_differ",
            0.0,
            float(differ),
            np.nan,
            "recent trigger events on accounts crossing the alert line",
        )
    )
    frame = pd.DataFrame(rows, columns=["metric", "champion", "challenger", "p_value", "note"])
    frame["difference"] = frame["challenger"] - frame["champion"]
    frame.insert(0, "as_of", as_of)
    return Comparison(frame, b - a, p, len(scored))


def promotion_decision(
    comparison: Comparison, policy: ModelsConfig, as_of: dt.date, last_auto: dt.date | None
) -> tuple[bool, str]:
    """(promote now?, why): significantly better by the margin, and not promoted automatically in
    the last N days. Under `manual` it only recommends."""
    better = (
        not np.isnan(comparison.auc_gain)
        and comparison.auc_gain >= policy.min_auc_gain
        and comparison.p_value < policy.alpha
    )
    figures = f"AUC {comparison.auc_gain:+.3f}, p={comparison.p_value:.3g} on {comparison.deals:,} deals"
    if not better:
        return False, f"keep the champion: challenger not significantly better ({figures})"
    if policy.promotion == "manual":
        return False, f"recommend promotion: challenger significantly better ({figures})"
    if last_auto is not None and (as_of - last_auto).days < policy.min_days_between_promotions:
        return False, (
            f"recommend promotion: challenger significantly better ({figures}), but the last automatic "
            f"promotion was on {last_auto} (at most one per {policy.min_days_between_promotions} days)"
        )
    return True, f"auto-promoted: challenger significantly better ({figures})"


def drift_advice(rows: pd.DataFrame) -> str:
    """What a drift flag adds from tonight's comparison: promote the challenger, or why not."""
    if rows.empty or "metric" not in rows:
        return "no challenger model to compare with the champion tonight"
    figures = rows.set_index("metric")
    challenger = figures["challenger_version"].iloc[0]
    decision = str(figures.loc["decision", "note"]) if "decision" in figures.index else ""
    auc_row = figures.loc["auc"] if "auc" in figures.index else None
    numbers = (
        f"challenger {challenger} AUC {auc_row['challenger']:.3f} vs champion {auc_row['champion']:.3f} "
        f"(DeLong p={auc_row['p_value']:.2g})"
        if auc_row is not None
        else f"challenger {challenger}"
    )
    if decision.startswith("recommend promotion"):
        return f"{numbers}: promote it with `icp model promote {challenger}`"
    if decision.startswith("auto-promoted"):
        return f"{numbers}: promoted automatically; it scores from the next run"
    return f"{numbers}: not significantly better, keep the champion"
