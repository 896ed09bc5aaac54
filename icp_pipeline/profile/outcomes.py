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
OUTCOMES = (LOST, OPEN, WON)  # alphabetical, as categories sort them
LOST_CODE, OPEN_CODE, WON_CODE = 0, 1, 2


def _end_of(as_of: dt.date) -> pd.Timestamp:
    return pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)


def _outcome_codes(stage: pd.Series, mapping: StageMapping) -> np.ndarray:
    """Per row 0 (lost), 1 (open) or 2 (won), the alphabetical order of the outcome names.

    Stage names are folded and classified once per distinct name, not once per deal.
    """
    codes, names = pd.factorize(stage.astype("str"))
    won = {s.lower() for s in mapping.won}
    lost = {s.lower() for s in mapping.lost}
    folded = [str(name).strip().lower() for name in names]
    per_name = np.array([2 if f in won else 0 if f in lost else 1 for f in folded] + [1], dtype=np.int8)
    return per_name[codes]  # code -1 (a missing stage) takes the trailing "open"


def _categorical(codes: np.ndarray, index: pd.Index) -> pd.Series:
    """The outcome codes as a categorical of the names present, as `astype("category")` would make it."""
    present = np.unique(codes)
    remap = np.full(3, -1, dtype=np.int8)
    remap[present] = np.arange(len(present))
    names = [OUTCOMES[code] for code in present]
    return pd.Series(pd.Categorical.from_codes(remap[codes], categories=names), index=index)


def classify_stages(stage: pd.Series, mapping: StageMapping) -> pd.Series:
    """won / lost / open from the CRM's own stage names (case-insensitive)."""
    return _categorical(_outcome_codes(stage, mapping), stage.index)


def opportunity_outcomes(opportunities: pd.DataFrame, mapping: StageMapping, as_of: dt.date) -> pd.DataFrame:
    """Opportunities created by the as-of date, with `outcome` as known then and cycle days."""
    end = _end_of(as_of)
    created = opportunities[opportunities["created_at"] < end]  # a new frame: adding columns is safe
    outcome = _outcome_codes(created["stage"], mapping)
    closed_by_then = (created["closed_at"].notna() & (created["closed_at"] < end)).to_numpy()
    known = np.where(closed_by_then & (outcome != OPEN_CODE), outcome, OPEN_CODE)
    created["outcome"] = _categorical(known, created.index).array
    created["won"] = known == WON_CODE
    created["closed"] = known != OPEN_CODE
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
