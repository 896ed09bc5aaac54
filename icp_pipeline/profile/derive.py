"""From evidence to an operational ICP: criteria, points, tiers, an audit of the written ICP.

A trait becomes a must-have only when three things agree: it is significant after
multiple-testing correction, deals with it win clearly more often, and the multivariate model
gives it points of its own (so a trait that merely travels with a real driver is not promoted).
A hard no needs a significant, near-zero win rate. With too little evidence the profile says
so instead of inventing criteria.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.frames import isin, positions
from icp_pipeline.profile.evidence import EvidenceRules, long_traits, trait_evidence
from icp_pipeline.profile.outcomes import best_customers, customer_value, opportunity_outcomes
from icp_pipeline.profile.traits import SELF_DESCRIBED, TRAIT_LABELS, AccountTraits, DealTraits
from icp_pipeline.scoring.model import (
    Design,
    PointsModel,
    account_scores,
    build_design,
    distinct_rows,
    fit_logistic,
    no_signal_model,
    points_from_coefficients,
    written_icp_model,
)

MUST_HAVE, NICE_TO_HAVE, HARD_NO = "must_have", "nice_to_have", "hard_no"
NEGATIVE, NEUTRAL, INSUFFICIENT = "negative", "neutral", "insufficient_evidence"
TIER_QUANTILES = {"A": 0.95, "B": 0.80, "C": 0.50}


def trait_label(trait: str, value: str) -> str:
    """Words a rep can read: 'Industry = Software', 'Uses Snowflake', 'CMO left in the last 12 months'."""
    if trait in SELF_DESCRIBED:
        return value[:1].upper() + value[1:]
    label = TRAIT_LABELS.get(trait, trait.replace("_", " ").capitalize())
    return f"{label} {value}" if trait == "technology" else f"{label} = {value}"


@dataclass
class IcpProfile:
    """Everything learned at one as-of date."""

    as_of: dt.date
    evidence: pd.DataFrame
    model: PointsModel
    tier_cutoffs: dict[str, int]
    version: str
    summary: str
    metrics: pd.DataFrame
    audit: pd.DataFrame
    outcomes: pd.DataFrame
    closed_deals: int
    notes: list[str] = field(default_factory=list)
    # Learned deals described with data recorded after them (see `DealTraits.fallback_counts`).
    point_in_time: dict[str, int] = field(default_factory=dict)

    def items(self, verdict: str) -> pd.DataFrame:
        return self.evidence[self.evidence["verdict"] == verdict]


def _verdicts(evidence: pd.DataFrame, config: IcpConfig) -> pd.Series:
    rules = config.icp
    base = evidence["base_win_rate"]
    verdict = np.select(
        [
            ~evidence["sufficient"],
            evidence["significant"]
            & (evidence["win_rate_with_high"] < rules.hard_no_max_win_rate_ratio * base),
            evidence["significant"]
            & (evidence["win_rate_lift"] >= rules.must_have_min_win_rate_lift)
            & (evidence["points"] >= 3),
            evidence["significant"] & (evidence["win_rate_lift"] > 1) & (evidence["points"] > 0),
            evidence["significant"] & (evidence["win_rate_lift"] < 1),
        ],
        [INSUFFICIENT, HARD_NO, MUST_HAVE, NICE_TO_HAVE, NEGATIVE],
        default=NEUTRAL,
    )
    return pd.Series(verdict, index=evidence.index)


def tier_cutoffs(scores: np.ndarray, config: IcpConfig, scored_by: str) -> dict[str, int]:
    """Configured cut-offs, else the score quantiles of today's population (frozen in the profile)."""
    configured = config.tiers.model_dump()
    if scored_by == "no_signal":
        return {"A": 101, "B": 101, "C": 0}
    cutoffs: dict[str, int] = {}
    for tier, quantile in TIER_QUANTILES.items():
        value = configured[tier]
        cutoffs[tier] = int(value) if value is not None else int(np.ceil(np.quantile(scores, quantile)))
    cutoffs["B"] = min(cutoffs["B"], cutoffs["A"])
    cutoffs["C"] = min(cutoffs["C"], cutoffs["B"])
    return cutoffs


def assign_tiers(scores: np.ndarray, disqualified: np.ndarray, cutoffs: dict[str, int]) -> np.ndarray:
    tiers = np.select(
        [scores >= cutoffs["A"], scores >= cutoffs["B"], scores >= cutoffs["C"]], ["A", "B", "C"], default="D"
    )
    return np.where(disqualified, "D", tiers)


