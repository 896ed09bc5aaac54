"""Alert ledger rules on small frames: tier gate, routing, once per channel, cooldown, daily cap and digest;
and delivery that a crash can interrupt without losing or repeating what already went out."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from icp_pipeline.alerts import assets as alert_assets
from icp_pipeline.alerts import ledger as ledger_module
from icp_pipeline.alerts.assets import deliver_pending
from icp_pipeline.alerts.channels import DeliveryResult, OutboxChannel
from icp_pipeline.alerts.journal import DeliveryJournal, fold_journal, journal_path, outcome
from icp_pipeline.alerts.ledger import deliver, empty_ledger, new_alerts, route
from icp_pipeline.config import AlertConfig, IcpConfig

AS_OF = dt.date(2026, 11, 1)
NOW = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)


def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    events = pd.DataFrame(
        {
            "event_id": [f"E{i}" for i in range(6)],
            "account_id": ["A1", "A2", "A3", "A4", "A5", "A1"],
            "trigger_type": ["funding", "funding", "funding", "hiring_surge", "funding", "funding"],
            "occurred_at": pd.to_datetime(["2026-10-20"] * 6, utc=True),
            "strength": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
            "evidence": ["{}"] * 6,
        }
    )
    scores = pd.DataFrame(
        {
            "account_id": ["A1", "A2", "A3", "A4", "A5"],
            "fit_score": [90, 80, 70, 40, 85],
            "tier": ["A", "B", "B", "D", "A"],
            "disqualified": [False, False, False, False, True],
            "top_positive": ["Industry = Software: +10"] * 5,
        }
    )
    accounts = pd.DataFrame(
        {
            "account_id": ["A1", "A2", "A3", "A4", "A5"],
            "owner_id": ["U1", "U1", "U9", "U1", None],
            "name": list("abcde"),
        }
    )
    return events, scores, accounts


def owners() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "owner_id": ["U1", "U9"],
            "active": [True, False],
            "name": ["Ann", "Old"],
            "email": [None, None],
            "slack_user_id": [None, None],
        }
    )


def test_only_fitting_accounts_alert_their_active_owner_or_the_fallback() -> None:
    events, scores, accounts = frames()
    created = new_alerts(
        events, scores, route(accounts, owners(), "revops"), empty_ledger(), AlertConfig(), AS_OF, NOW
    )
    assert set(created["account_id"]) == {"A1", "A2", "A3"}  # A4 is tier D, A5 is disqualified
    recipients = created.drop_duplicates("account_id").set_index("account_id")["recipient"]
    assert recipients.to_dict() == {"A1": "U1", "A2": "U1", "A3": "revops"}  # U9 is inactive


def test_same_trigger_type_on_an_account_within_the_cooldown_is_suppressed_once_recorded() -> None:
    events, scores, accounts = frames()
    created = new_alerts(
        events, scores, route(accounts, owners(), "revops"), empty_ledger(), AlertConfig(), AS_OF, NOW
    )
    a1 = created[created["account_id"] == "A1"].set_index("event_id")["status"]
    assert a1.to_dict() == {"E0": "pending", "E5": "suppressed"}
    again = new_alerts(
        events, scores, route(accounts, owners(), "revops"), created, AlertConfig(), AS_OF, NOW
    )
    assert again.empty, "an event never alerts the same recipient on the same channel twice"


def test_daily_cap_folds_the_rest_into_one_digest(tmp_path: Path) -> None:
    events, scores, accounts = frames()
    config = AlertConfig(daily_cap_per_owner=1, cooldown_days=0)
    created = new_alerts(
        events, scores, route(accounts, owners(), "revops"), empty_ledger(), config, AS_OF, NOW
    )
    u1 = created[created["recipient"] == "U1"].sort_values("priority", ascending=False)
    assert list(u1["digest"]) == [False, True, True]
    contexts = (
        created[["alert_id", "event_id", "account_id"]]
        .merge(scores, on="account_id")
        .merge(events[["event_id", "occurred_at", "strength", "evidence"]], on="event_id")
    )
    outbox = OutboxChannel(tmp_path / "alerts.jsonl")
    delivered, counts = deliver(created, contexts, {"outbox": outbox}, config, NOW)
    assert (delivered["status"] == "sent").all()
    lines = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    digests = [line for line in lines if line.get("type") == "icp_digest"]
    assert len(digests) == 1 and len(lines) == 1 + (~created["digest"]).sum()


# --- a delivery killed half-way: the journal records what went out --------------------------------


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, no `except Exception` catches it."""


