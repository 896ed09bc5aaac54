"""The five sections of the morning report, each built from its slice of `ReportData`.

Each section says in words what it cannot show (too few deals, a step that has not run, nothing
quarantined) rather than drawing an empty chart; every chart gets a caption saying what to read.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pandas as pd

from icp_pipeline.profile.traits import TRAIT_LABELS, UNKNOWN
from icp_pipeline.report import charts
from icp_pipeline.report import format as fmt
from icp_pipeline.report.data import TRIGGER_WEEKS, ReportData, ScoreData
from icp_pipeline.report.html import Markup, Section, bullet_list, esc, table, tier_badge, tiles

VERDICTS = (("must_have", "Must-have"), ("nice_to_have", "Nice-to-have"), ("hard_no", "Hard no"))
FIT_METRICS = (
    ("accounts", "Accounts", fmt.count),
    ("closed_deals", "Closed deals", fmt.count),
    ("win_rate", "Win rate", fmt.pct),
    ("avg_deal_size", "Average deal size", fmt.money),
    ("sales_cycle_days", "Sales cycle", fmt.days),
    ("churn_rate", "Churn rate", fmt.pct),
    ("net_revenue_retention", "Net revenue retention", fmt.pct),
    ("ltv_to_cac", "LTV / CAC", fmt.ratio),
    ("cac_payback_months", "CAC payback (months)", lambda v: fmt.decimal(v, 1)),
)
SCORED_BY = {
    "learned": "learned from won and lost deals",
    "written_icp": "cold start: the written ICP from icp.yaml scores, too few closed deals to learn",
    "no_signal": "no signal: no trait separates won from lost deals, so every account scores alike",
}
COHORT_ROWS = ("reference", "population", "what_moved", "verdict", "sequential")
MONTH_COHORT = r"^\d{4}-\d{2}$"
PSI_JS_WORDS = (
    "In plain words: PSI (population stability index) compares how recent deals' accounts spread over a "
    "feature's values (industries, size bands...) with how the reference deals' accounts did; 0 means the same "
    "mix, under 0.1 is noise, 0.1-0.2 is worth watching, above 0.2 the mix has changed. JS distance "
    "(Jensen-Shannon) measures the same gap on a fixed 0-1 scale: 0 for identical mixes, 1 for mixes with "
    "nothing in common; below about 0.1 the two look alike."
)
CALL_FIRST = 5  # accounts shown at once; the rest of the top list is folded
UNKNOWN_REASON = re.compile(rf"= {UNKNOWN}: [+-]\d+$")


def _feature_label(feature: str) -> str:
    return (
        "Fit score"
        if feature == "fit_score"
        else TRAIT_LABELS.get(feature, feature.replace("_", " ").capitalize())
    )


COMPARED = (
    ("auc", "AUC", lambda v: fmt.decimal(v, 3)),
    ("tier_a_lift", "Tier-A lift", fmt.ratio),
    ("ab_share_of_wins", "A+B share of wins", fmt.pct),
    ("tier_changes", "Accounts changing tier", fmt.count),
    ("alert_line_crossings", "Accounts crossing the alert line", fmt.count),
    ("alerts_differ", "Alerts that would differ", fmt.count),
)


def _models(section: Section, icp: Any) -> None:
    """Which registry version scores, which one is shadow-scored, and how they compare tonight."""
    models = icp.models
    if models.empty:
        return
    held = {row.status: row for row in models.itertuples(index=False)}
    champion, challenger = held.get("champion"), held.get("challenger")
    words = []
    if champion is not None:
        words.append(
            f"Scores come from the champion model {champion.model_version} (learned {champion.trained_as_of:%Y-%m-%d} "
            f"from {fmt.count(champion.closed_deals)} closed deals; {champion.status_reason})"
        )
    words.append(
        f"challenger {challenger.model_version} is shadow-scored"
        if challenger is not None
        else "no challenger"
    )
    section.para("; ".join(words) + ".", "sub")
    comparison = icp.comparison
    if comparison.empty:
        return
    figures = comparison.set_index("metric")
    rows = []
    for metric, label, shown in COMPARED:
        if metric in figures.index:
            row = figures.loc[metric]
            rows.append(
                (label, shown(row["champion"]), shown(row["challenger"]), fmt.p_value(row["p_value"]))
            )
    section.add(
        table(["Champion vs challenger", "Champion", "Challenger", "p (DeLong)"], rows, numeric=(1, 2, 3))
    )
    if "decision" in figures.index:
        deals = figures.loc["deals"] if "deals" in figures.index else None
        on = f" On {fmt.count(deals['champion'])} {deals['note']}." if deals is not None else ""
        section.para(f"{figures.loc['decision', 'note']}.{on}", "small")


def icp_section(data: ReportData) -> Section:
    """The derived profile with each item's evidence, the audit, ICP-fit against non-fit metrics."""
    icp = data.icp
    section = Section("icp", "The ICP on one page")
    section.para(icp.summary or "No ICP profile was derived for this date (icp/icp_profile has not run).")
    facts = []
    if icp.profile_version:
        facts.append(f"Profile version {icp.profile_version}")
    if icp.scored_by:
        facts.append(f"scores {SCORED_BY.get(icp.scored_by, icp.scored_by)}")
    if icp.tier_cutoffs:
        cutoffs = ", ".join(f"{tier} from {points}" for tier, points in icp.tier_cutoffs.items())
        facts.append(f"tiers by fit score: {cutoffs}, D the rest and every hard-no account")
    if facts:
        section.para("; ".join(facts) + ".", "sub")
    if icp.notes:
        section.para(f"Notes: {icp.notes}", "sub")
    _models(section, icp)
    section.fold("Criteria with their evidence, ICP-fit against the rest, audit of the written ICP")
    criteria = icp.criteria
    if criteria.empty:
        section.why(
            "No must-have, nice-to-have or hard-no criterion is supported by the evidence for this date, "
            "so there is nothing to chart: " + (icp.summary or "the profile has not been derived.")
        )
    else:
        musts = criteria[criteria["verdict"] == "must_have"]["label"].tolist()
        section.chart(
            "criteria_win_rate",
            charts.criteria_win_rate(criteria, icp.base_win_rate),
            "Each dot is the win rate of closed deals at accounts with the trait, the bar its 95% interval; "
            f"must-haves sit right of the {fmt.pct(icp.base_win_rate)} base rate, hard noes far left of it"
            + (f" (must-have: {', '.join(musts)})." if musts else "."),
        )
    for verdict, title in VERDICTS:
        section.heading(title)
        items = criteria[criteria["verdict"] == verdict] if len(criteria) else criteria
        if items.empty:
            section.para("None supported by the evidence.", "small")
            continue
        section.add(
            table(
                [
                    "Criterion",
                    "Points",
                    "Win rate (95% CI)",
                    "Without",
                    "Lift",
                    "Deals",
                    "Best customers",
                    "Accounts",
                    "q",
                ],
                [
                    (
                        row.label,
                        f"{int(row.points):+d}",
                        f"{fmt.pct(row.win_rate_with)} ({fmt.pct(row.win_rate_with_low)}-{fmt.pct(row.win_rate_with_high)})",
                        fmt.pct(row.win_rate_without),
                        fmt.ratio(row.win_rate_lift),
                        fmt.count(row.closed_with),
                        fmt.pct(row.support_best),
                        fmt.pct(row.share_of_accounts),
                        fmt.p_value(row.q_value),
                    )
                    for row in items.itertuples(index=False)
                ],
                numeric=(1, 2, 3, 4, 5, 6, 7, 8),
            )
        )
    section.para(
        "Win rate: of closed deals at accounts with the trait (without: at the others); lift: win rate with the "
        "trait over the win rate without it, the figure the verdict rests on (a must-have or nice-to-have wins "
        "more often, above 1.0x; a hard no far less); deals: closed deals with the trait; best customers: share "
        "of the best customers (top 20% of retained customers by value) with it; accounts: share of all accounts "
        "with it. q, in plain words: the expected share of flukes among traits with evidence this strong, after "
        "allowing for every trait being tested at once (Fisher exact test, Benjamini-Hochberg correction); "
        "below 0.05 counts as a finding, and 2e-20 leaves practically no doubt.",
        "small",
    )
    rarer = (
        criteria[
            criteria["verdict"].isin(["must_have", "nice_to_have"])
            & (criteria["support_best"] < criteria["share_of_accounts"])
        ]
        if len(criteria)
        else criteria
    )
    if len(rarer):
        section.para(
            "Wins more deals but is rarer among the best customers than among all accounts (worth a look at "
            "deal size and retention): "
            + "; ".join(
                f"{r.label} ({fmt.pct(r.support_best)} of best customers, {fmt.pct(r.share_of_accounts)} of accounts)"
                for r in rarer.itertuples(index=False)
            )
            + ".",
            "small",
        )
    section.heading("ICP-fit accounts (tiers A and B) against the rest")
    metrics = icp.fit_metrics.set_index("metric") if len(icp.fit_metrics) else pd.DataFrame()
    shown = [
        (label, render(metrics.loc[key, "icp_fit"]), render(metrics.loc[key, "non_fit"]))
        for key, label, render in FIT_METRICS
        if key in metrics.index and metrics.loc[key, ["icp_fit", "non_fit"]].notna().any()
    ]
    if shown:
        section.add(table(["Metric", "ICP-fit", "Non-fit"], shown, numeric=(1, 2)))
        if "ltv_to_cac" not in metrics.index or metrics.loc["ltv_to_cac"].isna().all():
            section.para("LTV / CAC and CAC payback appear when icp.cac is set in icp.yaml.", "small")
    else:
        section.why("No ICP-fit metrics for this date: the profile has no tier cut-offs or no closed deals.")
    section.heading("Audit of the written ICP")
    if icp.audit.empty:
        section.para(
            "No written ICP is configured (icp.written in icp.yaml), so there is nothing to audit.", "small"
        )
    else:
        section.add(
            table(
                ["Criterion", "Values", "Verdict of the data", "Evidence"],
                [
                    (
                        f"{str(row.label).split(':')[0].replace('_', ' ')} {row.trait}",
                        row.value,
                        str(row.label).split(":", 1)[-1].strip(),
                        row.detail,
                    )
                    for row in icp.audit.itertuples(index=False)
                ],
            )
        )
    return section