def _apply_point_overrides(model: PointsModel, overrides: dict[str, int]) -> PointsModel:
    """`icp.points: {"industry=Software": 20}` replaces learned points; ops own the final say."""
    for key, points in overrides.items():
        trait, _, value = key.partition("=")
        hit = (model.points["trait"] == trait.strip()) & (model.points["value"] == value.strip())
        model.points.loc[hit, "points"] = int(points)
    if overrides:
        model.notes.append(f"{len(overrides)} point override(s) from icp.yaml")
    return model


def profile_version(payload: dict[str, Any]) -> str:
    """Content hash: the version changes only when criteria, points or cut-offs change."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _group_metrics(
    label: str, accounts: int, opps: pd.DataFrame, custs: pd.DataFrame, config: IcpConfig
) -> dict[str, Any]:
    """Outcomes of one group of accounts (`opps` and `custs` are the group's deals and customers)."""
    closed = opps[opps["closed"]]
    won = closed[closed["won"]]
    churn = float(custs["churned"].mean()) if len(custs) else np.nan
    nrr = np.nan
    if "first_arr" in custs and custs["first_arr"].notna().any():
        start = custs["first_arr"].sum()
        nrr = float(custs["arr"].sum() / start) if start else np.nan
    avg_value = float(custs["value"].mean()) if len(custs) else np.nan
    row: dict[str, Any] = {
        "group": label,
        "accounts": accounts,
        "closed_deals": len(closed),
        "win_rate": float(closed["won"].mean()) if len(closed) else np.nan,
        "avg_deal_size": float(won["amount"].mean()) if len(won) else np.nan,
        "sales_cycle_days": float(won["cycle_days"].median()) if len(won) else np.nan,
        "churn_rate": churn,
        "net_revenue_retention": nrr,
        "ltv_to_cac": np.nan,
        "cac_payback_months": np.nan,
    }
    if config.icp.cac and len(custs):
        lifetime_years = 1 / max(churn, 0.05) if not np.isnan(churn) else 1.0
        ltv = avg_value * config.icp.gross_margin * lifetime_years
        row["ltv_to_cac"] = ltv / config.icp.cac
        row["cac_payback_months"] = config.icp.cac / max(avg_value * config.icp.gross_margin / 12, 1e-9)
    return row


def _held_by(group: np.ndarray, account: np.ndarray) -> np.ndarray:
    """Which rows belong to an account of the group (`account` = position in the design, -1 = none)."""
    if not len(group):
        return np.zeros(len(account), dtype=bool)
    return (account >= 0) & group[np.maximum(account, 0)]


def audit_written_icp(
    config: IcpConfig, evidence: pd.DataFrame, deals: AccountTraits, won: np.ndarray
) -> pd.DataFrame:
    """Each written criterion: supported, not supported or contradicted, with the numbers
    (`deals`: one row per closed deal as it was when created, `won` its outcome)."""
    from scipy import stats

    written = config.icp.written
    columns = [
        "section",
        "trait",
        "values",
        "status",
        "win_rate_with",
        "win_rate_without",
        "closed_with",
        "p_value",
        "detail",
    ]
    if written is None:
        return pd.DataFrame(columns=columns)
    pairs = long_traits(deals.with_row_ids())
    rows = []
    for section, criteria in (
        ("must_have", written.must_have),
        ("nice_to_have", written.nice_to_have),
        ("hard_no", written.hard_no),
    ):
        for criterion in criteria:
            holders = pairs[(pairs["trait"] == criterion.trait) & pairs["value"].isin(criterion.values)]
            has = np.zeros(len(won), dtype=bool)
            has[holders["account_id"].astype(np.int64).to_numpy()] = True
            a, b = int((won & has).sum()), int((~won & has).sum())
            c, d = int((won & ~has).sum()), int((~won & ~has).sum())
            p = (
                stats.fisher_exact([[a, b], [c, d]]).pvalue
                if (a + b) and (c + d) and (a + c) and (b + d)
                else 1.0
            )
            with_rate = a / (a + b) if a + b else np.nan
            without_rate = c / (c + d) if c + d else np.nan
            better = with_rate > without_rate
            significant = p < config.icp.alpha and (a + b) >= config.icp.min_closed_with
            wanted_better = section != "hard_no"
            if not significant:
                status = "not supported"
            elif better == wanted_better:
                status = "supported"
            else:
                status = "contradicted"
            per_value = evidence[
                (evidence["trait"] == criterion.trait) & evidence["value"].isin(criterion.values)
            ]
            weak = per_value[
                ~per_value["verdict"].isin(
                    [MUST_HAVE, NICE_TO_HAVE] if wanted_better else [HARD_NO, NEGATIVE]
                )
            ]
            detail = ""
            if status == "supported" and len(weak) and len(criterion.values) > 1:
                detail = "wider than the data supports: " + ", ".join(
                    f"{v} ({_rate(r)} win rate, n={n})"
                    for v, r, n in weak[["value", "win_rate_with", "closed_with"]].itertuples(index=False)
                )
            rows.append(
                [
                    section,
                    criterion.trait,
                    ", ".join(criterion.values),
                    status,
                    with_rate,
                    without_rate,
                    a + b,
                    p,
                    detail,
                ]
            )
    return pd.DataFrame(rows, columns=columns)


def _rate(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.0%}"


def learning_deals(
    outcomes: pd.DataFrame, deal_traits: DealTraits, as_of: dt.date, lookback_months: int
) -> tuple[DealTraits, np.ndarray]:
    """The closed deals learning uses (created in the lookback window before the as-of date) as
    they were when created, in outcome order, and whether each was won."""
    start = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1) - pd.DateOffset(months=lookback_months)
    recent = (outcomes["created_at"] >= start).to_numpy()
    closed = outcomes["closed"].to_numpy(dtype=bool) & recent
    rows = deal_traits.rows_of(outcomes)
    learned = np.flatnonzero(closed & (rows >= 0))
    return deal_traits.take(rows[learned]), outcomes["won"].to_numpy(dtype=bool)[learned]


