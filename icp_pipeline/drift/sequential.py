"""Pooled and sequential performance tests: what a few hundred deals a month can show.

A monthly cohort of 200 deals cannot show a 0.05 AUC drop; six months pooled, or evidence summed
month by month, can. Two procedures run beside the per-cohort tests:

- Rolling windows: the closed deals created in the last 3 and 6 months, scored with the
  reference profile; their AUC is tested one-sided against the reference (holdout) AUC with
  Hanley-McNeil standard errors. The window AUC tests and the mature cohort AUC tests form one
  family, corrected with Benjamini-Hochberg at q = false_alarm_rate / 3.
- A Bernoulli CUSUM over cohorts: per tier, the reference's out-of-sample win rate p0 (the
  holdout's) is the in-control model; the alternative p1 says the tiers separate only half as
  well (p1 = base + 0.5 (p0 - base)). Each month adds the log-likelihood ratio of its closed
  deals' outcomes, S = max(0, S + LLR), so a small sustained loss of separation accumulates.
  The threshold h is the (1 - false_alarm_rate / 3) quantile of the largest in-control S over
  the months observed, simulated from the same deal counts with p0 redrawn from its own
  uncertainty (a Beta posterior of the holdout counts), so it holds at 2,000 and at 1,000,000
  accounts alike.
- A Bernoulli CUSUM per trait value (`trait_cusum`): one side per value (an ICP trait halving, a
  hard no or outside trait doubling), thresholds simulated the same way, Bonferroni over the
  values at false_alarm_rate / 3.

False alarms: the three procedures share false_alarm_rate (Bonferroni split), so a stable ICP
raises a performance flag on a given night with probability at most about false_alarm_rate,
as far as the reference rates' stated uncertainty covers the truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TIERS = ("A", "B", "C", "D")
SEPARATION_UNDER_DRIFT = 0.5  # the CUSUM's alternative: the tiers separate half as well
SIMULATIONS = 4000


def one_sided_p(gap: float, se: float) -> float:
    """P(a drop at least this large | no drop), normal approximation."""
    from scipy import stats

    if not np.isfinite(gap) or not np.isfinite(se) or se <= 0:
        return float("nan")
    return float(stats.norm.sf(gap / se))


def benjamini_hochberg(p_values: pd.Series, q: float) -> pd.Series:
    """Which tests BH rejects at false discovery rate q (NaN p-values are never rejected)."""
    from scipy import stats

    rejected = pd.Series(False, index=p_values.index)
    known = p_values.dropna()
    if len(known):
        rejected[known.index] = stats.false_discovery_control(known.to_numpy()) <= q
    return rejected


def tier_reference(holdout_scored: pd.DataFrame, reference_deals: pd.DataFrame) -> pd.DataFrame:
    """Per tier: deals, wins and win rate p0 out of sample (holdout), else in-sample reference.

    The reference profile has seen its own deals, so its in-sample tier rates are too far apart;
    the holdout profile's test deals give honest rates. A tier missing there falls back."""
    rows = []
    for tier in TIERS:
        source = holdout_scored[holdout_scored["tier"] == tier] if len(holdout_scored) else holdout_scored
        if len(source) < 20:
            source = reference_deals[reference_deals["tier"] == tier]
        deals, wins = len(source), int(source["won"].sum()) if len(source) else 0
        rows.append({"tier": tier, "deals": deals, "wins": wins})
    table = pd.DataFrame(rows).set_index("tier")
    overall = table["wins"].sum() / max(table["deals"].sum(), 1)
    # A tier with no reference deals gets the overall rate; rates are kept off 0 and 1.
    rate = (table["wins"] + overall) / (table["deals"] + 1)
    table["p0"] = rate.clip(1e-3, 1 - 1e-3)
    return table


def _alternative(p0: np.ndarray, base: float) -> np.ndarray:
    return np.clip(base + SEPARATION_UNDER_DRIFT * (p0 - base), 1e-3, 1 - 1e-3)