def _holdout_line(holdout: ScoreData) -> str:
    values = holdout.values
    if "auc" not in values:
        return f"The time-split holdout could not run: {holdout.status}."
    return (
        f"Beside it, the time-split holdout (re-learned from deals closed by {holdout.split_date}, tested on the "
        f"{fmt.count(values.get('test_deals'))} deals closed after) gives an AUC of {fmt.decimal(values['auc'])} "
        f"and a tier-A lift of {fmt.ratio(values.get('tier_a_lift', float('nan')))}; it also judges deals "
        "created before the split, some of them with what their account became while they were open."
    )


def score_section(data: ReportData) -> Section:
    """The forward backtest (the holdout beside it): headline numbers, win rate by tier, the gains curve."""
    score = data.score if "auc" in data.score.values else data.holdout
    section = Section("score", "Does the score work")
    values = score.values
    backtest = score.method == "forward_backtest"
    if "auc" not in values:
        section.why(
            f"The score cannot be validated for this date: {data.score.status}. The backtest needs deals "
            "created after a past date and closed since; the holdout needs older and newer closed deals."
        )
        return section
    if backtest:
        section.para(
            f"Forward backtest: every account was scored as of {score.split_date} by a profile learned only from "
            f"what was known then (each deal described as its account was when the deal was created), and "
            f"those scores were judged on the {fmt.count(values.get('test_deals'))} deals created after "
            f"{score.split_date} and closed since: the way a score is used, before the deal exists."
        )
        section.para(_holdout_line(data.holdout))
    else:
        section.para(
            f"The profile was re-learned from deals closed by {score.split_date} only, then tested on the "
            f"{fmt.count(values.get('test_deals'))} deals that closed after: deals the profile never saw."
        )
    auc = values.get("auc", float("nan"))
    lift = values.get("tier_a_lift", float("nan"))
    name = "backtest" if backtest else "holdout"
    section.add(
        tiles(
            [
                (fmt.decimal(auc), f"{name} AUC (0.5 = coin flip)", "good" if auc >= 0.65 else "warn"),
                (fmt.ratio(lift), "tier-A win rate over the base rate", "good" if lift >= 1.5 else "warn"),
                (
                    fmt.pct(values.get("ab_share_of_wins")),
                    f"of wins in tiers A+B ({fmt.pct(values.get('ab_share_of_deals'))} of deals)",
                    "",
                ),
                (fmt.pct(values.get("base_win_rate")), "base win rate of the test deals", ""),
            ]
        )
    )
    section.fold("Win rate by tier and the gains curve")
    tiers = score.tiers.dropna(subset=["win_rate"])
    if len(tiers) >= 2:
        rates = tiers.set_index("tier")["win_rate"]
        ordered = bool((rates.diff().dropna() < 0).all())
        section.chart(
            "tier_win_rate",
            charts.tier_win_rate(score.tiers, values.get("base_win_rate", float("nan"))),
            f"Tier A won {fmt.pct(rates.iloc[0])} of its test deals against a {fmt.pct(values.get('base_win_rate'))} "
            + (
                "base rate; win rates fall from A to D, so the tiers rank deals as they should."
                if ordered
                else "base rate; the tiers are NOT in order from A to D: check the profile."
            ),
        )
    else:
        section.why("Too few test deals per tier to compare win rates by tier.")
    gains = score.gains.dropna(subset=["share_of_wins"]) if len(score.gains) else score.gains
    if len(gains) >= 3:
        ab = (
            (values["ab_share_of_deals"], values["ab_share_of_wins"])
            if "ab_share_of_deals" in values
            else None
        )
        top = gains[gains["share_of_deals"].round(2) == 0.2]
        section.chart(
            "gains_curve",
            charts.gains_curve(gains, ab),
            (
                f"The best-scored 20% of deals hold {fmt.pct(top['share_of_wins'].iloc[0])} of the wins (random order: 20%); "
                if len(top)
                else ""
            )
            + "the further the curve bows above the diagonal, the better the score ranks deals.",
        )
    else:
        section.why(
            "No gains curve for this date: the holdout points are written by icp run from this version on; "
            "rerun icp run for this date to draw it."
        )
    return section


