"""Alert ledger rules on small frames: tier gate, routing, once per channel, cooldown, daily cap and digest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from icp_pipeline.alerts.channels import OutboxChannel
from icp_pipeline.alerts.ledger import deliver, empty_ledger, new_alerts, route
from icp_pipeline.config import AlertConfig

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
