"""One write-back run: plan the changes, send them in batches within the call budget, keep the ledger.

The ledger is updated every CALLS_PER_LEDGER_WRITE calls and whenever a run stops, so a crash
re-sends at most that many calls' worth (updates are idempotent), and whatever was not sent (budget
spent, CRM unavailable, records refused) still differs next night. No warehouse connection is held
while a request is in flight: one writer at a time is all DuckDB allows.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from icp_pipeline.config import WritebackConfig
from icp_pipeline.errors import IcpConfigError
from icp_pipeline.warehouse import connect
from icp_pipeline.writeback.client import CallBudgetExhausted, CrmClient, CrmUnavailable, CrmWriter
from icp_pipeline.writeback.hubspot import HubSpotWriter
from icp_pipeline.writeback.plan import (
    SAMPLE_SIZE,
    WritebackPlan,
    crm_records,
    ensure_tables,
    plan_writeback,
    record_failed,
    record_pushed,
    record_run,
)
from icp_pipeline.writeback.salesforce import SalesforceWriter

MAX_REJECTED_IN_A_ROW = 3
# The ledger is written after this many calls (and when a run stops): a crash re-sends at most these.
CALLS_PER_LEDGER_WRITE = 20
_BLANKS: dict[str, Any] = {
    HubSpotWriter.name: HubSpotWriter.blank,
    SalesforceWriter.name: SalesforceWriter.blank,
}


@dataclass(frozen=True)
class WritebackReport:
    """What a run changed or, in dry-run, would change; `stopped` says why it ended early."""

    target: str
    dry_run: bool
    as_of: dt.date | None
    scored: int
    changed: int
    never_pushed: int
    calls: int
    pushed: int
    failed: int
    remaining: int
    budget_left: int
    calls_needed: int
    stopped: str | None
    field_changes: dict[str, int]
    sample: list[dict[str, Any]]
    failures: list[tuple[str, str]] = field(default_factory=list)
    invalid_ids: int = 0
    invalid_id_sample: list[str] = field(default_factory=list)


def make_writer(config: WritebackConfig, client: CrmClient) -> CrmWriter:
    if config.target == "salesforce":
        return SalesforceWriter(
            client, config.resolved_base_url(), config.api_version, config.resolved_object_type()
        )
    return HubSpotWriter(client, config.resolved_base_url(), config.resolved_object_type())


def run_writeback(
    warehouse: Path,
    config: WritebackConfig,
    as_of: dt.date,
    env: Mapping[str, str],
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Any = None,
) -> WritebackReport:
    """Write the changed accounts' ICP fields to the configured CRM (or only report them in dry-run)."""
    log = log or logging.getLogger(__name__)
    fields = config.field_map()
    batch_size = config.resolved_batch_size()
    with connect(warehouse, read_only=True) as con:
        plan = plan_writeback(con, config, as_of)
    changes = plan.changes
    report = _Tally(warehouse, plan, config, batch_size)
    if plan.newer_as_of is not None:
        return report.finish(
            f"scores as of {plan.newer_as_of} exist; a backfill of {as_of} does not overwrite the CRM",
            config.max_calls,
        )
    if plan.as_of is None:
        return report.finish("no scores to write yet", config.max_calls)
    if plan.invalid_ids:
        log.warning(
            f"writeback: {plan.invalid_ids:,} account id(s) are not {config.target} record ids and are skipped, "
            f"e.g. {', '.join(plan.invalid_id_sample[:3])}"
        )
    if config.dry_run or changes.empty:
        return report.finish(None, config.max_calls)
    token_env = config.resolved_token_env()
    token = (env.get(token_env) or "").strip()
    if not token:
        raise IcpConfigError(f"writeback to {config.target}: environment variable {token_env} is not set")
    client = CrmClient(config.target, token, token_env, config.retry, config.max_calls, session, sleep)
    writer = make_writer(config, client)
    stopped: str | None = None
    try:
        for start in range(0, len(changes), batch_size * CALLS_PER_LEDGER_WRITE):
            chunk = changes.iloc[start : start + batch_size * CALLS_PER_LEDGER_WRITE]
            stopped = _send_chunk(chunk, writer, fields, batch_size, report)
            if stopped:
                break
    except IcpConfigError as exc:
        report.finish(str(exc), client.budget_left, client.calls)
        raise
    if stopped:
        log.warning(f"writeback stopped early: {stopped}")
    return report.finish(stopped, client.budget_left, client.calls)


