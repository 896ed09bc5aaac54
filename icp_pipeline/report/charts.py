"""The report's charts: matplotlib figures rendered to inline SVG (offline, no JavaScript).

Each chart takes a small aggregated frame and returns SVG markup ready to sit inside the page:
no XML prologue, no namespace URLs, text kept as text (searchable, small), and every element id
prefixed with the chart's name so several SVGs in one HTML document never share an id.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from icp_pipeline.report import format as fmt

WIDTH = 7.2  # inches; the page scales the SVG to its column width
INK, MUTED, GRID = "#1f2933", "#616e7c", "#e4e7eb"
TIER_COLORS = {"A": "#1b7f5f", "B": "#3e7cb1", "C": "#c9a227", "D": "#b0b7c3"}
VERDICT_COLORS = {"must_have": "#1b7f5f", "nice_to_have": "#3e7cb1", "hard_no": "#c0392b"}
VERDICT_NAMES = {"must_have": "Must-have", "nice_to_have": "Nice-to-have", "hard_no": "Hard no"}
SERIES_COLORS = ("#3e7cb1", "#1b7f5f", "#c9a227", "#8e5ea2", "#c0392b", "#7b8794", "#e07b39")
MATCH_COLORS = {"domain": "#1b7f5f", "name": "#3e7cb1", "ambiguous_name": "#c9a227", "unmatched": "#c0392b"}
BAD, GOOD, WATCH = "#c0392b", "#1b7f5f", "#c9a227"

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9,
    "axes.labelcolor": INK,
    "axes.edgecolor": MUTED,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "svg.fonttype": "none",
    "text.parse_math": False,  # a "$" in a trait value or company name is text, not TeX
}
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')
_PERCENT = PercentFormatter(xmax=1, decimals=0)


@contextmanager
def _style(name: str) -> Iterator[None]:
    """The house style, with the SVG hash salt set per chart so its ids are stable and its own."""
    with rc_context({**STYLE, "svg.hashsalt": name}):
        yield


def _figure(height: float) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(WIDTH, height), layout="constrained")
    return figure, figure.add_subplot()


def to_svg(figure: Figure, name: str, title: str) -> str:
    """Inline SVG markup of a figure: ids prefixed by `name`, no prologue, no metadata, no URLs."""
    buffer = io.StringIO()
    figure.savefig(
        buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
    )
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = text.replace("xlink:href=", "href=")
    text = _ID.sub(lambda m: f'id="{name}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{name}-{m.group(2)}", text)
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def _percent_axis(axis: object) -> None:
    axis.set_major_formatter(_PERCENT)  # type: ignore[attr-defined]


def criteria_win_rate(criteria: pd.DataFrame, base_win_rate: float, name: str = "criteria_win_rate") -> str:
    """Win rate with its 95% interval per profile criterion, against the base win rate."""
    title = "Win rate of deals at accounts with each trait"
    frame = criteria.iloc[::-1].reset_index(drop=True)
    with _style(name):
        figure, ax = _figure(1.3 + 0.34 * len(frame))
        y = np.arange(len(frame))
        for verdict, group in frame.groupby("verdict", sort=False):
            low = group["win_rate_with"] - group["win_rate_with_low"]
            high = group["win_rate_with_high"] - group["win_rate_with"]
            ax.errorbar(
                group["win_rate_with"],
                y[group.index],
                xerr=[low.clip(lower=0), high.clip(lower=0)],
                fmt="o",
                color=VERDICT_COLORS.get(str(verdict), INK),
                ecolor=VERDICT_COLORS.get(str(verdict), INK),
                capsize=3,
                markersize=5,
                label=VERDICT_NAMES.get(str(verdict), str(verdict)),
            )
        if pd.notna(base_win_rate):
            ax.axvline(base_win_rate, color=MUTED, linestyle="--", linewidth=1)
            ax.annotate(
                f"base rate {fmt.pct(base_win_rate)}",
                (base_win_rate, 1),
                xycoords=("data", "axes fraction"),
                xytext=(4, -2),
                textcoords="offset points",
                va="top",
                color=MUTED,
                fontsize=8,
            )
        ax.set_yticks(y, frame["label"])
        ax.grid(axis="y", visible=False)
        _percent_axis(ax.xaxis)
        ax.set_xlim(0, min(1, max(0.1, float(frame["win_rate_with_high"].max()) * 1.15)))
        ax.set_xlabel("Win rate of closed deals with the trait (%, bar = 95% interval)")
        ax.set_title(title)
        ax.legend(loc="lower right")
        return to_svg(figure, name, title)


def tier_win_rate(tiers: pd.DataFrame, base_win_rate: float, name: str = "tier_win_rate") -> str:
    """Holdout win rate per tier as bars, the base rate as a dashed line, deals per bar."""
    title = "Win rate by tier on the holdout deals"
    with _style(name):
        figure, ax = _figure(3.0)
        x = np.arange(len(tiers))
        rates = tiers["win_rate"].fillna(0).to_numpy()
        bars = ax.bar(x, rates, color=[TIER_COLORS.get(t, INK) for t in tiers["tier"]], width=0.6)
        labels = [
            f"{fmt.pct(rate)}\n{fmt.count(deals)} deals" if pd.notna(deals) else fmt.pct(rate)
            for rate, deals in tiers[["win_rate", "deals"]].itertuples(index=False)
        ]
        for label in ax.bar_label(bars, labels=labels, padding=3, fontsize=8, color=INK):
            label.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 1})
        if pd.notna(base_win_rate):
            ax.axhline(base_win_rate, color=MUTED, linestyle="--", linewidth=1, label="base win rate")
            ax.legend(loc="upper right")
        ax.set_xticks(x, [f"Tier {t}" for t in tiers["tier"]])
        ax.grid(axis="x", visible=False)
        ax.set_ylim(0, min(1.0, max(float(np.nanmax(rates)) if len(rates) else 0, 0.05) * 1.35))
        _percent_axis(ax.yaxis)
        ax.set_ylabel("Win rate of test deals (%)")
        ax.set_xlabel("Tier of the account, scored before the deal closed")
        ax.set_title(title)
        return to_svg(figure, name, title)


def gains_curve(gains: pd.DataFrame, ab_point: tuple[float, float] | None, name: str = "gains_curve") -> str:
    """Cumulative share of wins captured against share of deals, best scores first."""
    title = "Share of wins captured by the best-scored deals (gains curve)"
    with _style(name):
        figure, ax = _figure(3.2)
        ax.plot([0, 1], [0, 1], color=MUTED, linestyle="--", linewidth=1, label="random order")
        ax.plot(
            gains["share_of_deals"],
            gains["share_of_wins"],
            color=TIER_COLORS["A"],
            linewidth=2,
            label="fit score",
        )
        if ab_point is not None:
            ax.plot(*ab_point, "o", color=TIER_COLORS["B"], markersize=7, label="tiers A+B")
            ax.annotate(
                f"A+B: {fmt.pct(ab_point[0])} of deals, {fmt.pct(ab_point[1])} of wins",
                ab_point,
                xytext=(10, -4),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color=INK,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        _percent_axis(ax.xaxis)
        _percent_axis(ax.yaxis)
        ax.set_xlabel("Share of test deals, highest fit score first (%)")
        ax.set_ylabel("Share of wins captured (%)")
        ax.set_title(title)
        ax.legend(loc="lower right")
        return to_svg(figure, name, title)


def triggers_by_week(
    weeks: pd.DataFrame, week_labels: list[str], unchecked: int = 0, name: str = "triggers_by_week"
) -> str:
    """Stacked bars: trigger events per week (oldest left) by trigger type; the `unchecked` oldest weeks,
    before the first run that looked for hiring surges, are shaded."""
    title = "Buying signals per week, by kind"
    table = weeks.pivot_table(index="weeks_ago", columns="trigger_type", values="events", aggfunc="sum")
    table = table.reindex(range(len(week_labels) - 1, -1, -1), fill_value=0).fillna(0)
    with _style(name):
        figure, ax = _figure(3.2)
        x = np.arange(len(table))
        bottom = np.zeros(len(table))
        for index, kind in enumerate(table.columns):
            values = table[kind].to_numpy()
            ax.bar(
                x,
                values,
                bottom=bottom,
                width=0.7,
                color=SERIES_COLORS[index % len(SERIES_COLORS)],
                label=str(kind).replace("_", " "),
            )
            bottom += values
        ax.set_xticks(x, list(reversed(week_labels)), rotation=45, ha="right")
        ax.grid(axis="x", visible=False)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt.count(v)))
        ax.set_ylabel("Trigger events (count)")
        ax.set_xlabel("Week ending")
        ax.set_title(title)
        ax.legend(loc="upper left", ncol=min(3, len(table.columns)))
        top = max(float(bottom.max()), 1) * 1.3
        ax.set_ylim(0, top)
        if unchecked:
            ax.axvspan(-0.5, unchecked - 0.5, color=MUTED, alpha=0.12, linewidth=0)
            ax.text(
                (unchecked - 1) / 2,
                top * 0.5,
                "before the first run: hiring surges not looked for",
                ha="center",
                va="top",
                fontsize=8,
                color=INK,
            )
        return to_svg(figure, name, title)


def cohort_auc(cohorts: pd.DataFrame, reference_auc: float, name: str = "cohort_auc") -> str:
    """AUC per monthly cohort against the reference, the band a cohort may fall to, flags in red."""
    title = "Does the ICP still rank deals? AUC per monthly cohort"
    with _style(name):
        figure, ax = _figure(3.2)
        x = np.arange(len(cohorts))
        ax.axhline(
            reference_auc, color=INK, linewidth=1.2, label=f"reference AUC {fmt.decimal(reference_auc)}"
        )
        ax.fill_between(
            x,
            cohorts["threshold"].to_numpy(dtype=float),
            reference_auc,
            step="mid",
            color=TIER_COLORS["B"],
            alpha=0.15,
            linewidth=0,
            label="tolerated drop (below it: flagged)",
        )
        ax.plot(
            x, cohorts["value"], "o-", color=TIER_COLORS["B"], linewidth=1.5, markersize=5, label="cohort AUC"
        )
        flagged = cohorts["flagged"].astype(bool).to_numpy()
        if flagged.any():
            ax.plot(x[flagged], cohorts["value"][flagged], "o", color=BAD, markersize=9, label="flagged")
        ax.axhline(0.5, color=MUTED, linestyle=":", linewidth=1)
        ax.set_xticks(
            x, cohorts["cohort"], rotation=45 if len(x) > 8 else 0, ha="right" if len(x) > 8 else "center"
        )
        ax.grid(axis="x", visible=False)
        low = float(np.nanmin([cohorts["value"].min(), cohorts["threshold"].min(), reference_auc]))
        ax.set_ylim(max(0.0, min(0.48, low - 0.05)), 1.0)
        ax.set_ylabel("AUC (0.5 = coin flip, 1 = perfect)")
        ax.set_xlabel("Cohort: month the opportunities were created")
        ax.set_title(title)
        ax.legend(loc="upper left", ncol=3)
        return to_svg(figure, name, title)


def cohort_lift(cohorts: pd.DataFrame, minimum: float, name: str = "cohort_lift") -> str:
    """Tier-A lift (tier-A win rate over the cohort's win rate) per monthly cohort."""
    title = "Tier-A lift per monthly cohort"
    with _style(name):
        figure, ax = _figure(3.0)
        x = np.arange(len(cohorts))
        values = cohorts["value"].to_numpy(dtype=float)
        colors = [GOOD if pd.notna(v) and v >= minimum else BAD for v in values]
        bars = ax.bar(x, np.nan_to_num(values), color=colors, width=0.6)
        ax.bar_label(bars, labels=[fmt.ratio(v) for v in values], padding=2, fontsize=8, color=INK)
        if pd.notna(minimum):
            ax.axhline(
                minimum, color=MUTED, linestyle="--", linewidth=1, label=f"minimum lift {fmt.ratio(minimum)}"
            )
            ax.legend(loc="upper left")
        ax.axhline(1, color=MUTED, linestyle=":", linewidth=1)
        ax.set_xticks(
            x, cohorts["cohort"], rotation=45 if len(x) > 8 else 0, ha="right" if len(x) > 8 else "center"
        )
        ax.grid(axis="x", visible=False)
        ax.set_ylim(0, max(float(np.nanmax(values)) if np.isfinite(values).any() else 1, minimum or 1) * 1.25)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}x"))
        ax.set_ylabel("Tier-A win rate / cohort win rate (x)")
        ax.set_xlabel("Cohort: month the opportunities were created")
        ax.set_title(title)
        return to_svg(figure, name, title)


