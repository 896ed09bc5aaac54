"""Dagster wiring of alerts: extend the ledger with new alerts, deliver what is pending, check the ledger."""

import datetime as dt
import os
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd

from icp_pipeline.alerts.channels import Channel, channel_from_config
from icp_pipeline.alerts.journal import DeliveryJournal, fold_journal, journal_path
from icp_pipeline.alerts.ledger import LEDGER_COLUMNS, deliver, empty_ledger, new_alerts, route
from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.staging import STAGING
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.runner import WAREHOUSE_WRITER
from icp_pipeline.scoring.assets import SCORES
from icp_pipeline.triggers.assets import TRIGGER_EVENTS
from icp_pipeline.warehouse import connect, read_table, replace_table, table_exists, to_frame

ALERTS = dg.AssetKey(["icp", "alerts"])
NOT_DUPLICATED = "alerts_are_never_duplicated"
NOT_STALE = "no_pending_alert_is_stale"
EVENT_LOOKBACK_DAYS = 90


def build_channels(config: IcpConfig, outbox_dir: Path, log: Any) -> dict[str, Channel]:
    """Configured channels; one whose secret is missing is skipped (its alerts wait as pending)."""
    channels: dict[str, Channel] = {}
    for channel in config.alerts.channels:
        settings = channel.model_dump(exclude_none=True)
        try:
            channels[channel.kind] = channel_from_config(channel.kind, settings, os.environ, outbox_dir)
        except ValueError as exc:
            log.warning(f"alert channel skipped: {exc}")
    return channels


def _accounts_of(
    con: duckdb.DuckDBPyConnection, columns: list[str], ids: str, params: list[object] | None = None
) -> pd.DataFrame | None:
    """Some columns of the staged accounts whose id the `ids` query gives; None without accounts."""
    if not table_exists(con, STAGING, "accounts"):
        return None
    selected = ", ".join(f'"{column}"' for column in columns)
    return to_frame(
        con.sql(f"select {selected} from {STAGING}.accounts where account_id in ({ids})", params=params)
    )


def _contexts(
    ledger: pd.DataFrame,
    events: pd.DataFrame,
    scores: pd.DataFrame,
    accounts: pd.DataFrame,
    owners: pd.DataFrame | None,
) -> pd.DataFrame:
    """What a message needs per open alert: account name, score, owner, event evidence."""
    frame = ledger[ledger["status"] == "pending"][["alert_id", "event_id", "account_id", "owner_id"]]
    frame = frame.merge(
        events[["event_id", "occurred_at", "strength", "evidence"]], on="event_id", how="left"
    )
    frame = frame.merge(
        scores[["account_id", "tier", "fit_score", "top_positive"]], on="account_id", how="left"
    )
    frame = frame.merge(accounts[["account_id", "name"]], on="account_id", how="left")
    if owners is not None and len(owners):
        people = owners[["owner_id", "name", "email", "slack_user_id"]].rename(
            columns={"name": "owner_name", "email": "owner_email"}
        )
        frame = frame.merge(people, on="owner_id", how="left")
    return frame


@dg.asset(
    key=ALERTS,
    deps=[TRIGGER_EVENTS, SCORES],
    group_name="alerts",
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    description=(
        "The alert ledger, one row per (event, recipient, channel): status pending/sent/failed/suppressed, "
        "digest flag, priority, attempts, last error. Events on accounts at or above the minimum tier and "
        "not disqualified alert their owner (or the fallback recipient) at most once per channel, ever."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            NOT_DUPLICATED, asset=ALERTS, description="No event alerts a recipient twice on a channel."
        ),
        dg.AssetCheckSpec(
            NOT_STALE, asset=ALERTS, description="No alert has waited for delivery longer than allowed."
        ),
    ],
)
def alerts(context: dg.AssetExecutionContext, icp: IcpSettings) -> Any:
    """Record alerts for recent events on fitting accounts, then deliver every pending one.

    The ledger is written before delivery, so a crash mid-delivery loses no alert: the next run
    (or the pending-alerts sensor) sends what is still pending. Outcomes are journaled as they
    happen, so it does not send again what had gone out (see `journal.py`).
    """
    config = icp.load_config()
    as_of = partition_date(context)
    now = dt.datetime.now(dt.UTC)
    since = pd.Timestamp(as_of, tz="UTC") - pd.Timedelta(days=EVENT_LOOKBACK_DAYS)
    until = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    with connect(icp.warehouse_path(), read_only=True) as con:
        events = to_frame(
            con.sql(
                "select * from icp.trigger_events where occurred_at >= ? and occurred_at < ?",
                params=[since, until],
            )
        )
        scores = to_frame(
            con.sql(
                "select account_id, fit_score, tier, disqualified from icp.account_scores where as_of = ?",
                params=[as_of],
            )
        )
        # Only the accounts of the window's events are routed: not a million owners.
        accounts = _accounts_of(
            con,
            ["account_id", "owner_id"],
            "select account_id from icp.trigger_events where occurred_at >= ? and occurred_at < ?",
            [since, until],
        )
        owners = read_table(con, STAGING, "owners")
        ledger = read_table(con, "icp", "alerts")
    ledger = empty_ledger() if ledger is None else ledger[LEDGER_COLUMNS]
    assert accounts is not None
    routing = route(accounts, owners, config.alerts.fallback_recipient)
    created = new_alerts(events, scores, routing, ledger, config.alerts, as_of, now)
    ledger = pd.concat([ledger, created], ignore_index=True) if len(ledger) else created
    with connect(icp.warehouse_path()) as con:
        replace_table(con, "icp", "alerts", ledger)
    delivered = deliver_pending(icp.warehouse_path(), config, context.log)
    with connect(icp.warehouse_path(), read_only=True) as con:
        ledger = to_frame(con.sql("select * from icp.alerts"))
    if delivered["failed"]:
        context.log.warning(
            f"{delivered['failed']} alert delivery attempt(s) failed; they stay pending for the next run"
        )
    duplicated = int(ledger.duplicated(subset=["event_id", "recipient", "channel"]).sum())
    created_at = pd.to_datetime(ledger["created_at"], utc=True)
    stale = ledger[
        (ledger["status"] == "pending")
        & (created_at < pd.Timestamp(now) - pd.Timedelta(hours=config.alerts.max_pending_age_hours))
    ]
    yield dg.AssetCheckResult(
        check_name=NOT_DUPLICATED, passed=duplicated == 0, metadata={"duplicated_alerts": duplicated}
    )
    yield dg.AssetCheckResult(
        check_name=NOT_STALE,
        passed=stale.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "stale_pending": len(stale),
            "max_pending_age_hours": config.alerts.max_pending_age_hours,
            "sample": ", ".join(stale["alert_id"].head(5)),
        },
    )
    status = ledger["status"].value_counts().to_dict()
    context.log.info(f"alerts: {len(created):,} new, delivered {delivered}, ledger {status}")
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(ledger),
            "new_alerts": len(created),
            "sent_this_run": delivered["sent"],
            "failed_attempts_this_run": delivered["failed"],
            **{f"ledger_{name}": int(count) for name, count in status.items()},
            "channels": ", ".join(channel.kind for channel in config.alerts.channels),
            "top_new": dg.MetadataValue.md(
                created.head(10)[
                    ["account_id", "trigger_type", "recipient", "channel", "priority", "status"]
                ].to_markdown(index=False)
                if len(created)
                else "(none)"
            ),
        }
    )


