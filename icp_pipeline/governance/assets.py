"""Dagster wiring of model governance: tonight's champion vs challenger comparison and the policy."""

import datetime as dt
from typing import Any

import dagster as dg
import pandas as pd

from icp_pipeline.alerts.assets import EVENT_LOOKBACK_DAYS
from icp_pipeline.governance.compare import compare_models, promotion_decision
from icp_pipeline.governance.registry import challenger, champion, last_promotion_as_of, promote
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.profile.learn import run_evidence
from icp_pipeline.profile.outcomes import opportunity_outcomes
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.scoring.assets import SCORES
from icp_pipeline.triggers.assets import TRIGGER_EVENTS
from icp_pipeline.warehouse import connect, replace_slice, table_exists

MODEL_COMPARISON = dg.AssetKey(["icp", "model_comparison"])


def _scores(con: Any, table: str, as_of: dt.date) -> pd.DataFrame:
    return con.execute(
        f"select account_id, fit_score, tier, disqualified from icp.{table} where as_of = ?", [as_of]
    ).df()


@dg.asset(
    key=MODEL_COMPARISON,
    deps=[SCORES, TRIGGER_EVENTS],
    group_name="icp",
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    description=(
        "One row per comparison metric per as-of date: champion vs challenger AUC (DeLong), tier-A lift, "
        "A+B capture on the same deals; tier churn, alert-line crossings and differing alerts; the decision."
    ),
)
def model_comparison(context: dg.AssetExecutionContext, icp: IcpSettings) -> dg.MaterializeResult:
    """Compare the shadow-scored challenger with the champion; under `auto`, promote for the next run."""
    config = icp.load_config()
    as_of = partition_date(context)
    with connect(icp.warehouse_path()) as con:
        current, shadow = champion(con), challenger(con)
        if current is None or shadow is None or not table_exists(con, "icp", "challenger_scores"):
            replace_slice(
                con, "icp", "model_comparison", pd.DataFrame({"as_of": [as_of]})[:0], {"as_of": as_of}
            )
            line = f"no challenger: champion {None if current is None else current['model_version']} scores"
            context.log.info(line)
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "decision": line})
        champion_scores = _scores(con, "account_scores", as_of)
        challenger_scores = _scores(con, "challenger_scores", as_of)
        since = pd.Timestamp(as_of, tz="UTC") - pd.Timedelta(days=EVENT_LOOKBACK_DAYS)
        until = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
        events = con.execute(
            "select account_id from icp.trigger_events where occurred_at >= ? and occurred_at < ?",
            [since, until],
        ).df()
    inputs = run_evidence(context.run_id, icp.warehouse_path(), config.icp.custom_columns, as_of)
    outcomes = opportunity_outcomes(inputs.opportunities, config.stages, as_of)
    deals = outcomes.loc[outcomes["closed"], ["account_id", "won", "closed_at"]]
    trained = current["trained_as_of"]
    comparison = compare_models(
        deals,
        champion_scores,
        challenger_scores,
        events,
        config.alerts.min_tier,
        None if pd.isna(trained) else pd.Timestamp(trained).date(),
        as_of,
    )
    with connect(icp.warehouse_path()) as con:
        promote_now, why = promotion_decision(comparison, config.models, as_of, last_promotion_as_of(con))
        rows = comparison.rows.assign(
            champion_version=str(current["model_version"]), challenger_version=str(shadow["model_version"])
        )
        decision = pd.DataFrame([{"as_of": as_of, "metric": "decision", "note": why}]).assign(
            champion_version=rows["champion_version"].iloc[0],
            challenger_version=rows["challenger_version"].iloc[0],
        )
        replace_slice(
            con, "icp", "model_comparison", pd.concat([rows, decision], ignore_index=True), {"as_of": as_of}
        )
        if promote_now:
            promote(con, str(shadow["model_version"]), why, "auto", as_of)
    context.log.info(f"model comparison {current['model_version']} vs {shadow['model_version']}: {why}")
    figures = comparison.rows.set_index("metric")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows) + 1,
            "champion": str(current["model_version"]),
            "challenger": str(shadow["model_version"]),
            "decision": why,
            "promoted": promote_now,
            "comparison": dg.MetadataValue.md(
                figures.reset_index()[["metric", "champion", "challenger", "p_value", "note"]].to_markdown(
                    index=False
                )
            ),
        }
    )
