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

from icp_pipeline.profile.traits import ACCOUNT_ROW, SINGLE_TRAITS, TECHNOLOGY, UNKNOWN, AccountTraits


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
    from scipy import stats

    p_values = np.ones(len(table))
    counts = table[["won_with", "lost_with", "won_without", "lost_without"]].to_numpy(dtype=np.int64)
    for i, (a, b, c, d) in enumerate(counts):
        if (a + b) and (c + d) and (a + c) and (b + d):
            p_values[i] = stats.fisher_exact([[a, b], [c, d]]).pvalue
    return p_values


def trait_value_sums(traits: AccountTraits, weights: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per (trait, value) held by some account: `accounts_with` and, per named weight, its sum.

    The numbers grouping `long_traits` by (trait, value) gives, counted with `np.bincount` on the
    categorical codes of each trait column and of the technologies: no table of (account, trait,
    value) strings is built, which at a million accounts took seconds. Each weight has one value
    per row of `traits.accounts` (see `account_totals`). Rows come sorted by trait (categorical
    order) and value, as the grouping sorted them; unknown single values are left out.
    """
    accounts = traits.accounts
    single = [name for name in accounts.columns if name != "account_id"]
    order = [*SINGLE_TRAITS, *sorted(set(single) - set(SINGLE_TRAITS)), TECHNOLOGY]
    parts: list[pd.DataFrame] = []

    def add(trait: str, codes: np.ndarray, values: list[str], holder_weights: dict[str, np.ndarray]) -> None:
        columns: dict[str, object] = {
            "value": values,
            "accounts_with": np.bincount(codes, minlength=len(values)).astype(np.int64),
        }
        for name, weight in holder_weights.items():
            columns[name] = np.bincount(codes, weights=weight, minlength=len(values))
        part = pd.DataFrame(columns)
        part = part[part["accounts_with"] > 0]
        parts.append(part.sort_values("value", kind="stable").assign(trait=trait))

    for trait in order:
        if trait == TECHNOLOGY:
            tech = traits.technologies
            technology = tech[TECHNOLOGY].astype("category")
            holder = tech[ACCOUNT_ROW].to_numpy()
            per_pair = {name: weight[holder] for name, weight in weights.items()}
            add(
                TECHNOLOGY,
                technology.cat.codes.to_numpy(),
                [str(v) for v in technology.cat.categories],
                per_pair,
            )
        elif trait in single:
            column = accounts[trait].astype("category")
            values = [str(v) for v in column.cat.categories]
            codes = column.cat.codes.to_numpy()
            known = codes >= 0
            keep = np.asarray([v != UNKNOWN for v in values], dtype=bool)
            mask = known & keep[np.where(known, codes, 0)] if len(keep) else known
            add(trait, codes[mask], values, {name: w[mask] for name, w in weights.items()})
    table = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["value", "accounts_with", *weights])
    )
    table["value"] = table["value"].astype("str")
    table.insert(0, "trait", pd.Categorical(table.pop("trait"), categories=order))
    return table


def account_totals(
    traits: AccountTraits, deals: pd.DataFrame, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `traits.accounts`: how many deals name it, and the sum of their `values`."""
    return _row_totals(traits, traits.rows_of(deals), values)


def _row_totals(
    traits: AccountTraits, found: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`account_totals` of rows already placed in `traits.accounts` (`found`, -1: none)."""
    named = found >= 0
    size = len(traits.accounts)
    counts = np.bincount(found[named], minlength=size).astype(np.float64)
    sums = np.bincount(found[named], weights=np.asarray(values, dtype=np.float64)[named], minlength=size)
    return counts, sums


def _trait_value_counts(
    traits: AccountTraits, deals: AccountTraits, won: np.ndarray, best_rows: np.ndarray, top_rows: np.ndarray
) -> pd.DataFrame:
    """Per (trait, value): the accounts holding it at the as-of date (`traits`), and the closed and
    won deals, best and top customers holding it when their deal was created (`deals`: one row
    per closed deal, `won` its outcome; `best_rows`/`top_rows`: each best/top customer's first
    won deal)."""
    rows = len(deals.accounts)

    def marked(at: np.ndarray) -> np.ndarray:
        flags = np.zeros(rows, dtype=np.float64)
        flags[at] = 1.0
        return flags

    per_deal = trait_value_sums(
        deals,
        {
            "best_with": marked(best_rows),
            "top_with": marked(top_rows),
            "closed_with": np.ones(rows, dtype=np.float64),
            "won_with": won.astype(np.float64),
        },
    ).drop(columns="accounts_with")
    per_account = trait_value_sums(traits, {})
    order = per_account["trait"].cat.categories.union(per_deal["trait"].cat.categories, sort=False)
    table = per_account.assign(trait=per_account["trait"].astype("str")).merge(
        per_deal.assign(trait=per_deal["trait"].astype("str")), on=["trait", "value"], how="outer"
    )
    table["accounts_with"] = table["accounts_with"].fillna(0).astype(np.int64)
    table["trait"] = pd.Categorical(table["trait"], categories=order)
    return table.sort_values(["trait", "value"], kind="stable").reset_index(drop=True)


def trait_evidence(
    traits: AccountTraits,
    deals: AccountTraits,
    won: np.ndarray,
    best_rows: np.ndarray,
    top_rows: np.ndarray,
    rules: EvidenceRules | None = None,
) -> pd.DataFrame:
    """One row per trait value with support, lift, win rates, p and q values and a verdict hint.

    `deals` describes each closed deal (one row each, `won` its outcome) as its account was when
    the deal was created; `traits` the accounts at the as-of date (the share of accounts holding
    a value). `best_rows`/`top_rows`: the deal rows of the best and top customers' first wins.
    """
    from scipy import stats

    rules = rules or EvidenceRules()
    n_accounts = len(traits.accounts)
    total_closed, total_won = len(won), int(won.sum())
    table = _trait_value_counts(traits, deals, won, best_rows, top_rows)
    for column in ("closed_with", "won_with", "best_with", "top_with"):
        table[column] = table[column].fillna(0).astype(np.int64)
    table["lost_with"] = table["closed_with"] - table["won_with"]
    table["closed_without"] = total_closed - table["closed_with"]
    table["won_without"] = total_won - table["won_with"]
    table["lost_without"] = table["closed_without"] - table["won_without"]
    table["share_of_accounts"] = table["accounts_with"] / max(n_accounts, 1)
    table["support_best"] = table["best_with"] / max(len(best_rows), 1)
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
    table["top_customers"] = len(top_rows)
    table["base_win_rate"] = total_won / total_closed if total_closed else np.nan
    return table.drop(columns=["top_with"])