def deliver_pending(warehouse: Path, config: IcpConfig, log: Any) -> dict[str, int]:
    """Deliver every pending alert of the ledger now, outside the nightly run.

    What a killed delivery had sent is folded into the ledger first (from its journal), so it is
    not sent again; this delivery journals each outcome as it happens and writes the ledger once.
    """
    folded = fold_journal(warehouse)
    if folded:
        log.info(f"alerts: {folded:,} outcome(s) of an interrupted delivery recorded from its journal")
    with connect(warehouse, read_only=True) as con:
        ledger = read_table(con, "icp", "alerts")
        if ledger is None or not (ledger["status"] == "pending").any():
            return {"sent": 0, "failed": 0}
        events = to_frame(
            con.sql(
                "select * from icp.trigger_events where event_id in "
                "(select event_id from icp.alerts where status = 'pending')"
            )
        )
        # Only what a message shows, only for accounts with a pending alert: not a million reason lists.
        scores = to_frame(
            con.sql(
                "select account_id, tier, fit_score, top_positive from icp.account_scores "
                "where as_of = (select max(as_of) from icp.account_scores) "
                "and account_id in (select account_id from icp.alerts where status = 'pending')"
            )
        )
        accounts = _accounts_of(
            con, ["account_id", "name"], "select account_id from icp.alerts where status = 'pending'"
        )
        owners = read_table(con, STAGING, "owners")
    assert accounts is not None
    contexts = _contexts(ledger[LEDGER_COLUMNS], events, scores, accounts, owners)
    channels = build_channels(config, warehouse.parent / "outbox", log)
    journal = DeliveryJournal(journal_path(warehouse))
    updated, counts = deliver(
        ledger[LEDGER_COLUMNS], contexts, channels, config.alerts, dt.datetime.now(dt.UTC), journal
    )
    with connect(warehouse) as con:
        replace_table(con, "icp", "alerts", updated)
    journal.remove()
    return counts


@dg.op(description="Deliver pending alerts from the ledger (retries between nightly runs).")
def deliver_pending_alerts_op(context: dg.OpExecutionContext, icp: IcpSettings) -> None:
    counts = deliver_pending(icp.warehouse_path(), icp.load_config(), context.log)
    context.log.info(f"pending alerts delivered: {counts}")


@dg.job(executor_def=dg.in_process_executor, description="Deliver pending alerts now.", tags=WAREHOUSE_WRITER)
def deliver_pending_alerts() -> None:
    deliver_pending_alerts_op()


def pending_alert_count(warehouse: Path) -> int:
    """Pending alerts in the ledger; 0 when there is no warehouse or ledger yet."""
    if not warehouse.exists():
        return 0
    with connect(warehouse, read_only=True) as con:
        if read_table(con, "icp", "alerts") is None:
            return 0
        return int(con.execute("select count(*) from icp.alerts where status = 'pending'").fetchall()[0][0])


@dg.sensor(
    job=deliver_pending_alerts,
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Every 15 minutes: when alerts wait in the ledger (a channel was down), deliver them.",
)
def pending_alerts_sensor(context: dg.SensorEvaluationContext, icp: IcpSettings) -> dg.SensorResult:
    try:
        pending = pending_alert_count(icp.warehouse_path())
    except duckdb.Error as exc:
        return dg.SensorResult(skip_reason=f"warehouse not readable now ({type(exc).__name__}); next tick")
    if not pending:
        return dg.SensorResult(skip_reason="no pending alerts")
    return dg.SensorResult(run_requests=[dg.RunRequest()])