def trigger_text(kind: object, evidence: object) -> str:
    """A trigger in a few words: 'Series A of $5.1M', '16 postings in 30 days (usual 0.7/month)'."""
    if kind is None or pd.isna(kind):
        return "none in 90 days"
    try:
        facts = json.loads(str(evidence)) if evidence else {}
    except ValueError:
        facts = {}
    name = str(kind).replace("_", " ")
    if kind == "funding":
        detail = f"{facts.get('round_type', 'round')} of {fmt.money(facts.get('amount_usd'))}"
    elif kind == "hiring_surge":
        detail = (
            f"{facts.get('recent_postings', '?')} postings in {facts.get('recent_days', '?')} days "
            f"(usual {fmt.decimal(facts.get('monthly_baseline'), 1)}/month)"
        )
    elif kind == "leadership_change":
        detail = (
            f"{facts.get('title', '')} {facts.get('person_name', '')} {facts.get('change_type', '')}".strip()
        )
    elif kind == "tech_change":
        moves = [f"added {', '.join(facts['added'])}" if facts.get("added") else ""]
        moves.append(f"dropped {', '.join(facts['dropped'])}" if facts.get("dropped") else "")
        detail = "; ".join(m for m in moves if m)
    elif kind == "headcount_growth":
        detail = (
            f"employees {fmt.count(facts.get('employees_before'))} to {fmt.count(facts.get('employees_now'))} "
            f"(+{fmt.pct(facts.get('growth'))})"
        )
    else:
        detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in facts.items() if not k.endswith("ids"))[
            :80
        ]
    return f"{name}: {detail}" if detail else name


