"""Calibration drift by tier and trait, and an early estimate for cohorts still closing.

Calibration: over a recent window, the reference's out-of-sample win rate per tier predicts
each deal's chance (p0); per tier and per trait value we compare observed wins with the sum of
p0 of the deals that hold it. Because recent windows are still closing and quick losses close
first, every group would look worse than predicted; the prediction is therefore rescaled by the
window's overall observed/expected ratio, so a finding says "this trait lost (or gained)
relative to the rest", not "recent deals win less". The p-value is the normal approximation of
the Poisson-binomial count (sum of p0 (1 - p0) as its variance), Benjamini-Hochberg corrected
across the trait values tested.

Early estimate: a cohort that is a few months old has mostly quick deals closed, and losses
close quicker than wins. Each closed deal is weighted by 1 / P(a deal with its outcome closes
within its age), from the time-to-close of won and of lost deals created in the reference
window (inverse probability of having been observed), which estimates what the cohort will look
like when it has closed. It is labelled an estimate and never raises a flag.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from icp_pipeline.profile.derive import HARD_NO, MUST_HAVE, NICE_TO_HAVE, trait_label
from icp_pipeline.profile.evidence import account_totals, trait_value_sums
from icp_pipeline.profile.traits import AccountTraits
from icp_pipeline.scoring.validation import auc

MIN_GROUP_DEALS = 20
MIN_CLOSE_PROBABILITY = 0.05


def _normal_two_sided(observed: np.ndarray, expected: np.ndarray, variance: np.ndarray) -> np.ndarray:
    from scipy import stats

    z = (observed - expected) / np.sqrt(np.where(variance > 0, variance, np.nan))
    return 2 * stats.norm.sf(np.abs(z))


def group_sums(deals: pd.DataFrame, p0: pd.Series, traits: AccountTraits) -> pd.DataFrame:
    """Per tier and per trait value: deals, wins, expected wins and their variance (p0 rescaled so
    the deals' expected total equals their observed total)."""
    expected = deals["tier"].astype("str").map(p0).to_numpy(dtype=float)
    won = deals["won"].to_numpy(dtype=float)
    scale = won.sum() / expected.sum() if expected.sum() else 1.0
    expected = np.clip(expected * scale, 1e-6, 1 - 1e-6)
    variance = expected * (1 - expected)
    tiers = pd.DataFrame(
        {"tier": deals["tier"].astype("str").to_numpy(), "w": won, "e": expected, "v": variance}
    )
    tier_table = tiers.groupby("tier").agg(
        size=("w", "size"), wins=("w", "sum"), exp=("e", "sum"), var=("v", "sum")
    )
    tier_table = tier_table.reset_index().assign(trait="tier", value=lambda t: t.pop("tier"))
    sums = {}
    for name, values in (("wins", won), ("exp", expected), ("var", variance)):
        size, total = account_totals(traits, deals, values)
        sums[name], sums["size"] = total, size
    per_value = trait_value_sums(traits, sums).drop(columns="accounts_with")
    per_value["trait"] = per_value["trait"].astype("str")
    return pd.concat([tier_table, per_value], ignore_index=True)


def monthly_trait_sums(
    deals: pd.DataFrame, months: pd.Series, p0: pd.Series, traits: AccountTraits
) -> pd.DataFrame:
    """`group_sums` of each month's deals for trait values only (month, trait, value, size, wins,
    exp, var), counted in one pass over the traits: one `trait_value_sums` call per month cost a
    second at 100,000 accounts."""
    expected = deals["tier"].astype("str").map(p0).to_numpy(dtype=float)
    won = deals["won"].to_numpy(dtype=float)
    labels = months.to_numpy()
    rows = traits.rows_of(deals)
    weights: dict[str, np.ndarray] = {}
    distinct = sorted(set(labels))
    for month in distinct:
        chosen = labels == month
        scale = won[chosen].sum() / expected[chosen].sum() if expected[chosen].sum() else 1.0
        month_expected = np.where(chosen, np.clip(expected * scale, 1e-6, 1 - 1e-6), 0.0)
        found = np.where(chosen, rows, -1)
        for name, values in (
            ("size", chosen.astype(float)),
            ("wins", won * chosen),
            ("exp", month_expected),
            ("var", month_expected * (1 - month_expected)),
        ):
            weights[f"{name}|{month}"] = _row_sums(traits, found, values)
    if not weights:
        return pd.DataFrame(columns=["month", "trait", "value", "size", "wins", "exp", "var"])
    wide = trait_value_sums(traits, weights).drop(columns="accounts_with")
    wide["trait"] = wide["trait"].astype("str")
    long = wide.melt(id_vars=["trait", "value"], var_name="key", value_name="amount")
    long[["name", "month"]] = long["key"].str.split("|", n=1, expand=True)
    table = long.pivot_table(
        index=["month", "trait", "value"], columns="name", values="amount", aggfunc="first"
    )
    return table.reset_index()[["month", "trait", "value", "size", "wins", "exp", "var"]]


def _row_sums(traits: AccountTraits, found: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row of `traits.accounts`, the sum of `values` over the deals placed there (`found`)."""
    named = found >= 0
    return np.bincount(found[named], weights=values[named], minlength=len(traits.accounts))


def kinds_and_labels(table: pd.DataFrame, profile_evidence: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Per (trait, value) row: tier, must_have, nice_to_have, hard_no or other (not in the profile),
    and its readable label."""
    verdicts = profile_evidence.set_index(["trait", "value"])["verdict"].astype("str")
    keys = pd.MultiIndex.from_arrays([table["trait"].astype("str"), table["value"]])
    kind = pd.Series(verdicts.reindex(keys).to_numpy(), index=table.index)
    kinds = np.where(
        table["trait"] == "tier", "tier", kind.where(kind.isin([MUST_HAVE, NICE_TO_HAVE, HARD_NO]), "other")
    )
    labels = [
        f"Tier {v}" if t == "tier" else trait_label(t, v)
        for t, v in table[["trait", "value"]].itertuples(index=False)
    ]
    return kinds, labels


def calibration_table(
    recent: pd.DataFrame,
    recent_traits: AccountTraits,
    reference: pd.DataFrame,
    reference_traits: AccountTraits,
    p0: pd.Series,
    profile_evidence: pd.DataFrame,
    q: float,
) -> pd.DataFrame:
    """One row per tier and trait value with >= MIN_GROUP_DEALS closed deals in both periods.

    observed/predicted: the recent window's win rate and its prediction, p_value: observed vs
    predicted there. change_p/q_value: did the observed/predicted ratio move away from what it
    was on the reference deals? (A trait the profile ignores but that always won is no drift.)
    `significant`: a trait value whose ratio moved, Benjamini-Hochberg at q across trait values."""
    from scipy import stats

    columns = [
        "kind", "label", "n", "observed", "predicted", "reference_observed", "reference_predicted",
        "p_value", "change_p", "q_value", "significant", "text",
    ]  # fmt: skip
    if recent.empty or reference.empty:
        return pd.DataFrame(columns=columns)
    now = group_sums(recent, p0, recent_traits)
    then = group_sums(reference, p0, reference_traits)
    table = now.merge(then, on=["trait", "value"], suffixes=("", "_ref"))
    table = table[(table["size"] >= MIN_GROUP_DEALS) & (table["size_ref"] >= MIN_GROUP_DEALS)].copy()
    verdicts = profile_evidence.set_index(["trait", "value"])["verdict"].astype("str")
    keys = pd.MultiIndex.from_arrays([table["trait"], table["value"]])
    kind = pd.Series(verdicts.reindex(keys).to_numpy(), index=table.index)
    table["kind"] = np.where(
        table["trait"] == "tier", "tier", kind.where(kind.isin([MUST_HAVE, NICE_TO_HAVE, HARD_NO]), "other")
    )
    table["label"] = [
        f"Tier {v}" if t == "tier" else trait_label(t, v)
        for t, v in table[["trait", "value"]].itertuples(index=False)
    ]
    table["p_value"] = _normal_two_sided(
        table["wins"].to_numpy(), table["exp"].to_numpy(), table["var"].to_numpy()
    )
    ratio_now, ratio_then = table["wins"] / table["exp"], table["wins_ref"] / table["exp_ref"]
    spread = np.sqrt(table["var"] / table["exp"] ** 2 + table["var_ref"] / table["exp_ref"] ** 2)
    table["change_p"] = 2 * stats.norm.sf(np.abs((ratio_now - ratio_then) / spread.replace(0, np.nan)))
    table["n"] = table["size"].astype(np.int64)
    table["observed"], table["predicted"] = table["wins"] / table["size"], table["exp"] / table["size"]
    table["reference_observed"] = table["wins_ref"] / table["size_ref"]
    table["reference_predicted"] = table["exp_ref"] / table["size_ref"]
    traits_only = (table["kind"] != "tier").to_numpy()
    table["q_value"] = table["change_p"]
    if traits_only.any():
        table.loc[traits_only, "q_value"] = stats.false_discovery_control(
            table.loc[traits_only, "change_p"].fillna(1.0).to_numpy()
        )
    table["significant"] = traits_only & (table["q_value"] < q)
    table["text"] = [
        f"{label}: predicted {pred:.0%}, observed {obs:.0%}, n={n:,}, p={p:.2g} "
        f"(reference deals: predicted {rp:.0%}, observed {ro:.0%}; change p={cp:.2g})"
        for label, pred, obs, n, p, rp, ro, cp in table[
            [
                "label",
                "predicted",
                "observed",
                "n",
                "p_value",
                "reference_predicted",
                "reference_observed",
                "change_p",
            ]
        ].itertuples(index=False)
    ]
    return table[columns].sort_values("change_p").reset_index(drop=True)


def calibration_findings(table: pd.DataFrame) -> list[str]:
    """The ICP traits that stopped lifting and the outside traits that now win, strongest first."""
    if table.empty:
        return []
    significant = table[table["significant"].astype(bool)].sort_values("change_p")
    stopped = significant[
        (significant["kind"] == MUST_HAVE) & (significant["observed"] < significant["predicted"])
    ]
    hard_no = significant[
        (significant["kind"] == HARD_NO) & (significant["observed"] > significant["predicted"])
    ]
    rising = significant[
        (significant["kind"] == "other") & (significant["observed"] > significant["predicted"])
    ]
    findings = [f"ICP trait stopped lifting: {text}" for text in stopped["text"].head(2)]
    findings += [f"hard no now wins: {text}" for text in hard_no["text"].head(1)]
    findings += [f"trait outside the profile now wins: {text}" for text in rising["text"].head(2)]
    falling = significant[
        (significant["kind"] == "other") & (significant["observed"] < significant["predicted"])
    ]
    findings += [f"trait outside the profile now loses: {text}" for text in falling["text"].head(1)]
    return findings


def weighted_auc(scores: np.ndarray, won: np.ndarray, weights: np.ndarray) -> float:
    """AUC with a weight per deal: P(weighted win outranks weighted loss), ties count half."""
    values, codes = np.unique(scores, return_inverse=True)
    positive = np.bincount(codes, weights=weights * won, minlength=len(values))
    negative = np.bincount(codes, weights=weights * ~won, minlength=len(values))
    below = np.cumsum(negative) - negative
    total = positive.sum() * negative.sum()
    return float(((positive * (below + 0.5 * negative)).sum()) / total) if total else float("nan")


def close_probability(reference_deals: pd.DataFrame) -> dict[bool, np.ndarray]:
    """Per outcome (won True/False): P(closed within d days), d = 0..max, from reference deals."""
    curves = {}
    for outcome in (True, False):
        days = reference_deals.loc[reference_deals["won"] == outcome, "cycle_days"].dropna().to_numpy()
        days = np.clip(days.astype(np.int64), 0, None)
        counts = np.bincount(days, minlength=1) if len(days) else np.ones(1)
        curves[outcome] = np.cumsum(counts) / counts.sum()
    return curves


def early_estimate(
    closed: pd.DataFrame, ages: np.ndarray, curves: dict[bool, np.ndarray]
) -> dict[str, float]:
    """Estimated eventual win rate and AUC of a cohort from its closed deals (inverse probability
    of having closed by now, per outcome). `ages`: each closed deal's age in days at the as-of date."""
    won = closed["won"].to_numpy(dtype=bool)
    probability = np.empty(len(closed))
    for outcome in (True, False):
        curve = curves[outcome]
        chosen = won == outcome
        probability[chosen] = curve[np.clip(ages[chosen], 0, len(curve) - 1)]
    usable = probability >= MIN_CLOSE_PROBABILITY
    weights = 1.0 / probability[usable]
    won, scores = won[usable], closed["fit_score"].to_numpy(dtype=float)[usable]
    result = {"n": int(usable.sum()), "win_rate": float("nan"), "auc": float("nan")}
    if usable.sum() and 0 < won.sum() < len(won):
        result["win_rate"] = float(weights[won].sum() / weights.sum())
        result["auc"] = float(weighted_auc(scores, won, weights))
    elif usable.sum():
        result["win_rate"] = float(won.mean())
    result["raw_auc"] = auc(scores, won) if usable.sum() else float("nan")
    return result
