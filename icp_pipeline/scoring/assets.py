"""Dagster wiring of learning and scoring: evidence, profile and scores in one step, then validation."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from icp_pipeline.governance.registry import (
    challenger,
    champion,
    model_row,
    pinned_profile,
    record_validation,
    register_learned,
)
from icp_pipeline.ingest.absence import ABSENT, DELETED, excluded_accounts, record_excluded
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.profile.derive import HARD_NO, MUST_HAVE, NICE_TO_HAVE, derive_profile
from icp_pipeline.profile.document import profile_rows, with_evidence_text, write_documents
from icp_pipeline.profile.learn import run_evidence
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.scoring.score import (
    CHALLENGER_COLUMNS,
    NAME_COLUMNS,
    score_accounts,
    shadow_scores,
    with_names,
)
from icp_pipeline.scoring.validation import BACKTEST, HOLDOUT, validate_scores
from icp_pipeline.warehouse import connect, read_present_columns, replace_slice

EVIDENCE = dg.AssetKey(["icp", "icp_evidence"])
PROFILE = dg.AssetKey(["icp", "icp_profile"])
SCORES = dg.AssetKey(["icp", "account_scores"])
VALIDATION = dg.AssetKey(["icp", "score_validation"])
_STAGED_INPUTS = [
    dg.AssetKey(["staging", table])
    for table in ("accounts", "opportunities", "subscriptions", "firmographics", "funding_rounds")
]


def _md(frame: pd.DataFrame, limit: int = 15) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(limit).to_markdown(index=False) if len(frame) else "(none)")


def top_accounts(scores: pd.DataFrame, count: int) -> pd.DataFrame:
    """The `count` best-scored accounts, ties by account id: only the rows scoring at least the
    count-th best score are sorted (sorting a million rows by text took 0.7 s)."""
    if scores.empty:
        return scores
    cut = scores["fit_score"].nlargest(count).min()
    return (
        scores[scores["fit_score"] >= cut]
        .sort_values(["fit_score", "account_id"], ascending=[False, True])
        .head(count)
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            EVIDENCE,
            deps=_STAGED_INPUTS,
            group_name="icp",
            description="One row per trait value per as-of date: support, lift, win rates with CI, p and q values, verdict.",
        ),
        dg.AssetSpec(
            PROFILE,
            deps=[EVIDENCE],
            group_name="icp",
            description="One row per profile item per as-of date: must-have, nice-to-have, hard no, tier cut-offs, fit metrics, audit.",
        ),
        dg.AssetSpec(
            SCORES,
            deps=[PROFILE],
            group_name="icp",
            description="One row per account per day: fit_score 0-100, tier A-D, hard-no reason, reasons with points.",
        ),
    ],
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    name="icp_profile_and_scores",
)
def icp_profile_and_scores(context: dg.AssetExecutionContext, icp: IcpSettings) -> Iterator[Any]:
    """Learn the ICP from the evidence known at the as-of date and score every account with it."""
    config = icp.load_config()
    as_of = partition_date(context)
    evidence_inputs = run_evidence(context.run_id, icp.warehouse_path(), config.icp.custom_columns, as_of)
    traits = evidence_inputs.traits(config, as_of)
    profile, design = derive_profile(
        traits,
        evidence_inputs.opportunities,
        evidence_inputs.subscriptions,
        config,
        as_of,
        deal_traits=evidence_inputs.deal_traits(config),
    )
    with connect(icp.warehouse_path()) as con:
        # Tonight's learned version enters the registry; the champion scores, the challenger shadows.
        changes = register_learned(con, model_row(profile, config.icp.points), as_of)
        champion_row, challenger_row = champion(con), challenger(con)
    assert champion_row is not None  # register_learned makes the first model the champion
    scorer = (
        profile if champion_row["model_version"] == profile.version else pinned_profile(champion_row, as_of)
    )
    scores = score_accounts(scorer, design, as_of).assign(model_version=scorer.version)
    shadow = (
        None
        if challenger_row is None
        else shadow_scores(pinned_profile(challenger_row, as_of), design, as_of)
    )
    evidence = with_evidence_text(profile.evidence).assign(as_of=as_of, profile_version=profile.version)
    rows = profile_rows(profile)
    with connect(icp.warehouse_path()) as con:
        excluded = excluded_accounts(con, as_of, config.deletions.absent_after_loads)
        if len(excluded):
            # Deleted or long absent from the drop: not scored, so neither alerted nor written back.
            scores = scores[~scores["account_id"].isin(excluded["account_id"])].reset_index(drop=True)
            if shadow is not None:
                shadow = shadow[~shadow["account_id"].isin(excluded["account_id"])].reset_index(drop=True)
        replace_slice(
            con,
            "icp",
            "challenger_scores",
            shadow if shadow is not None else scores[:0][list(CHALLENGER_COLUMNS)],
            {"as_of": as_of},
        )
        replace_slice(con, "icp", "icp_evidence", evidence, {"as_of": as_of})
        replace_slice(con, "icp", "icp_profile", rows, {"as_of": as_of})
        replace_slice(
            con,
            "icp",
            "account_scores",
            with_names(scores, read_present_columns(con, "staging", "accounts", NAME_COLUMNS)),
            {"as_of": as_of},
        )
        record_excluded(con, excluded, as_of)
    markdown, page = write_documents(profile, icp.warehouse_path().parent / "reports")
    context.log.info(f"ICP {profile.version}: {profile.summary}")
    for change in changes:
        context.log.info(
            f"model {change.version}: {change.from_status or 'new'} -> {change.to_status} ({change.reason})"
        )
    criteria = evidence[evidence["verdict"].isin([MUST_HAVE, NICE_TO_HAVE, HARD_NO])]
    yield dg.MaterializeResult(
        asset_key=EVIDENCE,
        metadata={
            "dagster/row_count": len(evidence),
            "significant_traits": int(evidence["significant"].sum()),
            "closed_deals": profile.closed_deals,
            **{f"point_in_time_{name}": count for name, count in profile.point_in_time.items()},
            "criteria": _md(criteria[["label", "verdict", "points", "evidence"]]),
        },
    )
    yield dg.MaterializeResult(
        asset_key=PROFILE,
        metadata={
            "profile_version": profile.version,
            "summary": profile.summary,
            "scored_by": profile.model.scored_by,
            "must_have": int((evidence["verdict"] == MUST_HAVE).sum()),
            "hard_no": int((evidence["verdict"] == HARD_NO).sum()),
            "document": dg.MetadataValue.path(str(page)),
            "document_markdown": dg.MetadataValue.path(str(markdown)),
            "fit_vs_non_fit": _md(profile.metrics),
            "audit": _md(profile.audit),
        },
    )
    tiers = scores["tier"].value_counts().reindex(list("ABCD"), fill_value=0)
    not_scored = excluded["reason"].value_counts()
    if len(excluded):
        context.log.info(
            f"not scored: {int(not_scored.get(DELETED, 0)):,} account(s) deleted in the CRM, "
            f"{int(not_scored.get(ABSENT, 0)):,} absent from the drop for "
            f"{config.deletions.absent_after_loads}+ loads"
        )
    yield dg.MaterializeResult(
        asset_key=SCORES,
        metadata={
            "dagster/row_count": len(scores),
            "profile_version": profile.version,
            "model_version": scorer.version,
            "champion": scorer.version,
            "challenger": "(none)" if challenger_row is None else str(challenger_row["model_version"]),
            "model_changes": _md(pd.DataFrame([vars(change) for change in changes])),
            **{f"tier_{tier}": int(count) for tier, count in tiers.items()},
            "disqualified": int(scores["disqualified"].sum()),
            "deleted_accounts": int(not_scored.get(DELETED, 0)),
            "absent_accounts": int(not_scored.get(ABSENT, 0)),
            "mean_fit_score": float(scores["fit_score"].mean()),
            "top_accounts": _md(
                top_accounts(scores, 10)[["account_id", "fit_score", "tier", "top_positive", "top_negative"]]
            ),
        },
    )


@dg.asset(
    key=VALIDATION,
    deps=[SCORES],
    group_name="icp",
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    description="One row per validation metric per as-of date: holdout AUC, win rate by tier, tier-A lift, A+B capture.",
)
def score_validation(context: dg.AssetExecutionContext, icp: IcpSettings) -> dg.MaterializeResult:
    """Score as of a past date and judge on the deals created since (the forward backtest), and
    re-learn on older closed deals to test on newer ones (the holdout): does the score predict wins?"""
    config = icp.load_config()
    as_of = partition_date(context)
    inputs = run_evidence(context.run_id, icp.warehouse_path(), config.icp.custom_columns, as_of)
    metrics = validate_scores(inputs, config, as_of)
    with connect(icp.warehouse_path()) as con:
        replace_slice(con, "icp", "score_validation", metrics, {"as_of": as_of})
        figures: dict[str, Any] = {}
        for method, prefix in ((BACKTEST, "backtest"), (HOLDOUT, "holdout")):
            rows = metrics[metrics["method"] == method]
            values = rows.set_index(["metric", "segment"])["value"]
            for metric, segment in (
                ("auc", "all"),
                ("auc_low", "all"),
                ("auc_high", "all"),
                ("tier_a_lift", "A"),
                ("ab_share_of_wins", "A+B"),
                ("base_win_rate", "all"),
                ("test_deals", "all"),
            ):
                if (metric, segment) in values.index and pd.notna(values[(metric, segment)]):
                    figures[f"{prefix}_{metric}"] = float(values[(metric, segment)])
            status = rows.loc[rows["metric"] == "status", "note"]
            figures[f"{prefix}_note"] = str(status.iloc[0]) if len(status) else ""
            context.log.info(f"{method}: {figures[f'{prefix}_note']}")
        # The registry keeps the validation of the version learned tonight: the forward backtest and
        # the holdout, with the rows behind them.
        record_validation(
            con,
            as_of,
            {**figures, "rows": metrics.astype(object).where(metrics.notna(), None).to_dict("records")},
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(metrics),
            **figures,
            "metrics": _md(
                metrics.loc[metrics["metric"] != "gains", ["method", "metric", "segment", "value", "note"]],
                40,
            ),
        }
    )
