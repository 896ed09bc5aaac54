"""The one-page ICP document (Markdown and self-contained HTML) and the profile's table rows."""

from __future__ import annotations

import html
from pathlib import Path

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


def _metrics_table(profile: IcpProfile) -> list[tuple[str, str, str]]:
    metrics = profile.metrics.set_index("group")
    formats = {
        "accounts": "{:,.0f}",
        "closed_deals": "{:,.0f}",
        "win_rate": "{:.0%}",
        "avg_deal_size": "${:,.0f}",
        "sales_cycle_days": "{:.0f} days",
        "churn_rate": "{:.0%}",
        "net_revenue_retention": "{:.0%}",
        "ltv_to_cac": "{:.1f}x",
        "cac_payback_months": "{:.1f} months",
    }
    rows = []
    for name, fmt in formats.items():
        values = [metrics.loc[g, name] if g in metrics.index else np.nan for g in ("icp_fit", "non_fit")]
        if all(pd.isna(v) for v in values):
            continue
        rows.append((name.replace("_", " "), *("n/a" if pd.isna(v) else fmt.format(v) for v in values)))
    return rows


def markdown_document(profile: IcpProfile) -> str:
    evidence = with_evidence_text(profile.evidence)
    lines = [
        f"# Ideal Customer Profile, as of {profile.as_of}",
        "",
        f"Profile version `{profile.version}`. {profile.summary}",
        "",
    ]
    for verdict, title in SECTIONS:
        items = evidence[evidence["verdict"] == verdict]
        lines += [f"## {title}", ""]
        if items.empty:
            lines += ["None supported by the evidence.", ""]
        for _, item in items.iterrows():
            lines.append(f"- **{item['label']}** ({int(item['points']):+d} points): {item['evidence']}")
        lines.append("")
    lines += ["## ICP-fit (tiers A+B) vs the rest", "", "| metric | ICP-fit | non-fit |", "|---|---|---|"]
    lines += [f"| {name} | {fit} | {non} |" for name, fit, non in _metrics_table(profile)]
    lines += ["", "## Tiers", ""]
    lines += [f"- Tier {tier}: fit score >= {cutoff}" for tier, cutoff in profile.tier_cutoffs.items()] + [
        "- Tier D: the rest, and every hard-no account"
    ]
    if len(profile.audit):
        lines += [
            "",
            "## Audit of the written ICP",
            "",
            "| criterion | values | status | win rate with | without | n | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for _, a in profile.audit.iterrows():
            lines.append(
                f"| {a['section']} {a['trait']} | {a['values']} | {a['status']} {a['detail']} | {_pct(a['win_rate_with'])} "
                f"| {_pct(a['win_rate_without'])} | {a['closed_with']} | {a['p_value']:.2g} |"
            )
    if profile.notes:
        lines += ["", "Notes: " + "; ".join(profile.notes)]
    return "\n".join(lines) + "\n"


def html_document(profile: IcpProfile) -> str:
    """The same page as self-contained HTML (inline CSS, nothing fetched)."""
    body: list[str] = []
    for line in markdown_document(profile).splitlines():
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:]).replace('**', '')}</li>")
        elif line.startswith("|") and not line.startswith("|---"):
            cells = "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
            body.append(f"<tr>{cells}</tr>")
        elif line:
            body.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;color:#1f2933;line-height:1.45}"
        "td{border-bottom:1px solid #e4e7eb;padding:.25rem .6rem}h2{margin-top:1.6rem;border-bottom:2px solid #3e7cb1}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>ICP {profile.as_of}</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def write_documents(profile: IcpProfile, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    markdown, page = folder / "icp_profile.md", folder / "icp_profile.html"
    markdown.write_text(markdown_document(profile), encoding="utf-8")
    page.write_text(html_document(profile), encoding="utf-8")
    return markdown, page
