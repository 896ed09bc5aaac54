"""The one-page ICP document (Markdown and self-contained HTML) and the profile's table rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from icp_pipeline.profile.derive import HARD_NO, MUST_HAVE, NICE_TO_HAVE, IcpProfile, trait_label

SECTIONS = ((MUST_HAVE, "Must-have"), (NICE_TO_HAVE, "Nice-to-have"), (HARD_NO, "Hard no"))


def _pct(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.0%}"


def evidence_text(row: pd.Series) -> str:
    """The numbers behind one criterion, in one line."""
    text = (
        f"win rate {_pct(row['win_rate_with'])} [{_pct(row['win_rate_with_low'])}-{_pct(row['win_rate_with_high'])}] "
        f"vs {_pct(row['win_rate_without'])} without (n={int(row['closed_with']):,}, q={row['q_value']:.1g}); "
        f"{_pct(row['support_best'])} of best customers vs {_pct(row['share_of_accounts'])} of accounts"
    )
    if row["top_customers"] and row["top_customers_with"] >= 3:
        text += (
            f"; {int(row['top_customers_with'])} of the top {int(row['top_customers'])} customers share it"
        )
    return text


def with_evidence_text(evidence: pd.DataFrame) -> pd.DataFrame:
    """Evidence rows with a readable label, hint and evidence sentence (per trait value, not per account)."""
    frame = evidence.copy()
    frame["label"] = [trait_label(t, v) for t, v in frame[["trait", "value"]].itertuples(index=False)]
    frame["evidence"] = [evidence_text(row) for _, row in frame.iterrows()]
    return frame


def profile_rows(profile: IcpProfile) -> pd.DataFrame:
    """Rows of `icp.icp_profile`: criteria, points, tier cut-offs, fit metrics, audit, summary."""
    evidence = with_evidence_text(profile.evidence)
    rows: list[dict[str, object]] = [
        {"section": "summary", "label": profile.summary, "detail": "; ".join(profile.notes)},
        {
            "section": "model",
            "label": "base points",
            "points": profile.model.base,
            "detail": profile.model.scored_by,
        },
    ]
    if profile.point_in_time:
        counts = profile.point_in_time
        rows.append(
            {
                "section": "point_in_time",
                "label": f"{counts['deals']:,} closed deals described as their account was when each was created",
                "detail": (
                    f"{counts['later_crm_version']:,} by a CRM version recorded after the deal (no account "
                    f"history reaches back that far); {counts['later_firmographics']:,} by a firmographic "
                    f"observation made after it; {counts['no_technology_data']:,} without technology data then"
                ),
            }
        )
    for verdict, _title in SECTIONS:
        for _, item in evidence[evidence["verdict"] == verdict].iterrows():
            rows.append(
                {
                    "section": verdict,
                    "trait": item["trait"],
                    "value": item["value"],
                    "label": item["label"],
                    "points": int(item["points"]),
                    "detail": item["evidence"],
                }
            )
    for trait, value, points in profile.model.points[["trait", "value", "points"]].itertuples(index=False):
        if points:
            rows.append(
                {
                    "section": "points",
                    "trait": trait,
                    "value": value,
                    "label": trait_label(trait, value),
                    "points": int(points),
                }
            )
    for tier, cutoff in profile.tier_cutoffs.items():
        rows.append({"section": "tier_cutoff", "label": f"Tier {tier}", "value": tier, "points": cutoff})
    for _, metric in profile.metrics.iterrows():
        for name, value in metric.drop(["group"]).items():
            rows.append({"section": "metric", "trait": metric["group"], "label": name, "number": value})
    for _, audit in profile.audit.iterrows():
        rows.append(
            {
                "section": "audit",
                "trait": audit["trait"],
                "value": audit["values"],
                "label": f"{audit['section']}: {audit['status']}",
                "number": audit["win_rate_with"],
                "detail": (
                    f"win rate {_pct(audit['win_rate_with'])} vs {_pct(audit['win_rate_without'])} "
                    f"(n={audit['closed_with']}, p={audit['p_value']:.2g}) {audit['detail']}"
                ).strip(),
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("trait", "value", "label", "detail"):
        frame[column] = (
            frame.get(column, pd.Series(dtype="str")).astype("str").where(lambda s: s != "nan", None)
        )
    frame["points"] = pd.to_numeric(frame.get("points"), errors="coerce").astype("Int64")
    frame["number"] = pd.to_numeric(frame.get("number"), errors="coerce").astype("Float64")
    frame.insert(0, "profile_version", profile.version)
    frame.insert(0, "as_of", profile.as_of)
    return frame[
        ["as_of", "profile_version", "section", "trait", "value", "label", "points", "number", "detail"]
    ]


FIT_METRICS = (
    ("accounts", "Accounts", "{:,.0f}"),
    ("closed_deals", "Closed deals", "{:,.0f}"),
    ("win_rate", "Win rate", "{:.0%}"),
    ("avg_deal_size", "Average deal size", "${:,.0f}"),
    ("sales_cycle_days", "Sales cycle", "{:.0f} days"),
    ("churn_rate", "Churn rate", "{:.0%}"),
    ("net_revenue_retention", "Net revenue retention", "{:.0%}"),
    ("ltv_to_cac", "LTV / CAC", "{:.1f}x"),
    ("cac_payback_months", "CAC payback", "{:.1f} months"),
)
HOW_TO_READ = (
    "How to read the evidence: win rate is the share of closed deals won at accounts with the trait, its "
    "95% range in brackets; n counts those closed deals; q is the expected share of flukes among traits "
    "with evidence this strong, corrected for testing every trait at once (Benjamini-Hochberg): below 0.05 "
    "counts as a finding, and a figure such as 5e-37 leaves practically no doubt."
)


def points_text(points: int) -> str:
    """'+10 points', '+1 point', '-3 points'."""
    return f"{points:+d} point" + ("" if abs(points) == 1 else "s")


@dataclass(frozen=True)
class Table:
    """A table both renderings draw: header cells, rows of text cells, which columns are numbers."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[int, ...] = ()