def call_section(data: ReportData) -> Section:
    """The accounts to call first, tier counts, recent triggers per week, last night's alerts."""
    call = data.call
    section = Section("call", "Who to call")
    counts = call.tier_counts.set_index("tier") if len(call.tier_counts) else pd.DataFrame()
    if len(counts):
        by_tier = ", ".join(f"{tier} {fmt.count(counts.loc[tier, 'accounts'])}" for tier in counts.index)
        hard_no = int(counts["disqualified"].sum())
        section.para(
            f"{fmt.count(data.accounts_scored)} accounts scored: {by_tier}"
            + (f" ({fmt.count(hard_no)} hard-no accounts are in D)." if hard_no else ".")
        )
    top = call.top_accounts
    if top.empty:
        section.why("No account qualifies: every scored account is a hard no.")
    else:
        section.para(
            "Ranked like the alert ledger ranks alerts: half fit score, plus the strength and recency of the "
            "account's buying signals in the last 90 days. Hard-no accounts are left out.",
            "small",
        )
        headers = ["#", "Account", "Owner", "Tier", "Score", "Why it fits", "Latest trigger", "Priority"]
        rows = [
            (
                rank,
                Markup(
                    f"{esc(row.name or row.account_id)}<br><span class='small'>{esc(row.account_id)}</span>"
                ),
                row.owner if isinstance(row.owner, str) else "unassigned",
                tier_badge(str(row.tier)),
                int(row.fit_score),
                shown_reasons(row.top_positive),
                Markup(
                    esc(trigger_text(row.latest_trigger, row.latest_evidence))
                    + (
                        f"<br><span class='small'>{esc(pd.Timestamp(row.latest_trigger_at).date())}"
                        + (
                            f", {int(row.recent_triggers)} signals in 90 days"
                            if row.recent_triggers > 1
                            else ""
                        )
                        + "</span>"
                        if pd.notna(row.latest_trigger_at)
                        else ""
                    )
                ),
                fmt.decimal(row.priority),
            )
            for rank, row in enumerate(top.itertuples(index=False), start=1)
        ]
        section.add(table(headers, rows[:CALL_FIRST], numeric=(0, 4, 7)))
    alerts = call.alert_status
    if len(alerts):
        parts = [
            f"{fmt.count(n)} {status}" for status, n in alerts[["status", "alerts"]].itertuples(index=False)
        ]
        digest = int(alerts["in_digest"].sum())
        section.para(
            f"Alerts created for this date: {', '.join(parts)}"
            + (f" ({fmt.count(digest)} folded into digests)." if digest else ".")
        )
    else:
        section.para("No alert was created for this date.", "small")
    section.fold(
        f"The next {len(top) - CALL_FIRST} accounts and buying signals per week"
        if len(top) > CALL_FIRST
        else "Buying signals per week"
    )
    if len(top) > CALL_FIRST:
        section.add(table(headers, rows[CALL_FIRST:], numeric=(0, 4, 7)))
    weeks = call.trigger_weeks
    if weeks.empty:
        section.why(
            "No trigger events happened in the last 12 weeks: either the feeds (funding rounds, job postings, "
            "leadership changes, firmographics) were not delivered or nothing crossed a trigger threshold."
        )
    else:
        section.chart(
            "triggers_by_week",
            charts.triggers_by_week(
                weeks, week_labels(data.as_of), unchecked_weeks(data.as_of, call.first_detection)
            ),
            triggers_caption(weeks, data.as_of, call.first_detection),
        )
    return section


def week_labels(as_of: dt.date) -> list[str]:
    """'Nov 01', 'Oct 25', ...: the last day of each of the 12 weeks, newest first."""
    return [(as_of - dt.timedelta(days=7 * ago)).strftime("%b %d") for ago in range(TRIGGER_WEEKS)]


def unchecked_weeks(as_of: dt.date, first_detection: dt.date | None) -> int:
    """How many of the oldest weeks ended before the first nightly run that looked for triggers."""
    if first_detection is None:
        return 0
    ended_before = [
        ago for ago in range(TRIGGER_WEEKS) if as_of - dt.timedelta(days=7 * ago) < first_detection
    ]
    return len(ended_before)


