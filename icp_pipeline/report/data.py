"""What the morning report shows, read from the warehouse as small aggregated frames.

Every figure is aggregated in DuckDB SQL (counts, groups, top-N), so building the report reads a
few hundred rows whatever the number of accounts. A table that does not exist yet (a first run,
a failed step) reads as empty; the page then says why instead of drawing an empty chart.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from icp_pipeline.config import IcpConfig, contracts_dir
from icp_pipeline.contracts.spec import CANONICAL_TABLES, load_contracts
from icp_pipeline.errors import IcpError
from icp_pipeline.warehouse import connect, table_columns, table_exists

TOP_ACCOUNTS = 15
TRIGGER_WEEKS = 12
# The alert ledger's priority (alerts/ledger.py): fit, trigger strength and recency over 90 days.
PRIORITY_FIT, PRIORITY_STRENGTH, PRIORITY_RECENCY, RECENCY_DAYS = 0.5, 0.3, 0.2, 90
VERDICT_ORDER = {"must_have": 0, "nice_to_have": 1, "hard_no": 2}
# Feed tables carry match_method (contracts/staging.py FEED_TABLES; not imported: that pulls in GX).
FEED_TABLES = ("firmographics", "funding_rounds", "job_postings", "leadership_changes")


@dataclass
class IcpData:
    summary: str = ""
    notes: str = ""
    profile_version: str = ""
    scored_by: str = ""
    criteria: pd.DataFrame = field(default_factory=pd.DataFrame)
    base_win_rate: float = float("nan")
    audit: pd.DataFrame = field(default_factory=pd.DataFrame)
    fit_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    tier_cutoffs: dict[str, int] = field(default_factory=dict)
    # The registry's champion (scores) and challenger (shadow), and tonight's comparison of the two.
    models: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class ScoreData:
    method: str = "forward_backtest"
    values: dict[str, float] = field(default_factory=dict)
    status: str = ""
    split_date: dt.date | None = None
    tiers: pd.DataFrame = field(default_factory=pd.DataFrame)
    gains: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class CallData:
    tier_counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    top_accounts: pd.DataFrame = field(default_factory=pd.DataFrame)
    trigger_weeks: pd.DataFrame = field(default_factory=pd.DataFrame)
    alert_status: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The first nightly run that looked for triggers: hiring surges cannot be dated before it.
    first_detection: dt.date | None = None


@dataclass
class DriftData:
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    flag: dict[str, object] = field(default_factory=dict)
    psi_watch: float = 0.1
    # The flag state of every earlier run (as_of, flagged, evidence): when a flag was first raised.
    history: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class HealthData:
    table_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Dropped rows per table, rule and root cause, ordered by root cause (see `_quarantine_by_cause`).
    quarantine: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Values nulled in kept rows (quarantine action `null_field`) per table and rule.
    nulled: pd.DataFrame = field(default_factory=pd.DataFrame)
    failed_rules: pd.DataFrame = field(default_factory=pd.DataFrame)
    rules_evaluated: int = 0
    freshness: pd.DataFrame = field(default_factory=pd.DataFrame)
    match: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class ReportData:
    as_of: dt.date
    latest_as_of: dt.date
    warehouse: Path
    accounts_scored: int
    icp: IcpData
    score: ScoreData
    call: CallData
    drift: DriftData
    health: HealthData
    holdout: ScoreData = field(default_factory=lambda: ScoreData(method="time_split_holdout"))


def _ident(name: str) -> str:
    """A quoted SQL identifier (table and column names come from the contracts, never from values)."""
    return '"' + name.replace('"', '""') + '"'


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


def _select(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[str], where: str, params: list[object]
) -> pd.DataFrame:
    """Columns of an `icp` table; one a writer left out (an insufficient-data row set) reads as null."""
    present = set(table_columns(con, "icp", table))
    picked = ", ".join(_ident(c) if c in present else f"null as {_ident(c)}" for c in columns)
    return _query(con, f"select {picked} from icp.{_ident(table)} where {where}", params)


def scored_dates(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """As-of dates with scores, newest first."""
    if not table_exists(con, "icp", "account_scores"):
        return []
    rows = con.execute("select distinct as_of from icp.account_scores order by as_of desc").fetchall()
    return [row[0] for row in rows]


def resolve_as_of(warehouse: Path, as_of: dt.date | None) -> tuple[dt.date, dt.date]:
    """(as-of date to report, latest scored date); a missing warehouse or score is one clear error."""
    if not warehouse.exists():
        raise IcpError(f"warehouse not found: {warehouse} (run `icp run` first)")
    with connect(warehouse, read_only=True) as con:
        dates = scored_dates(con)
    if not dates:
        raise IcpError(f"no scores in {warehouse}: run `icp run` first")
    if as_of is None:
        return dates[0], dates[0]
    if as_of not in dates:
        raise IcpError(
            f"no scores as of {as_of} in {warehouse}; scored dates: {', '.join(map(str, dates[:5]))}"
        )
    return as_of, dates[0]


def read_icp(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> IcpData:
    """The derived profile: criteria with their evidence, audit, fit vs non-fit metrics, tier cut-offs."""
    data = IcpData()
    if table_exists(con, "icp", "icp_profile"):
        rows = _select(
            con,
            "icp_profile",
            ["section", "trait", "value", "label", "points", "number", "detail", "profile_version"],
            "as_of = ?",
            [as_of],
        )
        summary = rows[rows["section"] == "summary"]
        if len(summary):
            data.summary = str(summary["label"].iloc[0] or "")
            data.notes = str(summary["detail"].iloc[0] or "")
            data.profile_version = str(summary["profile_version"].iloc[0])
        model = rows[rows["section"] == "model"]
        data.scored_by = str(model["detail"].iloc[0]) if len(model) else ""
        data.audit = rows.loc[rows["section"] == "audit", ["trait", "value", "label", "number", "detail"]]
        metrics = rows[rows["section"] == "metric"]
        data.fit_metrics = (
            metrics.pivot_table(index="label", columns="trait", values="number", aggfunc="first", sort=False)
            .reindex(columns=["icp_fit", "non_fit"])
            .rename_axis(index="metric", columns=None)
            .reset_index()
            if len(metrics)
            else pd.DataFrame(columns=["metric", "icp_fit", "non_fit"])
        )
        cutoffs = rows[rows["section"] == "tier_cutoff"]
        data.tier_cutoffs = {str(t): int(p) for t, p in cutoffs[["value", "points"]].itertuples(index=False)}
    if table_exists(con, "icp", "icp_evidence"):
        evidence = _select(
            con,
            "icp_evidence",
            [
                "verdict",
                "label",
                "trait",
                "value",
                "points",
                "win_rate_with",
                "win_rate_with_low",
                "win_rate_with_high",
                "win_rate_without",
                "closed_with",
                "support_best",
                "share_of_accounts",
                "lift",
                "q_value",
                "base_win_rate",
            ],
            "as_of = ?",
            [as_of],
        )
        base = pd.to_numeric(evidence["base_win_rate"], errors="coerce").max()
        data.base_win_rate = float("nan") if pd.isna(base) else float(base)
        criteria = evidence[evidence["verdict"].isin(VERDICT_ORDER)].drop(columns="base_win_rate")
        # The verdict rests on the win rate with the trait over the rate without it (profile/derive.py),
        # not on `lift` (share of best customers over share of accounts): the report shows the former.
        criteria = criteria.assign(
            win_rate_lift=pd.to_numeric(criteria["win_rate_with"], errors="coerce")
            / pd.to_numeric(criteria["win_rate_without"], errors="coerce")
        )
        data.criteria = criteria.assign(
            _order=criteria["verdict"].map(VERDICT_ORDER), _size=-criteria["points"].abs()
        ).sort_values(["_order", "_size", "label"], ignore_index=True)[criteria.columns]
    if table_exists(con, "icp", "models"):
        data.models = _query(
            con,
            "select model_version, status, trained_as_of, closed_deals, status_reason from icp.models "
            "where status in ('champion', 'challenger') order by status desc",
        )
    if table_exists(con, "icp", "model_comparison"):
        data.comparison = _query(
            con,
            "select metric, champion, challenger, p_value, note, champion_version, challenger_version "
            "from icp.model_comparison where as_of = ?",
            [as_of],
        )
    return data


def read_score(con: duckdb.DuckDBPyConnection, as_of: dt.date, method: str = "forward_backtest") -> ScoreData:
    """One validation method's headline metrics, win rate and deals per tier, the gains curve."""
    data = ScoreData(method=method)
    if not table_exists(con, "icp", "score_validation"):
        data.status = "the score has not been validated yet (icp/score_validation has not run)"
        return data
    rows = _select(
        con,
        "score_validation",
        ["metric", "segment", "value", "note", "split_date"],
        # Rows written before the forward backtest existed have no method: they are the holdout.
        "as_of = ? and coalesce(method, 'time_split_holdout') = ?"
        if "method" in table_columns(con, "icp", "score_validation")
        else "as_of = ? and ? = 'time_split_holdout'",
        [as_of, method],
    )
    status = rows[rows["metric"] == "status"]
    data.status = str(status["note"].iloc[0]) if len(status) else "no validation rows for this date"
    if len(rows) and pd.notna(rows["split_date"].iloc[0]):
        data.split_date = pd.Timestamp(rows["split_date"].iloc[0]).date()
    headline = rows[~rows["metric"].isin(["status", "win_rate", "gains"])]
    data.values = {
        m: float(v) for m, v in headline[["metric", "value"]].itertuples(index=False) if pd.notna(v)
    }
    tiers = rows[rows["metric"] == "win_rate"]
    data.tiers = pd.DataFrame(
        {
            "tier": tiers["segment"].to_numpy(),
            "win_rate": tiers["value"].astype(float).to_numpy(),
            "deals": pd.to_numeric(tiers["note"].str.extract(r"n=(\d+)")[0], errors="coerce").to_numpy(),
        }
    ).sort_values("tier", ignore_index=True)
    gains = rows[rows["metric"] == "gains"]
    data.gains = pd.DataFrame(
        {
            "share_of_deals": gains["segment"].astype(float).to_numpy(),
            "share_of_wins": gains["value"].to_numpy(),
        }
    ).sort_values("share_of_deals", ignore_index=True)
    return data


