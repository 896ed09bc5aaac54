"""Is the ICP still predicting wins? Performance, population and "what moved", per monthly cohort.

The reference profile is learned as of `reference_date = as_of - reference_months` from the
deals closed by then. Each later monthly cohort (opportunities *created* that month, judged by
those closed by the as-of date) is scored with that reference profile, so a cohort's deals are
judged by the fit their account had before they were created. A cohort is flagged only when
its AUC is significantly below the reference AUC (Hanley-McNeil standard errors) and by at
least `min_auc_drop`; cohorts below the minimum sample are reported as insufficient data.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from icp_pipeline.config import DriftConfig, IcpConfig
from icp_pipeline.frames import isin
from icp_pipeline.profile.derive import derive_profile, trait_label
from icp_pipeline.profile.events import EVENT_TRAITS
from icp_pipeline.profile.evidence import account_totals, trait_value_sums
from icp_pipeline.profile.learn import Evidence
from icp_pipeline.profile.outcomes import opportunity_outcomes
from icp_pipeline.profile.traits import UNKNOWN, AccountTraits
from icp_pipeline.scoring.score import fit_and_tiers, scored_deals
from icp_pipeline.scoring.validation import auc, holdout_validation

METRIC_COLUMNS = [
    "as_of",
    "cohort",
    "metric",
    "segment",
    "value",
    "reference",
    "threshold",
    "flagged",
    "n",
    "note",
]


@dataclass
class DriftReport:
    metrics: pd.DataFrame
    moved: pd.DataFrame
    flagged: bool
    reason: str
    recommendation: str
    reference_date: dt.date
    profile_version: str


def auc_standard_error(value: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC estimate."""
    if positives == 0 or negatives == 0 or np.isnan(value):
        return float("nan")
    q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
    variance = (
        value * (1 - value) + (positives - 1) * (q1 - value**2) + (negatives - 1) * (q2 - value**2)
    ) / (positives * negatives)
    return float(np.sqrt(max(variance, 0.0)))


def _known_shares(values: pd.Series) -> pd.Series:
    """Share of each known value among the known ones ('unknown' and missing left out), by text.

    Counted on the category codes of a categorical (the trait columns): converting half a
    million trait values to text per feature took most of the drift check's population part.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        counts = values.value_counts(sort=False)
        counts.index = counts.index.astype("str")
    else:
        counts = values.astype("str").value_counts()
    counts = counts[(counts.index != UNKNOWN) & (counts > 0)]
    return counts / counts.sum() if len(counts) else counts.astype(float)


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index; numeric values binned on reference deciles, 'unknown' left out
    (a feed that starts covering more accounts is not a population shift)."""
    if reference.empty or current.empty:
        return float("nan")
    if pd.api.types.is_numeric_dtype(reference):
        edges = np.unique(np.quantile(reference.astype(float), np.linspace(0, 1, bins + 1)))
        edges[0], edges[-1] = -np.inf, np.inf
        ref = pd.cut(reference.astype(float), edges).value_counts(normalize=True, sort=False)
        cur = pd.cut(current.astype(float), edges).value_counts(normalize=True, sort=False)
    else:
        ref, cur = _known_shares(reference), _known_shares(current)
        if ref.empty or cur.empty:
            return float("nan")
    ref, cur = ref.align(cur, fill_value=0.0)
    ref, cur = ref.clip(lower=1e-4), cur.clip(lower=1e-4)
    return float(((cur - ref) * np.log(cur / ref)).sum())


def js_distance(reference: pd.Series, current: pd.Series) -> float:
    """Jensen-Shannon distance between two categorical distributions (known values only)."""
    from scipy.spatial.distance import jensenshannon

    ref, cur = _known_shares(reference).align(_known_shares(current), fill_value=0.0)
    if not len(ref) or ref.sum() == 0 or cur.sum() == 0:
        return float("nan")
    return float(jensenshannon(ref.to_numpy(), cur.to_numpy(), base=2))