def triggers_caption(weeks: pd.DataFrame, as_of: dt.date, first_detection: dt.date | None) -> str:
    """What the weekly bars say, and what they cannot: hiring surges exist only from the first run on.

    Funding rounds, leadership changes and firmographic changes carry their own dates from the feeds,
    so every week is complete. A hiring surge is a state ("30-day postings far above the account's
    baseline") found only when a nightly run looks; it is dated by its newest posting, so the first
    run piles every surge going on now into the last week or two, and weeks before it show none.
    """
    totals = weeks.groupby("trigger_type")["events"].sum().sort_values(ascending=False)
    text = (
        f"Buying signals by the week they happened: {fmt.count(totals.sum())} in {TRIGGER_WEEKS} weeks, most "
        f"of them {str(totals.index[0]).replace('_', ' ')} ({fmt.count(totals.iloc[0])})."
    )
    dated = weeks[weeks["trigger_type"] != "hiring_surge"]
    per_week = dated.groupby("weeks_ago")["events"].sum().reindex(range(TRIGGER_WEEKS), fill_value=0)
    hiring = weeks[weeks["trigger_type"] == "hiring_surge"]
    surges, latest_surges = (
        int(hiring["events"].sum()),
        int(hiring.loc[hiring["weeks_ago"] == 0, "events"].sum()),
    )
    unchecked = unchecked_weeks(as_of, first_detection)
    if surges and unchecked:
        text += (
            f" Hiring surges are found only by nightly runs, the first on {first_detection}; each is dated by its "
            f"newest posting, so the {fmt.count(surges)} surges sit in the last weeks, and the {unchecked} shaded "
            "weeks show few or none because no run looked then, not because there were none. The last week's "
            f"bar holds {fmt.count(latest_surges)} of them: without them it had {fmt.count(per_week.iloc[0])} signals, against "
            f"{fmt.decimal(per_week.iloc[1:].mean(), 1)} a week on average before."
        )
    else:
        text += (
            f" Without hiring surges the last week had {fmt.count(per_week.iloc[0])} signals, against "
            f"{fmt.decimal(per_week.iloc[1:].mean(), 1)} a week on average before; a tall bar is a busy week for reps."
        )
    return text


def shown_reasons(text: object) -> str:
    """The reasons a rep reads, without any citing an unknown value (rows scored before that rule)."""
    if not isinstance(text, str):
        return ""
    return "; ".join(part for part in text.split("; ") if not UNKNOWN_REASON.search(part))


def _detection_delay(history: pd.DataFrame, flag: dict[str, Any]) -> str:
    """When the flag was first raised, the evidence then, and how long it has stood."""
    first = flag.get("first_flagged")
    if first is None or pd.isna(first) or history.empty:
        return "Detection: first raised on this run."
    first_day = pd.Timestamp(first).date()
    dates = pd.to_datetime(history["as_of"]).dt.date
    at_first = history[dates == first_day]
    then = (
        str(at_first["evidence"].iloc[0]) if len(at_first) and pd.notna(at_first["evidence"].iloc[0]) else ""
    )
    runs = int(((dates >= first_day) & history["flagged"].astype(bool)).sum())
    return (
        f"Detection: first raised on {first_day}, flagged on {runs} run(s) since"
        + (f"; evidence then: {then}" if then else "")
        + "."
    )


def _pooled_and_sequential(section: Section, metrics: pd.DataFrame) -> None:
    """Pooled windows, the CUSUMs, calibration by tier and trait, early estimates (labelled)."""
    section.heading("Pooled and sequential tests")
    pooled = metrics[
        (metrics["cohort"].astype(str).str.startswith("last_") & (metrics["metric"] == "auc"))
        | (
            (metrics["cohort"] == "sequential")
            & ((metrics["metric"] == "cusum") | metrics["flagged"].astype(bool))
        )
    ]
    if len(pooled):
        section.add(
            table(
                ["Test", "Value", "Reference / threshold", "Flagged", "n", "Evidence"],
                [
                    (
                        f"{row.cohort.replace('_', ' ')}: {row.metric.replace('_', ' ')}"
                        + (f" ({row.segment})" if row.segment not in ("all", "", None) else ""),
                        fmt.decimal(row.value, 2),
                        fmt.decimal(row.threshold if row.metric != "auc" else row.reference, 2),
                        "yes" if row.flagged else "no",
                        fmt.count(row.n),
                        row.note,
                    )
                    for row in pooled.itertuples(index=False)
                ],
                numeric=(1, 2, 4),
            )
        )
        section.para(
            "Windows pool the closed deals created in the last months; their AUC tests and the monthly "
            "cohorts' are corrected together (Benjamini-Hochberg). A CUSUM adds each month's evidence and "
            "forgets months that argue against drift; its threshold keeps false alarms at the configured rate.",
            "small",
        )
    calibration = metrics[metrics["metric"] == "calibration"]
    if len(calibration):
        section.heading("Calibration: predicted and observed win rates")
        section.add(
            table(
                ["Group", "Predicted", "Observed", "n", "Moved", "Detail"],
                [
                    (
                        row.segment,
                        fmt.pct(row.reference),
                        fmt.pct(row.value),
                        f"{int(row.n):,}",
                        "yes" if row.flagged else "no",
                        row.note,
                    )
                    for row in calibration.itertuples(index=False)
                ],
                numeric=(1, 2, 3),
            )
        )
    estimates = metrics[metrics["metric"].isin(["auc_estimate", "win_rate_estimate"])]
    if len(estimates):
        section.heading("Early estimates for cohorts still closing (estimates, never flags)")
        wide = estimates.pivot_table(index="cohort", columns="metric", values="value", aggfunc="first")
        notes = estimates.drop_duplicates("cohort").set_index("cohort")["note"]
        section.add(
            table(
                ["Cohort", "Estimated AUC", "Estimated win rate", "Basis"],
                [
                    (
                        cohort,
                        fmt.decimal(wide.loc[cohort].get("auc_estimate"), 2),
                        fmt.decimal(wide.loc[cohort].get("win_rate_estimate"), 2),
                        notes.get(cohort, ""),
                    )
                    for cohort in wide.index
                ],
                numeric=(1, 2),
            )
        )