def read_call(con: duckdb.DuckDBPyConnection, as_of: dt.date, limit: int = TOP_ACCOUNTS) -> CallData:
    """Who to call: accounts ranked like the alert ledger ranks alerts, tiers, recent triggers, alerts."""
    data = CallData()
    data.tier_counts = _query(
        con,
        "select tier, count(*) as accounts, count(*) filter (where disqualified) as disqualified "
        "from icp.account_scores where as_of = ? group by tier order by tier",
        [as_of],
    )
    has_events = table_exists(con, "icp", "trigger_events")
    events = (
        f"""
        select account_id, event_id, trigger_type, occurred_at, strength, evidence,
               {PRIORITY_STRENGTH} * strength + {PRIORITY_RECENCY}
                 * greatest(0, least(1, 1 - date_diff('day', cast(occurred_at as date), ?) / {RECENCY_DAYS}.0))
                 as signal,
               row_number() over (partition by account_id order by occurred_at desc, event_id) as latest
        from icp.trigger_events
        where as_of <= ? and cast(occurred_at as date) <= ?
          and cast(occurred_at as date) > ? - interval {RECENCY_DAYS} day
        """
        if has_events
        else "select null::varchar as account_id, null::varchar as event_id, null::varchar as trigger_type, "
        "null::timestamptz as occurred_at, null::double as strength, null::varchar as evidence, "
        "null::double as signal, null::bigint as latest where false"
    )
    params: list[object] = [as_of, as_of, as_of, as_of] if has_events else []
    has_accounts = table_exists(con, "staging", "accounts")
    has_owners = has_accounts and table_exists(con, "staging", "owners")
    names = (
        "left join staging.accounts a on a.account_id = s.account_id"
        if has_accounts
        else "left join (select null::varchar as account_id, null::varchar as name, null::varchar as owner_id) a "
        "on a.account_id = s.account_id"
    )
    owners = (
        "left join staging.owners o on o.owner_id = a.owner_id"
        if has_owners
        else "left join (select null::varchar as owner_id, null::varchar as name) o on o.owner_id = a.owner_id"
    )
    data.top_accounts = _query(
        con,
        f"""
        with events as materialized ({events}),
        signals as (
            select account_id, max(signal) as signal, count(*) as recent_triggers from events group by account_id
        ),
        ranked as (
            select s.account_id, s.tier, s.fit_score, s.top_positive, s.top_negative,
                   round({PRIORITY_FIT} * s.fit_score / 100 + coalesce(g.signal, 0), 3) as priority,
                   coalesce(g.recent_triggers, 0) as recent_triggers
            from icp.account_scores s
            left join signals g on g.account_id = s.account_id
            where s.as_of = ? and not s.disqualified
            order by priority desc, s.fit_score desc, s.account_id
            limit ?
        )
        select s.account_id, a.name, o.name as owner, s.tier, s.fit_score, s.top_positive, s.top_negative,
               s.priority, s.recent_triggers,
               l.trigger_type as latest_trigger, l.occurred_at as latest_trigger_at, l.evidence as latest_evidence
        from ranked s
        left join (select * from events where latest = 1) l on l.account_id = s.account_id
        {names}
        {owners}
        order by s.priority desc, s.fit_score desc, s.account_id
        """,
        [*params, as_of, limit],
    )
    if has_events:
        data.trigger_weeks = _query(
            con,
            f"""
            select cast(floor(date_diff('day', cast(occurred_at as date), ?) / 7) as integer) as weeks_ago,
                   trigger_type, count(*) as events
            from icp.trigger_events
            where as_of <= ? and cast(occurred_at as date) <= ?
              and cast(occurred_at as date) > ? - interval {7 * TRIGGER_WEEKS} day
            group by all order by weeks_ago desc, trigger_type
            """,
            [as_of, as_of, as_of, as_of],
        )
        first = con.execute("select min(as_of) from icp.trigger_events where as_of <= ?", [as_of]).fetchall()[
            0
        ][0]
        data.first_detection = pd.Timestamp(first).date() if first is not None else None
    if table_exists(con, "icp", "alerts"):
        data.alert_status = _query(
            con,
            "select status, count(*) as alerts, count(*) filter (where digest) as in_digest "
            "from icp.alerts where cast(as_of as date) = ? group by status order by alerts desc",
            [as_of],
        )
    return data