def cusum_path(
    counts: pd.DataFrame, reference: pd.DataFrame, false_alarm_rate: float, seed: int = 0
) -> tuple[pd.DataFrame, float]:
    """(per month: deals, wins, expected wins, LLR, S), threshold h.

    `counts`: one row per month, columns `deals_<tier>` and `wins_<tier>` (closed deals of the
    month's cohort). `reference`: `tier_reference`. The simulation is done on the per-tier counts
    (binomial draws), not per deal, so it costs the same at any size."""
    p0 = reference["p0"].to_numpy()
    base = float((reference["p0"] * reference["deals"]).sum() / max(reference["deals"].sum(), 1))
    p1 = _alternative(p0, base)
    win_llr, loss_llr = np.log(p1 / p0), np.log((1 - p1) / (1 - p0))
    deals = counts[[f"deals_{t}" for t in TIERS]].to_numpy(dtype=np.int64)
    wins = counts[[f"wins_{t}" for t in TIERS]].to_numpy(dtype=np.int64)
    llr = (wins * win_llr + (deals - wins) * loss_llr).sum(axis=1)
    statistic = np.zeros(len(llr))
    level = 0.0
    for i, value in enumerate(llr):  # one step per month: a handful of iterations
        level = max(0.0, level + value)
        statistic[i] = level
    rng = np.random.default_rng(seed)
    drawn_p0 = rng.beta(
        reference["wins"].to_numpy() + 0.5,
        (reference["deals"] - reference["wins"]).to_numpy() + 0.5,
        size=(SIMULATIONS, len(TIERS)),
    )
    simulated_wins = rng.binomial(deals[None, :, :], drawn_p0[:, None, :])
    simulated = (simulated_wins * win_llr + (deals[None] - simulated_wins) * loss_llr).sum(axis=2)
    levels = np.zeros(SIMULATIONS)
    peak = np.zeros(SIMULATIONS)
    for month in range(simulated.shape[1]):
        levels = np.maximum(0.0, levels + simulated[:, month])
        peak = np.maximum(peak, levels)
    threshold = float(np.quantile(peak, 1 - false_alarm_rate)) if len(llr) else float("nan")
    path = counts[["month"]].copy()
    path["deals"] = deals.sum(axis=1)
    path["wins"] = wins.sum(axis=1)
    path["expected_wins"] = (deals * p0).sum(axis=1)
    path["llr"] = llr
    path["statistic"] = statistic
    return path.reset_index(drop=True), max(threshold, 1e-9)


def tier_counts(closed: pd.DataFrame, month: pd.Series) -> pd.DataFrame:
    """Closed deals and wins per month (a label per deal in `month`) and tier, wide."""
    frame = pd.DataFrame(
        {
            "month": month.to_numpy(),
            "tier": closed["tier"].astype("str").to_numpy(),
            "won": closed["won"].to_numpy(),
        }
    )
    frame["won"] = frame["won"].astype(np.int64)
    deals = pd.crosstab(frame["month"], frame["tier"]).reindex(columns=list(TIERS), fill_value=0)
    wins = frame.pivot_table(index="month", columns="tier", values="won", aggfunc="sum", fill_value=0)
    wins = wins.reindex(index=deals.index, columns=list(TIERS), fill_value=0)
    wide = pd.DataFrame(index=deals.index.rename("month"))
    for tier in TIERS:
        wide[f"deals_{tier}"] = deals[tier]
        wide[f"wins_{tier}"] = wins[tier]
    return wide.fillna(0).astype(np.int64).reset_index()


TRAIT_RATIO_UNDER_DRIFT = 2.0  # the alternative: the trait's win rate doubles (or halves)
TRAIT_SIMULATIONS = 20_000


TAIL_START = 0.01


def tail_quantile(peaks: np.ndarray, level: float) -> np.ndarray:
    """Per column, the value exceeded with probability `level`. Below 1% the raw quantile rests on a
    handful of draws, so the tail beyond the 99th percentile is fitted as exponential (a generalised
    Pareto tail of shape 0, the usual one for CUSUM maxima) and extrapolated."""
    if level >= TAIL_START:
        return np.quantile(peaks, 1 - level, axis=0)
    start = np.quantile(peaks, 1 - TAIL_START, axis=0)
    excess = np.where(peaks > start, peaks - start, np.nan)
    mean_excess = np.nanmean(np.where(np.isnan(excess).all(axis=0), 0.0, excess), axis=0)
    return start + np.log(TAIL_START / level) * np.maximum(mean_excess, 1e-9)