def drift_section(data: ReportData) -> Section:
    """Cohort AUC and tier-A lift against the reference, PSI, what moved and the verdict."""
    drift = data.drift
    section = Section("drift", "Is the ICP drifting")
    metrics = drift.metrics
    if metrics.empty:
        section.why("Drift has not been computed for this date (icp/drift_metrics has not run).")
        return section
    flag = drift.flag
    if flag.get("flagged"):
        section.add(
            f'<p><span class="flag">Drift flagged.</span> {esc(flag.get("reason"))}. '
            f"Recommendation: {esc(flag.get('recommendation') or 're-derive the profile')}.</p>"
        )
        findings = [f for f in str(flag.get("findings") or "").split("\n") if f]
        if findings:
            section.add(bullet_list(findings))
        section.para(_detection_delay(drift.history, flag), "sub")
    else:
        section.add(
            '<p><span class="ok">No drift flag.</span> No monthly cohort, pooled window, sequential test or '
            "trait calibration says the ICP stopped predicting wins.</p>"
        )
    too_little = metrics[(metrics["cohort"] == "verdict") & (metrics["metric"] == "too_little_data")]
    if len(too_little):
        section.add(f'<p><span class="flag">Too little data.</span> {esc(too_little["note"].iloc[0])}.</p>')
    reference = metrics[(metrics["cohort"] == "reference") & (metrics["metric"] == "auc")]
    reference_auc = float(reference["value"].iloc[0]) if len(reference) else float("nan")
    if len(reference):
        section.para(f"Reference: {reference['note'].iloc[0]}; AUC {fmt.decimal(reference_auc)}.", "sub")
    section.fold("AUC and tier-A lift per monthly cohort, population shift (PSI, JS distance), what moved")
    cohorts = metrics[metrics["cohort"].astype(str).str.match(MONTH_COHORT)]
    auc = cohorts[cohorts["metric"] == "auc"]
    judged = auc.dropna(subset=["value"]).reset_index(drop=True)
    waiting = auc[auc["value"].isna()]
    reasons = [
        f"{c} ({str(n).removeprefix('insufficient data: ')})"
        for c, n in waiting[["cohort", "note"]].itertuples(index=False)
    ]
    not_judged = "; ".join(reasons[-4:]) + (f"; and {len(reasons) - 4} earlier" if len(reasons) > 4 else "")
    if len(judged) >= 2 and pd.notna(reference_auc):
        flagged = judged[judged["flagged"].astype(bool)]["cohort"].tolist()
        section.chart(
            "cohort_auc",
            charts.cohort_auc(judged, reference_auc),
            "A cohort inside or above the shaded band ranks deals as well as the reference; a red dot fell "
            "significantly below it"
            + (f" (flagged: {', '.join(flagged)})" if flagged else " (none did)")
            + (f". Not judged yet: {not_judged}." if not_judged else "."),
        )
    else:
        section.why(
            f"Too few monthly cohorts have enough closed deals to judge ({len(judged)} of {len(auc)})"
            + (f": {not_judged}." if not_judged else ".")
        )
    lift = cohorts[cohorts["metric"] == "tier_a_lift"].dropna(subset=["value"]).reset_index(drop=True)
    if len(lift) >= 2:
        minimum = (
            float(lift["threshold"].dropna().iloc[0]) if lift["threshold"].notna().any() else float("nan")
        )
        below = lift[lift["value"] < minimum]["cohort"].tolist() if pd.notna(minimum) else []
        section.chart(
            "cohort_lift",
            charts.cohort_lift(lift, minimum),
            f"How much more often tier-A deals win than the cohort as a whole; below {fmt.ratio(minimum)} the "
            "top tier barely stands out"
            + (f" (below it: {', '.join(below)})." if below else " (no cohort is)."),
        )
    else:
        section.why("Tier-A lift needs at least two judged cohorts with five or more tier-A deals each.")
    psi = metrics[(metrics["cohort"] == "population") & (metrics["metric"] == "psi")].dropna(subset=["value"])
    if len(psi):
        psi = psi.assign(label=psi["segment"].map(_feature_label)).sort_values("value", ascending=False)
        flag_level = float(psi["threshold"].dropna().iloc[0]) if psi["threshold"].notna().any() else 0.2
        top = psi.iloc[0]
        section.chart(
            "psi",
            charts.psi_bars(psi, drift.psi_watch, flag_level),
            f"Largest shift: {top['label']} (PSI {fmt.decimal(top['value'], 3)}); under {fmt.decimal(drift.psi_watch)} "
            f"recent deals come from the same mix of accounts as the reference, above {fmt.decimal(flag_level)} "
            "the mix has changed.",
        )
        section.para(PSI_JS_WORDS, "small")
        js = metrics[(metrics["cohort"] == "population") & (metrics["metric"] == "js_distance")]
        js_by_feature = js.dropna(subset=["value"]).set_index("segment")["value"]
        section.add(
            table(
                ["Feature", "PSI", "JS distance", "Reading"],
                [
                    (
                        row.label,
                        fmt.decimal(row.value, 3),
                        fmt.decimal(js_by_feature.get(row.segment), 3),
                        "shifted"
                        if row.value >= flag_level
                        else "watch"
                        if row.value >= drift.psi_watch
                        else "same mix",
                    )
                    for row in psi.itertuples(index=False)
                ],
                numeric=(1, 2),
            )
        )
    else:
        section.why("No population stability figures: the reference or recent cohorts hold no deals.")
    _pooled_and_sequential(section, metrics)
    section.heading("What moved")
    moved = metrics[metrics["cohort"] == "what_moved"]
    if len(moved):
        section.add(bullet_list(moved["note"].astype(str).tolist()))
    else:
        section.para(
            "Nothing moved significantly: no trait's win rate changed between the reference deals and the "
            "recent cohorts (two-proportion test, p < 0.01).",
            "small",
        )
    return section