def read_drift(con: duckdb.DuckDBPyConnection, as_of: dt.date, config: IcpConfig) -> DriftData:
    """Cohort metrics, population stability and what moved, as computed on the as-of date."""
    data = DriftData(psi_watch=config.drift.psi_watch)
    if table_exists(con, "icp", "drift_metrics"):
        data.metrics = _select(
            con,
            "drift_metrics",
            ["cohort", "metric", "segment", "value", "reference", "threshold", "flagged", "n", "note"],
            "as_of = ?",
            [as_of],
        )
    if table_exists(con, "icp", "drift_flags"):
        history = _select(
            con,
            "drift_flags",
            [
                "as_of", "flagged", "reason", "recommendation", "reference_date",
                "first_flagged", "evidence", "findings", "judgeable",
            ],
            "as_of <= ?",
            [as_of],
        )  # fmt: skip
        history = history.sort_values("as_of").reset_index(drop=True)
        data.history = history
        today = history[pd.to_datetime(history["as_of"]).dt.date == as_of]
        if len(today):
            data.flag = today.iloc[0].to_dict()
    return data


def read_health(con: duckdb.DuckDBPyConnection, as_of: dt.date, config: IcpConfig) -> HealthData:
    """Rows per table, quarantine by rule, failed rules, freshness per table, feed match rates."""
    data = HealthData()
    quarantined: dict[str, int] = {}
    nulled: dict[str, int] = {}
    if table_exists(con, "icp", "quarantine"):
        data.quarantine = _quarantine_by_cause(con, config)
        quarantined = data.quarantine.groupby("table")["rows"].sum().astype(int).to_dict()
        if "action" in table_columns(con, "icp", "quarantine"):
            data.nulled = _query(
                con,
                'select "table", rule, count(*) as rows, min(row_key) as example_key, '
                "arg_min(message, row_key) as example_message from icp.quarantine "
                """where action = 'null_field' group by "table", rule order by rows desc, "table", rule""",
            )
            nulled = data.nulled.groupby("table")["rows"].sum().astype(int).to_dict()
    rows = []
    for table in CANONICAL_TABLES:
        raw = _count(con, "raw", table)
        staged = _count(con, "staging", table)
        held = quarantined.get(table, 0)
        duplicates = None if raw is None or staged is None else max(raw - staged - held, 0)
        rows.append(
            {
                "table": table,
                "raw": raw,
                "staged": staged,
                "quarantined": held,
                "duplicates_removed": duplicates,
                "nulled": nulled.get(table, 0),
            }
        )
    data.table_rows = pd.DataFrame(rows)
    if table_exists(con, "icp", "contract_results"):
        results = _query(
            con,
            'select "table", rule, severity, evaluated, failed, passed, detail '
            "from icp.contract_results where as_of = ?",
            [as_of],
        )
        data.rules_evaluated = len(results)
        data.failed_rules = results[~results["passed"].astype(bool)].sort_values(
            ["severity", "failed"], ascending=[True, False], ignore_index=True
        )
        data.freshness = _freshness(con, as_of, config, results)
    else:
        data.freshness = _freshness(con, as_of, config, pd.DataFrame(columns=["rule", "table", "passed"]))
    data.match = _match_rates(con)
    return data