def trait_cusum(
    monthly: pd.DataFrame, reference: pd.DataFrame, sides: pd.Series, level: float, seed: int = 0
) -> pd.DataFrame:
    """A one-sided Bernoulli CUSUM per trait value on its monthly wins, with its own threshold.

    `monthly`: rows (month, trait, value, size, wins, exp) with exp from the reference tier rates
    rescaled to the month's own total (so base-rate and maturity shifts cancel); `reference`:
    (trait, value, wins, exp, var) on the reference deals. The trait's reference observed/expected
    ratio r (shrunk toward 1) sets its in-control rate p = r * exp / size, so a trait that always
    won more than its tier is no drift. `sides`: +1 (watch for the rate doubling) or -1 (halving)
    per (trait, value). The threshold h of each trait value is the (1 - level) quantile of its
    largest in-control statistic over the months, simulated from its own monthly counts with r
    redrawn from its uncertainty (tail beyond the 99th percentile extrapolated, `tail_quantile`). Returns per trait value: months, path, threshold, and per month
    deals, wins, expected."""
    ref = reference.assign(
        ratio=(reference["wins"] + 5) / (reference["exp"] + 5),
        ratio_sd=np.sqrt(reference["var"] + 5) / (reference["exp"] + 5),
    )[["trait", "value", "ratio", "ratio_sd"]]
    table = monthly.merge(ref, on=["trait", "value"], how="inner").merge(
        sides.rename("side").reset_index(), on=["trait", "value"]
    )
    if table.empty:
        return pd.DataFrame()
    months = sorted(table["month"].unique())
    keys = table[["trait", "value"]].drop_duplicates().reset_index(drop=True)
    index = pd.MultiIndex.from_frame(keys)
    position = index.get_indexer(pd.MultiIndex.from_frame(table[["trait", "value"]]))
    column = np.searchsorted(months, table["month"].to_numpy())
    shape = (len(keys), len(months))
    deals, wins, rate = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    deals[position, column] = table["size"].to_numpy()
    wins[position, column] = table["wins"].to_numpy()
    base = (table["exp"] / table["size"].where(table["size"] > 0)).fillna(0).to_numpy()
    rate[position, column] = base
    per_key = table.drop_duplicates(["trait", "value"]).set_index(["trait", "value"]).reindex(index)
    ratio, ratio_sd = per_key["ratio"].to_numpy(), per_key["ratio_sd"].to_numpy()
    factor = np.where(per_key["side"].to_numpy() > 0, TRAIT_RATIO_UNDER_DRIFT, 1 / TRAIT_RATIO_UNDER_DRIFT)
    p0 = np.clip(rate * ratio[:, None], 1e-4, 0.98)
    p1 = np.clip(p0 * factor[:, None], 1e-4, 0.99)
    win_llr, loss_llr = np.log(p1 / p0), np.log((1 - p1) / (1 - p0))

    def paths(w: np.ndarray) -> np.ndarray:
        steps = w * win_llr + (deals - w) * loss_llr
        out = np.zeros_like(steps)
        level_now = np.zeros(steps.shape[:-1])
        for m in range(steps.shape[-1]):  # one step per month
            level_now = np.maximum(0.0, level_now + steps[..., m])
            out[..., m] = level_now
        return out

    observed = paths(wins)
    rng = np.random.default_rng(seed)
    drawn = np.exp(rng.normal(0, ratio_sd / ratio, size=(TRAIT_SIMULATIONS, len(keys))))
    simulated = rng.binomial(deals.astype(np.int64)[None], np.clip(p0[None] * drawn[:, :, None], 0, 1))
    threshold = tail_quantile(paths(simulated).max(axis=2), level)
    return keys.assign(
        months=[months] * len(keys),
        path=list(observed),
        threshold=np.maximum(threshold, 1e-9),
        side=per_key["side"].to_numpy(),
        deals=list(deals),
        wins=list(wins),
        expected=list(p0 * deals),
    )