def pending_warehouse(root: Path, alerts: int) -> Path:
    """A warehouse with just what delivery reads: events, scores, accounts and a ledger of pending
    outbox alerts for two recipients."""
    warehouse = root / "warehouse.duckdb"
    ids = [f"A{i}" for i in range(alerts)]
    events = pd.DataFrame(
        {
            "event_id": [f"E{i}" for i in range(alerts)],
            "account_id": ids,
            "trigger_type": "funding",
            "occurred_at": pd.Timestamp("2026-10-20", tz="UTC"),
            "strength": 0.7,
            "evidence": "{}",
        }
    )
    scores = pd.DataFrame(
        {"account_id": ids, "as_of": AS_OF, "tier": "A", "fit_score": 80, "top_positive": "Software: +10"}
    )
    ledger = pd.DataFrame(
        {
            "alert_id": [f"al{i:02d}" for i in range(alerts)],
            "event_id": events["event_id"],
            "account_id": ids,
            "trigger_type": "funding",
            "owner_id": pd.Series([None] * alerts, dtype=object),
            "recipient": [f"U{i % 2}" for i in range(alerts)],
            "channel": "outbox",
            "status": "pending",
            "digest": False,
            "priority": [1 - i / 100 for i in range(alerts)],
            "attempts": 0,
            "created_at": pd.Timestamp(NOW),
            "sent_at": pd.Series([None] * alerts, dtype=object),
            "last_error": pd.Series([None] * alerts, dtype=object),
            "as_of": AS_OF,
        }
    )
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema icp; create schema staging")
        for table, frame in (
            ("icp.trigger_events", events),
            ("icp.account_scores", scores),
            ("staging.accounts", pd.DataFrame({"account_id": ids, "name": ids})),
        ):
            con.register("frame", frame)
            con.execute(f"create table {table} as select * from frame")
            con.unregister("frame")
        # As code before the declared schemas wrote it (icp_pipeline/schemas.py now types these columns):
        # a warehouse from then must still replay and deliver.
        con.register("frame", ledger)
        con.execute("create table icp.alerts as select * from frame")
        con.unregister("frame")
        kinds = dict(
            con.execute(
                "select column_name, data_type from duckdb_columns() where table_name = 'alerts'"
            ).fetchall()
        )
        assert kinds["last_error"] == kinds["sent_at"] == '"NULL"', (
            "as after an old first night: nothing sent yet"
        )
    return warehouse


def stored_ledger(warehouse: Path) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("select * from icp.alerts order by alert_id").df()


