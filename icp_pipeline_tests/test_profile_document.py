"""The ICP one-pager: real HTML tables and lists (not Markdown pipes printed as text), escaped data,
and the Markdown and HTML saying the same thing because both come from one structure."""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from icp_pipeline.profile.derive import HARD_NO, MUST_HAVE, NICE_TO_HAVE, IcpProfile
from icp_pipeline.profile.document import document_content, html_document, markdown_document, points_text
from icp_pipeline_tests.browser import chromium_binary, visit_page

CONTAINERS = {"li": {"ul", "ol"}, "tr": {"table", "thead", "tbody", "tfoot"}, "td": {"tr"}, "th": {"tr"}}
VOID = {"meta", "br", "img", "hr", "link", "input"}


class NestingCheck(HTMLParser):
    """Records every element whose parent is not one it must sit in, the text, and the table headers."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.misplaced: list[str] = []
        self.unclosed: list[str] = []
        self.text: list[str] = []
        self.header_cells: list[str] = []
        self.counts: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.stack[-1] if self.stack else None
        if tag in CONTAINERS and parent not in CONTAINERS[tag]:
            self.misplaced.append(f"<{tag}> inside <{parent}>")
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.unclosed.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.stack and self.stack[-1] == "th":
            self.header_cells.append(data.strip())


def check(page: str) -> NestingCheck:
    parser = NestingCheck()
    parser.feed(page)
    parser.close()
    return parser


def evidence_row(trait: str, value: str, verdict: str, points: int, rate: float) -> dict[str, object]:
    return {
        "trait": trait,
        "value": value,
        "verdict": verdict,
        "points": points,
        "win_rate_with": rate,
        "win_rate_with_low": max(rate - 0.04, 0.0),
        "win_rate_with_high": rate + 0.04,
        "win_rate_without": 0.2,
        "closed_with": 466,
        "q_value": 5e-37,
        "support_best": 0.46,
        "share_of_accounts": 0.18,
        "top_customers": 5,
        "top_customers_with": 4,
    }


def small_profile() -> IcpProfile:
    """A profile as derive_profile returns it, with a hostile industry name and a one-point trait."""
    evidence = pd.DataFrame(
        [
            evidence_row("industry", "Software", MUST_HAVE, 10, 0.45),
            evidence_row("industry", "<b>Tools</b> | Hardware", MUST_HAVE, 4, 0.40),
            evidence_row("country", "US", NICE_TO_HAVE, 1, 0.24),
            evidence_row("employee_band", "1-10", HARD_NO, -15, 0.01),
        ]
    )
    metrics = pd.DataFrame(
        [
            {
                "group": "icp_fit",
                "accounts": 363,
                "closed_deals": 486,
                "win_rate": 0.54,
                "sales_cycle_days": 82,
            },
            {
                "group": "non_fit",
                "accounts": 1637,
                "closed_deals": 2090,
                "win_rate": 0.14,
                "sales_cycle_days": 71,
            },
        ]
    ).assign(avg_deal_size=[86327.0, 71438.0], cac_payback_months=[np.nan, np.nan])
    audit = pd.DataFrame(
        [
            {
                "section": "must_have",
                "trait": "industry",
                "values": "Software|Fintech",
                "status": "supported",
                "win_rate_with": 0.41,
                "win_rate_without": 0.18,
                "closed_with": 600,
                "p_value": 1e-20,
                "detail": "wider than the data supports: Fintech (19% win rate, n=134)",
            }
        ]
    )
    return IcpProfile(
        as_of=dt.date(2026, 11, 1),
        evidence=evidence,
        model=None,  # type: ignore[arg-type]  # the document does not read the model
        tier_cutoffs={"A": 67, "B": 59, "C": 53},
        version="2eba39a7b7e0",
        summary="Learned from 2,576 closed deals.",
        metrics=metrics,
        audit=audit,
        outcomes=pd.DataFrame(),
        closed_deals=2576,
        notes=["1 point override(s) from icp.yaml"],
    )


def test_points_are_singular_for_one() -> None:
    assert [points_text(10), points_text(1), points_text(-1), points_text(-3)] == [
        "+10 points",
        "+1 point",
        "-1 point",
        "-3 points",
    ]


def test_one_pager_html_nests_rows_in_tables_and_items_in_lists() -> None:
    page = html_document(small_profile())
    parsed = check(page)
    assert parsed.misplaced == [] and parsed.unclosed == [] and parsed.stack == []
    assert parsed.counts["table"] == 2 and parsed.counts["ul"] == 4 and parsed.counts["li"] == 8
    assert parsed.header_cells[:3] == ["Metric", "ICP-fit", "Non-fit"]
    text = " ".join(parsed.text)
    assert "|---" not in text and "**" not in text and "`" not in text
    assert "(+1 point)" in text and "+1 points" not in text
    # Units once: the figure carries "days", the row name does not repeat it.
    assert "Sales cycle" in text and "82 days" in text and "sales cycle days" not in text.lower()
    assert "None supported by the evidence." not in text  # every section has items here


def test_data_is_escaped_and_both_renderings_say_the_same() -> None:
    profile = small_profile()
    page, markdown = html_document(profile), markdown_document(profile)
    assert "<b>Tools</b>" not in page and "&lt;b&gt;Tools&lt;/b&gt; | Hardware" in page
    assert "| Software\\|Fintech |" in markdown  # a pipe in a table cell does not split the row
    content = document_content(profile)
    for _title, items in content.sections:
        for item in items:
            assert f"**{item.label}** ({item.points}): {item.evidence}" in markdown
    for row in content.fit_table.rows:
        assert "| " + " | ".join(row) + " |" in markdown
        assert all(f">{cell}</td>" in page for cell in row)
    assert "| Metric | ICP-fit | Non-fit |\n|---|---:|---:|\n| Accounts | 363 | 1,637 |\n" in markdown


def test_empty_sections_say_so_in_both_renderings() -> None:
    profile = small_profile()
    profile.evidence = profile.evidence[profile.evidence["verdict"] != NICE_TO_HAVE]
    profile.audit = profile.audit.iloc[0:0]
    page, markdown = html_document(profile), markdown_document(profile)
    assert check(page).misplaced == []
    assert "<h2>Nice-to-have</h2>\n<p>None supported by the evidence.</p>" in page
    assert "## Nice-to-have\n\nNone supported by the evidence." in markdown
    assert "Audit of the written ICP" not in page and "Audit of the written ICP" not in markdown


needs_chromium = pytest.mark.skipif(
    chromium_binary() is None,
    reason="Chromium not found (/usr/lib/chromium/chromium or chromium on PATH; apt-get install chromium)",
)
DOCUMENT_FACTS = """JSON.stringify({
  rows: document.querySelectorAll('table tr').length,
  firstHeader: [...document.querySelectorAll('table')[0].querySelectorAll('th')].map(h => h.textContent),
  cells: [...document.querySelectorAll('table')[0].rows].map(r => r.cells.length),
  looseItems: [...document.querySelectorAll('li')].filter(li => !li.parentElement.matches('ul, ol')).length,
  items: document.querySelectorAll('li').length,
  text: document.body.innerText,
})"""


@needs_chromium
def test_one_pager_renders_real_tables_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "icp_profile.html"
    page.write_text(html_document(small_profile()), encoding="utf-8")
    visit = visit_page(page, DOCUMENT_FACTS)
    facts = json.loads(visit.value)
    assert facts["firstHeader"] == ["Metric", "ICP-fit", "Non-fit"]
    assert facts["cells"] == [3] * 6  # a header row and five metric rows, three cells each
    assert facts["rows"] == 6 + 2  # and the audit table's header and one row
    assert facts["looseItems"] == 0 and facts["items"] == 8
    assert "|---|" not in facts["text"] and "metricICP-fit" not in facts["text"]
    assert visit.exceptions == [] and visit.console_errors == []
