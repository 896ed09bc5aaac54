"""The alert ledger: which trigger events become alerts, to whom, and whether they were delivered.

An alert's id is a hash of (event, recipient, channel), and the ledger never forgets one, so an
event alerts a recipient at most once per channel across reruns and backfills. Events on
accounts below the minimum tier or disqualified never become alerts. A repeat of the same
trigger type on the same account within the cooldown is recorded as suppressed. Beyond the
per-recipient daily cap, alerts are folded into one digest. A failed delivery leaves the alert
`pending` (with attempts and the last error) for the next run; only after `max_attempts` is it
`failed`, and it stays in the ledger. Nothing is dropped.

Each outcome is journaled as it happens (see `journal.py`), so a delivery killed half-way is
neither lost nor repeated: the next run folds the journal into the ledger before it sends.
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

from icp_pipeline.alerts.channels import AlertMessage, Channel, DeliveryResult, Digest, idempotency_key
from icp_pipeline.alerts.journal import DeliveryJournal, outcome
from icp_pipeline.config import AlertConfig
from icp_pipeline.frames import isin, records

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
# What `build_message` reads from a ledger row and from its context.
MESSAGE_ROW = ("alert_id", "event_id", "account_id", "owner_id", "trigger_type", "priority", "channel")
MESSAGE_CONTEXT = (
    "name",
    "owner_name",
    "owner_email",
    "slack_user_id",
    "tier",
    "fit_score",
    "top_positive",
    "occurred_at",
    "strength",
    "evidence",
)
OPEN_STATUSES = ("pending",)
# Messages per outbox write (one write, one fsync, two journal records): a crash during a batch
# repeats none of them (the journal finds its lines), so the size only bounds memory and latency.
OUTBOX_BATCH = 500


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
    rows = rows[~isin(rows["alert_id"], ledger["alert_id"])].drop_duplicates("alert_id")
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
    # Earlier alerts of the day per (recipient, channel), looked up for all rows in one merge.
    already = (
        rows[["recipient", "channel"]]
        .merge(earlier.rename("already").reset_index(), on=["recipient", "channel"], how="left")["already"]
        .fillna(0)
        .to_numpy(dtype=np.int64)
    )
    return (rank.to_numpy() + already) >= config.daily_cap_per_owner


def _present(value: Any) -> Any:
    """None for every flavour of missing (None, NaN, pd.NA, NaT), the value otherwise."""
    return None if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)) else value


def build_message(row: Mapping[str, Any], context: Mapping[str, Any], template: str | None) -> AlertMessage:
    """An AlertMessage from a ledger row and its account, score, owner and event context.

    Missing values of any flavour read as None; only the fields a message uses are looked at.
    """

    def field(values: Mapping[str, Any], key: str, default: Any = None) -> Any:
        return _present(values.get(key, default))

    account_id = _present(row["account_id"])
    occurred_at = field(context, "occurred_at")
    evidence = field(context, "evidence")
    return AlertMessage(
        alert_id=str(_present(row["alert_id"])),
        event_id=str(_present(row["event_id"])),
        account_id=str(account_id),
        account_name=str(field(context, "name") or account_id),
        owner_id=field(row, "owner_id") or None,
        owner_name=field(context, "owner_name") or None,
        owner_email=field(context, "owner_email") or None,
        slack_user_id=field(context, "slack_user_id") or None,
        tier=str(field(context, "tier", "")),
        fit_score=int(field(context, "fit_score", 0)),
        top_reasons=str(field(context, "top_positive") or ""),
        trigger_type=str(_present(row["trigger_type"])),
        occurred_at=str(pd.Timestamp(occurred_at).date()) if occurred_at is not None else "",
        strength=float(field(context, "strength", 0.0)),
        priority=float(_present(row["priority"])),
        evidence=json.loads(evidence) if evidence else {},
        crm_url=template.format(account_id=account_id) if template else None,
    )


def deliver(
    ledger: pd.DataFrame,
    contexts: pd.DataFrame,
    channels: Mapping[str, Channel],
    config: AlertConfig,
    now: dt.datetime,
    journal: DeliveryJournal | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Send every pending alert with attempts left; digests go one message per recipient.

    Messages are sent per (recipient, channel, digest) group in priority order, as before; a
    channel that can send a batch (the outbox: one write and one fsync) gets its messages in
    batches of `OUTBOX_BATCH`, in that same order. Each message's (or batch's) outcome goes to the
    journal as soon as it is known; the returned ledger holds them all, for one write by the caller.
    """
    ledger = ledger.copy()
    counts = {"sent": 0, "failed": 0}
    open_rows = ledger["status"].isin(OPEN_STATUSES) & (ledger["attempts"].astype(int) < config.max_attempts)
    by_alert: dict[Any, dict[str, Any]] = {}
    if len(contexts):
        unique = contexts[~contexts["alert_id"].duplicated(keep="first")]
        shown = [c for c in MESSAGE_CONTEXT if c in unique.columns]
        by_alert = dict(zip(unique["alert_id"], records(unique[shown]), strict=True))
    todo = ledger[open_rows & ledger["channel"].isin(list(channels))]
    # One conversion of the fields a message reads, not one per group; groups as position arrays.
    rows = records(todo[list(MESSAGE_ROW)])
    labels, priority = todo.index.to_numpy(), todo["priority"].to_numpy()
    recipients, digests = todo["recipient"].to_numpy(), todo["digest"].to_numpy()
    # The groups in key order, each as the positions of its rows in ledger order (as groupby yields them).
    group_of = todo.groupby(["recipient", "channel", "digest"], sort=True).ngroup().to_numpy()
    by_group = np.argsort(group_of, kind="stable")
    boundaries = np.flatnonzero(group_of[by_group][1:] != group_of[by_group][:-1]) + 1
    # Per channel: the items to send in order, and for each item the ledger positions it settles.
    outgoing: dict[str, list[tuple[AlertMessage | Digest, list[Any]]]] = {}
    for members in np.split(by_group, boundaries) if len(todo) else []:
        recipient, channel_name, digest = (
            recipients[members[0]],
            rows[members[0]]["channel"],
            digests[members[0]],
        )
        ordered = members[_by_priority(priority[members])]
        messages = [
            build_message(rows[i], by_alert.get(rows[i]["alert_id"], {}), config.crm_url_template)
            for i in ordered
        ]
        items = outgoing.setdefault(str(channel_name), [])
        if digest:
            first = messages[0]
            digest_message = Digest(str(recipient), first.owner_name, first.slack_user_id, tuple(messages))
            items.append((digest_message, list(labels[ordered])))
        else:
            items.extend((message, [label]) for message, label in zip(messages, labels[ordered], strict=True))
    positions: list[Any] = []
    results: list[DeliveryResult] = []
    # What a journal record needs per ledger label, looked up once (`.at` costs ~60 us a call).
    facts = zip(todo["alert_id"].astype(str), todo["attempts"].astype(int), strict=True)
    before = dict(zip(labels, facts, strict=True))
    batch = 0
    for channel_name, items in outgoing.items():
        channel = channels[channel_name]
        step = OUTBOX_BATCH if getattr(channel, "send_many", None) is not None else 1
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            batch += 1
            position, outbox = getattr(channel, "position", None), getattr(channel, "path", None)
            if journal is not None and position is not None and outbox is not None:
                assumed = [DeliveryResult("sent", 1, None)] * len(chunk)
                journal.intent(batch, outbox, position(), _outcomes(before, chunk, assumed, now, config))
            sent = _send_all(channel, [item for item, _ in chunk])
            if journal is not None:
                journal.settled(batch, _outcomes(before, chunk, sent, now, config))
            for (_, settled), result in zip(chunk, sent, strict=True):
                positions.extend(settled)
                results.extend([result] * len(settled))
    if journal is not None:
        journal.close()
    # The in-memory ledger is updated once; `_outcomes` above reads it unchanged, as each alert
    # is settled once per delivery.
    _record(ledger, positions, results, now, counts, config.max_attempts)
    return ledger, counts