def derive_profile(
    traits: AccountTraits,
    opportunities: pd.DataFrame,
    subscriptions: pd.DataFrame | None,
    config: IcpConfig,
    as_of: dt.date,
    describe: bool = True,
    deal_traits: DealTraits | None = None,
) -> tuple[IcpProfile, Design]:
    """Learn evidence, model, tiers and metrics at one as-of date.

    Each closed deal is described by `deal_traits` (its account when the deal was created); without
    them, by its account's traits at the as-of date, which lets what the account became after the
    deal leak in. `describe=False` leaves out the fit vs non-fit metrics and the audit of the
    written ICP (empty frames): validation and drift re-learn a profile only to score with it.
    """
    rules = config.icp
    outcomes = opportunity_outcomes(opportunities, config.stages, as_of)
    if deal_traits is None:
        deal_traits = DealTraits.at_moment(traits, outcomes)
    learned, closed_won = learning_deals(outcomes, deal_traits, as_of, rules.lookback_months)
    n_closed = len(closed_won)
    notes: list[str] = []
    written_criteria = [(c.trait, c.values) for c in rules.written.must_have] if rules.written else []
    with ThreadPoolExecutor(max_workers=1) as pool:
        # What the best customers share does not depend on the fit: it is found on a second core
        # meanwhile (much of both runs without the GIL).
        evidence_run = pool.submit(
            _customers_and_evidence, traits, outcomes, subscriptions, config, as_of, learned, closed_won
        )
        design = build_design(traits)
        if n_closed < rules.cold_start_min_closed:
            notes.append(f"cold start: only {n_closed} closed deals (need {rules.cold_start_min_closed})")
            model = (
                written_icp_model(design, written_criteria) if written_criteria else no_signal_model(design)
            )
        else:
            fit_design = build_design(learned.traits)
            rows, deals, wins = distinct_rows(fit_design.matrix, closed_won)
            intercept, coefficients = fit_logistic(fit_design.matrix[rows], wins, rules.l2, trials=deals)
            model = points_from_coefficients(intercept, coefficients, fit_design)
        customers, evidence = evidence_run.result()
    evidence = evidence.merge(model.points[["trait", "value", "points"]], on=["trait", "value"], how="left")
    evidence["points"] = evidence["points"].fillna(0).astype(int)
    evidence["verdict"] = _verdicts(evidence, config)
    if model.scored_by == "learned" and not evidence["significant"].any():
        notes.append("insufficient evidence: no trait separates won from lost deals after correction")
        model = written_icp_model(design, written_criteria) if written_criteria else no_signal_model(design)
        evidence["points"] = 0
    model = _apply_point_overrides(model, rules.points)
    scores = account_scores(design, model)
    disqualified = disqualified_accounts(design, evidence)
    cutoffs = tier_cutoffs(
        scores[~disqualified] if (~disqualified).any() else scores, config, model.scored_by
    )
    tiers = assign_tiers(scores, disqualified, cutoffs)
    metrics, audit = pd.DataFrame(), pd.DataFrame()
    if describe:
        fit = np.isin(tiers, ["A", "B"])
        deal_rows = traits.rows_of(outcomes)
        # Each customer's account, found once; accounts outside the design are in neither group.
        customer_account = positions(customers["account_id"], design.account_ids)
        metrics = pd.DataFrame(
            [
                _group_metrics(
                    label,
                    int(group.sum()),
                    outcomes[_held_by(group, deal_rows)],
                    customers[_held_by(group, customer_account)],
                    config,
                )
                for label, group in (("icp_fit", fit), ("non_fit", ~fit))
            ]
        )
        audit = audit_written_icp(config, evidence, learned.traits, closed_won)
    counts = learned.fallback_counts()
    point_in_time = (
        f"point in time: {n_closed:,} deals described as their account was when each was created; "
        f"{counts['later_crm_version']:,} by a CRM version recorded after the deal, "
        f"{counts['later_firmographics']:,} by a later firmographic observation (no history reaches "
        "back that far)"
    )
    criteria = evidence[evidence["verdict"].isin([MUST_HAVE, NICE_TO_HAVE, HARD_NO])]
    version = profile_version(
        {
            "criteria": criteria[["trait", "value", "verdict"]].to_dict("records"),
            "points": model.points[model.points["points"] != 0][["trait", "value", "points"]].to_dict(
                "records"
            ),
            "base": model.base,
            "cutoffs": cutoffs,
            "scored_by": model.scored_by,
        }
    )
    profile = IcpProfile(
        as_of=as_of,
        evidence=evidence,
        model=model,
        tier_cutoffs=cutoffs,
        version=version,
        summary=summarize(evidence, model, n_closed, notes),
        metrics=metrics,
        audit=audit,
        outcomes=outcomes,
        closed_deals=n_closed,
        notes=notes + model.notes + ([point_in_time] if n_closed else []),
        point_in_time=counts,
    )
    return profile, design


