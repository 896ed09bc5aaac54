"""Companies outside the CRM that fit the ICP: feed rows nobody owns yet, scored with the same points."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from icp_pipeline.frames import isin, joined_per_group
from icp_pipeline.profile.traits import UNKNOWN, build_traits
from icp_pipeline.scoring.model import PointsModel, account_points, build_design


def model_from_profile_rows(rows: pd.DataFrame) -> tuple[PointsModel, dict[str, int]]:
    """The points model and tier cut-offs as stored in `icp.icp_profile` for one as-of date."""
    base = int(rows.loc[rows["section"] == "model", "points"].iloc[0])
    points = rows[rows["section"] == "points"][["trait", "value", "points"]].assign(coefficient=0.0)
    cutoffs = {r.value: int(r.points) for r in rows[rows["section"] == "tier_cutoff"].itertuples()}
    return PointsModel(base=base, points=points.reset_index(drop=True), scored_by="learned"), cutoffs


def net_new_accounts(
    firmographics: pd.DataFrame,
    model: PointsModel,
    cutoffs: dict[str, int],
    as_of: dt.date,
    min_tier: str = "B",
) -> pd.DataFrame:
    """Unmatched feed companies whose fit score reaches the minimum tier, best first."""
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    outside = firmographics[
        firmographics["account_id"].isna()
        & firmographics["norm_domain"].notna()
        & (firmographics["observed_at"] < end)
    ]
    columns = ["domain", "company_name", "fit_score", "tier", "top_positive", "observed_at"]
    if outside.empty:
        return pd.DataFrame(columns=columns)
    companies = outside.assign(account_id=outside["norm_domain"])
    latest = companies.sort_values("observed_at").drop_duplicates("account_id", keep="last")
    pseudo_accounts = latest[
        ["account_id", "company_name", "industry", "employee_count", "annual_revenue", "country"]
    ]
    pseudo_accounts = pseudo_accounts.assign(
        created_at=pd.Series(pd.NaT, index=pseudo_accounts.index, dtype="datetime64[us, UTC]")
    )
    traits = build_traits(pseudo_accounts, as_of, companies)
    design = build_design(traits)
    scores, items = account_points(design, model)
    needed = cutoffs.get(min_tier, 101)
    keep = scores >= needed
    # An unknown value (no founding date for a company outside the CRM) is never given as a reason.
    positive = items[
        (items["points"] > 0)
        & (items["value"].astype("str") != UNKNOWN)
        & isin(items["account_id"], design.account_ids[keep])
    ]
    # Highest points first, ties by trait and value: the reasons do not depend on row order.
    positive = positive.sort_values(
        ["points", "trait", "value"], ascending=[False, True, True], kind="stable"
    )
    reasons = (
        positive.groupby("account_id")
        .head(3)
        .assign(text=lambda f: f["trait"] + "=" + f["value"] + " +" + f["points"].astype(str))
    )
    reason_text = joined_per_group(reasons["account_id"], reasons["text"], "; ")
    found = pd.DataFrame({"domain": design.account_ids.to_numpy()[keep], "fit_score": scores[keep]})
    found["tier"] = np.where(found["fit_score"] >= cutoffs.get("A", 101), "A", "B")
    named = latest.set_index("account_id")
    found["company_name"] = found["domain"].map(named["company_name"])
    found["observed_at"] = found["domain"].map(named["observed_at"])
    found["top_positive"] = found["domain"].map(reason_text).fillna("")
    return found.sort_values(["fit_score", "domain"], ascending=[False, True])[columns].reset_index(drop=True)
