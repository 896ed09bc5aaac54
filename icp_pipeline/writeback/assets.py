"""Dagster wiring of CRM write-back: after scoring and triggers, push what changed; off by default."""

import os
from typing import Any

import dagster as dg

from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.scoring.assets import SCORES
from icp_pipeline.triggers.assets import TRIGGER_EVENTS
from icp_pipeline.writeback.run import WritebackReport, run_writeback

CRM_WRITEBACK = dg.AssetKey(["icp", "crm_writeback"])


def report_metadata(report: WritebackReport) -> dict[str, Any]:
    """The figures ops look at after a night: what moved, what was sent, what is left for tomorrow."""
    return {
        "enabled": True,
        "target": report.target,
        "dry_run": report.dry_run,
        "as_of": str(report.as_of) if report.as_of else "",
        "accounts_scored": report.scored,
        "accounts_changed": report.changed,
        "never_pushed": report.never_pushed,
        "calls_made": report.calls,
        "calls_needed": report.calls_needed,
        "records_pushed": report.pushed,
        "records_failed": report.failed,
        "remaining": report.remaining,
        "budget_left": report.budget_left,
        "stopped": report.stopped or "",
        "invalid_ids": report.invalid_ids,
        "invalid_id_sample": ", ".join(report.invalid_id_sample),
        "field_changes": dg.MetadataValue.json(report.field_changes),
        "sample": dg.MetadataValue.json(report.sample),
        "failures": dg.MetadataValue.json([{"id": key, "error": error} for key, error in report.failures]),
    }


@dg.asset(
    key=CRM_WRITEBACK,
    deps=[SCORES, TRIGGER_EVENTS],
    group_name="crm",
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    description=(
        "One row per account per CRM target (icp.writeback_state): the fit score, tier, reasons and latest "
        "trigger last written to the CRM's account fields; one row per run in icp.writeback_runs. Only "
        "accounts whose values changed are sent. Off unless writeback.enabled is true."
    ),
)
def crm_writeback(context: dg.AssetExecutionContext, icp: IcpSettings) -> dg.MaterializeResult:
    """Write the latest ICP values of changed accounts to HubSpot or Salesforce, within the call budget."""
    config = icp.load_config().writeback
    if not config.enabled:
        context.log.info("CRM write-back is off (writeback.enabled: false); nothing sent")
        return dg.MaterializeResult(
            metadata={
                "enabled": False,
                "dry_run": config.dry_run,
                "calls_made": 0,
                "records_pushed": 0,
                "note": "writeback.enabled is false in icp.yaml: nothing was sent",
            }
        )
    report = run_writeback(icp.warehouse_path(), config, partition_date(context), os.environ, log=context.log)
    verb = "would write" if report.dry_run else "wrote"
    context.log.info(
        f"writeback to {report.target}: {report.changed:,} accounts changed, {verb} "
        f"{report.changed if report.dry_run else report.pushed:,}, failed {report.failed:,}, "
        f"remaining {report.remaining:,}, {report.calls} calls"
    )
    return dg.MaterializeResult(metadata=report_metadata(report))
