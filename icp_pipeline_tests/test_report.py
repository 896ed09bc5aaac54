"""The morning report: right content on planted demo data, self-contained, honest when evidence is thin,
and rendered by a real browser with the network blocked and no console error."""

from __future__ import annotations

import datetime as dt
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icp_pipeline.cli import main
from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline.profile.derive import trait_label
from icp_pipeline.report import charts
from icp_pipeline.report import format as fmt
from icp_pipeline.report.build import REPORT_FILE, build_report
from icp_pipeline.report.data import read_report_data
from icp_pipeline.scoring.validation import gains_curve
from icp_pipeline_tests.browser import chromium_binary, visit_page
from icp_pipeline_tests.conftest import AS_OF
from icp_pipeline_tests.staged_demo import materialize_nightly, truth_of

SECTIONS = ("The ICP on one page", "Does the score work", "Who to call", "Is the ICP drifting", "Data health")
DEMO_CHARTS = {
    "criteria_win_rate",
    "tier_win_rate",
    "gains_curve",
    "triggers_by_week",
    "cohort_auc",
    "cohort_lift",
    "psi",
    "feed_freshness",
    "match_rate",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A full nightly run on planted demo data; the report asset writes the page beside the warehouse."""
    root = tmp_path_factory.mktemp("report_demo")
    drop, warehouse = root / "drop", root / "warehouse.duckdb"
    generate_demo(drop, DemoSpec(accounts=4000, seed=11))
    result = materialize_nightly(drop, warehouse, AS_OF)
    page = root / "reports" / REPORT_FILE
    return {
        "drop": drop,
        "warehouse": warehouse,
        "page": page,
        "html": page.read_text(encoding="utf-8"),
        "metadata": result.asset_materializations_for_node("icp__report")[0].metadata,
    }


@pytest.fixture(scope="module")
def thin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A nightly run on three accounts and two closed deals: too little evidence for anything."""
    from icp_pipeline_tests.conftest import ACCOUNTS_CSV, OPPORTUNITIES_CSV, write_drop

    root = tmp_path_factory.mktemp("report_thin")
    drop = write_drop(
        root / "drop", {"crm/accounts.csv": ACCOUNTS_CSV, "crm/opportunities.csv": OPPORTUNITIES_CSV}
    )
    warehouse = root / "warehouse.duckdb"
    materialize_nightly(drop, warehouse, AS_OF)
    page = root / "reports" / REPORT_FILE
    return {"warehouse": warehouse, "page": page, "html": page.read_text(encoding="utf-8")}


def section_html(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, flags=re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def charts_in(page: str) -> list[str]:
    return re.findall(r'<figure class="chart" data-chart="([^"]+)">', page)


def test_icp_section_lists_the_planted_must_haves(demo: dict[str, Any]) -> None:
    icp = section_html(demo["html"], "icp")
    must_have = icp.split("<h3>Must-have</h3>", 1)[1].split("<h3>", 1)[0]
    planted = [trait_label(t["trait"], t["value"]) for t in truth_of(demo["drop"])["must_have"]]
    assert planted == ["Industry = Software", "Employees = 201-1000", "Uses Snowflake"]
    for label in planted:
        assert f"<td>{label}</td>" in must_have, label
    assert "criteria_win_rate" in charts_in(icp)


def test_tier_win_rate_bars_fall_from_a_to_d(demo: dict[str, Any]) -> None:
    data = read_report_data(demo["warehouse"])
    tiers = data.score.tiers.set_index("tier")["win_rate"]
    assert list(tiers.index) == ["A", "B", "C", "D"]
    assert tiers["A"] > tiers["B"] > tiers["C"] > tiers["D"], tiers
    score = section_html(demo["html"], "score")
    assert "tier_win_rate" in charts_in(score)
    assert "win rates fall from A to D" in score
    gains = data.score.gains
    assert len(gains) == 21 and gains["share_of_wins"].is_monotonic_increasing
    assert gains["share_of_wins"].iloc[-1] == pytest.approx(1.0)


def test_demo_report_has_every_section_and_chart(demo: dict[str, Any]) -> None:
    page = demo["html"]
    assert re.findall(r"<h2>(.*?)</h2>", page) == list(SECTIONS)
    assert set(charts_in(page)) == DEMO_CHARTS and len(charts_in(page)) == len(DEMO_CHARTS)
    for figure in re.findall(r'<figure class="chart".*?</figure>', page, flags=re.S):
        caption = re.search(r"<figcaption>(.+?)</figcaption>", figure)
        assert caption and len(caption.group(1)) > 40, figure[:200]
        assert "<svg " in figure and 'aria-label="' in figure


def test_report_is_self_contained(demo: dict[str, Any]) -> None:
    page = demo["html"]
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "http://" not in page and "https://" not in page
    references = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page) + re.findall(r"url\(([^)]*)\)", page)
    assert references and all(ref.startswith("#") for ref in references), {
        r for r in references if not r.startswith("#")
    }
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate element ids across inline SVGs"


def test_asset_writes_the_report_at_the_stable_path_with_metadata(demo: dict[str, Any]) -> None:
    metadata = demo["metadata"]
    assert metadata["path"].value == str(demo["page"])
    assert metadata["size_bytes"].value == demo["page"].stat().st_size
    assert metadata["charts"].value == len(DEMO_CHARTS)
    rendered = metadata["sections_rendered"].value
    assert all(title in rendered for title in SECTIONS)


def test_who_to_call_ranks_fit_accounts_with_recent_triggers(demo: dict[str, Any]) -> None:
    data = read_report_data(demo["warehouse"])
    top = data.call.top_accounts
    assert len(top) == 15 and top["priority"].is_monotonic_decreasing
    assert set(top["tier"]) <= {"A", "B", "C"} and top["latest_trigger"].notna().sum() >= 10
    call = section_html(demo["html"], "call")
    assert top["account_id"].iloc[0] in call and "triggers_by_week" in charts_in(call)


def test_thin_evidence_renders_every_section_with_reasons_instead_of_charts(thin: dict[str, Any]) -> None:
    page = thin["html"]
    assert re.findall(r"<h2>(.*?)</h2>", page) == list(SECTIONS)
    score = section_html(page, "score")
    assert "cannot be validated" in score and "insufficient data" in score and not charts_in(score)
    icp = section_html(page, "icp")
    assert "No must-have, nice-to-have or hard-no criterion" in icp and not charts_in(icp)
    call = section_html(page, "call")
    assert "No trigger events happened in the last 12 weeks" in call
    drift = section_html(page, "drift")
    assert "Too few monthly cohorts" in drift and "cohort_auc" not in charts_in(drift)
    health = section_html(page, "health")
    assert "no file" in health and "No feed rows were delivered" in health
    for anchor in ("icp", "score", "call", "drift", "health"):
        body = section_html(page, anchor)
        assert charts_in(body) or 'class="why"' in body, anchor


def test_cli_writes_the_default_path_or_out_and_fails_in_one_line(
    demo: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mail" / "today.html"
    assert main(["report", "--warehouse", str(demo["warehouse"]), "--out", str(out), "--as-of", AS_OF]) == 0
    assert out.stat().st_size > 50_000 and f"written to {out}" in capsys.readouterr().out
    assert main(["report", "--warehouse", str(tmp_path / "missing.duckdb")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"icp report: warehouse not found: {tmp_path / 'missing.duckdb'} (run `icp run` first)"
    )
    assert main(["report", "--warehouse", str(demo["warehouse"]), "--as-of", "2026-10-01"]) == 1
    assert "no scores as of 2026-10-01" in capsys.readouterr().err


def test_default_report_path_is_beside_the_warehouse(thin: dict[str, Any]) -> None:
    result = build_report(thin["warehouse"])
    assert result.path == thin["warehouse"].parent / "reports" / REPORT_FILE
    assert result.as_of == dt.date.fromisoformat(AS_OF) and len(result.sections) == 5


def test_gains_curve_interpolates_ties_and_reaches_every_win() -> None:
    tied = gains_curve(np.array([3.0, 3.0, 1.0, 1.0]), np.array([True, False, True, False]), points=4)
    assert tied["share_of_wins"].tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    perfect = gains_curve(np.array([9.0, 8.0, 2.0, 1.0]), np.array([True, True, False, False]), points=4)
    assert perfect["share_of_wins"].tolist() == pytest.approx([0, 0.5, 1.0, 1.0, 1.0])


def test_numbers_are_formatted_for_people() -> None:
    assert [fmt.count(12_400), fmt.count(1_234), fmt.count(1_240_000), fmt.count(None)] == [
        "12.4k",
        "1,234",
        "1.2M",
        "n/a",
    ]
    assert [fmt.pct(0.38), fmt.pct(0.004), fmt.money(102_463), fmt.ratio(3.02), fmt.days(1)] == [
        "38%",
        "0.4%",
        "$102k",
        "3.0x",
        "1 day",
    ]


def test_two_charts_share_no_svg_id_and_carry_no_url() -> None:
    import pandas as pd

    tiers = pd.DataFrame({"tier": list("ABCD"), "win_rate": [0.6, 0.4, 0.3, 0.1], "deals": [10, 20, 30, 40]})
    first = charts.tier_win_rate(tiers, 0.2, name="first")
    second = charts.tier_win_rate(tiers, 0.2, name="second")
    first_ids = set(re.findall(r'\bid="([^"]+)"', first))
    second_ids = set(re.findall(r'\bid="([^"]+)"', second))
    assert first_ids and not first_ids & second_ids
    assert all(ref.startswith("first-") for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', first))
    assert "http" not in first and first.startswith("<svg ")
    assert "Win rate of test deals (%)" in first and "Tier A" in first


needs_chromium = pytest.mark.skipif(
    chromium_binary() is None,
    reason="Chromium not found (/usr/lib/chromium/chromium or chromium on PATH; apt-get install chromium)",
)
PAGE_FACTS = """document.querySelectorAll('details').forEach(d => { d.open = true; });
JSON.stringify({
  headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  figures: document.querySelectorAll('figure.chart').length,
  drawn: [...document.querySelectorAll('figure.chart svg')].filter(s => {
    const box = s.getBoundingClientRect(); return box.width > 300 && box.height > 100;
  }).length,
  captions: [...document.querySelectorAll('figure.chart figcaption')].filter(c => c.textContent.length > 40).length,
})"""


def png_size(file: Path) -> tuple[int, int]:
    header = file.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_headless_chromium_offline_without_errors(
    demo: dict[str, Any], tmp_path: Path
) -> None:
    import json

    shot = tmp_path / "report.png"
    visit = visit_page(demo["page"], PAGE_FACTS, screenshot=shot)
    facts = json.loads(visit.value)
    assert facts["headings"] == list(SECTIONS)
    expected = len(charts_in(demo["html"]))
    assert facts["figures"] == facts["drawn"] == facts["captions"] == expected == len(DEMO_CHARTS)
    assert visit.exceptions == [] and visit.console_errors == []
    assert visit.requests == [demo["page"].resolve().as_uri()]
    width, height = png_size(shot)
    assert width >= 1000 and height > 6000, (width, height)  # every <details> opened
    assert shot.stat().st_size > 100_000


@pytest.mark.slow
@needs_chromium
def test_browser_check_catches_errors_and_outside_requests(tmp_path: Path) -> None:
    """The control: a page that fetches from the internet and logs an error is caught, and blocked."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><body><h2>x</h2>"
        '<img src="http://example.invalid/pixel.png">'
        "<script>console.error('boom'); throw new Error('bang');</script></body></html>",
        encoding="utf-8",
    )
    visit = visit_page(page, "document.querySelectorAll('h2').length")
    assert visit.value == 1
    assert "http://example.invalid/pixel.png" in visit.requests
    assert any("boom" in message for message in visit.console_errors)
    assert any("bang" in message for message in visit.exceptions)
    assert visit.failed_requests, "the outside request was not blocked"


def test_summary_comes_first_and_details_are_folded(demo: dict[str, Any]) -> None:
    page = demo["html"]
    summary = page.index('<div class="summary"')
    assert summary < page.index("<section ") and summary < page.index("<nav>")
    short = re.search(r'<div class="summary".*?</ul>', page, flags=re.S).group(0)
    assert short.count("<li>") == 5 and "Call first:" in short and "AUC" in short
    for anchor in ("icp", "score", "call", "drift", "health"):
        body = section_html(page, anchor)
        assert body.count("<details><summary>") == 1, anchor
        folded = body.split("<details>", 1)[1]
        assert charts_in(body) == charts_in(folded), f"{anchor}: a chart is not folded"
    assert "<script" not in page.lower()


def test_figures_are_explained_in_plain_words(demo: dict[str, Any]) -> None:
    icp, drift = section_html(demo["html"], "icp"), section_html(demo["html"], "drift")
    assert "q, in plain words: the expected share of flukes" in icp
    assert "the figure the verdict rests on" in icp
    assert "In plain words: PSI (population stability index)" in drift
    assert "JS distance (Jensen-Shannon)" in drift and '<th class="num">JS distance</th>' in drift


def test_reasons_shown_never_cite_unknown(demo: dict[str, Any]) -> None:
    from icp_pipeline.report.sections import shown_reasons

    call = section_html(demo["html"], "call")
    assert "= unknown" not in call
    # Rows scored before the rule (written with the unknown reason) are cleaned when shown.
    assert shown_reasons("Industry = Software: +10; Company age = unknown: +4; Country = US: +1") == (
        "Industry = Software: +10; Country = US: +1"
    )
    assert shown_reasons(None) == ""


def test_lift_shown_is_the_win_rate_lift_the_verdict_rests_on() -> None:
    """A nice-to-have wins more often (1.5x) but is rarer among the best customers (0.6x): the table
    shows the 1.5x the label rests on and says the rest in words, instead of a 0.6x 'lift'."""
    from types import SimpleNamespace

    import pandas as pd

    from icp_pipeline.report.data import IcpData
    from icp_pipeline.report.sections import icp_section

    criteria = pd.DataFrame(
        {
            "verdict": ["nice_to_have"],
            "label": ["Country = US"],
            "trait": ["country"],
            "value": ["US"],
            "points": [1],
            "win_rate_with": [0.30],
            "win_rate_with_low": [0.26],
            "win_rate_with_high": [0.34],
            "win_rate_without": [0.20],
            "closed_with": [511],
            "support_best": [0.27],
            "share_of_accounts": [0.45],
            "lift": [0.6],
            "q_value": [2e-5],
            "win_rate_lift": [1.5],
        }
    )
    section = icp_section(SimpleNamespace(icp=IcpData(summary="s", criteria=criteria, base_win_rate=0.22)))
    markup = section.render()
    row = re.search(r"<td>Country = US</td>.*?</tr>", markup, flags=re.S).group(0)
    assert '<td class="num">1.5x</td>' in row and "0.6x" not in row
    assert "rarer among the best customers" in markup and "27% of best customers, 45% of accounts" in markup


def test_trigger_caption_does_not_read_the_first_run_as_a_busy_week() -> None:
    import pandas as pd

    from icp_pipeline.report.sections import triggers_caption, unchecked_weeks, week_labels

    as_of = dt.date(2026, 11, 1)
    weeks = pd.DataFrame(
        {
            "weeks_ago": [0, 0, 1, 2, 3],
            "trigger_type": ["hiring_surge", "funding", "funding", "funding", "funding"],
            "events": [59, 8, 10, 6, 8],
        }
    )
    assert unchecked_weeks(as_of, as_of) == 11 and unchecked_weeks(as_of, None) == 0
    caption = triggers_caption(weeks, as_of, as_of)
    assert "found only by nightly runs, the first on 2026-11-01" in caption
    assert "not because there were none" in caption and "a busy week" not in caption
    assert (
        "bar holds 59 of them: without them it had 8 signals, against 2.2 a week on average before" in caption
    )
    svg = charts.triggers_by_week(weeks, week_labels(as_of), unchecked_weeks(as_of, as_of))
    assert "hiring surges not looked for" in svg


HEIGHT = "document.documentElement.scrollHeight"


@needs_chromium
def test_folded_report_is_short_and_unfolds_to_everything(demo: dict[str, Any]) -> None:
    """Before: 8,129 px tall on the 2,000-account demo; folded now, about 2,100 px."""
    folded = visit_page(demo["page"], HEIGHT)
    unfolded = visit_page(
        demo["page"], "document.querySelectorAll('details').forEach(d => d.open = true);" + HEIGHT
    )
    assert folded.value < 3000, folded.value
    assert unfolded.value > 2.5 * folded.value, (folded.value, unfolded.value)
