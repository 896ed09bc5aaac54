"""Outcomes the ICP is learned from: won/lost deals, retention, expansion, best customers.

Only what was known at the as-of date counts: a deal is closed when its `closed_at` is on or
before the date, a subscription churned when it ended by then.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from icp_pipeline.config import StageMapping

WON, LOST, OPEN = "won", "lost", "open"


def _end_of(as_of: dt.date) -> pd.Timestamp:
    return pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)


def classify_stages(stage: pd.Series, mapping: StageMapping) -> pd.Series:
    """won / lost / open from the CRM's own stage names (case-insensitive)."""
    folded = stage.astype("str").str.strip().str.lower()
    outcome = np.where(
        folded.isin([s.lower() for s in mapping.won]),
        WON,
        np.where(folded.isin([s.lower() for s in mapping.lost]), LOST, OPEN),
    )
    return pd.Series(outcome, index=stage.index, dtype="category")


def opportunity_outcomes(opportunities: pd.DataFrame, mapping: StageMapping, as_of: dt.date) -> pd.DataFrame:
    """Opportunities created by the as-of date, with `outcome` as known then and cycle days."""
    end = _end_of(as_of)
    created = opportunities[opportunities["created_at"] < end].copy()
    outcome = classify_stages(created["stage"], mapping).astype("str")
    closed_by_then = created["closed_at"].notna() & (created["closed_at"] < end)
    created["outcome"] = pd.Categorical(np.where(closed_by_then & (outcome != OPEN), outcome, OPEN))
    created["won"] = created["outcome"] == WON
    created["closed"] = created["outcome"] != OPEN
    created["cycle_days"] = ((created["closed_at"] - created["created_at"]).dt.days).where(created["closed"])
    return created


def customer_value(
    opportunities: pd.DataFrame,
    subscriptions: pd.DataFrame | None,
    as_of: dt.date,
) -> pd.DataFrame:
    """Per customer (an account with a won deal): value, retention and expansion as of the date.

    Value is ARR when subscriptions exist, else won amount. Churned = every subscription ended
    by the as-of date; expanded = current ARR above the first subscription's ARR.
    """
    won = opportunities[opportunities["won"]]
    value = won.groupby("account_id", observed=True)["amount"].sum().rename("won_amount").to_frame()
    value["won_deals"] = won.groupby("account_id", observed=True).size()
    if subscriptions is not None and len(subscriptions):
        end = _end_of(as_of)
        subs = subscriptions[subscriptions["started_at"] < end]
        active = subs["ended_at"].isna() | (subs["ended_at"] >= end)
        first = subs.sort_values("started_at", kind="stable").drop_duplicates("account_id")
        per_account = pd.DataFrame(
            {
                "arr": subs[active].groupby("account_id")["arr"].sum(),
                "first_arr": first.set_index("account_id")["arr"],
                "subscriptions": subs.groupby("account_id").size(),
            }
        )
        value = value.join(per_account, how="outer")
        value["arr"] = value["arr"].fillna(0.0)
        value["churned"] = value["subscriptions"].fillna(0).gt(0) & value["arr"].le(0)
        value["expanded"] = value["arr"] > value["first_arr"].fillna(np.inf)
        value["value"] = value["arr"].where(value["subscriptions"].fillna(0) > 0, value["won_amount"])
    else:
        value["churned"] = False
        value["expanded"] = False
        value["value"] = value["won_amount"]
    value["value"] = value["value"].fillna(0.0).astype("float64")
    value.index.name = "account_id"
    return value.reset_index()


def best_customers(customers: pd.DataFrame, top_share: float = 0.2) -> pd.Index:
    """The top share of retained customers by value: the evidence of what 'ideal' looks like."""
    retained = customers[~customers["churned"].astype(bool) & (customers["value"] > 0)]
    if retained.empty:
        return pd.Index([], name="account_id")
    count = max(1, int(np.ceil(len(retained) * top_share)))
    ranked = retained.sort_values(["value", "account_id"], ascending=[False, True], kind="stable")
    return pd.Index(ranked["account_id"].head(count), name="account_id")