@dataclass(frozen=True)
class Criterion:
    label: str
    points: str
    evidence: str


@dataclass(frozen=True)
class Document:
    """What the one-pager says, once; Markdown and HTML are two renderings of it."""

    title: str
    version: str
    summary: str
    sections: tuple[tuple[str, tuple[Criterion, ...]], ...]
    how_to_read: str
    fit_table: Table
    tiers: tuple[str, ...]
    audit: Table | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _metrics_table(profile: IcpProfile) -> Table:
    """ICP-fit against non-fit: each unit is stated once, in the figure (82 days), not also in the name."""
    metrics = profile.metrics.set_index("group") if len(profile.metrics) else pd.DataFrame()
    rows = []
    for name, label, fmt in FIT_METRICS:
        values = [
            metrics.loc[g, name] if g in metrics.index and name in metrics.columns else np.nan
            for g in ("icp_fit", "non_fit")
        ]
        if all(pd.isna(v) for v in values):
            continue
        rows.append((label, *("n/a" if pd.isna(v) else fmt.format(v) for v in values)))
    return Table(("Metric", "ICP-fit", "Non-fit"), tuple(rows), numeric=(1, 2))


def _audit_table(profile: IcpProfile) -> Table | None:
    if not len(profile.audit):
        return None
    rows = tuple(
        (
            f"{str(a['section']).replace('_', '-')}: {a['trait']}",
            str(a["values"]),
            f"{a['status']} {a['detail']}".strip(),
            _pct(a["win_rate_with"]),
            _pct(a["win_rate_without"]),
            f"{int(a['closed_with']):,}",
            f"{a['p_value']:.2g}",
        )
        for _, a in profile.audit.iterrows()
    )
    return Table(
        ("Criterion", "Values", "Status", "Win rate with", "Without", "Closed deals", "p"),
        rows,
        numeric=(3, 4, 5, 6),
    )


def document_content(profile: IcpProfile) -> Document:
    """The one-pager's content from the profile: the single source of both renderings."""
    evidence = with_evidence_text(profile.evidence)
    sections = tuple(
        (
            title,
            tuple(
                Criterion(str(item["label"]), points_text(int(item["points"])), str(item["evidence"]))
                for _, item in evidence[evidence["verdict"] == verdict].iterrows()
            ),
        )
        for verdict, title in SECTIONS
    )
    tiers = tuple(f"Tier {tier}: fit score {cutoff} or more" for tier, cutoff in profile.tier_cutoffs.items())
    return Document(
        title=f"Ideal Customer Profile, as of {profile.as_of}",
        version=profile.version,
        summary=profile.summary,
        sections=sections,
        how_to_read=HOW_TO_READ,
        fit_table=_metrics_table(profile),
        tiers=(*tiers, "Tier D: the rest, and every hard-no account"),
        audit=_audit_table(profile),
        notes=tuple(profile.notes),
    )


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_table(table: Table) -> list[str]:
    align = ["---:" if i in table.numeric else "---" for i in range(len(table.headers))]
    return [
        "| " + " | ".join(map(_markdown_cell, table.headers)) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(map(_markdown_cell, row)) + " |" for row in table.rows),
    ]


