"""Is the ICP still predicting wins? Performance, population and "what moved", per monthly cohort.

The reference profile is learned as of `reference_date = as_of - reference_months` from the
deals closed by then. Each later monthly cohort (opportunities *created* that month, judged by
those closed by the as-of date) is scored with that reference profile, so a cohort's deals are
judged by the fit their account had before they were created. Cohorts below the minimum sample
are reported as insufficient data.

A few thousand accounts give each cohort too few deals to show a moderate loss of fit, so
pooled windows, a tier CUSUM and per-trait CUSUMs run beside the cohorts (`sequential.py`), with
calibration by tier and trait and early estimates for immature cohorts (`calibration.py`). The
flag is raised by: a cohort or window AUC below the reference (Benjamini-Hochberg over all of
them at false_alarm_rate / 3, and by at least `min_auc_drop`), the tier CUSUM above its threshold
(false_alarm_rate / 3), or a trait CUSUM above its threshold (false_alarm_rate / 3, Bonferroni
over trait values). When the widest window cannot show an AUC drop of `max_detectable_drop`, a
`too_little_data` verdict row says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from icp_pipeline.config import DriftConfig, IcpConfig
from icp_pipeline.drift.calibration import (
    calibration_findings,
    calibration_table,
    close_probability,
    early_estimate,
    group_sums,
    kinds_and_labels,
    monthly_trait_sums,
)
from icp_pipeline.drift.sequential import (
    benjamini_hochberg,
    cusum_path,
    one_sided_p,
    tier_counts,
    tier_reference,
    trait_cusum,
)
from icp_pipeline.frames import isin
from icp_pipeline.profile.derive import derive_profile, trait_label
from icp_pipeline.profile.events import EVENT_TRAITS
from icp_pipeline.profile.evidence import account_totals, trait_value_sums
from icp_pipeline.profile.learn import Evidence
from icp_pipeline.profile.outcomes import opportunity_outcomes
from icp_pipeline.profile.traits import ACCOUNT_POSITION, UNKNOWN, AccountTraits
from icp_pipeline.scoring.score import fit_and_tiers, scored_deals
from icp_pipeline.scoring.validation import auc, auc_standard_error, holdout_validation

METRIC_COLUMNS = [
    "as_of",
    "cohort",
    "metric",
    "segment",
    "value",
    "reference",
    "threshold",
    "flagged",
    "n",
    "note",
]


@dataclass
class DriftReport:
    metrics: pd.DataFrame
    moved: pd.DataFrame
    flagged: bool
    reason: str
    recommendation: str
    reference_date: dt.date
    profile_version: str
    findings: list[str] = field(default_factory=list)
    evidence: str = ""
    judgeable: bool = True
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)


def _known_shares(values: pd.Series) -> pd.Series:
    """Share of each known value among the known ones ('unknown' and missing left out), by text.

    Counted on the category codes of a categorical (the trait columns): converting half a
    million trait values to text per feature took most of the drift check's population part.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        counts = values.value_counts(sort=False)
        counts.index = counts.index.astype("str")
    else:
        counts = values.astype("str").value_counts()
    counts = counts[(counts.index != UNKNOWN) & (counts > 0)]
    return counts / counts.sum() if len(counts) else counts.astype(float)


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index; numeric values binned on reference deciles, 'unknown' left out
    (a feed that starts covering more accounts is not a population shift)."""
    if reference.empty or current.empty:
        return float("nan")
    if pd.api.types.is_numeric_dtype(reference):
        edges = np.unique(np.quantile(reference.astype(float), np.linspace(0, 1, bins + 1)))
        edges[0], edges[-1] = -np.inf, np.inf
        ref = pd.cut(reference.astype(float), edges).value_counts(normalize=True, sort=False)
        cur = pd.cut(current.astype(float), edges).value_counts(normalize=True, sort=False)
    else:
        ref, cur = _known_shares(reference), _known_shares(current)
        if ref.empty or cur.empty:
            return float("nan")
    ref, cur = ref.align(cur, fill_value=0.0)
    ref, cur = ref.clip(lower=1e-4), cur.clip(lower=1e-4)
    return float(((cur - ref) * np.log(cur / ref)).sum())


def js_distance(reference: pd.Series, current: pd.Series) -> float:
    """Jensen-Shannon distance between two categorical distributions (known values only)."""
    from scipy.spatial.distance import jensenshannon

    ref, cur = _known_shares(reference).align(_known_shares(current), fill_value=0.0)
    if not len(ref) or ref.sum() == 0 or cur.sum() == 0:
        return float("nan")
    return float(jensenshannon(ref.to_numpy(), cur.to_numpy(), base=2))


def _month_start(value: dt.date) -> pd.Timestamp:
    return pd.Timestamp(value.year, value.month, 1, tz="UTC")


def _performance(deals: pd.DataFrame) -> dict[str, float]:
    won = deals["won"].to_numpy(dtype=bool)
    value = auc(deals["fit_score"].to_numpy(dtype=float), won)
    base = won.mean() if len(won) else np.nan
    tier_a = deals[deals["tier"] == "A"]
    ab = deals["tier"].isin(["A", "B"])
    return {
        "auc": value,
        "auc_se": auc_standard_error(value, int(won.sum()), int((~won).sum())),
        "win_rate": base,
        "tier_a_lift": (tier_a["won"].mean() / base) if len(tier_a) >= 5 and base else np.nan,
        "ab_share_of_wins": (deals.loc[ab, "won"].sum() / won.sum()) if won.sum() else np.nan,
        "n": len(deals),
        "wins": int(won.sum()),
    }


def as_created(
    evidence: Evidence, config: IcpConfig, deals: pd.DataFrame
) -> tuple[AccountTraits, pd.DataFrame]:
    """The deals described as their account was when each was created, one traits row per deal,
    and the deals placed on those rows (`account_position`; -1 for a deal not described, which
    every count then leaves out). Judging a deal by its account at a later date would credit what
    the account became after the deal (a tool customers adopt after buying "wins" then)."""
    described = evidence.deal_traits(config)
    rows = described.rows_of(deals)
    known = rows >= 0
    view = described.traits.take(rows[known])
    view.source_rows = np.arange(int(known.sum()))
    position = np.where(known, np.cumsum(known) - 1, -1)
    return view, deals.assign(**{ACCOUNT_POSITION: position})


def what_moved(
    reference: pd.DataFrame, current: pd.DataFrame, traits: AccountTraits, alpha: float = 0.01
) -> pd.DataFrame:
    """Trait values whose win rate changed most between reference and current deals (two-proportion z-test).

    Deals and wins per trait value are summed over the value's accounts (`trait_value_sums`),
    not by joining every deal to every trait value of its account.
    """
    from scipy import stats

    weights = {}
    for label, deals in (("reference", reference), ("current", current)):
        size, wins = account_totals(traits, deals, deals["won"].to_numpy())
        weights[f"{label}_sum"], weights[f"{label}_size"] = wins, size
    table = trait_value_sums(traits, weights).drop(columns="accounts_with")
    table = table[(table["reference_size"] >= 20) & (table["current_size"] >= 20)]
    p1 = table["reference_sum"] / table["reference_size"]
    p2 = table["current_sum"] / table["current_size"]
    pooled = (table["reference_sum"] + table["current_sum"]) / (
        table["reference_size"] + table["current_size"]
    )
    se = np.sqrt(pooled * (1 - pooled) * (1 / table["reference_size"] + 1 / table["current_size"]))
    z = (p2 - p1) / se.replace(0, np.nan)
    table = table.assign(
        win_rate_reference=p1,
        win_rate_current=p2,
        change=p2 - p1,
        p_value=2 * stats.norm.sf(np.abs(z.fillna(0))),
        current_base=current["won"].mean() if len(current) else np.nan,
    )
    table = table[table["p_value"] < alpha].copy()
    table["label"] = [trait_label(t, v) for t, v in table[["trait", "value"]].itertuples(index=False)]
    table["text"] = [
        f"{label}: win rate {a:.0%} -> {b:.0%}, n={int(n):,}"
        for label, a, b, n in table[
            ["label", "win_rate_reference", "win_rate_current", "current_size"]
        ].itertuples(index=False)
    ]
    return table.reindex(table["change"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def drift_metrics(evidence: Evidence, config: IcpConfig, as_of: dt.date) -> DriftReport:
    """Cohort metrics against the reference profile, population drift, what moved, and a verdict."""
    rules: DriftConfig = config.drift
    reference_date = (pd.Timestamp(as_of) - pd.DateOffset(months=rules.reference_months)).date()
    traits_then = evidence.traits(config, reference_date)  # prepares the inputs both profiles share
    # Trait-level checks judge a deal by its account's traits at a date; event traits describe a
    # window before that date, which older deals did not see (and feeds cover recent windows
    # better than old ones), so those checks leave them out.
    stable_then = traits_then.without(EVENT_TRAITS)
    stable_now = evidence.traits(config, as_of).without(EVENT_TRAITS)
    deal_traits = evidence.deal_traits(config)  # before the second thread asks for them too
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The holdout profile does not depend on the reference one: it is learned on a second core
        # meanwhile (much of their numpy, arrow and scipy work runs without the GIL): 7.7 s to 6.2 s at 1M.
        holdout_run = pool.submit(holdout_validation, evidence, config, reference_date)
        profile, design = derive_profile(
            traits_then,
            evidence.opportunities,
            evidence.subscriptions,
            config,
            reference_date,
            describe=False,
            deal_traits=deal_traits,
        )
        scores = fit_and_tiers(profile, design)
        deals = opportunity_outcomes(evidence.opportunities, config.stages, as_of)
        deals = scored_deals(deals, scores, traits_then)
        created = deals["created_at"]
        start = _month_start(reference_date)
        window_start = start - pd.DateOffset(months=rules.reference_window_months)
        reference_deals = profile.outcomes[
            profile.outcomes["closed"] & (profile.outcomes["created_at"] >= window_start)
        ]
        reference_deals = scored_deals(reference_deals, scores, traits_then)
        reference = _performance(reference_deals)
        holdout, holdout_scored = holdout_run.result()
    # The reference profile has seen its own deals; judge cohorts against its out-of-sample AUC.
    holdout_values = holdout.set_index("metric")["value"]
    if "auc" in holdout_values and pd.notna(holdout_values["auc"]):
        n_test = int(holdout_values["test_deals"])
        wins = int(round(holdout_values["base_win_rate"] * n_test))
        reference["auc"] = float(holdout_values["auc"])
        reference["auc_se"] = auc_standard_error(reference["auc"], wins, n_test - wins)
    rows: list[dict[str, object]] = []

    def add(
        cohort: str,
        metric: str,
        value: float,
        ref: float,
        threshold: float,
        flagged: bool,
        n: int,
        note: str = "",
        segment: str = "all",
    ) -> None:
        rows.append(
            {
                "as_of": as_of,
                "cohort": cohort,
                "metric": metric,
                "segment": segment,
                "value": value,
                "reference": ref,
                "threshold": threshold,
                "flagged": flagged,
                "n": n,
                "note": note,
            }
        )

    add(
        "reference",
        "auc",
        reference["auc"],
        reference["auc"],
        np.nan,
        False,
        int(reference["n"]),
        f"holdout AUC of a profile learned by {reference_date}; population: deals created {window_start.date()} to {reference_date}",
    )
    flagged_cohorts: list[str] = []
    current_frames: list[pd.DataFrame] = []
    tests: list[tuple[dict[str, object], float, float, str, pd.DataFrame]] = []
    early: list[tuple[str, pd.DataFrame, int]] = []
    month = start
    end = pd.Timestamp(as_of, tz="UTC")
    while month <= end:
        nxt = month + pd.DateOffset(months=1)
        label = month.strftime("%Y-%m")
        cohort = deals[(created >= month) & (created < nxt)]
        closed = cohort[cohort["closed"]]
        coverage = cohort["tier"].isin(["A", "B"]).mean() if len(cohort) else np.nan
        add(
            label,
            "icp_coverage",
            coverage,
            np.nan,
            np.nan,
            False,
            len(cohort),
            "share of new pipeline that is tier A or B",
        )
        current_frames.append(closed)
        perf = _performance(closed)
        closed_share = len(closed) / len(cohort) if len(cohort) else 0.0
        enough = (
            perf["n"] >= rules.min_cohort_deals
            and perf["wins"] >= rules.min_cohort_wins
            and perf["n"] - perf["wins"] >= rules.min_cohort_wins
        )
        if not enough or closed_share < rules.min_closed_share:
            why = (
                f"{perf['n']} closed deals, {perf['wins']} wins"
                if not enough
                else f"immature: {closed_share:.0%} of the cohort has closed (need {rules.min_closed_share:.0%})"
            )
            add(
                label,
                "auc",
                np.nan,
                reference["auc"],
                np.nan,
                False,
                int(perf["n"]),
                f"insufficient data: {why}",
            )
            if closed_share < rules.min_closed_share and len(closed):
                early.append((label, closed, len(cohort)))
        else:
            gap = reference["auc"] - perf["auc"]
            combined_se = float(np.sqrt(reference["auc_se"] ** 2 + perf["auc_se"] ** 2))
            add(
                label,
                "auc",
                perf["auc"],
                reference["auc"],
                reference["auc"] - rules.min_auc_drop,
                False,
                int(perf["n"]),
                f"95% CI {perf['auc'] - 1.96 * perf['auc_se']:.2f}-{perf['auc'] + 1.96 * perf['auc_se']:.2f}",
            )
            tests.append((rows[-1], one_sided_p(gap, combined_se), gap, label, closed))
            add(
                label,
                "tier_a_lift",
                perf["tier_a_lift"],
                np.nan,
                rules.min_tier_a_lift,
                False,
                int(perf["n"]),
            )
            add(label, "win_rate", perf["win_rate"], reference["win_rate"], np.nan, False, int(perf["n"]))
            add(
                label,
                "ab_share_of_wins",
                perf["ab_share_of_wins"],
                reference["ab_share_of_wins"],
                np.nan,
                False,
                int(perf["n"]),
            )
        month = nxt
    monitored = deals[(created >= start) & deals["closed"]]
    windows: dict[int, pd.DataFrame] = {}
    smallest_drop = np.nan
    for months in sorted(set(rules.window_months)):
        since = end - pd.DateOffset(months=months)
        window = monitored[monitored["created_at"] > since]
        windows[months] = window
        perf = _performance(window)
        name = f"last_{months}_months"
        combined_se = float(np.sqrt(reference["auc_se"] ** 2 + perf["auc_se"] ** 2))
        note = f"pooled: {perf['n']:,} closed deals created after {since.date()}, {perf['wins']:,} wins"
        if np.isfinite(combined_se) and perf["n"] >= rules.min_cohort_deals:
            detectable = (1.96 + 0.84) * combined_se
            smallest_drop = detectable if months == max(rules.window_months) else smallest_drop
            add(
                name,
                "auc",
                perf["auc"],
                reference["auc"],
                reference["auc"] - rules.min_auc_drop,
                False,
                int(perf["n"]),
                f"{note}; 95% CI {perf['auc'] - 1.96 * perf['auc_se']:.2f}-{perf['auc'] + 1.96 * perf['auc_se']:.2f}",
            )
            gap = reference["auc"] - perf["auc"]
            tests.append((rows[-1], one_sided_p(gap, combined_se), gap, name, window))
        else:
            add(
                name,
                "auc",
                np.nan,
                reference["auc"],
                np.nan,
                False,
                int(perf["n"]),
                f"insufficient data: {note}",
            )
    # One family: mature cohorts and pooled windows, Benjamini-Hochberg at half the false-alarm rate.
    p_values = pd.Series([p for _, p, _, _, _ in tests], dtype=float)
    rejected = benjamini_hochberg(p_values, rules.false_alarm_rate / 3)
    flagged_frames: list[pd.DataFrame] = []
    for (row, p, gap, label, frame), reject in zip(tests, rejected, strict=True):
        row["note"] = f"{row['note']}; one-sided p={p:.2g}"
        if bool(reject) and gap >= rules.min_auc_drop:
            row["flagged"] = True
            flagged_cohorts.append(label)
            flagged_frames.append(frame)
    tier_p0 = tier_reference(holdout_scored, reference_deals)
    labels = pd.Series(monitored["created_at"].dt.strftime("%Y-%m").to_numpy())
    counts = tier_counts(monitored, labels)
    all_months = pd.DataFrame(
        {"month": pd.date_range(start.tz_localize(None), end.tz_localize(None), freq="MS").strftime("%Y-%m")}
    )
    counts = all_months.merge(counts, on="month", how="left").fillna(0)
    path, threshold = cusum_path(counts, tier_p0, rules.false_alarm_rate / 3)
    for item in path.itertuples(index=False):
        add(
            item.month,
            "cusum",
            item.statistic,
            np.nan,
            threshold,
            False,
            int(item.deals),
            f"{int(item.wins)} wins vs {item.expected_wins:.1f} expected from the reference tier win rates; "
            f"log-likelihood ratio {item.llr:+.2f}",
        )
    above = path[path["statistic"] > threshold]
    cusum_flag = bool(len(path) and path["statistic"].iloc[-1] > threshold)
    cusum_note = (
        f"above the threshold since cohort {above['month'].iloc[0]}; "
        f"{int(path['deals'].sum()):,} closed deals since {start.date()}"
        if len(above)
        else f"{int(path['deals'].sum()):,} closed deals since {start.date()}"
    )
    add(
        "sequential",
        "cusum",
        float(path["statistic"].iloc[-1]) if len(path) else np.nan,
        np.nan,
        threshold,
        cusum_flag,
        int(path["deals"].sum()),
        f"Bernoulli CUSUM (tiers separating half as well); {cusum_note}",
    )
    if cusum_flag:
        flagged_cohorts.append("cusum")
        flagged_frames.append(
            monitored[labels.isin(path.loc[path.index >= above.index[0], "month"]).to_numpy()]
        )
    widest = windows[max(windows)] if windows else monitored
    widest_traits, widest_placed = as_created(evidence, config, widest)
    reference_traits, reference_placed = as_created(evidence, config, reference_deals)
    calibration = calibration_table(
        widest_placed,
        widest_traits,
        reference_placed,
        reference_traits,
        tier_p0["p0"],
        profile.evidence,
        rules.false_alarm_rate / 3,
    )
    name = f"last_{max(windows)}_months" if windows else "monitored"
    for item in calibration[
        ((calibration["kind"] != "other") | calibration["significant"]).astype(bool)
    ].itertuples(index=False):
        add(
            name,
            "calibration",
            item.observed,
            item.predicted,
            np.nan,
            bool(item.significant),
            int(item.n),
            f"{item.kind}: {item.text}",
            segment=item.label,
        )
    findings = calibration_findings(calibration)
    trait_flags = _trait_sequential(
        monitored, labels, path["month"].tolist(), reference_deals, evidence, config,
        tier_p0["p0"], profile.evidence, rules, add,
    )  # fmt: skip
    findings = trait_flags + [
        f for f in findings if f.split(": ", 1)[1].split(":")[0] not in " ".join(trait_flags)
    ]
    if trait_flags:
        flagged_cohorts.append("trait_cusum")
        flagged_frames.append(widest)
    # Calibration rows describe; they raise no flag: at 15,000 stable accounts a trait's ratio can move
    # significantly for reasons that are no drift (tech adoption seen at the as-of date, in-sample
    # reference ratios). The flag rests on the AUC tests and the CUSUMs, whose thresholds carry the
    # reference's own uncertainty.
    curves = close_probability(deals[(created >= window_start) & (created < start) & deals["closed"]])
    for label, closed, size in early:
        ages = (end - closed["created_at"]).dt.days.to_numpy()
        estimate = early_estimate(closed, ages, curves)
        note = (
            f"estimate: {len(closed)} of {size} deals closed so far, reweighted by the reference "
            "time to close of won and lost deals"
        )
        add(label, "auc_estimate", estimate["auc"], reference["auc"], np.nan, False, estimate["n"], note)
        add(
            label,
            "win_rate_estimate",
            estimate["win_rate"],
            reference["win_rate"],
            np.nan,
            False,
            estimate["n"],
            note,
        )
    judgeable = bool(np.isfinite(smallest_drop) and smallest_drop <= rules.max_detectable_drop)
    if not judgeable:
        seen = f"an AUC drop under {smallest_drop:.2f}" if np.isfinite(smallest_drop) else "any AUC drop"
        add(
            "verdict",
            "too_little_data",
            smallest_drop,
            np.nan,
            rules.max_detectable_drop,
            False,
            len(widest),
            f"too little data to judge: {len(widest):,} closed deals in the last {max(windows, default=0)} months "
            f"cannot show {seen} (80% power); the sequential test keeps accumulating",
        )
    current = pd.concat(current_frames) if current_frames else deals.iloc[0:0]
    # What moved is judged where the ICP failed: the flagged cohorts, else every cohort since the reference.
    judged = pd.concat(flagged_frames).drop_duplicates("opportunity_id") if flagged_frames else current
    both_traits, both = as_created(evidence, config, pd.concat([reference_deals, judged], ignore_index=True))
    moved = what_moved(both.iloc[: len(reference_deals)], both.iloc[len(reference_deals) :], both_traits)
    reference_accounts = stable_then.accounts[
        isin(stable_then.accounts["account_id"], reference_deals["account_id"])
    ]
    current_traits = stable_now.accounts
    current_accounts = current_traits[isin(current_traits["account_id"], current["account_id"])]
    for feature in [c for c in reference_accounts.columns if c != "account_id"]:
        value = psi(reference_accounts[feature], current_accounts[feature])
        add(
            "population",
            "psi",
            value,
            0.0,
            rules.psi_flag,
            bool(value >= rules.psi_flag),
            len(current_accounts),
            "watch" if rules.psi_watch <= value < rules.psi_flag else "",
            segment=feature,
        )
        add(
            "population",
            "js_distance",
            js_distance(reference_accounts[feature], current_accounts[feature]),
            0.0,
            np.nan,
            False,
            len(current_accounts),
            segment=feature,
        )
    score_psi = psi(reference_deals["fit_score"], current["fit_score"])
    add(
        "population",
        "psi",
        score_psi,
        0.0,
        rules.psi_flag,
        bool(score_psi >= rules.psi_flag),
        len(current),
        segment="fit_score",
    )
    for _, item in moved.head(5).iterrows():
        add(
            "what_moved",
            "win_rate_change",
            item["change"],
            item["win_rate_reference"],
            np.nan,
            False,
            int(item["current_size"]),
            item["text"],
            segment=item["label"],
        )
    flagged = bool(flagged_cohorts)
    reason = _reason(flagged_cohorts) if flagged else ""
    recommendation = (
        "re-derive the profile: "
        + "; ".join(f.split(" (reference deals")[0].split("; CUSUM")[0] for f in findings[:3])
        if flagged and findings
        else _recommend(moved, flagged)
    )
    evidence_lines = [row["note"] for row in rows if row["metric"] == "auc" and row["flagged"]]
    evidence_lines += [rows_note for rows_note in [_last_note(rows, "sequential")] if rows_note]
    evidence_lines += findings
    if flagged:
        add("verdict", "flag", 1.0, np.nan, np.nan, True, len(current), f"{reason}. {recommendation}")
    return DriftReport(
        pd.DataFrame(rows, columns=METRIC_COLUMNS),
        moved,
        flagged,
        reason,
        recommendation,
        reference_date,
        profile.version,
        findings=findings,
        evidence="; ".join(evidence_lines),
        judgeable=judgeable,
        calibration=calibration,
    )


def _trait_sequential(
    monitored: pd.DataFrame,
    labels: pd.Series,
    months: list[str],
    reference_deals: pd.DataFrame,
    evidence: Evidence,
    config: IcpConfig,
    p0: pd.Series,
    profile_evidence: pd.DataFrame,
    rules: DriftConfig,
    add: Callable[..., None],
) -> list[str]:
    """Per trait value, CUSUMs of the monthly standardised (observed - expected) wins; returns the
    findings of those above the Bonferroni threshold (false_alarm_rate / 3 over both sides of
    every trait value tested). Deals are judged as they were when created (`as_created`)."""
    reference_traits, reference_placed = as_created(evidence, config, reference_deals)
    reference = group_sums(reference_placed, p0, reference_traits)
    reference = reference[(reference["trait"] != "tier") & (reference["size"] >= 20)]
    monitored_traits, monitored_placed = as_created(evidence, config, monitored)
    monthly_sums = monthly_trait_sums(monitored_placed, labels, p0, monitored_traits)
    if monthly_sums.empty or reference.empty:
        return []
    kinds, _ = kinds_and_labels(reference, profile_evidence)
    # One side per trait value: an ICP trait that stops lifting, a hard no or an outside trait that wins.
    sides = pd.Series(
        np.where(np.isin(kinds, ["must_have", "nice_to_have"]), -1, 1),
        index=pd.MultiIndex.from_frame(reference[["trait", "value"]]),
    )
    paths = trait_cusum(monthly_sums, reference, sides, rules.false_alarm_rate / 3 / max(len(sides), 1))
    if paths.empty:
        return []
    paths["kind"], paths["label"] = kinds_and_labels(paths, profile_evidence)
    findings = []
    for item in paths.itertuples(index=False):
        flagged = bool(item.path[-1] > item.threshold)
        if not flagged and item.kind == "other":
            continue
        crossed = [m for m, level in zip(item.months, item.path, strict=True) if level > item.threshold]
        # The figures since the statistic last stood at zero: the months whose evidence it holds.
        resets = np.flatnonzero(np.asarray(item.path) <= 0)
        since = int(resets[-1]) + 1 if len(resets) and resets[-1] + 1 < len(item.path) else 0
        deals = int(np.sum(item.deals[since:]))
        rate = np.sum(item.wins[since:]) / deals if deals else np.nan
        predicted = np.sum(item.expected[since:]) / deals if deals else np.nan
        text = (
            f"{item.label}: predicted {predicted:.0%}, observed {rate:.0%} in cohorts since {item.months[since]}, "
            f"n={deals:,}; CUSUM {item.path[-1]:.1f} vs threshold {item.threshold:.1f}"
            + (f", above it since cohort {crossed[0]}" if flagged and crossed else "")
        )
        add(
            "sequential",
            "trait_cusum",
            float(item.path[-1]),
            float(np.sum(item.expected[since:])),
            float(item.threshold),
            flagged,
            deals,
            f"{item.kind}: {text}",
            segment=item.label,
        )
        if flagged:
            what = {
                "must_have": "ICP trait stopped lifting",
                "nice_to_have": "ICP trait stopped lifting",
                "hard_no": "hard no now wins",
                "other": "trait outside the profile now wins",
            }[item.kind]
            findings.append(f"{what}: {text}")
    return findings


def _reason(flagged: list[str]) -> str:
    cohorts = [f for f in flagged if f[:1].isdigit()]
    windows = [f.replace("_", " ") for f in flagged if f.startswith("last_")]
    parts = []
    if cohorts:
        parts.append(f"AUC below reference in cohort(s) {', '.join(cohorts)}")
    if windows:
        parts.append(f"AUC below reference over the {' and '.join(windows)}")
    if "cusum" in flagged:
        parts.append("the sequential test (CUSUM) crossed its threshold")
    if "trait_cusum" in flagged:
        parts.append("the per-trait sequential test found traits whose win rate moved")
    return "; ".join(parts)


def _last_note(rows: list[dict[str, object]], cohort: str) -> str:
    notes = [
        f"CUSUM {row['value']:.1f} > {row['threshold']:.1f}: {row['note']}"
        for row in rows
        if row["cohort"] == cohort and row["flagged"]
    ]
    return notes[-1] if notes else ""


def _recommend(moved: pd.DataFrame, flagged: bool) -> str:
    if not flagged:
        return ""
    if moved.empty:
        return "re-derive the profile: fit no longer predicts wins, and no single segment explains it"
    rising = moved[moved["change"] > 0]
    falling = moved[moved["change"] < 0]
    parts = []
    if len(rising):
        top = rising.iloc[0]
        ratio = top["win_rate_current"] / top["current_base"] if top["current_base"] else np.nan
        parts.append(f"the {top['label']} segment now wins {ratio:.1f}x the base rate ({top['text']})")
    if len(falling):
        parts.append(f"{falling.iloc[0]['text']}")
    return "re-derive the profile: " + "; ".join(parts)