def psi_bars(psi: pd.DataFrame, watch: float, flag: float, name: str = "psi") -> str:
    """Population stability index per feature and of the fit score, with watch and flag levels."""
    title = "Has the population shifted? PSI per feature"
    frame = psi.iloc[::-1].reset_index(drop=True)
    with _style(name):
        figure, ax = _figure(1.2 + 0.3 * len(frame))
        values = frame["value"].fillna(0).to_numpy()
        colors = [BAD if v >= flag else WATCH if v >= watch else GOOD for v in values]
        bars = ax.barh(frame["label"], values, color=colors, height=0.6)
        ax.bar_label(
            bars, labels=[fmt.decimal(v, 3) for v in frame["value"]], padding=3, fontsize=8, color=INK
        )
        ax.axvline(watch, color=WATCH, linestyle="--", linewidth=1, label=f"watch {fmt.decimal(watch)}")
        ax.axvline(flag, color=BAD, linestyle="--", linewidth=1, label=f"flag {fmt.decimal(flag)}")
        ax.set_xlim(0, max(flag * 1.3, float(values.max()) * 1.25 if len(values) else 0))
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("PSI, recent deals' accounts vs the reference (0 = no shift)")
        ax.set_title(title)
        ax.legend(loc="lower right")
        return to_svg(figure, name, title)