def _outcomes(
    before: Mapping[Any, tuple[str, int]],
    chunk: list[tuple[AlertMessage | Digest, list[Any]]],
    results: list[DeliveryResult],
    now: dt.datetime,
    config: AlertConfig,
) -> list[dict[str, Any]]:
    """The journal records of a sent chunk: each alert's new status, attempts, error and sent time,
    exactly as `_record` sets them; `before` maps a ledger label to (alert_id, attempts so far)."""
    records = []
    sent_at = pd.Timestamp(now).isoformat()
    for (message, settled), result in zip(chunk, results, strict=True):
        key = idempotency_key(message)
        sent = result.status == "sent"
        for label in settled:
            alert_id, attempts = before[label]
            attempts += result.attempts
            status = "sent" if sent else "failed" if attempts >= config.max_attempts else "pending"
            records.append(outcome(alert_id, status, attempts, result.error, sent_at if sent else None, key))
    return records


def _by_priority(priority: np.ndarray) -> np.ndarray:
    """Positions in descending priority, exactly as `DataFrame.sort_values(ascending=False)` orders
    them (quicksort on the reversed values, reversed back), without building a frame per group."""
    values = np.asarray(priority)
    if values.dtype.kind != "f" or np.isnan(values).any():
        return pd.Series(values).sort_values(ascending=False).index.to_numpy()
    descending = np.arange(len(values))[::-1]
    return descending[values[::-1].argsort(kind="quicksort")][::-1]


