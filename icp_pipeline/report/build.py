"""Build the morning report: read the warehouse, render five sections, write one HTML file.

`icp report` and the nightly `icp/report` asset both call `build_report`, so the page a RevOps
lead opens is the same whichever wrote it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from icp_pipeline.config import IcpConfig
from icp_pipeline.report import format as fmt
from icp_pipeline.report.data import ReportData, read_report_data
from icp_pipeline.report.html import Section, esc, page, tiles
from icp_pipeline.report.sections import build_sections, summary_points

REPORT_FILE = "icp_report.html"


@dataclass
class ReportResult:
    path: Path
    as_of: dt.date
    size_bytes: int
    sections: list[Section]
    data: ReportData

    @property
    def charts(self) -> list[str]:
        return [name for section in self.sections for name in section.charts]

    def sections_rendered(self) -> dict[str, str]:
        """Section title -> what it shows ('3 charts') or why it shows less."""
        return {
            s.title: f"{len(s.charts)} chart(s)"
            + (f"; explained instead: {len(s.explained)}" if s.explained else "")
            for s in self.sections
        }


def default_report_path(warehouse: Path) -> Path:
    """The stable place `icp run` writes the report: beside the ICP document."""
    return warehouse.parent / "reports" / REPORT_FILE


def _header(data: ReportData, built_at: dt.datetime) -> str:
    score, drift, health = data.score, data.drift, data.health
    auc = score.values.get("auc")
    failing = health.failed_rules
    blocking = int((failing["severity"] == "block").sum()) if len(failing) else 0
    quarantined = int(health.quarantine["rows"].sum()) if len(health.quarantine) else 0
    alerts = int(data.call.alert_status["alerts"].sum()) if len(data.call.alert_status) else 0
    metrics = drift.metrics
    judged = (
        len(metrics)
        and metrics[(metrics["metric"] == "auc") & (metrics["cohort"] != "reference")]["value"].notna().any()
    )
    flagged = bool(drift.flag.get("flagged")) if drift.flag and judged else None
    glance = tiles(
        [
            (fmt.count(data.accounts_scored), "accounts scored", ""),
            (
                fmt.decimal(auc) if auc is not None else "n/a",
                "holdout AUC of the fit score",
                "" if auc is None else "good" if auc >= 0.65 else "warn",
            ),
            (
                "n/a" if flagged is None else "flagged" if flagged else "stable",
                "ICP drift",
                "" if flagged is None else "bad" if flagged else "good",
            ),
            (fmt.count(alerts), "alerts for reps", ""),
            (
                "blocked" if blocking else f"{fmt.count(len(failing))} warnings" if len(failing) else "clean",
                f"data contracts ({fmt.count(quarantined)} rows quarantined)",
                "bad" if blocking else "warn" if len(failing) or quarantined else "good",
            ),
        ]
    )
    banner = (
        f'<p class="banner">This report is for {esc(data.as_of)}; the warehouse also holds scores as of '
        f"{esc(data.latest_as_of)}.</p>"
        if data.as_of != data.latest_as_of
        else ""
    )
    return (
        f"<header><h1>ICP morning report, as of {esc(data.as_of)}</h1>"
        f'<p class="sub">Built {esc(built_at.strftime("%Y-%m-%d %H:%M UTC"))} from {esc(data.warehouse.name)}; '
        "one self-contained page, nothing is fetched when it opens.</p>"
        f"{banner}{glance}</header>"
    )


def render_report(data: ReportData, built_at: dt.datetime | None = None) -> tuple[str, list[Section]]:
    """The page's HTML and its sections (with the charts each drew)."""
    built_at = built_at or dt.datetime.now(dt.UTC)
    sections = build_sections(data)
    markup = page(
        f"ICP report {data.as_of}",
        _header(data, built_at),
        sections,
        f"icp_pipeline morning report for {data.as_of}. Sections: "
        + ", ".join(s.title for s in sections)
        + ".",
        summary_points(data),
    )
    return markup, sections


def build_report(
    warehouse: Path,
    out: Path | None = None,
    as_of: dt.date | None = None,
    config: IcpConfig | None = None,
) -> ReportResult:
    """Write the report for `as_of` (default: the latest scored date); the file is replaced atomically."""
    data = read_report_data(warehouse, as_of, config)
    markup, sections = render_report(data)
    target = out or default_report_path(warehouse)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(markup, encoding="utf-8")
    os.replace(partial, target)
    return ReportResult(target, data.as_of, target.stat().st_size, sections, data)