def _first_wins(learned: DealTraits, won: np.ndarray, customers: pd.Index) -> np.ndarray:
    """The deal row of each customer's first won deal among the learned deals (in row order)."""
    ids = learned.traits.accounts["account_id"]
    wins = np.flatnonzero(won & isin(ids, customers))
    _, first = np.unique(ids.iloc[wins].to_numpy(dtype=object), return_index=True)
    return wins[np.sort(first)]


def _customers_and_evidence(
    traits: AccountTraits,
    outcomes: pd.DataFrame,
    subscriptions: pd.DataFrame | None,
    config: IcpConfig,
    as_of: dt.date,
    learned: DealTraits,
    won: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The customers' value and each trait value's evidence (how the best customers and won deals
    differ from the rest)."""
    rules = config.icp
    customers = customer_value(outcomes, subscriptions, as_of)
    best = best_customers(customers, rules.best_customer_share)
    evidence = trait_evidence(
        traits,
        learned.traits,
        won,
        _first_wins(learned, won, best),
        _first_wins(learned, won, best[: EvidenceRules.top_customers]),
        EvidenceRules(rules.min_closed_with, rules.min_won_with, rules.alpha),
    )
    return customers, evidence


def disqualified_accounts(design: Design, evidence: pd.DataFrame) -> np.ndarray:
    """Accounts holding any hard-no trait value."""
    hard = evidence[evidence["verdict"] == HARD_NO][["trait", "value"]]
    if hard.empty:
        return np.zeros(len(design.account_ids), dtype=bool)
    columns = design.features.reset_index().merge(hard, on=["trait", "value"])["index"].to_numpy()
    return np.asarray(design.matrix[:, columns].sum(axis=1)).ravel() > 0


def summarize(evidence: pd.DataFrame, model: PointsModel, closed: int, notes: list[str]) -> str:
    """One paragraph a leader can read."""
    must = evidence[evidence["verdict"] == MUST_HAVE]
    hard = evidence[evidence["verdict"] == HARD_NO]
    if model.scored_by == "no_signal":
        return (
            f"Insufficient evidence: across {closed:,} closed deals no trait separates won from lost deals "
            "after multiple-testing correction. No ICP is derived; every account scores 50."
        )
    if model.scored_by == "written_icp":
        return f"Scored from the written ICP ({'; '.join(notes) or 'cold start'}); the data does not yet support a learned profile."
    parts = [f"Learned from {closed:,} closed deals."]
    if len(must):
        parts.append(
            "Best-fit accounts: "
            + ", ".join(trait_label(t, v) for t, v in must[["trait", "value"]].itertuples(index=False))
            + "."
        )
    if len(hard):
        parts.append(
            "Hard no: "
            + ", ".join(trait_label(t, v) for t, v in hard[["trait", "value"]].itertuples(index=False))
            + "."
        )
    return " ".join(parts)
