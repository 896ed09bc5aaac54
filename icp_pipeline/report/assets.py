"""Dagster wiring of the morning report: the last step of the nightly job writes one HTML page."""

import dagster as dg

from icp_pipeline.alerts.assets import ALERTS
from icp_pipeline.drift.assets import DRIFT
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.scoring.assets import SCORES, VALIDATION
from icp_pipeline.triggers.assets import TRIGGER_EVENTS

REPORT = dg.AssetKey(["icp", "report"])


@dg.asset(
    key=REPORT,
    deps=[SCORES, VALIDATION, TRIGGER_EVENTS, ALERTS, DRIFT],
    group_name="report",
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    description=(
        "One self-contained HTML page per as-of date, rewritten at <warehouse dir>/reports/icp_report.html: "
        "the ICP on one page, does the score work, who to call, is the ICP drifting, data health. "
        "Charts are inline SVG; nothing is fetched when it opens."
    ),
)
def icp_report(context: dg.AssetExecutionContext, icp: IcpSettings) -> dg.MaterializeResult:
    """Render the report for the partition's as-of date at the stable path `icp run` prints."""
    from icp_pipeline.report.build import build_report, default_report_path  # matplotlib: load when run

    warehouse = icp.warehouse_path()
    result = build_report(
        warehouse, default_report_path(warehouse), partition_date(context), icp.load_config()
    )
    rendered = result.sections_rendered()
    context.log.info(
        f"report written to {result.path} ({result.size_bytes:,} bytes, {len(result.charts)} charts)"
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(result.path)),
            "size_bytes": result.size_bytes,
            "charts": len(result.charts),
            "sections_rendered": dg.MetadataValue.md(
                "\n".join(f"- {title}: {state}" for title, state in rendered.items())
            ),
        }
    )
