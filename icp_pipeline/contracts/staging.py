"""Stage one raw table inside the warehouse: read raw, apply its contract, match feeds, write results.

`staging.<table>` is only replaced when no blocking rule failed, so a broken drop never
overwrites yesterday's trusted rows; the quarantine and rule results are written either way,
because they are the evidence ops need to fix the source.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import duckdb
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.contracts.validate import (
    RuleResult,
    StagedTable,
    freshness_result,
    results_frame,
    stage_table,
)
from icp_pipeline.resolve.match import (
    ACCOUNT_COLUMNS,
    AccountIndex,
    build_account_index,
    match_feed,
    match_summary,
)
from icp_pipeline.warehouse import (
    read_table,
    replace_slice,
    replace_table,
    table_columns,
    table_exists,
    to_frame,
)

RAW = "raw"
STAGING = "staging"
ICP = "icp"
QUARANTINE = "quarantine"
CONTRACT_RESULTS = "contract_results"
STAGING_INPUTS = "staging_inputs"
FEED_TABLES = ("firmographics", "funding_rounds", "job_postings", "leadership_changes")


@dataclass
class StagingOutcome:
    """What staging one table did. `reused_from`: the as-of date whose staging was kept because
    nothing it depends on changed; `staged.frame` then holds the staged row count, not the rows."""

    staged: StagedTable
    raw_present: bool
    match_summary: pd.DataFrame | None = None
    reused_from: dt.date | None = None

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


def _content(con: duckdb.DuckDBPyConnection, relation: str, columns: list[str]) -> list[object]:
    """Row count and an order-independent sum of row hashes: equal for equal content."""
    hashed = ", ".join(f'"{column}"' for column in columns)
    count, total = con.execute(f"select count(*), sum(hash({hashed})::hugeint) from {relation}").fetchall()[0]
    return [int(count), str(total)]


_index_cache: dict[tuple[object, ...], AccountIndex] = {}


def account_index(con: duckdb.DuckDBPyConnection) -> AccountIndex:
    """The matching index of the staged accounts, built once per content of staging.accounts.

    Four feeds are matched against the same accounts in one run, and normalising a million names
    and domains takes seconds; the index depends only on (account_id, name, domain), so it is
    kept in memory under a fingerprint of those columns that DuckDB computes in milliseconds.
    """
    if not table_exists(con, STAGING, "accounts"):
        return build_account_index(pd.DataFrame({"account_id": [], "name": [], "domain": []}, dtype="str"))
    fingerprint = tuple(_content(con, f"{STAGING}.accounts", list(ACCOUNT_COLUMNS)))
    if fingerprint not in _index_cache:
        accounts = read_table(con, STAGING, "accounts", columns=list(ACCOUNT_COLUMNS))
        assert accounts is not None
        _index_cache.clear()
        _index_cache[fingerprint] = build_account_index(accounts)
    return _index_cache[fingerprint]


# The code and libraries that decide what staging produces: a change to any of them restages.
_STAGING_CODE = (
    Path(__file__).parent / "staging.py",
    Path(__file__).parent / "validate.py",
    Path(__file__).parent / "spec.py",
    Path(__file__).parents[1] / "resolve" / "match.py",
    Path(__file__).parents[1] / "resolve" / "normalize.py",
)
_LIBRARIES = ("pandas", "pyarrow", "great_expectations", "duckdb")


def _code_digest() -> str:
    digest = hashlib.sha256()
    for source in _STAGING_CODE:
        digest.update(source.read_bytes())
    for library in _LIBRARIES:
        digest.update(f"{library}={metadata.version(library)}".encode())
    return digest.hexdigest()


def inputs_fingerprint(
    con: duckdb.DuckDBPyConnection, contract: TableContract, config: IcpConfig
) -> str | None:
    """A digest of everything staging `contract.table` reads, or None when its raw table is absent.

    Raw rows (every column, lineage included), the keys of the staged tables it references, the
    accounts a feed is matched against, the contract, the configuration and the staging code. The
    as-of date and the clock are not in it: the one rule that reads the clock (`not_future`) and
    freshness are handled where the fingerprint is used.
    """
    table = contract.table
    if not table_exists(con, RAW, table):
        return None
    parts: dict[str, object] = {
        "code": _code_digest(),
        "contract": contract.model_dump_json(),
        "config": config.model_dump_json(),
        "raw": _content(con, f'{RAW}."{table}"', table_columns(con, RAW, table)),
    }
    for spec in contract.columns.values():
        ref = spec.references
        if ref is not None and table_exists(con, STAGING, ref.table):
            keys = f'(select distinct "{ref.column}" from {STAGING}."{ref.table}")'
            parts[f"{ref.table}.{ref.column}"] = _content(con, keys, [ref.column])
    if table in FEED_TABLES and table_exists(con, STAGING, "accounts"):
        parts["accounts"] = _content(con, f"{STAGING}.accounts", list(ACCOUNT_COLUMNS))
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _reuse(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    config: IcpConfig,
    fingerprint: str,
    as_of: dt.date,
    now: dt.datetime,
) -> StagingOutcome | None:
    """Keep the staged table when its inputs are what they were when it was staged, or None.

    Its rows, quarantine and rule results would come out the same, except for two rules that
    read time: `not_future` compares with the clock, so a table that had no future-dated rows at
    an earlier clock has none now (a table that had some, or a clock set back, is staged again);
    freshness depends on the as-of date and is evaluated again on the staged column.
    """
    table = contract.table
    if not table_exists(con, ICP, STAGING_INPUTS) or not table_exists(con, STAGING, table):
        return None
    state = to_frame(
        con.sql(
            f'select * from {ICP}.{STAGING_INPUTS} where "table" = ? and fingerprint = ?',
            params=[table, fingerprint],
        )
    )
    if state.empty:
        return None
    kept = state.iloc[0]
    staged_as_of = pd.Timestamp(kept["as_of"]).date()
    previous = to_frame(
        con.sql(
            f'select * from {ICP}.{CONTRACT_RESULTS} where "table" = ? and as_of = ?',
            params=[table, staged_as_of],
        )
    )
    clock_rules = {f"{column}.not_future" for column, spec in contract.columns.items() if spec.not_future}
    if (
        previous.empty
        or previous.loc[previous["rule"].isin(clock_rules), "failed"].sum() > 0
        or now < pd.Timestamp(kept["clock"]).to_pydatetime()
    ):
        return None
    freshness = f"{contract.freshness.column}.freshness" if contract.freshness else None
    results = [
        RuleResult(
            table, r.rule, r.severity, int(r.evaluated), int(r.failed), json.loads(r.sample_keys), r.detail
        )
        for r in previous.itertuples(index=False)
        if r.rule != freshness
    ]
    if contract.freshness is not None:
        column = read_table(con, STAGING, table, columns=[contract.freshness.column])
        assert column is not None
        results.append(freshness_result(column, contract, as_of, config.contracts.freshness_days.get(table)))
    quarantine = to_frame(con.sql(f'select * from {ICP}.{QUARANTINE} where "table" = ?', params=[table]))
    staged_rows = int(kept["staged_rows"])
    staged = StagedTable(
        table,
        pd.DataFrame(index=pd.RangeIndex(staged_rows)),
        quarantine,
        results,
        int(kept["raw_rows"]),
        int(kept["duplicates_removed"]),
    )
    summary = None
    if table in FEED_TABLES:
        methods = read_table(con, STAGING, table, columns=["match_method"])
        summary = match_summary(methods) if methods is not None else None
    outcome = StagingOutcome(staged, True, summary, reused_from=staged_as_of)
    if outcome.blocked_reason is not None:
        return None  # stale now: staged again, so the blocking rule is reported as usual
    replace_slice(con, ICP, CONTRACT_RESULTS, results_frame(results, as_of), {"table": table, "as_of": as_of})
    con.execute(f'update {ICP}.{STAGING_INPUTS} set as_of = ? where "table" = ?', [as_of, table])
    return outcome


def _record_inputs(
    con: duckdb.DuckDBPyConnection,
    table: str,
    fingerprint: str | None,
    staged: StagedTable | None,
    as_of: dt.date,
    now: dt.datetime,
) -> None:
    """Forget (staged=None) or remember what `staging.<table>` was staged from, and at what clock."""
    if staged is None or fingerprint is None:
        if table_exists(con, ICP, STAGING_INPUTS):
            con.execute(f'delete from {ICP}.{STAGING_INPUTS} where "table" = ?', [table])
        return
    row = pd.DataFrame(
        {
            "table": [table],
            "fingerprint": [fingerprint],
            "as_of": [as_of],
            "clock": [pd.Timestamp(now)],
            "raw_rows": [staged.raw_rows],
            "staged_rows": [len(staged.frame)],
            "duplicates_removed": [staged.duplicates_removed],
        }
    )
    replace_slice(con, ICP, STAGING_INPUTS, row, {"table": table})


def stage(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    config: IcpConfig,
    *,
    as_of: dt.date,
    now: dt.datetime,
) -> StagingOutcome:
    """Stage a table and write staging, quarantine and rule results to the warehouse.

    When nothing staging reads has changed since the table was last staged, the staged rows and
    quarantine are kept and only this date's rule results are written (see `_reuse`).
    """
    table = contract.table
    fingerprint = inputs_fingerprint(con, contract, config)
    if fingerprint is not None:
        reused = _reuse(con, contract, config, fingerprint, as_of, now)
        if reused is not None:
            return reused
    # Forgotten first: a run killed between here and the end stages this table again next time.
    _record_inputs(con, table, None, None, as_of, now)
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
        _record_inputs(con, table, fingerprint, staged, as_of, now)
    return outcome
