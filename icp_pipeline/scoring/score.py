"""Score every account: fit 0-100, tier, hard-no, and the reasons in words with their points.

Scores are a sparse matrix-vector product; the reason strings are assembled in DuckDB
(string_agg over the long table of non-zero points), so a million accounts take seconds.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd

from icp_pipeline.profile.derive import HARD_NO, IcpProfile, assign_tiers, disqualified_accounts, trait_label
from icp_pipeline.scoring.model import Design, account_points

TOP_REASONS = 3


def score_accounts(profile: IcpProfile, design: Design, as_of: dt.date) -> pd.DataFrame:
    """One row per account: the `icp.account_scores` partition of the as-of date."""
    scores, items = account_points(design, profile.model)
    disqualified = disqualified_accounts(design, profile.evidence)
    tiers = assign_tiers(scores, disqualified, profile.tier_cutoffs)
    items["label"] = _labels(items)
    hard = profile.evidence[profile.evidence["verdict"] == HARD_NO]
    hard_reasons = _hard_no_reasons(design, hard)
    frame = pd.DataFrame(
        {
            "account_id": design.account_ids.to_numpy(),
            "as_of": as_of,
            "fit_score": scores.astype(np.int64),
            "tier": tiers,
            "disqualified": disqualified,
            "disqualified_reason": hard_reasons.reindex(design.account_ids).to_numpy(),
            "base_points": profile.model.base,
            "profile_version": profile.version,
            "scored_by": profile.model.scored_by,
        }
    )
    reasons = _reason_texts(items)
    frame = frame.merge(reasons, on="account_id", how="left")
    frame["reasons"] = frame["reasons"].fillna("[]")
    for column in ("top_positive", "top_negative"):
        frame[column] = frame[column].fillna("")
    return frame


def _labels(items: pd.DataFrame) -> pd.Series:
    """Trait labels computed once per distinct (trait, value), then mapped."""
    distinct = items[["trait", "value"]].drop_duplicates()
    distinct["label"] = [trait_label(t, v) for t, v in distinct.itertuples(index=False)]
    return items.merge(distinct, on=["trait", "value"], how="left")["label"].to_numpy()


def _hard_no_reasons(design: Design, hard: pd.DataFrame) -> pd.Series:
    if hard.empty:
        return pd.Series(dtype="str")
    features = design.features.reset_index().merge(hard, on=["trait", "value"])
    sub = design.matrix[:, features["index"].to_numpy()].tocoo()
    texts = [
        f"{trait_label(t, v)}: {r:.0%} win rate vs {b:.0%} overall (n={n})"
        for t, v, r, b, n in features[
            ["trait", "value", "win_rate_with", "base_win_rate", "closed_with"]
        ].itertuples(index=False)
    ]
    pairs = pd.DataFrame(
        {
            "account_id": design.account_ids.to_numpy()[sub.row],
            "text": np.asarray(texts, dtype=object)[sub.col],
        }
    )
    return pairs.groupby("account_id")["text"].agg("; ".join)


def _reason_texts(items: pd.DataFrame) -> pd.DataFrame:
    """JSON list of every non-zero item, and the top positive and negative reasons as text."""
    with duckdb.connect() as con:
        con.register("items", items[["account_id", "label", "trait", "value", "points"]])
        return (
            con.sql(
                """
            select account_id,
                   to_json(list(struct_pack(trait := trait, value := value, points := points)
                                order by abs(points) desc, label))::varchar as reasons,
                   string_agg(label || ': ' || printf('%+d', points), '; ' order by points desc, label)
                       filter (where points > 0) as top_positive_all,
                   string_agg(label || ': ' || printf('%+d', points), '; ' order by points asc, label)
                       filter (where points < 0) as top_negative_all
            from items group by account_id
            """
            )
            .df()
            .assign(
                top_positive=lambda f: _first_n(f["top_positive_all"]),
                top_negative=lambda f: _first_n(f["top_negative_all"]),
            )
            .drop(columns=["top_positive_all", "top_negative_all"])
        )


def _first_n(texts: pd.Series, n: int = TOP_REASONS) -> pd.Series:
    return texts.fillna("").str.split("; ").str[:n].str.join("; ")
