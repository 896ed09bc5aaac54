"""The alert ledger: which trigger events become alerts, to whom, and whether they were delivered.

An alert's id is a hash of (event, recipient, channel), and the ledger never forgets one, so an
event alerts a recipient at most once per channel across reruns and backfills. Events on
accounts below the minimum tier or disqualified never become alerts. A repeat of the same
trigger type on the same account within the cooldown is recorded as suppressed. Beyond the
per-recipient daily cap, alerts are folded into one digest. A failed delivery leaves the alert
`pending` (with attempts and the last error) for the next run; only after `max_attempts` is it
`failed`, and it stays in the ledger. Nothing is dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from icp_pipeline.alerts.channels import AlertMessage, Channel, DeliveryResult, Digest
from icp_pipeline.config import AlertConfig

log = logging.getLogger(__name__)

LEDGER_COLUMNS = [
    "alert_id",
    "event_id",
    "account_id",
    "trigger_type",
    "owner_id",
    "recipient",
    "channel",
    "status",
    "digest",
    "priority",
    "attempts",
    "created_at",
    "sent_at",
    "last_error",
    "as_of",
]
TIER_ORDER = {"A": 0, "B": 1, "C": 2, "D": 3}
OPEN_STATUSES = ("pending",)


def empty_ledger() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype="object") for column in LEDGER_COLUMNS})
    for column in ("created_at", "sent_at"):
        frame[column] = frame[column].astype("datetime64[us, UTC]")
    return frame


def alert_ids(event_ids: pd.Series, recipients: pd.Series, channels: pd.Series) -> pd.Series:
    joined = event_ids.astype("str") + "|" + recipients.astype("str") + "|" + channels.astype("str")
    return joined.map(lambda text: hashlib.sha1(text.encode()).hexdigest()[:16])


def route(accounts: pd.DataFrame, owners: pd.DataFrame | None, fallback: str) -> pd.DataFrame:
    """account_id -> (owner_id, recipient): the owner when active, else the fallback recipient."""
    routed = accounts[["account_id", "owner_id"]].copy()
    if owners is None or owners.empty:
        routed["recipient"] = fallback
        routed["owner_id"] = None
        return routed
    active = owners[owners["active"].fillna(True).astype(bool)]["owner_id"]
    is_active = routed["owner_id"].isin(active)
    routed["recipient"] = routed["owner_id"].where(is_active, fallback)
    routed["owner_id"] = routed["owner_id"].where(is_active, None)
    return routed


def new_alerts(
    events: pd.DataFrame,
    scores: pd.DataFrame,
    routing: pd.DataFrame,
    ledger: pd.DataFrame,
    config: AlertConfig,
    as_of: dt.date,
    now: dt.datetime,
) -> pd.DataFrame:
    """Ledger rows for events that have not alerted their recipient on a channel before."""
    eligible = events.merge(
        scores[["account_id", "fit_score", "tier", "disqualified"]], on="account_id", how="inner"
    )
    eligible = eligible[
        (eligible["tier"].map(TIER_ORDER) <= TIER_ORDER[config.min_tier])
        & ~eligible["disqualified"].astype(bool)
    ]
    eligible = eligible.merge(routing, on="account_id", how="left")
    eligible["recipient"] = eligible["recipient"].fillna(config.fallback_recipient)
    channels = [channel.kind for channel in config.channels]
    rows = eligible.loc[eligible.index.repeat(len(channels))].reset_index(drop=True)
    rows["channel"] = np.tile(channels, len(eligible))
    if rows.empty:
        return empty_ledger()
    rows["alert_id"] = alert_ids(rows["event_id"], rows["recipient"], rows["channel"]).to_numpy()
    rows = rows[~rows["alert_id"].isin(ledger["alert_id"])].drop_duplicates("alert_id")
    age_days = (pd.Timestamp(as_of, tz="UTC") - pd.to_datetime(rows["occurred_at"], utc=True)).dt.days.clip(
        lower=0
    )
    recency = (1 - age_days / 90).clip(0, 1)
    rows["priority"] = (
        0.5 * rows["fit_score"] / 100 + 0.3 * rows["strength"].astype(float) + 0.2 * recency
    ).round(3)
    rows = rows.sort_values(["priority", "alert_id"], ascending=[False, True], kind="stable")
    rows["status"] = "pending"
    rows["digest"] = False
    rows["last_error"] = None
    cooled = _in_cooldown(rows, ledger, config, now)
    rows.loc[cooled, "status"] = "suppressed"
    rows.loc[cooled, "last_error"] = f"cooldown: same trigger type alerted within {config.cooldown_days} days"
    rows.loc[~cooled, "digest"] = _over_cap(rows[~cooled], ledger, config, now)
    rows["attempts"] = 0
    rows["created_at"] = pd.Series(pd.Timestamp(now), index=rows.index).astype("datetime64[us, UTC]")
    rows["sent_at"] = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[us, UTC]")
    rows["as_of"] = as_of
    return rows[LEDGER_COLUMNS].reset_index(drop=True)


def _in_cooldown(
    rows: pd.DataFrame, ledger: pd.DataFrame, config: AlertConfig, now: dt.datetime
) -> np.ndarray:
    """True where the account had the same trigger type alerted to this recipient recently,
    or an earlier row of this batch already covers it."""
    key = ["account_id", "trigger_type", "recipient", "channel"]
    within = pd.Timestamp(now) - pd.Timedelta(days=config.cooldown_days)
    recent = ledger[
        (ledger["status"] != "suppressed") & (pd.to_datetime(ledger["created_at"], utc=True) >= within)
    ]
    seen = (
        rows[key]
        .merge(recent[key].drop_duplicates(), on=key, how="left", indicator=True)["_merge"]
        .eq("both")
    )
    repeated = rows.duplicated(subset=key, keep="first")
    return (
        (seen.to_numpy() | repeated.to_numpy()) if config.cooldown_days else np.zeros(len(rows), dtype=bool)
    )


def _over_cap(rows: pd.DataFrame, ledger: pd.DataFrame, config: AlertConfig, now: dt.datetime) -> np.ndarray:
    """Alerts beyond a recipient's daily cap (highest priority first) go into that day's digest."""
    today = pd.Timestamp(now).normalize()
    earlier = (
        ledger[(pd.to_datetime(ledger["created_at"], utc=True) >= today) & (ledger["status"] != "suppressed")]
        .groupby(["recipient", "channel"])
        .size()
    )
    rank = rows.groupby(["recipient", "channel"]).cumcount()
    already = pd.MultiIndex.from_frame(rows[["recipient", "channel"]]).map(
        lambda key: int(earlier.get(key, 0))
    )
    return (rank.to_numpy() + np.asarray(already)) >= config.daily_cap_per_owner


def _present(value: Any) -> Any:
    """None for every flavour of missing (None, NaN, pd.NA, NaT), the value otherwise."""
    return None if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)) else value


def build_message(row: Mapping[str, Any], context: Mapping[str, Any], template: str | None) -> AlertMessage:
    """An AlertMessage from a ledger row and its account, score, owner and event context."""
    row = {key: _present(value) for key, value in row.items()}
    context = {key: _present(value) for key, value in context.items()}
    return AlertMessage(
        alert_id=str(row["alert_id"]),
        event_id=str(row["event_id"]),
        account_id=str(row["account_id"]),
        account_name=str(context.get("name") or row["account_id"]),
        owner_id=row.get("owner_id") or None,
        owner_name=context.get("owner_name") or None,
        owner_email=context.get("owner_email") or None,
        slack_user_id=context.get("slack_user_id") or None,
        tier=str(context.get("tier", "")),
        fit_score=int(context.get("fit_score", 0)),
        top_reasons=str(context.get("top_positive") or ""),
        trigger_type=str(row["trigger_type"]),
        occurred_at=str(pd.Timestamp(context["occurred_at"]).date())
        if context.get("occurred_at") is not None
        else "",
        strength=float(context.get("strength", 0.0)),
        priority=float(row["priority"]),
        evidence=json.loads(context["evidence"]) if context.get("evidence") else {},
        crm_url=template.format(account_id=row["account_id"]) if template else None,
    )


def deliver(
    ledger: pd.DataFrame,
    contexts: pd.DataFrame,
    channels: Mapping[str, Channel],
    config: AlertConfig,
    now: dt.datetime,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Send every pending alert with attempts left; digests go one message per recipient."""
    ledger = ledger.copy()
    counts = {"sent": 0, "failed": 0}
    open_rows = ledger["status"].isin(OPEN_STATUSES) & (ledger["attempts"].astype(int) < config.max_attempts)
    by_alert = contexts.set_index("alert_id") if len(contexts) else pd.DataFrame()
    todo = ledger[open_rows & ledger["channel"].isin(list(channels))]
    for (recipient, channel_name, digest), group in todo.groupby(
        ["recipient", "channel", "digest"], sort=True
    ):
        channel = channels[channel_name]
        messages = [
            build_message(
                row,
                by_alert.loc[row["alert_id"]].to_dict() if row["alert_id"] in by_alert.index else {},
                config.crm_url_template,
            )
            for _, row in group.sort_values("priority", ascending=False).iterrows()
        ]
        if digest:
            first = messages[0]
            digest_message = Digest(str(recipient), first.owner_name, first.slack_user_id, tuple(messages))
            results = [_send(channel, digest_message)] * len(messages)
        else:
            results = [_send(channel, message) for message in messages]
        _record(ledger, group.index, results, now, counts, config.max_attempts)
    return ledger, counts


def _send(channel: Channel, message: AlertMessage | Digest) -> DeliveryResult:
    """A channel error becomes a failed attempt on that alert, never a lost ledger."""
    try:
        return channel.send(message)
    except Exception as exc:  # noqa: BLE001 - one bad message must not stop delivery of the rest
        log.exception("alert delivery raised %s", type(exc).__name__)
        return DeliveryResult(status="failed", attempts=1, error=f"internal error: {type(exc).__name__}")


def _record(
    ledger: pd.DataFrame,
    index: pd.Index,
    results: list[DeliveryResult],
    now: dt.datetime,
    counts: dict[str, int],
    max_attempts: int,
) -> None:
    """A failed attempt leaves the alert pending for the next run; `failed` is final (attempts used up)."""
    for position, result in zip(index, results, strict=True):
        attempts = int(ledger.loc[position, "attempts"]) + result.attempts
        ledger.loc[position, "attempts"] = attempts
        ledger.loc[position, "last_error"] = result.error
        if result.status == "sent":
            ledger.loc[position, "status"] = "sent"
            ledger.loc[position, "sent_at"] = pd.Timestamp(now)
        else:
            ledger.loc[position, "status"] = "failed" if attempts >= max_attempts else "pending"
        counts[result.status] += 1
