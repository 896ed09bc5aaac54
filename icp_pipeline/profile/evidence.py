"""What the won/lost evidence says about each trait, with its uncertainty.

For every trait value: how common it is among best customers and among all accounts (lift),
the win rate of deals with and without it (Wilson interval), a Fisher exact test and a
Benjamini-Hochberg correction across all traits tested, so that testing fifty traits does
not produce a few "winning" ones by chance. Values with too little data are marked
`insufficient_evidence` and are never turned into ICP criteria.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from icp_pipeline.profile.traits import SINGLE_TRAITS, TECHNOLOGY, UNKNOWN, AccountTraits


@dataclass(frozen=True)
class EvidenceRules:
    """Minimum support and significance; defaults are conventional, editable in icp.yaml."""

    min_closed_with: int = 30
    min_won_with: int = 5
    alpha: float = 0.05
    top_customers: int = 5


def long_traits(traits: AccountTraits) -> pd.DataFrame:
    """(account_id, trait, value) for every known single-valued trait and every technology."""
    single = [name for name in traits.accounts.columns if name != "account_id"]
    melted = traits.accounts.melt(
        id_vars="account_id", value_vars=single, var_name="trait", value_name="value"
    )
    melted = melted[melted["value"].astype("str") != UNKNOWN]
    tech = traits.technologies.rename(columns={TECHNOLOGY: "value"}).assign(trait=TECHNOLOGY)
    combined = pd.concat([melted[["account_id", "trait", "value"]], tech[["account_id", "trait", "value"]]])
    combined["value"] = combined["value"].astype("str")
    combined["trait"] = pd.Categorical(
        combined["trait"], categories=[*SINGLE_TRAITS, *sorted(set(single) - set(SINGLE_TRAITS)), TECHNOLOGY]
    )
    return combined.reset_index(drop=True)


def wilson_interval(
    successes: np.ndarray, trials: np.ndarray, z: float = 1.96
) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval: sane at 0 and 1 and for small samples, unlike the normal one."""
    n = np.maximum(trials.astype(float), 1e-12)
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    low = np.where(trials > 0, np.clip(centre - half, 0, 1), np.nan)
    high = np.where(trials > 0, np.clip(centre + half, 0, 1), np.nan)
    return low, high


def _fisher_p_values(table: pd.DataFrame) -> np.ndarray:
    """Two-sided Fisher exact p-value per trait value (one call per trait value, not per row)."""
    p_values = np.ones(len(table))
    counts = table[["won_with", "lost_with", "won_without", "lost_without"]].to_numpy(dtype=np.int64)
    for i, (a, b, c, d) in enumerate(counts):
        if (a + b) and (c + d) and (a + c) and (b + d):
            p_values[i] = stats.fisher_exact([[a, b], [c, d]]).pvalue
    return p_values


def trait_evidence(
    traits: AccountTraits,
    opportunities: pd.DataFrame,
    best: pd.Index,
    top_customers: pd.Index,
    rules: EvidenceRules | None = None,
) -> pd.DataFrame:
    """One row per trait value with support, lift, win rates, p and q values and a verdict hint."""
    rules = rules or EvidenceRules()
    pairs = long_traits(traits)
    n_accounts = len(traits.accounts)
    closed = opportunities[opportunities["closed"]]
    total_closed, total_won = len(closed), int(closed["won"].sum())

    per_account = closed.groupby("account_id", observed=True).agg(closed=("won", "size"), won=("won", "sum"))
    joined = pairs.join(per_account, on="account_id")
    joined["is_best"] = joined["account_id"].isin(best)
    joined["is_top"] = joined["account_id"].isin(top_customers)
    table = (
        joined.groupby(["trait", "value"], observed=True, sort=True)
        .agg(
            accounts_with=("account_id", "size"),
            best_with=("is_best", "sum"),
            top_with=("is_top", "sum"),
            closed_with=("closed", "sum"),
            won_with=("won", "sum"),
        )
        .reset_index()
    )
    for column in ("closed_with", "won_with", "best_with", "top_with"):
        table[column] = table[column].fillna(0).astype(np.int64)
    table["lost_with"] = table["closed_with"] - table["won_with"]
    table["closed_without"] = total_closed - table["closed_with"]
    table["won_without"] = total_won - table["won_with"]
    table["lost_without"] = table["closed_without"] - table["won_without"]
    table["share_of_accounts"] = table["accounts_with"] / max(n_accounts, 1)
    table["support_best"] = table["best_with"] / max(len(best), 1)
    table["lift"] = np.where(
        table["share_of_accounts"] > 0, table["support_best"] / table["share_of_accounts"], np.nan
    )
    table["win_rate_with"] = table["won_with"] / table["closed_with"].where(table["closed_with"] > 0)
    table["win_rate_without"] = table["won_without"] / table["closed_without"].where(
        table["closed_without"] > 0
    )
    low, high = wilson_interval(table["won_with"].to_numpy(), table["closed_with"].to_numpy())
    table["win_rate_with_low"], table["win_rate_with_high"] = low, high
    table["win_rate_lift"] = table["win_rate_with"] / table["win_rate_without"]
    table["p_value"] = _fisher_p_values(table)
    enough = (table["closed_with"] >= rules.min_closed_with) & (
        (table["won_with"] >= rules.min_won_with) | (table["win_rate_with"] < table["win_rate_without"])
    )
    table["sufficient"] = enough
    table["q_value"] = np.nan
    if enough.any():
        table.loc[enough, "q_value"] = stats.false_discovery_control(table.loc[enough, "p_value"].to_numpy())
    table["significant"] = enough & (table["q_value"] < rules.alpha)
    table["top_customers_with"] = table["top_with"]
    table["top_customers"] = len(top_customers)
    table["base_win_rate"] = total_won / total_closed if total_closed else np.nan
    return table.drop(columns=["top_with"])