def _quarantine_by_cause(con: duckdb.DuckDBPyConnection, config: IcpConfig) -> pd.DataFrame:
    """Dropped rows per table and rule, each group with its root cause, ordered by root cause.

    A row that fails `<column>.references` because the row it refers to was itself quarantined is
    a consequence: its `cause` names the parent's rule ("accounts: employee_count.type"), and the
    rows a root cause explains (its own and its consequences) decide the order, so the first group
    is the rule to fix at the source first. The referred value and the parent's key are read from
    the delivered rows (`raw_row`), which is all a quarantined parent leaves.
    """
    # A quarantine written before field findings existed has no `action`: every row of it was dropped.
    has_action = "action" in table_columns(con, "icp", "quarantine")
    dropped, p_dropped, c_dropped = (
        ("action = 'drop_row'", "p.action = 'drop_row'", "c.action = 'drop_row'")
        if has_action
        else ("true",) * 3
    )
    causes = []
    for contract in load_contracts(contracts_dir(config)).values():
        for column, spec in contract.columns.items():
            if spec.references is None:
                continue
            ref = spec.references
            causes.append(
                con.execute(
                    f"""select c.row_key, any_value(p."table" || ': ' || p.rule) as cause
                    from icp.quarantine c join icp.quarantine p
                      on p."table" = ? and {p_dropped}
                     and json_extract_string(p.raw_row, ?) = json_extract_string(c.raw_row, ?)
                    where c."table" = ? and c.rule = ? and {c_dropped}
                    group by c.row_key""",
                    [ref.table, f'$."{ref.column}"', f'$."{column}"', contract.table, f"{column}.references"],
                )
                .df()
                .assign(table=contract.table)
            )
    rows = _query(con, f'select "table", row_key, rule, message from icp.quarantine where {dropped}')
    if causes and len(rows):
        found = pd.concat(causes, ignore_index=True)
        rows = rows.merge(found, on=["table", "row_key"], how="left")
    else:
        rows["cause"] = pd.Series(dtype="str")
    rows["cause"] = rows["cause"].fillna("").astype("str")
    rows["root"] = rows["cause"].where(rows["cause"] != "", rows["table"] + ": " + rows["rule"])
    columns = ["table", "rule", "cause", "rows", "example_key", "example_message", "root", "root_rows"]
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c.endswith("rows") else "str") for c in columns})
    grouped = (
        rows.sort_values("row_key")
        .groupby(["table", "rule", "cause", "root"], sort=False)
        .agg(rows=("row_key", "size"), example_key=("row_key", "first"), example_message=("message", "first"))
        .reset_index()
    )
    grouped["root_rows"] = grouped.groupby("root")["rows"].transform("sum")
    grouped["consequence"] = grouped["cause"] != ""
    grouped = grouped.sort_values(
        ["root_rows", "root", "consequence", "rows", "table", "rule"],
        ascending=[False, True, True, False, True, True],
        ignore_index=True,
    )
    return grouped[columns]


