"""What to write to the CRM tonight: the latest scores and triggers, diffed against the push ledger.

The ledger `icp.writeback_state` holds, per account and target, the values its CRM fields were last
set to. Only accounts whose mapped values differ are sent, so a night without score changes costs no
API calls, and a failed or unsent account stays different until a later run succeeds. The diff is
one DuckDB query over the warehouse; nothing here loops over accounts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from icp_pipeline.config import WRITEBACK_FIELDS, WritebackConfig
from icp_pipeline.warehouse import table_exists, transaction

LEDGER = "writeback_state"
RUNS = "writeback_runs"
# Record ids the target can address: HubSpot object ids are numeric, Salesforce ids 15 or 18 characters.
ID_PATTERNS = {"hubspot": r"[0-9]+", "salesforce": r"[A-Za-z0-9]{15}([A-Za-z0-9]{3})?"}
SAMPLE_SIZE = 10

# One row per (account_id, target): what the CRM fields were last set to, and the last refusal.
LEDGER_COLUMNS: dict[str, str] = {
    "account_id": "varchar",
    "target": "varchar",
    "destination": "varchar",
    "fit_score": "bigint",
    "tier": "varchar",
    "reasons": "varchar",
    "latest_trigger": "varchar",
    "latest_trigger_date": "date",
    "as_of": "date",
    "pushed_at": "timestamp with time zone",
    "failed_attempts": "integer",
    "last_error": "varchar",
    "last_error_at": "timestamp with time zone",
}
LEDGER_DDL = (
    "create table if not exists icp.writeback_state ("
    + ", ".join(f"{name} {kind}" for name, kind in LEDGER_COLUMNS.items())
    + ")"
)
# The ledger before the first write: no rows, the real column types.
_EMPTY_LEDGER = (
    "select " + ", ".join(f"null::{kind} as {name}" for name, kind in LEDGER_COLUMNS.items()) + " limit 0"
)

RUNS_DDL = """
create table if not exists icp.writeback_runs (
    run_at timestamp with time zone,
    as_of date,
    target varchar,
    dry_run boolean,
    scored bigint,
    changed bigint,
    calls bigint,
    pushed bigint,
    failed bigint,
    remaining bigint,
    budget_left bigint,
    stopped varchar
)"""

# The canonical values per account, from the scores slice $slice and triggers detected by then.
# `reasons` is the hard-no reason (if any), then the top positive and negative points, cut to $limit.
_DESIRED = """
with scores as (
    select * from icp.account_scores where as_of = $slice and account_id is not null
),
latest_trigger as (
    {triggers}
),
full_reasons as (
    select
        s.account_id,
        cast(s.fit_score as bigint) as fit_score,
        s.tier,
        nullif(concat_ws(' | ',
            case when s.disqualified then 'Hard no: ' || coalesce(nullif(s.disqualified_reason, ''), 'yes') end,
            nullif(s.top_positive, ''),
            nullif(s.top_negative, '')
        ), '') as reasons,
        t.trigger_type as latest_trigger,
        t.trigger_date as latest_trigger_date
    from scores s left join latest_trigger t using (account_id)
)
select
    account_id, fit_score, tier,
    case when length(reasons) > $limit then left(reasons, $limit - 1) || '…' else reasons end as reasons,
    latest_trigger, latest_trigger_date
from full_reasons
"""
_TRIGGERS = """
    select account_id, trigger_type, cast(timezone('UTC', occurred_at) as date) as trigger_date
    from icp.trigger_events
    where account_id is not null and as_of <= $slice
      and cast(timezone('UTC', occurred_at) as date) <= $slice
    qualify row_number() over (
        partition by account_id order by occurred_at desc, strength desc nulls last, event_id
    ) = 1