def quarantine_by_rule(quarantine: pd.DataFrame, name: str = "quarantine_by_rule") -> str:
    """Quarantined rows per table and rule, in the order given (by root cause); a group caused by a
    quarantined parent is labelled with the parent's rule."""
    title = "Quarantined rows by table and rule"
    frame = quarantine.head(12).iloc[::-1].reset_index(drop=True)
    with _style(name):
        figure, ax = _figure(1.2 + 0.3 * len(frame))
        labels = frame["table"] + ": " + frame["rule"]
        if "cause" in frame:
            labels = labels.where(frame["cause"] == "", labels + "\n(caused by " + frame["cause"] + ")")
        bars = ax.barh(labels, frame["rows"], color=BAD, height=0.6)
        ax.bar_label(bars, labels=[fmt.count(v) for v in frame["rows"]], padding=3, fontsize=8, color=INK)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt.count(v)))
        ax.set_xlim(0, float(frame["rows"].max()) * 1.2)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("Rows quarantined (count)")
        ax.set_title(title)
        return to_svg(figure, name, title)


def feed_freshness(freshness: pd.DataFrame, name: str = "feed_freshness") -> str:
    """Age of each table's newest row against its freshness limit."""
    title = "How fresh is each table? Age of the newest row"
    frame = freshness.iloc[::-1].reset_index(drop=True)
    with _style(name):
        figure, ax = _figure(1.2 + 0.32 * len(frame))
        ages = frame["age_days"].astype(float).fillna(0).to_numpy()
        limits = frame["limit_days"].astype(float).to_numpy()
        colors = [BAD if passed is False else GOOD for passed in frame["passed"]]
        y = np.arange(len(frame))
        ax.barh(y, ages, color=colors, height=0.55)
        ax.plot(limits, y, "|", color=INK, markersize=14, markeredgewidth=2)
        for row, (age, limit) in enumerate(zip(frame["age_days"].astype(float), limits, strict=True)):
            text = "no rows" if pd.isna(age) else f"{fmt.days(age)} (limit {fmt.days(limit)})"
            ax.annotate(
                text,
                (max(0 if pd.isna(age) else age, limit), row),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color=INK,
            )
        ax.set_yticks(y, frame["table"].str.replace("_", " "))
        ax.set_xlim(0, max(float(np.nanmax(limits)), float(ages.max())) * 1.35)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("Days between the newest row and the as-of date (| = contract limit)")
        ax.set_title(title)
        return to_svg(figure, name, title)


