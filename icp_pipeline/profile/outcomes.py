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
    by the as-of date; expanded = current ARR above the first subscription's ARR. Rows come
    sorted by account id; deals and subscriptions without one (the contracts require it) count
    for no customer.

    Accounts are numbered once (`pd.factorize`) and summed with `np.bincount`: grouping by the
    text ids and aligning the groups on them took 0.3-0.8 s a call at a million accounts (four
    calls a night), this 0.06-0.14 s.
    """
    won = opportunities[opportunities["won"]]
    end = _end_of(as_of)
    subs = None
    if subscriptions is not None and len(subscriptions):
        subs = subscriptions[subscriptions["started_at"] < end]
    ids = won["account_id"] if subs is None else pd.concat([won["account_id"], subs["account_id"]])
    codes, uniques = pd.factorize(ids.astype("str"), sort=True)
    count = len(uniques)
    won_code, sub_code = codes[: len(won)], codes[len(won) :]

    def summed(
        code: np.ndarray, values: pd.Series | None = None, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Per account: the sum of the values (missing ones count 0) or, without values, the row
        count; over `rows` only when given."""
        kept = code >= 0 if rows is None else (code >= 0) & rows
        if values is None:
            return np.bincount(code[kept], minlength=count)
        weights = np.nan_to_num(values.to_numpy(dtype=np.float64, na_value=np.nan)[kept], nan=0.0)
        return np.bincount(code[kept], weights=weights, minlength=count).astype(np.float64)

    def where_any(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The values, missing for accounts without rows (as the outer join of groups leaves them)."""
        return np.where(rows > 0, values, np.nan) if (rows == 0).any() else values

    won_deals = summed(won_code)
    value = pd.DataFrame(
        {
            "account_id": pd.Series(uniques, dtype="str"),
            "won_amount": where_any(won_deals, summed(won_code, won["amount"])),
            "won_deals": where_any(won_deals, won_deals),
        }
    )
    if subs is not None:
        active = (subs["ended_at"].isna() | (subs["ended_at"] >= end)).to_numpy()
        held = summed(sub_code)
        arr = summed(sub_code, subs["arr"], rows=active)
        # Each account's first subscription by start (ties: the earlier row, as a stable sort gives).
        order = np.argsort(subs["started_at"].array.asi8, kind="stable")
        accounts, first = np.unique(sub_code[order], return_index=True)
        named = accounts >= 0
        first_arr = np.full(count, np.nan)
        arrs = subs["arr"].to_numpy(dtype=np.float64, na_value=np.nan)
        first_arr[accounts[named]] = arrs[order[first[named]]]
        value["arr"] = arr
        value["first_arr"] = first_arr
        value["subscriptions"] = where_any(held, held)
        value["churned"] = (held > 0) & (arr <= 0)
        value["expanded"] = arr > np.nan_to_num(first_arr, nan=np.inf)
        value["value"] = np.where(held > 0, arr, value["won_amount"].to_numpy())
    else:
        value["churned"] = False
        value["expanded"] = False
        value["value"] = value["won_amount"]
    value["value"] = value["value"].fillna(0.0).astype("float64")
    return value


def best_customers(customers: pd.DataFrame, top_share: float = 0.2) -> pd.Index:
    """The top share of retained customers by value: the evidence of what 'ideal' looks like."""
    retained = customers[~customers["churned"].astype(bool) & (customers["value"] > 0)]
    if retained.empty:
        return pd.Index([], name="account_id")
    count = max(1, int(np.ceil(len(retained) * top_share)))
    ranked = retained.sort_values(["value", "account_id"], ascending=[False, True], kind="stable")
    return pd.Index(ranked["account_id"].head(count), name="account_id")