def _send_chunk(
    chunk: pd.DataFrame, writer: CrmWriter, fields: dict[str, str], batch_size: int, report: _Tally
) -> str | None:
    """Send one chunk batch by batch, then record its outcomes in the ledger, even when a call raised.

    Returns why the run must stop, or None to go on.
    """
    ids = chunk["account_id"].astype(str).tolist()
    records = crm_records(chunk, fields, writer.blank)
    pushed: list[str] = []
    failed: dict[str, str] = {}
    try:
        for start in range(0, len(ids), batch_size):
            try:
                outcome = writer.send_batch(
                    ids[start : start + batch_size], records[start : start + batch_size]
                )
            except (CallBudgetExhausted, CrmUnavailable) as exc:
                return str(exc)
            pushed += outcome.pushed
            failed.update(outcome.failed)
            report.rejected_in_a_row = report.rejected_in_a_row + 1 if outcome.rejected else 0
            if report.rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
                return f"{writer.name} refused {report.rejected_in_a_row} calls in a row: {outcome.rejected}"
        return None
    finally:
        report.record(chunk[chunk["account_id"].isin(pushed)], failed, list(fields))


class _Tally:
    """Counts of one run, finished into a report and a row of `icp.writeback_runs`."""

    def __init__(
        self, warehouse: Path, plan: WritebackPlan, config: WritebackConfig, batch_size: int
    ) -> None:
        self.warehouse = warehouse
        self.plan, self.config, self.batch_size = plan, config, batch_size
        self.pushed = 0
        self.failures: dict[str, str] = {}
        self.rejected_in_a_row = 0

    def record(self, pushed: pd.DataFrame, failed: Mapping[str, str], fields: list[str]) -> None:
        """Ledger rows for what the CRM confirmed or refused; nothing is held open between calls."""
        if pushed.empty and not failed:
            return
        now = dt.datetime.now(dt.UTC)
        refused = pd.DataFrame({"account_id": list(failed), "error": list(failed.values())})
        with connect(self.warehouse) as con:
            ensure_tables(con)
            record_pushed(con, pushed, self.plan, fields, now)
            record_failed(con, refused, self.plan.target, now)
        self.pushed += len(pushed)
        self.failures.update(failed)

    def finish(self, stopped: str | None, budget_left: int, calls: int = 0) -> WritebackReport:
        plan, config = self.plan, self.config
        changes = plan.changes
        sent_or_refused = self.pushed + len(self.failures)
        head = changes.head(SAMPLE_SIZE)
        records = crm_records(head, config.field_map(), _BLANKS[config.target])
        sample = [
            {"id": record_id, **record}
            for record_id, record in zip(head["account_id"].astype(str), records, strict=True)
        ]
        report = WritebackReport(
            target=config.target,
            dry_run=config.dry_run,
            as_of=plan.as_of,
            scored=plan.scored,
            changed=len(changes),
            never_pushed=int(changes["never_pushed"].sum()) if len(changes) else 0,
            calls=calls,
            pushed=self.pushed,
            failed=len(self.failures),
            remaining=len(changes) - sent_or_refused,
            budget_left=budget_left,
            calls_needed=math.ceil(len(changes) / self.batch_size),
            stopped=stopped,
            field_changes=plan.field_changes,
            sample=sample,
            failures=list(self.failures.items())[:SAMPLE_SIZE],
            invalid_ids=plan.invalid_ids,
            invalid_id_sample=plan.invalid_id_sample,
        )
        with connect(self.warehouse) as con:
            ensure_tables(con)
            record_run(
                con,
                {
                    "run_at": dt.datetime.now(dt.UTC),
                    "as_of": plan.as_of,
                    "target": config.target,
                    "dry_run": config.dry_run,
                    "scored": report.scored,
                    "changed": report.changed,
                    "calls": report.calls,
                    "pushed": report.pushed,
                    "failed": report.failed,
                    "remaining": report.remaining,
                    "budget_left": report.budget_left,
                    "stopped": stopped,
                },
            )
        return report