def health_section(data: ReportData) -> Section:
    """Rows per table, contract failures, quarantine by rule, freshness, feed match rates."""
    health = data.health
    section = Section("health", "Data health")
    if data.as_of != data.latest_as_of:
        section.para(
            "Row counts, quarantine and match rates are the warehouse's current tables (they keep no history), "
            f"so they describe the run of {data.latest_as_of}, not {data.as_of}.",
            "sub",
        )
    section.para(health_line(data))
    section.fold("Rows per table, contract rules, quarantine, freshness and feed match rates")
    rows = health.table_rows
    section.heading("Rows per table")
    section.add(
        table(
            ["Table", "Raw", "Staged", "Quarantined", "Duplicates removed", "Values nulled"],
            [
                (
                    row.table.replace("_", " "),
                    "no file" if pd.isna(row.raw) else fmt.count(row.raw),
                    "not staged" if pd.isna(row.staged) else fmt.count(row.staged),
                    fmt.count(row.quarantined),
                    "" if pd.isna(row.duplicates_removed) else fmt.count(row.duplicates_removed),
                    fmt.count(row.nulled),
                )
                for row in rows.itertuples(index=False)
            ],
            numeric=(1, 2, 3, 4, 5),
        )
    )
    section.para(
        "Raw = staged + quarantined + duplicates removed (latest updated_at wins). A bad value in an optional "
        "column is nulled and its row staged; those values are counted apart.",
        "small",
    )
    section.heading("Contract rules")
    failed = health.failed_rules
    if health.rules_evaluated == 0:
        section.why("No contract results for this date: staging has not run.")
    elif failed.empty:
        section.para(f"All {fmt.count(health.rules_evaluated)} contract rules passed on {data.as_of}.")
    else:
        section.add(
            table(
                ["Table", "Rule", "Severity", "Rows failing", "Detail"],
                [
                    (r.table, r.rule, r.severity, fmt.count(r.failed), r.detail)
                    for r in failed.itertuples(index=False)
                ],
                numeric=(3,),
            )
        )
    quarantine = health.quarantine
    section.heading("Quarantine")
    if quarantine.empty:
        section.why(
            "No row was quarantined: every raw row met its contract's error rules, so there is nothing to chart."
        )
    else:
        section.chart(
            "quarantine_by_rule",
            charts.quarantine_by_rule(quarantine),
            f"{fmt.count(quarantine['rows'].sum())} rows held back from staging, grouped by root cause. "
            + fix_first(quarantine),
        )
        section.add(
            table(
                ["Table", "Rule", "Rows", "Root cause", "Example key", "Example message"],
                [
                    (q.table, q.rule, fmt.count(q.rows), consequence(q), q.example_key, q.example_message)
                    for q in quarantine.head(15).itertuples(index=False)
                ],
                numeric=(2,),
            )
        )
    nulled = health.nulled
    if len(nulled):
        section.heading("Values nulled")
        section.para(
            f"{fmt.count(nulled['rows'].sum())} bad values in optional columns were nulled and their rows staged "
            "(and scored); fix them at the source to get the values back.",
            "small",
        )
        section.add(
            table(
                ["Table", "Rule", "Values", "Example key", "Example message"],
                [
                    (q.table, q.rule, fmt.count(q.rows), q.example_key, q.example_message)
                    for q in nulled.head(15).itertuples(index=False)
                ],
                numeric=(2,),
            )
        )
    freshness = health.freshness
    if freshness.empty:
        section.why("No freshness figures: no staged table has a freshness rule.")
    else:
        stale = freshness[freshness["passed"].eq(False)]["table"].str.replace("_", " ").tolist()
        section.chart(
            "feed_freshness",
            charts.feed_freshness(freshness),
            f"Each bar is how old the newest row was on {data.as_of}; past the | mark the contract calls the table "
            f"stale ({'stale: ' + ', '.join(stale) if stale else 'none is'}).",
        )
    match = health.match
    if match.empty:
        section.why("No feed rows were delivered, so there are no match rates to show.")
    else:
        matched = match[match["match_method"].isin(["domain", "name"])]["rows"].sum() / match["rows"].sum()
        section.chart(
            "match_rate",
            charts.match_rate(match),
            f"{fmt.pct(matched)} of feed rows matched a CRM account, by normalized domain first, then exact name; "
            "unmatched rows are kept but cannot trigger alerts.",
        )
    return section


