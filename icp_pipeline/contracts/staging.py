"""Stage one raw table inside the warehouse: read raw, apply its contract, match feeds, write results.

`staging.<table>` is only replaced when no blocking rule failed, so a broken drop never
overwrites yesterday's trusted rows; the quarantine and rule results are written either way,
because they are the evidence ops need to fix the source.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.contracts.validate import StagedTable, results_frame, stage_table
from icp_pipeline.resolve.match import (
    ACCOUNT_COLUMNS,
    AccountIndex,
    build_account_index,
    match_feed,
    match_summary,
)
from icp_pipeline.warehouse import read_table, replace_slice, replace_table, table_exists, to_frame

RAW = "raw"
STAGING = "staging"
ICP = "icp"
QUARANTINE = "quarantine"
CONTRACT_RESULTS = "contract_results"
FEED_TABLES = ("firmographics", "funding_rounds", "job_postings", "leadership_changes")


@dataclass
class StagingOutcome:
    staged: StagedTable
    raw_present: bool
    match_summary: pd.DataFrame | None = None

    @property
    def blocked_reason(self) -> str | None:
        """One line naming the table, the rule and the count, or None when nothing blocks."""
        failures = self.staged.blocking_failures
        if not failures:
            return None
        first = failures[0]
        return f"{self.staged.table}: blocking rule {first.rule_id} failed ({first.detail})" + (
            f"; {len(failures) - 1} more blocking rule(s) failed" if len(failures) > 1 else ""
        )


def _empty_raw(contract: TableContract) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="str") for name in contract.columns})


def _reference_keys(con: duckdb.DuckDBPyConnection, contract: TableContract) -> dict[str, pd.Index]:
    """Keys of referenced staged tables; a table with no staged rows is not checked against."""
    keys: dict[str, pd.Index] = {}
    for spec in contract.columns.values():
        ref = spec.references
        if ref is None or ref.table in keys or not table_exists(con, STAGING, ref.table):
            continue
        values = to_frame(con.sql(f'select distinct "{ref.column}" from {STAGING}."{ref.table}"'))[ref.column]
        if len(values):
            keys[ref.table] = pd.Index(values.dropna().astype("str"))
    return keys


_index_cache: dict[tuple[object, ...], AccountIndex] = {}


def account_index(con: duckdb.DuckDBPyConnection) -> AccountIndex:
    """The matching index of the staged accounts, built once per content of staging.accounts.

    Four feeds are matched against the same accounts in one run, and normalising a million names
    and domains takes seconds; the index depends only on (account_id, name, domain), so it is
    kept in memory under a fingerprint of those columns that DuckDB computes in milliseconds.
    """
    if not table_exists(con, STAGING, "accounts"):
        return build_account_index(pd.DataFrame({"account_id": [], "name": [], "domain": []}, dtype="str"))
    fingerprint = tuple(
        con.execute(
            f"select count(*), sum(hash(account_id, name, domain)::hugeint) from {STAGING}.accounts"
        ).fetchall()[0]
    )
    if fingerprint not in _index_cache:
        accounts = read_table(con, STAGING, "accounts", columns=list(ACCOUNT_COLUMNS))
        assert accounts is not None
        _index_cache.clear()
        _index_cache[fingerprint] = build_account_index(accounts)
    return _index_cache[fingerprint]


def stage(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    config: IcpConfig,
    *,
    as_of: dt.date,
    now: dt.datetime,
) -> StagingOutcome:
    """Stage a table and write staging, quarantine and rule results to the warehouse."""
    table = contract.table
    raw = read_table(con, RAW, table)
    raw_present = raw is not None
    staged = stage_table(
        raw if raw is not None else _empty_raw(contract),
        contract,
        as_of=as_of,
        now=now,
        stages=config.stages.known,
        reference_keys=_reference_keys(con, contract),
        max_bad_share=config.contracts.max_bad_share.get(table),
        freshness_days=config.contracts.freshness_days.get(table),
    )
    if not raw_present and not contract.file_required:
        # No rows ever delivered for an optional file: its absence is allowed, so is its staleness.
        # A required file that delivered no rows (header only) keeps its freshness rule and blocks.
        staged.results = [r for r in staged.results if not r.rule_id.endswith(".freshness")]
    summary = None
    if table in FEED_TABLES:
        domain = contract.columns.get("domain")
        normalized = domain is not None and domain.normalize == "domain"
        staged.frame = match_feed(staged.frame, account_index(con), domains_normalized=normalized)
        summary = match_summary(staged.frame)
    outcome = StagingOutcome(staged, raw_present, summary)
    replace_slice(con, ICP, QUARANTINE, staged.quarantine, {"table": table})
    replace_slice(
        con, ICP, CONTRACT_RESULTS, results_frame(staged.results, as_of), {"table": table, "as_of": as_of}
    )
    if outcome.blocked_reason is None:
        replace_table(con, STAGING, table, staged.frame)
    return outcome