def _send_all(channel: Channel, messages: list[AlertMessage | Digest]) -> list[DeliveryResult]:
    """One result per message: a batch when the channel supports it, else one send each."""
    send_many = getattr(channel, "send_many", None)
    if send_many is None:
        return [_send(channel, message) for message in messages]
    try:
        return list(send_many(messages))
    except Exception as exc:  # noqa: BLE001 - a failed batch stays pending, the ledger survives
        log.exception("alert delivery raised %s", type(exc).__name__)
        failed = DeliveryResult(status="failed", attempts=1, error=f"internal error: {type(exc).__name__}")
        return [failed] * len(messages)


def _send(channel: Channel, message: AlertMessage | Digest) -> DeliveryResult:
    """A channel error becomes a failed attempt on that alert, never a lost ledger."""
    try:
        return channel.send(message)
    except Exception as exc:  # noqa: BLE001 - one bad message must not stop delivery of the rest
        log.exception("alert delivery raised %s", type(exc).__name__)
        return DeliveryResult(status="failed", attempts=1, error=f"internal error: {type(exc).__name__}")


def _record(
    ledger: pd.DataFrame,
    positions: list[Any],
    results: list[DeliveryResult],
    now: dt.datetime,
    counts: dict[str, int],
    max_attempts: int,
) -> None:
    """A failed attempt leaves the alert pending for the next run; `failed` is final (attempts used up)."""
    if not positions:
        return
    index = pd.Index(positions)
    sent = np.array([result.status == "sent" for result in results], dtype=bool)
    attempts = ledger.loc[index, "attempts"].astype(int).to_numpy() + np.array(
        [result.attempts for result in results], dtype=np.int64
    )
    ledger.loc[index, "attempts"] = attempts
    ledger.loc[index, "last_error"] = pd.Series(
        [result.error for result in results], index=index, dtype=object
    )
    ledger.loc[index, "status"] = np.where(
        sent, "sent", np.where(attempts >= max_attempts, "failed", "pending")
    )
    if sent.any():
        ledger.loc[index[sent], "sent_at"] = pd.Timestamp(now)
    counts["sent"] += int(sent.sum())
    counts["failed"] += int((~sent).sum())
