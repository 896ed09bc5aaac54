"""The delivery journal: each alert's delivery outcome, made durable the moment it is known.

The ledger (`icp.alerts`) is rewritten once, after a whole delivery; a process killed before that
would forget every message it had already sent, and the next run would send them all again. So
each outcome is first appended to a small JSON-lines file next to the warehouse
(`<warehouse>.delivery-journal.jsonl`) and fsync'd, one message at a time for the HTTP channels
and one batch at a time for the outbox. The next delivery folds a leftover journal into the ledger
(one DuckDB transaction) before it reads what is pending; a finished delivery deletes it.

Why a file and not a DuckDB commit per message: an fsync'd append costs about 0.2 ms, opening the
warehouse, updating one row and closing it about 27 ms, and holding a write connection through a
slow webhook would lock every other reader (sensors, the report) out of the warehouse meanwhile.

What a crash can still repeat: an HTTP message that was sent but whose answer was not yet
journaled (at most one per channel, the one in flight). The generic webhook carries the alert id
as `Idempotency-Key`, Slack has no such key. The outbox repeats nothing: before a batch is written
the journal records where the outbox ended, and folding reads the lines after that point, so
lines written just before a crash count as sent. Outcomes are absolute values (status, attempts,
error, sent time), so folding the same journal twice changes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from icp_pipeline.alerts.channels import outbox_keys_since
from icp_pipeline.warehouse import connect, registered, table_exists, transaction

JOURNAL_SUFFIX = ".delivery-journal.jsonl"
OUTCOME_FIELDS = ("alert_id", "status", "attempts", "last_error", "sent_at")
COLUMN_TYPES = {
    "status": "VARCHAR",
    "attempts": "BIGINT",
    "last_error": "VARCHAR",
    "sent_at": "TIMESTAMP WITH TIME ZONE",
}


def journal_path(warehouse: Path) -> Path:
    """The journal beside the warehouse file it belongs to."""
    return warehouse.with_name(warehouse.name + JOURNAL_SUFFIX)


class DeliveryJournal:
    """Appends outcome records to the journal file, each followed by an fsync; created on first use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle: Any = None

    def intent(self, batch: int, outbox: Path, offset: int, outcomes: list[dict[str, Any]]) -> None:
        """Before an outbox batch: where the outbox ends now, and each alert's outcome if its line lands."""
        record = {"batch": batch, "outbox": str(Path(outbox).resolve()), "offset": offset}
        self._append({**record, "if_written": outcomes})

    def settled(self, batch: int, outcomes: list[dict[str, Any]]) -> None:
        """After a send: what happened to each alert it carried."""
        self._append({"batch": batch, "outcomes": outcomes})

    def _append(self, record: Mapping[str, Any]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("ab", buffering=0)
        data = (json.dumps(record, default=str) + "\n").encode("utf-8")
        written = 0
        while written < len(data):
            written += self._handle.write(data[written:]) or 0
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        """The ledger holds every outcome now: the journal is done."""
        self.close()
        self.path.unlink(missing_ok=True)


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    """Every outcome the journal proves, in order: settled batches, and of an outbox batch that was
    never settled (the process died while writing it) the alerts whose lines are in the outbox."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for line in text.split("\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line: that outcome was never made durable
        if isinstance(record, dict) and "batch" in record:
            records.append(record)
    settled = {record["batch"] for record in records if "outcomes" in record}
    outcomes: list[dict[str, Any]] = []
    for record in records:
        if "outcomes" in record:
            outcomes.extend(record["outcomes"])
        elif record["batch"] not in settled:
            written = outbox_keys_since(Path(record["outbox"]), int(record["offset"]))
            outcomes.extend(item for item in record["if_written"] if item.get("key") in written)
    return outcomes


def fold_journal(warehouse: Path) -> int:
    """Apply a leftover journal to the ledger in one transaction, then delete it; the alerts updated."""
    path = journal_path(warehouse)
    if not path.exists():
        return 0
    outcomes = read_outcomes(path)
    if outcomes:
        updates = _latest(outcomes)
        with connect(warehouse) as con:
            if table_exists(con, "icp", "alerts"):
                _apply(con, updates)
    path.unlink(missing_ok=True)
    return len(_latest(outcomes)) if outcomes else 0


def _latest(outcomes: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per alert: its last outcome."""
    frame = pd.DataFrame([{field: item.get(field) for field in OUTCOME_FIELDS} for item in outcomes])
    frame = frame.drop_duplicates("alert_id", keep="last").reset_index(drop=True)
    frame["attempts"] = frame["attempts"].astype("int64")
    frame["last_error"] = frame["last_error"].astype(object)
    frame["sent_at"] = pd.to_datetime(frame["sent_at"], utc=True, format="ISO8601").astype(
        "datetime64[us, UTC]"
    )
    return frame


def _apply(con: Any, updates: pd.DataFrame) -> None:
    with registered(con, "_outcomes", updates) as columns, transaction(con):
        # A ledger written while a column was empty throughout (no error yet, nothing sent yet)
        # stores it as DuckDB's NULL type, which takes no value: give it its real type first.
        kinds = dict(
            con.execute(
                "select column_name, data_type from duckdb_columns() "
                "where schema_name = 'icp' and table_name = 'alerts'"
            ).fetchall()
        )
        for column, kind in COLUMN_TYPES.items():
            if kinds.get(column, kind) != kind:
                con.execute(f'alter table icp.alerts alter "{column}" type {kind}')
        con.execute(
            "update icp.alerts set status = o.status, attempts = o.attempts, "
            "last_error = o.last_error, sent_at = coalesce(o.sent_at, icp.alerts.sent_at) "
            f"from (select {columns} from _outcomes) o where icp.alerts.alert_id = o.alert_id"
        )


def outcome(
    alert_id: str, status: str, attempts: int, error: str | None, sent_at: str | None, key: str
) -> dict[str, Any]:
    """One journal outcome record; `sent_at` is an ISO timestamp with its offset, or None."""
    return {
        "alert_id": alert_id,
        "status": status,
        "attempts": int(attempts),
        "last_error": error,
        "sent_at": sent_at,
        "key": key,
    }
