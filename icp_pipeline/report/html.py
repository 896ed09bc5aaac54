"""The page template and small HTML builders: one file, CSS inline, no script, nothing fetched.

Text from the warehouse (account names, rule messages) is escaped here, so the page stays a
plain document whatever the data holds.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--accent:#3e7cb1;--good:#1b7f5f;--bad:#c0392b;--warn:#a27c0c}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);
 line-height:1.45;margin:0;background:#f5f7fa}
main{max-width:60rem;margin:0 auto;padding:1.5rem 1.25rem 3rem;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0}
h2{font-size:1.3rem;margin:2.2rem 0 .6rem;padding-bottom:.25rem;border-bottom:2px solid var(--accent)}
h3{font-size:1.02rem;margin:1.3rem 0 .4rem}
p{margin:.4rem 0}
.sub{color:var(--muted);font-size:.9rem}
nav{margin:.8rem 0 0;font-size:.9rem}
nav a{color:var(--accent);text-decoration:none;margin-right:1rem;white-space:nowrap}
.banner{background:#fff4d6;border-left:4px solid var(--warn);padding:.5rem .8rem;margin:.8rem 0}
.tiles{display:flex;flex-wrap:wrap;gap:.6rem;margin:.8rem 0}
.tile{flex:1 1 9rem;border:1px solid var(--line);border-radius:6px;padding:.5rem .7rem}
.tile .value{font-size:1.35rem;font-weight:600}
.tile .label{color:var(--muted);font-size:.8rem}
.tile.good .value{color:var(--good)}
.tile.bad .value{color:var(--bad)}
.tile.warn .value{color:var(--warn)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.86rem;margin:.4rem 0 .8rem}
th{text-align:left;color:var(--muted);font-weight:600;border-bottom:2px solid var(--line);padding:.3rem .5rem}
td{border-bottom:1px solid var(--line);padding:.3rem .5rem;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.tier{display:inline-block;min-width:1.5rem;text-align:center;border-radius:4px;color:#fff;font-weight:600}
.tier-A{background:#1b7f5f}.tier-B{background:#3e7cb1}.tier-C{background:#c9a227}.tier-D{background:#7b8794}
.small{font-size:.8rem;color:var(--muted)}
.why{background:#f5f7fa;border-left:4px solid var(--muted);padding:.5rem .8rem;margin:.6rem 0}
.flag{color:var(--bad);font-weight:600}
.ok{color:var(--good);font-weight:600}
figure.chart{margin:1rem 0 1.4rem}
figure.chart svg{width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:.85rem;margin-top:.2rem}
ul{margin:.3rem 0 .8rem;padding-left:1.3rem}
.summary{background:#f5f7fa;border:1px solid var(--line);border-radius:6px;padding:.5rem 1rem;margin:.8rem 0}
.summary-title{font-weight:600;font-size:1.1rem;margin:.2rem 0}
.summary ul{margin:.2rem 0}
details{margin:.6rem 0}
summary{cursor:pointer;color:var(--accent);font-weight:600;padding:.2rem 0}
footer{color:var(--muted);font-size:.8rem;margin-top:2.5rem;border-top:1px solid var(--line);padding-top:.6rem}
@media print{body{background:#fff}details>*{display:block}main{max-width:none}h2{break-after:avoid}figure.chart{break-inside:avoid}}
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


@dataclass(frozen=True)
class Markup:
    """Trusted HTML built here (a tier badge, a line break), not text from the data."""

    html: str


@dataclass
class Section:
    """One <h2> section: what shows at once, the details folded under a <summary>, the charts it drew
    and the reasons it gave instead of one."""

    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)
    explained: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)
    fold_label: str = ""

    def fold(self, label: str) -> None:
        """Everything added from here on is folded under `label` (a <details>, no script needed)."""
        self.fold_label = label

    def add(self, markup: str) -> None:
        (self.folded if self.fold_label else self.parts).append(markup)

    def para(self, text: str, css: str = "") -> None:
        self.add(f'<p class="{css}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>")

    def heading(self, text: str) -> None:
        self.add(f"<h3>{esc(text)}</h3>")

    def why(self, text: str) -> None:
        """An empty or insufficient part, said in words instead of an empty chart."""
        self.explained.append(text)
        self.add(f'<p class="why">{esc(text)}</p>')

    def chart(self, name: str, svg: str, caption: str) -> None:
        self.charts.append(name)
        self.add(
            f'<figure class="chart" data-chart="{esc(name)}">{svg}<figcaption>{esc(caption)}</figcaption></figure>'
        )

    def render(self) -> str:
        details = (
            f"<details><summary>{esc(self.fold_label)}</summary>{''.join(self.folded)}</details>"
            if self.folded
            else ""
        )
        return f'<section id="{esc(self.anchor)}"><h2>{esc(self.title)}</h2>{"".join(self.parts)}{details}</section>'


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    """A plain table; cells are escaped unless passed as `Markup`."""
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            content = cell.html if isinstance(cell, Markup) else esc(cell)
            cells.append(f'<td class="num">{content}</td>' if i in numeric else f"<td>{content}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def tier_badge(tier: str) -> Markup:
    return Markup(f'<span class="tier tier-{esc(tier)}">{esc(tier)}</span>')


def tiles(items: Iterable[tuple[str, str, str]]) -> str:
    """Headline numbers: (value, label, tone) with tone good, bad, warn or ''."""
    cells = "".join(
        f'<div class="tile {esc(tone)}"><div class="value">{esc(value)}</div><div class="label">{esc(label)}</div></div>'
        for value, label, tone in items
    )
    return f'<div class="tiles">{cells}</div>'


def bullet_list(items: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"


def page(
    title: str, header: str, sections: Sequence[Section], footer: str, summary: Sequence[str] = ()
) -> str:
    """The whole document: inline CSS only, no script, no external reference of any kind.

    `summary`: the few sentences shown first, above the sections (whose details are folded).
    """
    short = (
        f'<div class="summary" id="summary"><p class="summary-title">In short</p>{bullet_list(summary)}</div>'
        if summary
        else ""
    )
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(s.render() for s in sections)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{header}{short}<nav>{nav}</nav>{body}<footer>{esc(footer)}</footer></main></body></html>\n"
    )