def test_a_delivery_killed_after_an_outbox_write_repeats_no_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process dies after the second batch reached the outbox and before anything recorded it:
    # the journal's note of where the outbox ended lets the next run count those lines as sent.
    warehouse = pending_warehouse(tmp_path, 12)
    monkeypatch.setattr(ledger_module, "OUTBOX_BATCH", 5)
    write = OutboxChannel.send_many
    batches: list[int] = []

    def dies_after_the_second_write(self: OutboxChannel, messages: list) -> list:
        results = write(self, messages)
        batches.append(len(messages))
        if len(batches) == 2:
            raise Crash
        return results

    monkeypatch.setattr(OutboxChannel, "send_many", dies_after_the_second_write)
    with pytest.raises(Crash):
        deliver_pending(warehouse, IcpConfig(), logging.getLogger(__name__))
    assert (stored_ledger(warehouse)["status"] == "pending").all(), "the ledger itself was never written"
    assert journal_path(warehouse).exists()

    monkeypatch.setattr(OutboxChannel, "send_many", write)
    counts = deliver_pending(warehouse, IcpConfig(), logging.getLogger(__name__))

    assert counts == {"sent": 2, "failed": 0}
    lines = [json.loads(line) for line in (tmp_path / "outbox" / "alerts.jsonl").read_text().splitlines()]
    keys = sorted(line["idempotency_key"] for line in lines)
    assert keys == [f"al{i:02d}" for i in range(12)], "every alert exactly once in the outbox"
    after = stored_ledger(warehouse)
    assert (after["status"] == "sent").all() and (after["attempts"] == 1).all()
    assert after["sent_at"].notna().all()
    assert not journal_path(warehouse).exists()


class SlowHttp:
    """An HTTP-like channel (no batches, no idempotency key): records what it was asked to send."""

    name = "outbox"

    def __init__(self, die_on: int | None = None) -> None:
        self.sent: list[str] = []
        self.die_on = die_on

    def send(self, message: Any) -> DeliveryResult:
        self.sent.append(message.alert_id)
        if len(self.sent) == self.die_on:
            raise Crash  # sent, but the process dies before the answer is recorded
        return DeliveryResult("sent", 1, None)


def test_a_delivery_killed_mid_http_send_repeats_only_the_message_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = pending_warehouse(tmp_path, 8)
    dying = SlowHttp(die_on=4)
    monkeypatch.setattr(alert_assets, "build_channels", lambda *args: {"outbox": dying})
    with pytest.raises(Crash):
        deliver_pending(warehouse, IcpConfig(), logging.getLogger(__name__))

    rerun = SlowHttp()
    monkeypatch.setattr(alert_assets, "build_channels", lambda *args: {"outbox": rerun})
    counts = deliver_pending(warehouse, IcpConfig(), logging.getLogger(__name__))

    assert counts["sent"] == 5, "three were journaled as sent; the fourth was in flight"
    everything = dying.sent + rerun.sent
    assert sorted(set(everything)) == [f"al{i:02d}" for i in range(8)]
    repeated = {alert for alert in everything if everything.count(alert) > 1}
    assert repeated == {dying.sent[-1]} and len(everything) == 8 + 1
    assert (stored_ledger(warehouse)["status"] == "sent").all()


def test_folding_a_journal_twice_changes_nothing_and_a_torn_record_is_ignored(tmp_path: Path) -> None:
    warehouse = pending_warehouse(tmp_path, 3)
    journal = DeliveryJournal(journal_path(warehouse))
    journal.settled(1, [outcome("al00", "sent", 1, None, "2026-11-01T02:00:00+00:00", "al00")])
    journal.settled(2, [outcome("al01", "pending", 1, "HTTP 500", None, "al01")])
    journal.close()
    text = journal_path(warehouse).read_text()
    with journal_path(warehouse).open("a") as handle:
        handle.write('{"batch": 3, "outcomes": [{"alert_id": "al02", "sta')

    assert fold_journal(warehouse) == 2
    once = stored_ledger(warehouse)
    journal_path(warehouse).write_text(text)  # a crash between the fold's commit and the unlink
    assert fold_journal(warehouse) == 2
    twice = stored_ledger(warehouse)

    pd.testing.assert_frame_equal(once, twice)
    assert once.set_index("alert_id")["status"].to_dict() == {
        "al00": "sent",
        "al01": "pending",
        "al02": "pending",
    }
    assert once.set_index("alert_id")["attempts"].to_dict() == {"al00": 1, "al01": 1, "al02": 0}
    assert once.set_index("alert_id").loc["al01", "last_error"] == "HTTP 500"
    assert not journal_path(warehouse).exists()
