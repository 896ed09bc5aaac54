"""Dagster wiring of drift monitoring: metrics history, a warning check, one ops message per flag change."""

import datetime as dt
from typing import Any

import dagster as dg
import pandas as pd

from icp_pipeline.alerts.assets import build_channels
from icp_pipeline.alerts.channels import AlertMessage
from icp_pipeline.drift.metrics import DriftReport, drift_metrics
from icp_pipeline.governance.assets import MODEL_COMPARISON
from icp_pipeline.governance.compare import drift_advice
from icp_pipeline.ops.notices import ops_notice
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.profile.learn import run_evidence
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.scoring.assets import SCORES
from icp_pipeline.warehouse import connect, read_table, replace_slice, table_exists

DRIFT = dg.AssetKey(["icp", "drift_metrics"])
STILL_PREDICTS = "icp_still_predicts_wins"


def ops_message(as_of: dt.date, flagged: bool, text: str) -> AlertMessage:
    """An operations notice through the alert channels (addressed to the team, not a rep)."""
    state = "flagged" if flagged else "cleared"
    return ops_notice(f"drift|{as_of}|{state}", f"ICP drift {state}", text, as_of.isoformat(), flagged)


def first_flagged(flags: pd.DataFrame | None, as_of: dt.date, flagged: bool) -> dt.date | None:
    """When the current run of flagged nights began: the detection date the report shows."""
    if not flagged:
        return None
    if flags is None or flags.empty:
        return as_of
    known = flags[pd.to_datetime(flags["as_of"]).dt.date < as_of].sort_values("as_of")
    if known.empty or not bool(known["flagged"].iloc[-1]):
        return as_of
    cleared = known[~known["flagged"].astype(bool)]
    run = (
        known[pd.to_datetime(known["as_of"]) > pd.to_datetime(cleared["as_of"]).max()]
        if len(cleared)
        else known
    )
    return pd.Timestamp(run["as_of"].iloc[0]).date()


def notice_text(as_of: dt.date, report: DriftReport) -> str:
    """Finding, evidence and recommendation in one ops message."""
    if not report.flagged:
        return f"ICP drift cleared as of {as_of}: recent deals win as the reference profile predicts again."
    findings = "; ".join(report.findings) or "no single trait explains it"
    return (
        f"ICP drift flagged as of {as_of}: {report.reason}. Finding: {findings}. "
        f"Evidence: {report.evidence or 'see icp.drift_metrics'}. "
        f"Recommendation: {report.recommendation or 're-derive the profile'}."
    )


def previous_state(flags: pd.DataFrame | None, as_of: dt.date) -> bool:
    """The state ops already know: this date's own record on a rerun, else the latest earlier one."""
    if flags is None or flags.empty:
        return False
    known = flags[pd.to_datetime(flags["as_of"]).dt.date <= as_of].sort_values("as_of")
    return bool(known["flagged"].iloc[-1]) if len(known) else False


@dg.asset(
    key=DRIFT,
    deps=[SCORES, MODEL_COMPARISON],
    group_name="drift",
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    description=(
        "One row per metric per monthly cohort per as-of date: cohort AUC, tier-A lift, win rate and A+B capture "
        "against the reference profile, pooled 3- and 6-month windows, CUSUMs (tiers and per trait), calibration "
        "by tier and trait, early estimates of immature cohorts, PSI and JS distance of features and fit score, "
        "ICP coverage of new pipeline, and what moved. icp.drift_flags keeps the flag state per as-of date "
        "with when it was first raised and its evidence."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            STILL_PREDICTS,
            asset=DRIFT,
            description=(
                "No cohort, pooled window or sequential test says the ICP stopped predicting wins "
                "(false alarms controlled at drift.false_alarm_rate)."
            ),
        )
    ],
)
def drift_metrics_asset(context: dg.AssetExecutionContext, icp: IcpSettings) -> Any:
    """Compare monthly cohorts with the reference profile; notify ops when the flag state changes."""
    config = icp.load_config()
    as_of = partition_date(context)
    evidence = run_evidence(context.run_id, icp.warehouse_path(), config.icp.custom_columns, as_of)
    with connect(icp.warehouse_path(), read_only=True) as con:
        flags = read_table(con, "icp", "drift_flags")
        comparison = (
            con.execute("select * from icp.model_comparison where as_of = ?", [as_of]).df()
            if table_exists(con, "icp", "model_comparison")
            else pd.DataFrame()
        )
    report = drift_metrics(evidence, config, as_of)
    if report.flagged:
        # The flag recommends a model change: tonight's champion vs challenger comparison goes with it.
        report.recommendation = f"{report.recommendation}; {drift_advice(comparison)}"
    was_flagged = previous_state(flags, as_of)
    notified = ""
    if report.flagged != was_flagged:
        text = notice_text(as_of, report)
        channels = build_channels(config, icp.warehouse_path().parent / "outbox", context.log)
        results = {
            name: channel.send(ops_message(as_of, report.flagged, text)) for name, channel in channels.items()
        }
        notified = ", ".join(f"{name}: {result.status}" for name, result in results.items())
        context.log.warning(text)
    state = pd.DataFrame(
        [
            {
                "as_of": as_of,
                "flagged": report.flagged,
                "reason": report.reason,
                "recommendation": report.recommendation,
                "reference_date": report.reference_date,
                "profile_version": report.profile_version,
                "notified": notified,
                "first_flagged": first_flagged(flags, as_of, report.flagged),
                "evidence": report.evidence,
                "findings": "\n".join(report.findings),
                "judgeable": report.judgeable,
            }
        ]
    )
    with connect(icp.warehouse_path()) as con:
        replace_slice(con, "icp", "drift_metrics", report.metrics, {"as_of": as_of})
        replace_slice(con, "icp", "drift_flags", state, {"as_of": as_of})
    metrics = report.metrics
    cohorts = metrics[(metrics["metric"] == "auc") & ~metrics["cohort"].isin(["reference"])]
    yield dg.AssetCheckResult(
        check_name=STILL_PREDICTS,
        passed=not report.flagged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "flagged_cohorts": report.reason or "none",
            "recommendation": report.recommendation or "none",
            "reference_auc": float(metrics.loc[metrics["cohort"] == "reference", "value"].iloc[0]),
        },
    )
    latest = cohorts.dropna(subset=["value"]).tail(1)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(metrics),
            "flagged": report.flagged,
            "flagged_metrics": int(metrics["flagged"].fillna(False).astype(bool).sum()),
            # PSI of the score and the features, typed so the UI plots them across runs.
            **{
                f"psi_{segment}": float(value)
                for segment, value in metrics.loc[metrics["metric"] == "psi", ["segment", "value"]]
                .dropna()
                .drop_duplicates("segment", keep="last")
                .itertuples(index=False)
            },
            "reference_date": str(report.reference_date),
            "latest_cohort_auc": float(latest["value"].iloc[0]) if len(latest) else float("nan"),
            "cohorts_insufficient": int(cohorts["note"].str.startswith("insufficient").sum()),
            "what_moved": dg.MetadataValue.md(
                "\n".join(f"- {text}" for text in report.moved["text"].head(5)) or "(nothing significant)"
            ),
            "cohort_auc": dg.MetadataValue.md(
                cohorts[["cohort", "value", "reference", "flagged", "n", "note"]].to_markdown(index=False)
            ),
            "ops_notified": notified or "no change of flag state",
            "judgeable": report.judgeable,
            "findings": dg.MetadataValue.md("\n".join(f"- {f}" for f in report.findings) or "(none)"),
        }
    )