def _month_start(value: dt.date) -> pd.Timestamp:
    return pd.Timestamp(value.year, value.month, 1, tz="UTC")


def _performance(deals: pd.DataFrame) -> dict[str, float]:
    won = deals["won"].to_numpy(dtype=bool)
    value = auc(deals["fit_score"].to_numpy(dtype=float), won)
    base = won.mean() if len(won) else np.nan
    tier_a = deals[deals["tier"] == "A"]
    ab = deals["tier"].isin(["A", "B"])
    return {
        "auc": value,
        "auc_se": auc_standard_error(value, int(won.sum()), int((~won).sum())),
        "win_rate": base,
        "tier_a_lift": (tier_a["won"].mean() / base) if len(tier_a) >= 5 and base else np.nan,
        "ab_share_of_wins": (deals.loc[ab, "won"].sum() / won.sum()) if won.sum() else np.nan,
        "n": len(deals),
        "wins": int(won.sum()),
    }


def what_moved(
    reference: pd.DataFrame, current: pd.DataFrame, traits: AccountTraits, alpha: float = 0.01
) -> pd.DataFrame:
    """Trait values whose win rate changed most between reference and current deals (two-proportion z-test).

    Deals and wins per trait value are summed over the value's accounts (`trait_value_sums`),
    not by joining every deal to every trait value of its account.
    """
    from scipy import stats

    weights = {}
    for label, deals in (("reference", reference), ("current", current)):
        size, wins = account_totals(traits, deals, deals["won"].to_numpy())
        weights[f"{label}_sum"], weights[f"{label}_size"] = wins, size
    table = trait_value_sums(traits, weights).drop(columns="accounts_with")
    # Event traits say what happened before the as-of date: older deals did not see those events.
    table = table[~table["trait"].isin(EVENT_TRAITS)]
    table = table[(table["reference_size"] >= 20) & (table["current_size"] >= 20)]
    p1 = table["reference_sum"] / table["reference_size"]
    p2 = table["current_sum"] / table["current_size"]
    pooled = (table["reference_sum"] + table["current_sum"]) / (
        table["reference_size"] + table["current_size"]
    )
    se = np.sqrt(pooled * (1 - pooled) * (1 / table["reference_size"] + 1 / table["current_size"]))
    z = (p2 - p1) / se.replace(0, np.nan)
    table = table.assign(
        win_rate_reference=p1,
        win_rate_current=p2,
        change=p2 - p1,
        p_value=2 * stats.norm.sf(np.abs(z.fillna(0))),
        current_base=current["won"].mean() if len(current) else np.nan,
    )
    table = table[table["p_value"] < alpha].copy()
    table["label"] = [trait_label(t, v) for t, v in table[["trait", "value"]].itertuples(index=False)]
    table["text"] = [
        f"{label}: win rate {a:.0%} -> {b:.0%}, n={int(n):,}"
        for label, a, b, n in table[
            ["label", "win_rate_reference", "win_rate_current", "current_size"]
        ].itertuples(index=False)
    ]
    return table.reindex(table["change"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def drift_metrics(evidence: Evidence, config: IcpConfig, as_of: dt.date) -> DriftReport:
    """Cohort metrics against the reference profile, population drift, what moved, and a verdict."""
    rules: DriftConfig = config.drift
    reference_date = (pd.Timestamp(as_of) - pd.DateOffset(months=rules.reference_months)).date()
    traits_then = evidence.traits(config, reference_date)  # prepares the inputs both profiles share
    deal_traits = evidence.deal_traits(config)  # before the second thread asks for them too
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The holdout profile does not depend on the reference one: it is learned on a second core
        # meanwhile (much of their numpy, arrow and scipy work runs without the GIL): 7.7 s to 6.2 s at 1M.
        holdout_run = pool.submit(holdout_validation, evidence, config, reference_date)
        profile, design = derive_profile(
            traits_then,
            evidence.opportunities,
            evidence.subscriptions,
            config,
            reference_date,
            describe=False,
            deal_traits=deal_traits,
        )
        scores = fit_and_tiers(profile, design)
        deals = opportunity_outcomes(evidence.opportunities, config.stages, as_of)
        deals = scored_deals(deals, scores, traits_then)
        created = deals["created_at"]
        start = _month_start(reference_date)
        window_start = start - pd.DateOffset(months=rules.reference_window_months)
        reference_deals = profile.outcomes[
            profile.outcomes["closed"] & (profile.outcomes["created_at"] >= window_start)
        ]
        reference_deals = scored_deals(reference_deals, scores, traits_then)
        reference = _performance(reference_deals)
        holdout, _ = holdout_run.result()
    # The reference profile has seen its own deals; judge cohorts against its out-of-sample AUC.
    holdout_values = holdout.set_index("metric")["value"]
    if "auc" in holdout_values and pd.notna(holdout_values["auc"]):
        n_test = int(holdout_values["test_deals"])
        wins = int(round(holdout_values["base_win_rate"] * n_test))
        reference["auc"] = float(holdout_values["auc"])
        reference["auc_se"] = auc_standard_error(reference["auc"], wins, n_test - wins)
    rows: list[dict[str, object]] = []

    def add(
        cohort: str,
        metric: str,
        value: float,
        ref: float,
        threshold: float,
        flagged: bool,
        n: int,
        note: str = "",
        segment: str = "all",
    ) -> None:
        rows.append(
            {
                "as_of": as_of,
                "cohort": cohort,
                "metric": metric,
                "segment": segment,
                "value": value,
                "reference": ref,
                "threshold": threshold,
                "flagged": flagged,
                "n": n,
                "note": note,
            }
        )

    add(
        "reference",
        "auc",
        reference["auc"],
        reference["auc"],
        np.nan,
        False,
        int(reference["n"]),
        f"holdout AUC of a profile learned by {reference_date}; population: deals created {window_start.date()} to {reference_date}",
    )
    flagged_cohorts: list[str] = []
    current_frames: list[pd.DataFrame] = []
    flagged_frames: list[pd.DataFrame] = []
    month = start
    end = pd.Timestamp(as_of, tz="UTC")
    while month <= end:
        nxt = month + pd.DateOffset(months=1)
        label = month.strftime("%Y-%m")
        cohort = deals[(created >= month) & (created < nxt)]
        closed = cohort[cohort["closed"]]
        coverage = cohort["tier"].isin(["A", "B"]).mean() if len(cohort) else np.nan
        add(
            label,
            "icp_coverage",
            coverage,
            np.nan,
            np.nan,
            False,
            len(cohort),
            "share of new pipeline that is tier A or B",
        )
        current_frames.append(closed)
        perf = _performance(closed)
        closed_share = len(closed) / len(cohort) if len(cohort) else 0.0
        enough = (
            perf["n"] >= rules.min_cohort_deals
            and perf["wins"] >= rules.min_cohort_wins
            and perf["n"] - perf["wins"] >= rules.min_cohort_wins
        )
        if not enough or closed_share < rules.min_closed_share:
            why = (
                f"{perf['n']} closed deals, {perf['wins']} wins"
                if not enough
                else f"immature: {closed_share:.0%} of the cohort has closed (need {rules.min_closed_share:.0%})"
            )
            add(
                label,
                "auc",
                np.nan,
                reference["auc"],
                np.nan,
                False,
                int(perf["n"]),
                f"insufficient data: {why}",
            )
        else:
            gap = reference["auc"] - perf["auc"]
            combined_se = float(np.sqrt(reference["auc_se"] ** 2 + perf["auc_se"] ** 2))
            is_flagged = bool(gap >= rules.min_auc_drop and gap > 1.96 * combined_se)
            add(
                label,
                "auc",
                perf["auc"],
                reference["auc"],
                reference["auc"] - max(rules.min_auc_drop, 1.96 * combined_se),
                is_flagged,
                int(perf["n"]),
                f"95% CI {perf['auc'] - 1.96 * perf['auc_se']:.2f}-{perf['auc'] + 1.96 * perf['auc_se']:.2f}",
            )
            add(
                label,
                "tier_a_lift",
                perf["tier_a_lift"],
                np.nan,
                rules.min_tier_a_lift,
                False,
                int(perf["n"]),
            )
            add(label, "win_rate", perf["win_rate"], reference["win_rate"], np.nan, False, int(perf["n"]))
            add(
                label,
                "ab_share_of_wins",
                perf["ab_share_of_wins"],
                reference["ab_share_of_wins"],
                np.nan,
                False,
                int(perf["n"]),
            )
            if is_flagged:
                flagged_cohorts.append(label)
                flagged_frames.append(closed)
        month = nxt
    current = pd.concat(current_frames) if current_frames else deals.iloc[0:0]
    # What moved is judged where the ICP failed: the flagged cohorts, else every cohort since the reference.
    moved = what_moved(
        reference_deals,
        pd.concat(flagged_frames) if flagged_frames else current,
        evidence.traits(config, as_of),
    )
    reference_accounts = traits_then.accounts[
        isin(traits_then.accounts["account_id"], reference_deals["account_id"])
    ]
    current_traits = evidence.traits(config, as_of).accounts
    current_accounts = current_traits[isin(current_traits["account_id"], current["account_id"])]
    # Event traits are left out: feeds cover recent windows better than old ones, so their shift
    # between the two dates is coverage, not a change of who buys.
    for feature in [c for c in reference_accounts.columns if c != "account_id" and c not in EVENT_TRAITS]:
        value = psi(reference_accounts[feature], current_accounts[feature])
        add(
            "population",
            "psi",
            value,
            0.0,
            rules.psi_flag,
            bool(value >= rules.psi_flag),
            len(current_accounts),
            "watch" if rules.psi_watch <= value < rules.psi_flag else "",
            segment=feature,
        )
        add(
            "population",
            "js_distance",
            js_distance(reference_accounts[feature], current_accounts[feature]),
            0.0,
            np.nan,
            False,
            len(current_accounts),
            segment=feature,
        )
    score_psi = psi(reference_deals["fit_score"], current["fit_score"])
    add(
        "population",
        "psi",
        score_psi,
        0.0,
        rules.psi_flag,
        bool(score_psi >= rules.psi_flag),
        len(current),
        segment="fit_score",
    )
    for _, item in moved.head(5).iterrows():
        add(
            "what_moved",
            "win_rate_change",
            item["change"],
            item["win_rate_reference"],
            np.nan,
            False,
            int(item["current_size"]),
            item["text"],
            segment=item["label"],
        )
    flagged = bool(flagged_cohorts)
    reason = f"AUC below reference in cohort(s) {', '.join(flagged_cohorts)}" if flagged else ""
    recommendation = _recommend(moved, flagged)
    if flagged:
        add("verdict", "flag", 1.0, np.nan, np.nan, True, len(current), f"{reason}. {recommendation}")
    return DriftReport(
        pd.DataFrame(rows, columns=METRIC_COLUMNS),
        moved,
        flagged,
        reason,
        recommendation,
        reference_date,
        profile.version,
    )


def _recommend(moved: pd.DataFrame, flagged: bool) -> str:
    if not flagged:
        return ""
    if moved.empty:
        return "re-derive the profile: fit no longer predicts wins, and no single segment explains it"
    rising = moved[moved["change"] > 0]
    falling = moved[moved["change"] < 0]
    parts = []
    if len(rising):
        top = rising.iloc[0]
        ratio = top["win_rate_current"] / top["current_base"] if top["current_base"] else np.nan
        parts.append(f"the {top['label']} segment now wins {ratio:.1f}x the base rate ({top['text']})")
    if len(falling):
        parts.append(f"{falling.iloc[0]['text']}")
    return "re-derive the profile: " + "; ".join(parts)