def consequence(group: Any) -> str:
    """A quarantine group's root cause: its own rule, or the parent's rule its rows depend on."""
    if not group.cause:
        return "this rule"
    parent = group.cause.split(":")[0]
    return f"{fmt.count(group.rows)} rows refer to {parent} quarantined by {group.cause}"


def fix_first(quarantine: pd.DataFrame) -> str:
    """The sentence naming the rule to fix at the source first: the root cause that explains most rows."""
    top = quarantine.iloc[0]
    same = quarantine[quarantine["root"] == top["root"]]
    own = int(same.loc[same["cause"] == "", "rows"].sum())
    parts = [f"{fmt.count(own)} rows"] + [
        f"{c.table}: {consequence(c)}" for c in same[same["cause"] != ""].itertuples(index=False)
    ]
    return f"The rule to fix at the source first: {top['root']} ({'; '.join(parts)})."


def health_line(data: ReportData) -> str:
    """Data health in one sentence: rules, quarantine, stale tables."""
    health = data.health
    failed = health.failed_rules
    blocking = int((failed["severity"] == "block").sum()) if len(failed) else 0
    quarantined = int(health.quarantine["rows"].sum()) if len(health.quarantine) else 0
    if health.rules_evaluated == 0:
        rules = "No contract results for this date (staging has not run)"
    elif failed.empty:
        rules = f"All {fmt.count(health.rules_evaluated)} contract rules passed"
    else:
        rules = f"{fmt.count(len(failed))} of {fmt.count(health.rules_evaluated)} contract rules failed" + (
            f" ({blocking} blocking)" if blocking else ""
        )
    fresh = health.freshness
    stale = fresh[fresh["passed"].eq(False)]["table"].str.replace("_", " ").tolist() if len(fresh) else []
    return f"{rules}; {fmt.count(quarantined)} rows quarantined; " + (
        f"stale: {', '.join(stale)}." if stale else "no table is stale."
    )


def summary_points(data: ReportData) -> list[str]:
    """The page in five sentences, shown first: what the ICP is, whether the score works, who to call,
    whether the ICP drifts, whether the data can be trusted."""
    points = [data.icp.summary or "No ICP profile was derived for this date."]
    values = data.score.values
    if "auc" in values:
        tiers = data.score.tiers.dropna(subset=["win_rate"]).set_index("tier")["win_rate"]
        points.append(
            f"The score ranks deals it never saw with an AUC of {fmt.decimal(values['auc'])} (0.5 = coin flip)"
            + (
                f"; tier A won {fmt.pct(tiers['A'])} of them against a {fmt.pct(values.get('base_win_rate'))} base rate."
                if "A" in tiers.index
                else "."
            )
        )
    else:
        points.append(f"The score is not validated for this date: {data.score.status}.")
    top = data.call.top_accounts.head(3)
    if len(top):
        points.append(
            "Call first: "
            + "; ".join(
                f"{row.name or row.account_id} (tier {row.tier}, "
                + (row.owner if isinstance(row.owner, str) else "unassigned")
                + ")"
                for row in top.itertuples(index=False)
            )
            + "."
        )
    flag = data.drift.flag
    if data.drift.metrics.empty:
        points.append("Drift has not been computed for this date.")
    elif flag.get("flagged"):
        points.append(f"ICP drift flagged: {flag.get('reason')}.")
    else:
        points.append(
            "No ICP drift: no cohort, pooled window or sequential test says the ICP stopped predicting wins."
        )
    points.append(health_line(data))
    return points


def build_sections(data: ReportData) -> list[Section]:
    return [
        icp_section(data),
        score_section(data),
        call_section(data),
        drift_section(data),
        health_section(data),
    ]