def match_rate(match: pd.DataFrame, name: str = "match_rate") -> str:
    """Share of each feed's rows per match method, as 100% stacked bars."""
    title = "How feed rows were matched to CRM accounts"
    table = match.pivot_table(index="table", columns="match_method", values="share", aggfunc="sum").fillna(0)
    methods = [m for m in MATCH_COLORS if m in table.columns] + [
        m for m in table.columns if m not in MATCH_COLORS
    ]
    table = table[methods].iloc[::-1]
    with _style(name):
        figure, ax = _figure(1.4 + 0.34 * len(table))
        left = np.zeros(len(table))
        labels = table.index.str.replace("_", " ")
        for method in methods:
            values = table[method].to_numpy()
            bars = ax.barh(
                labels,
                values,
                left=left,
                color=MATCH_COLORS.get(method, MUTED),
                height=0.6,
                label=method.replace("_", " "),
            )
            ax.bar_label(
                bars,
                labels=[fmt.pct(v) if v >= 0.06 else "" for v in values],
                label_type="center",
                fontsize=8,
                color="white",
            )
            left += values
        ax.set_xlim(0, 1)
        _percent_axis(ax.xaxis)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("Share of the feed's rows (%)")
        ax.set_title(title)
        figure.legend(loc="outside lower center", ncol=len(methods))
        return to_svg(figure, name, title)