def _count(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> int | None:
    if not table_exists(con, schema, table):
        return None
    return int(con.execute(f"select count(*) from {_ident(schema)}.{_ident(table)}").fetchall()[0][0])


def _freshness(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, config: IcpConfig, results: pd.DataFrame
) -> pd.DataFrame:
    """Age of the newest row known at the as-of date per table with a freshness rule, against its limit."""
    contracts = load_contracts(contracts_dir(config))
    verdicts = results.set_index(["table", "rule"])["passed"] if len(results) else pd.Series(dtype=bool)
    rows = []
    for table, contract in contracts.items():
        rule = contract.freshness
        if rule is None or not table_exists(con, "staging", table):
            continue
        newest = con.execute(
            f"select max({_ident(rule.column)}) from staging.{_ident(table)} "
            f"where {_ident(rule.column)} < ? + interval 1 day",
            [as_of],
        ).fetchall()[0][0]
        newest_date = pd.Timestamp(newest).date() if newest is not None else None
        passed = verdicts.get((table, f"{rule.column}.freshness"))
        rows.append(
            {
                "table": table,
                "column": rule.column,
                "newest": newest_date,
                "age_days": (as_of - newest_date).days if newest_date else None,
                "limit_days": config.contracts.freshness_days.get(table, rule.max_age_days),
                "severity": rule.severity,
                "passed": None if passed is None else bool(passed),
            }
        )
    return pd.DataFrame(
        rows, columns=["table", "column", "newest", "age_days", "limit_days", "severity", "passed"]
    )


def _match_rates(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Feed rows per match method (domain, name, ambiguous name, unmatched) and their share."""
    frames = []
    for table in FEED_TABLES:
        if not table_exists(con, "staging", table):
            continue
        if "match_method" not in table_columns(con, "staging", table):
            continue
        frame = _query(
            con,
            f"select cast(match_method as varchar) as match_method, count(*) as rows "
            f"from staging.{_ident(table)} group by all",
        )
        if len(frame):
            frames.append(frame.assign(table=table, share=frame["rows"] / frame["rows"].sum()))
    if not frames:
        return pd.DataFrame(columns=["table", "match_method", "rows", "share"])
    return pd.concat(frames, ignore_index=True)[["table", "match_method", "rows", "share"]]


def read_report_data(
    warehouse: Path, as_of: dt.date | None = None, config: IcpConfig | None = None
) -> ReportData:
    """Everything the report shows for one as-of date (default: the latest scored one)."""
    config = config or IcpConfig()
    as_of, latest = resolve_as_of(warehouse, as_of)
    with connect(warehouse, read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute("set enable_progress_bar = false")
        accounts = con.execute("select count(*) from icp.account_scores where as_of = ?", [as_of]).fetchall()[
            0
        ][0]
        return ReportData(
            as_of=as_of,
            latest_as_of=latest,
            warehouse=warehouse,
            accounts_scored=int(accounts),
            icp=read_icp(con, as_of),
            score=read_score(con, as_of),
            holdout=read_score(con, as_of, "time_split_holdout"),
            call=read_call(con, as_of),
            drift=read_drift(con, as_of, config),
            health=read_health(con, as_of, config),
        )