def markdown_document(profile: IcpProfile) -> str:
    doc = document_content(profile)
    lines = [f"# {doc.title}", "", f"Profile version `{doc.version}`. {doc.summary}", ""]
    for title, items in doc.sections:
        lines += [f"## {title}", ""]
        if not items:
            lines.append("None supported by the evidence.")
        lines += [f"- **{c.label}** ({c.points}): {c.evidence}" for c in items]
        lines.append("")
    lines += [doc.how_to_read, "", "## ICP-fit (tiers A and B) against the rest", ""]
    lines += _markdown_table(doc.fit_table) if doc.fit_table.rows else ["No metrics for this date."]
    lines += ["", "## Tiers", "", *(f"- {tier}" for tier in doc.tiers)]
    if doc.audit is not None:
        lines += ["", "## Audit of the written ICP", "", *_markdown_table(doc.audit)]
    if doc.notes:
        lines += ["", "Notes: " + "; ".join(doc.notes)]
    return "\n".join(lines) + "\n"


HTML_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ICP {{ as_of }}</title><style>{{ css | safe }}</style></head>
<body>
<h1>{{ doc.title }}</h1>
<p>Profile version <code>{{ doc.version }}</code>. {{ doc.summary }}</p>
{% for title, items in doc.sections %}
<h2>{{ title }}</h2>
{% if items %}<ul>
{% for c in items %}<li><strong>{{ c.label }}</strong> ({{ c.points }}): {{ c.evidence }}</li>
{% endfor %}</ul>{% else %}<p>None supported by the evidence.</p>{% endif %}
{% endfor %}
<p class="small">{{ doc.how_to_read }}</p>
<h2>ICP-fit (tiers A and B) against the rest</h2>
{% if doc.fit_table.rows %}{{ table(doc.fit_table) }}{% else %}<p>No metrics for this date.</p>{% endif %}
<h2>Tiers</h2>
<ul>{% for tier in doc.tiers %}<li>{{ tier }}</li>{% endfor %}</ul>
{% if doc.audit %}<h2>Audit of the written ICP</h2>
{{ table(doc.audit) }}{% endif %}
{% if doc.notes %}<p class="small">Notes: {{ doc.notes | join("; ") }}</p>{% endif %}
</body></html>
"""
TABLE_MACRO = """{% macro table(t) %}<table>
<thead><tr>{% for h in t.headers %}<th{% if loop.index0 in t.numeric %} class="num"{% endif %}>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in t.rows %}
<tr>{% for cell in row %}<td{% if loop.index0 in t.numeric %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>{% endmacro %}"""
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;color:#1f2933;line-height:1.45}"
    "table{border-collapse:collapse;margin:.4rem 0 .8rem}"
    "th{text-align:left;color:#616e7c;border-bottom:2px solid #e4e7eb;padding:.25rem .6rem}"
    "td{border-bottom:1px solid #e4e7eb;padding:.25rem .6rem}"
    ".num{text-align:right;font-variant-numeric:tabular-nums}.small{font-size:.85rem;color:#616e7c}"
    "h2{margin-top:1.6rem;border-bottom:2px solid #3e7cb1}"
)
# Autoescaping on: labels and notes come from the data (industry names, icp.yaml), never markup.
_TEMPLATES = jinja2.Environment(autoescape=True, trim_blocks=True, undefined=jinja2.StrictUndefined)
_PAGE = _TEMPLATES.from_string(TABLE_MACRO + HTML_TEMPLATE)


def html_document(profile: IcpProfile) -> str:
    """The same page as self-contained HTML (inline CSS, nothing fetched), from the same content."""
    return _PAGE.render(doc=document_content(profile), as_of=str(profile.as_of), css=CSS)


def write_documents(profile: IcpProfile, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    markdown, page = folder / "icp_profile.md", folder / "icp_profile.html"
    markdown.write_text(markdown_document(profile), encoding="utf-8")
    page.write_text(html_document(profile), encoding="utf-8")
    return markdown, page