"""
_NO_TRIGGERS = "select null::varchar as account_id, null::varchar as trigger_type, null::date as trigger_date"


@dataclass(frozen=True)
class WritebackPlan:
    """The accounts to write and why; `changes` is in send order (never-failing, best tiers first)."""

    target: str
    destination: str
    as_of: dt.date | None
    newer_as_of: dt.date | None
    scored: int
    changes: pd.DataFrame
    field_changes: dict[str, int]
    invalid_ids: int
    invalid_id_sample: list[str]


def destination_key(config: WritebackConfig) -> str:
    """Where and what is written: a new portal, object or field mapping makes every account differ."""
    spec = [config.target, config.resolved_base_url(), config.resolved_object_type(), config.field_map()]
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists icp")
    con.execute(LEDGER_DDL)
    con.execute(RUNS_DDL)


def latest_slices(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """(newest scored date up to `as_of`, newest scored date after it): a backfill must not push old scores."""
    if not table_exists(con, "icp", "account_scores"):
        return None, None
    rows = con.execute(
        "select max(as_of) filter (where as_of <= ?), max(as_of) filter (where as_of > ?) "
        "from icp.account_scores",
        [as_of, as_of],
    ).fetchall()
    current, newer = rows[0]
    return _as_date(current), _as_date(newer)


def plan_writeback(con: duckdb.DuckDBPyConnection, config: WritebackConfig, as_of: dt.date) -> WritebackPlan:
    """Accounts whose mapped values differ from what the ledger says was last pushed to this destination."""
    fields = list(config.field_map())
    destination = destination_key(config)
    current, newer = latest_slices(con, as_of)
    if current is None:
        return WritebackPlan(config.target, destination, None, newer, 0, _empty_changes(fields), {}, 0, [])
    has_triggers = table_exists(con, "icp", "trigger_events")
    desired_sql = _DESIRED.format(triggers=_TRIGGERS if has_triggers else _NO_TRIGGERS)
    has_ledger = table_exists(con, "icp", LEDGER)
    ledger_sql = "select * from icp.writeback_state where target = $target" if has_ledger else _EMPTY_LEDGER
    params: dict[str, Any] = {
        "slice": current,
        "limit": config.reasons_max_chars,
        "pattern": ID_PATTERNS[config.target],
        "destination": destination,
    }
    if has_ledger:
        params["target"] = config.target
    fresh = "l.account_id is null or l.pushed_at is null or l.destination is distinct from $destination"
    flags = ",\n".join(f"({fresh} or d.{f} is distinct from l.{f}) as changed_{f}" for f in fields)
    any_changed = " or ".join(f"changed_{f}" for f in fields)
    query = f"""
        with desired as ({desired_sql}),
        ledger as ({ledger_sql}),
        compared as (
            select d.*, coalesce(l.failed_attempts, 0) as failed_attempts,
                   l.pushed_at is null as never_pushed, {flags}
            from desired d left join ledger l using (account_id)
            where regexp_full_match(d.account_id, $pattern)
        )
        select * from compared where {any_changed}
        order by failed_attempts, tier nulls last, fit_score desc nulls last, account_id
    """
    changes = con.execute(query, params).df()
    counts = con.execute(
        f"""with desired as ({desired_sql})
        select count(*), count(*) filter (where not regexp_full_match(account_id, $pattern)),
               min_by(account_id, account_id, $sample) filter (where not regexp_full_match(account_id, $pattern))
        from desired""",
        {
            "slice": current,
            "limit": config.reasons_max_chars,
            "pattern": params["pattern"],
            "sample": SAMPLE_SIZE,
        },
    ).fetchall()[0]
    scored, invalid, invalid_ids = int(counts[0]), int(counts[1]), list(counts[2] or [])
    field_changes = {f: int(changes[f"changed_{f}"].sum()) for f in fields}
    return WritebackPlan(
        config.target,
        destination,
        current,
        newer,
        scored,
        changes,
        field_changes,
        invalid,
        invalid_ids,
    )


def _empty_changes(fields: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            "account_id",
            *WRITEBACK_FIELDS,
            "failed_attempts",
            "never_pushed",
            *(f"changed_{f}" for f in fields),
        ]
    )


def _as_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    return value.date() if isinstance(value, dt.datetime) else value


def crm_records(batch: pd.DataFrame, fields: dict[str, str], blank: Any) -> list[dict[str, Any]]:
    """Each account's mapped values under the CRM's field names; `blank` clears an empty field.

    Every mapped field is sent for a changed account, not only the changed ones: a hand edit of an
    ICP field in the CRM is overwritten the next time the account's values move.
    """
    out = pd.DataFrame(index=batch.index)
    for field, crm_field in fields.items():
        column = batch[field]
        if field == "latest_trigger_date":
            column = pd.to_datetime(column).dt.strftime("%Y-%m-%d")
        elif field == "fit_score":
            column = pd.to_numeric(column).astype("Int64")
        out[crm_field] = column.astype(object).where(column.notna(), blank)
    return [
        {key: value.item() if hasattr(value, "item") else value for key, value in row.items()}
        for row in out.to_dict("records")
    ]


def record_pushed(
    con: duckdb.DuckDBPyConnection,
    pushed: pd.DataFrame,
    plan: WritebackPlan,
    fields: list[str],
    now: dt.datetime,
) -> None:
    """The accounts' ledger rows become exactly what was sent (unmapped fields NULL); errors reset."""
    if pushed.empty:
        return
    rows = pushed[["account_id"]].copy()
    for field in WRITEBACK_FIELDS:
        rows[field] = pushed[field] if field in fields else None
    rows = rows.assign(
        target=plan.target,
        destination=plan.destination,
        as_of=plan.as_of,
        pushed_at=now,
        failed_attempts=0,
        last_error=None,
        last_error_at=None,
    )
    _upsert(con, rows, plan.target)


def record_failed(
    con: duckdb.DuckDBPyConnection, failed: pd.DataFrame, target: str, now: dt.datetime
) -> None:
    """Count a failure and keep its message; the last pushed values stay, so the account is retried."""
    if failed.empty:
        return
    con.register("_failed", failed[["account_id", "error"]])
    try:
        with transaction(con):
            con.execute(
                "insert into icp.writeback_state (account_id, target, failed_attempts) "
                "select f.account_id, ?, 0 from _failed f where f.account_id not in "
                "(select account_id from icp.writeback_state where target = ?)",
                [target, target],
            )
            con.execute(
                "update icp.writeback_state as w set failed_attempts = coalesce(w.failed_attempts, 0) + 1, "
                "last_error = f.error, last_error_at = ? from _failed f "
                "where w.account_id = f.account_id and w.target = ?",
                [now, target],
            )
    finally:
        con.unregister("_failed")


def record_run(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    con.register("_run", pd.DataFrame([row]))
    try:
        con.execute("insert into icp.writeback_runs by name select * from _run")
    finally:
        con.unregister("_run")


def _upsert(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame, target: str) -> None:
    con.register("_pushed", rows)
    try:
        with transaction(con):
            con.execute(
                "delete from icp.writeback_state where target = ? and account_id in (select account_id from _pushed)",
                [target],
            )
            con.execute("insert into icp.writeback_state by name select * from _pushed")
    finally:
        con.unregister("_pushed")
