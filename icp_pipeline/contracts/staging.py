"""Stage one raw table inside the warehouse: read raw, apply its contract, match feeds, write results.

`staging.<table>` is only replaced when no blocking rule failed, so a broken drop never
overwrites yesterday's trusted rows; the quarantine and rule results are written either way,
because they are the evidence ops need to fix the source.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.history import record_account_history
from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.contracts.validate import (
    DROP_ROW,
    DUPLICATE,
    NULL_FIELD,
    SAMPLE_KEYS,
    RowCounts,
    RuleResult,
    StagedTable,
    compile_rules,
    freshness_result,
    results_frame,
    stage_table,
    table_results,
)
from icp_pipeline.digests import code_digest
from icp_pipeline.ingest.files import LINEAGE_COLUMNS, LOADED_AT, RAW_KEY, ROW_HASH
from icp_pipeline.resolve.match import (
    ACCOUNT_COLUMNS,
    AccountIndex,
    account_match_keys,
    build_account_index,
    match_feed,
    match_summary,
)
from icp_pipeline.warehouse import (
    read_table,
    registered,
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
FINDINGS = "staging_findings"
# Restage only the changed keys while they are at most this share of the raw rows; beyond it,
# staging the whole table costs about the same and needs no bookkeeping.
CHANGED_SHARE_LIMIT = 0.25
FEED_TABLES = ("firmographics", "funding_rounds", "job_postings", "leadership_changes")
MATCH_KEYS = ("norm_domain", "norm_name")


@dataclass
class StagingOutcome:
    """What staging one table did. `reused_from`: the as-of date whose staging was kept because
    nothing it depends on changed; `staged.frame` then holds the staged row count, not the rows."""

    staged: StagedTable
    raw_present: bool
    match_summary: pd.DataFrame | None = None
    reused_from: dt.date | None = None
    restaged_keys: int | None = None  # set when only the keys with new raw rows were staged again

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

    Four feeds are matched against the same accounts in one run; the index depends only on
    (account_id, name, domain), so it is kept in memory under a fingerprint of those columns that
    DuckDB computes in milliseconds. Staged accounts carry their normalised match keys (see
    `_with_match_keys`), so building it is two grouped queries; a staging.accounts without them
    (staged by older code) is normalised here.
    """
    if not table_exists(con, STAGING, "accounts"):
        return build_account_index(pd.DataFrame({"account_id": [], "name": [], "domain": []}, dtype="str"))
    fingerprint = tuple(_content(con, f"{STAGING}.accounts", list(ACCOUNT_COLUMNS)))
    if fingerprint not in _index_cache:
        _index_cache.clear()
        if set(MATCH_KEYS) <= set(table_columns(con, STAGING, "accounts")):
            _index_cache[fingerprint] = _index_from_staged(con)
        else:
            accounts = read_table(con, STAGING, "accounts", columns=list(ACCOUNT_COLUMNS))
            assert accounts is not None
            _index_cache[fingerprint] = build_account_index(accounts)
    return _index_cache[fingerprint]


def _index_from_staged(con: duckdb.DuckDBPyConnection) -> AccountIndex:
    """`index_from_keys` of the staged accounts' stored match keys, grouped by DuckDB."""
    by_domain = to_frame(
        con.sql(
            f"""select norm_domain, min(account_id) as account_id from {STAGING}.accounts
            where account_id is not null and norm_domain is not null group by norm_domain"""
        )
    ).set_index("norm_domain")["account_id"]
    by_name = to_frame(
        con.sql(
            f"""select norm_name, min(account_id) as account_id, count(distinct account_id) as n_accounts
            from {STAGING}.accounts where account_id is not null and norm_name is not null group by norm_name"""
        )
    ).set_index("norm_name")
    by_name["n_accounts"] = by_name["n_accounts"].astype(np.int64)
    by_name["account_id"] = by_name["account_id"].mask(by_name["n_accounts"] > 1)
    return AccountIndex(by_domain=by_domain, by_name=by_name)


def _domains_normalized(contract: TableContract) -> bool:
    """Whether staging stores the table's `domain` normalised already (its contract says so)."""
    domain = contract.columns.get("domain")
    return domain is not None and domain.normalize == "domain"


def _with_match_keys(frame: pd.DataFrame, contract: TableContract) -> pd.DataFrame:
    """Staged accounts with their normalised domain and name, the keys feeds are matched on."""
    keys = account_match_keys(frame, domains_normalized=_domains_normalized(contract))
    return pd.concat([frame, keys], axis=1)


# The code and libraries that decide what staging produces: a change to any of them restages.
_STAGING_CODE = (
    Path(__file__).parent / "staging.py",
    Path(__file__).parent / "validate.py",
    Path(__file__).parent / "spec.py",
    Path(__file__).parents[1] / "resolve" / "match.py",
    Path(__file__).parents[1] / "resolve" / "normalize.py",
)
_LIBRARIES = ("pandas", "pyarrow", "great_expectations", "duckdb")


def inputs_fingerprints(
    con: duckdb.DuckDBPyConnection, contract: TableContract, config: IcpConfig
) -> tuple[str, str] | None:
    """Digests of everything staging `contract.table` reads, and of all that but its raw rows;
    None when its raw table is absent.

    Raw rows (by their lineage, see `_raw_identity`), the keys of the staged tables it references, the
    accounts a feed is matched against, the contract, the configuration and the staging code. The
    as-of date and the clock are not in it: the one rule that reads the clock (`not_future`) and
    freshness are handled where the fingerprint is used. The second digest (the context) says
    whether yesterday's staged rows of unchanged keys are still what staging would make of them.
    """
    table = contract.table
    if not table_exists(con, RAW, table):
        return None
    parts: dict[str, object] = {
        "code": code_digest(_STAGING_CODE, _LIBRARIES),
        "contract": contract.model_dump_json(),
        "config": config.model_dump_json(exclude={"deletions"}),  # scoring reads it, staging does not
    }
    for spec in contract.columns.values():
        ref = spec.references
        if ref is not None and table_exists(con, STAGING, ref.table):
            keys = f'(select distinct "{ref.column}" from {STAGING}."{ref.table}")'
            parts[f"{ref.table}.{ref.column}"] = _content(con, keys, [ref.column])
    if table in FEED_TABLES and table_exists(con, STAGING, "accounts"):
        parts["accounts"] = _content(con, f"{STAGING}.accounts", list(ACCOUNT_COLUMNS))
    context = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    parts["raw"] = _content(con, f'{RAW}."{table}"', _raw_identity(con, table))
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), context


def _raw_identity(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The raw columns that fix a raw row: its lineage, whose `_row_hash` ingest computed over
    every delivered column (malformed lines included). Raw is written by ingest only (changed
    rows are found by their load stamp too), so hashing these says what hashing every column says,
    in a fifth of the time (0.3 s against 1.3-1.7 s for the nine raw tables at 1M). A raw table
    without `_row_hash` is fingerprinted by every column."""
    columns = table_columns(con, RAW, table)
    return [c for c in columns if c in LINEAGE_COLUMNS] if ROW_HASH in columns else columns


def _clock_still_valid(
    con: duckdb.DuckDBPyConnection, contract: TableContract, kept: pd.Series, now: dt.datetime
) -> bool:
    """Whether rows staged at the kept state's clock would be judged the same at `now`.

    `not_future` compares with the clock: a table that had no future-dated rows at an earlier
    clock has none now; one that had some, or a clock set back, must be staged again.
    """
    previous = con.execute(
        f'select rule, failed from {ICP}.{CONTRACT_RESULTS} where "table" = ? and as_of = ?',
        [contract.table, pd.Timestamp(kept["as_of"]).date()],
    ).fetchall()
    clock_rules = {f"{column}.not_future" for column, spec in contract.columns.items() if spec.not_future}
    return (
        bool(previous)
        and sum(failed for rule, failed in previous if rule in clock_rules) == 0
        and now >= pd.Timestamp(kept["clock"]).to_pydatetime()
    )


def _kept_state(con: duckdb.DuckDBPyConnection, table: str) -> pd.Series | None:
    """What `staging.<table>` was last staged from, or None (never, forgotten, or an older layout)."""
    if not table_exists(con, ICP, STAGING_INPUTS) or not table_exists(con, STAGING, table):
        return None
    if "context" not in table_columns(con, ICP, STAGING_INPUTS):
        return None
    state = to_frame(con.sql(f'select * from {ICP}.{STAGING_INPUTS} where "table" = ?', params=[table]))
    return None if state.empty else state.iloc[0]


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
    read time: `not_future` (see `_clock_still_valid`) and freshness, which depends on the as-of
    date and is evaluated again on the staged column.
    """
    table = contract.table
    kept = _kept_state(con, table)
    if kept is None or kept["fingerprint"] != fingerprint or not _clock_still_valid(con, contract, kept, now):
        return None
    staged_as_of = pd.Timestamp(kept["as_of"]).date()
    previous = to_frame(
        con.sql(
            f'select * from {ICP}.{CONTRACT_RESULTS} where "table" = ? and as_of = ?',
            params=[table, staged_as_of],
        )
    )
    freshness = f"{contract.freshness.column}.freshness" if contract.freshness else None
    results = [
        RuleResult(
            table, r.rule, r.severity, int(r.evaluated), int(r.failed), json.loads(r.sample_keys), r.detail
        )
        for r in previous.itertuples(index=False)
        if r.rule != freshness
    ]
    outcome = _outcome_in_warehouse(
        con,
        contract,
        config,
        results,
        _stored_quarantine(con, table),
        int(kept["staged_rows"]),
        int(kept["raw_rows"]),
        int(kept["duplicates_removed"]),
        as_of,
    )
    outcome.reused_from = staged_as_of
    if outcome.blocked_reason is not None:
        return None  # stale now: staged again, so the blocking rule is reported as usual
    replace_slice(
        con,
        ICP,
        CONTRACT_RESULTS,
        results_frame(outcome.staged.results, as_of),
        {"table": table, "as_of": as_of},
    )
    con.execute(f'update {ICP}.{STAGING_INPUTS} set as_of = ? where "table" = ?', [as_of, table])
    return outcome


def _loads(con: duckdb.DuckDBPyConnection, table: str) -> list[int]:
    """The load stamps (microseconds) of the raw rows: rows with any other stamp arrived since."""
    if LOADED_AT not in table_columns(con, RAW, table):
        return []
    rows = con.execute(
        f'select distinct epoch_us("{LOADED_AT}") from {RAW}."{table}" where "{LOADED_AT}" is not null'
    ).fetchall()
    return sorted(int(row[0]) for row in rows)


def _record_inputs(
    con: duckdb.DuckDBPyConnection,
    table: str,
    fingerprints: tuple[str, str] | None,
    staged: StagedTable | None,
    as_of: dt.date,
    now: dt.datetime,
) -> None:
    """Forget (staged=None) or remember what `staging.<table>` was staged from, and at what clock."""
    if table_exists(con, ICP, STAGING_INPUTS) and "context" not in table_columns(con, ICP, STAGING_INPUTS):
        con.execute(f"drop table {ICP}.{STAGING_INPUTS}")  # an older layout: forgetting costs one restaging
    if staged is None or fingerprints is None:
        if table_exists(con, ICP, STAGING_INPUTS):
            con.execute(f'delete from {ICP}.{STAGING_INPUTS} where "table" = ?', [table])
        return
    replace_slice(
        con,
        ICP,
        STAGING_INPUTS,
        _inputs_row(table, fingerprints, _loads(con, table), staged, as_of, now),
        {"table": table},
    )


def _inputs_row(
    table: str,
    fingerprints: tuple[str, str],
    loads: list[int],
    staged: StagedTable,
    as_of: dt.date,
    now: dt.datetime,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "table": [table],
            "fingerprint": [fingerprints[0]],
            "context": [fingerprints[1]],
            "loads": [json.dumps(loads)],
            "as_of": [as_of],
            "clock": [pd.Timestamp(now)],
            "raw_rows": [staged.raw_rows],
            "staged_rows": [len(staged.frame)],
            "duplicates_removed": [staged.duplicates_removed],
        }
    )


def _findings_rows(table: str, staged: StagedTable) -> pd.DataFrame:
    return staged.findings.assign(table=table)[["table", "row_key", "rule", "rows"]]


def _scalar(con: duckdb.DuckDBPyConnection, query: str, params: list[object] | None = None) -> int:
    rows = con.execute(query, params or []).fetchall()  # fetchall: a half-read result blocks the connection
    return int(rows[0][0] or 0) if rows else 0


def _restage_changed(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    config: IcpConfig,
    fingerprints: tuple[str, str],
    as_of: dt.date,
    now: dt.datetime,
) -> StagingOutcome | None:
    """Stage again only the keys whose raw rows arrived since the last staging, or None.

    Ingest replaces every raw row of a changed key (delete-insert on `_raw_key`) and stamps the
    new rows with their load time, so the rows of unchanged keys are the ones staged before; with
    the same contract, configuration, code, referenced keys and matched accounts (the context),
    staging them again would give the same rows, quarantine and findings. So the changed keys'
    old outcome is deleted and their new rows are staged, checked and inserted in one transaction.

    None (stage the whole table) when that would not be what a full staging gives: a new context,
    a clock rule in play, too many changes, raw rows that do not add up with what was staged, new
    or dropped columns, or a staged key that more than one raw key produces (deduplication
    across raw keys). Raw is trusted to be written by ingest only: a raw row edited in place keeps
    its stamp and is not staged again until the next full staging (deleting the table's row in
    icp.staging_inputs forces one).
    """
    table = contract.table
    kept = _kept_state(con, table)
    if (
        kept is None
        or kept["context"] != fingerprints[1]
        or not table_exists(con, ICP, FINDINGS)
        or not {RAW_KEY, LOADED_AT} <= set(table_columns(con, RAW, table))
        or RAW_KEY not in table_columns(con, STAGING, table)
        or not _clock_still_valid(con, contract, kept, now)
    ):
        return None
    con.execute("create or replace temp table _kept_loads (stamp bigint)")
    con.executemany("insert into _kept_loads values (?)", [[stamp] for stamp in json.loads(kept["loads"])])
    arrived = f'("{LOADED_AT}" is null or epoch_us("{LOADED_AT}") not in (select stamp from _kept_loads))'
    raw_rows, new_rows = con.execute(
        f'select count(*), count(*) filter (where {arrived}) from {RAW}."{table}"'
    ).fetchall()[0]
    if new_rows == 0 or new_rows > CHANGED_SHARE_LIMIT * raw_rows:
        return None
    con.execute(
        f'create or replace temp table _changed as select distinct {RAW_KEY} from {RAW}."{table}" where {arrived}'
    )
    in_changed = f"in (select {RAW_KEY} from _changed)"
    # Every row of a changed key is new, and the old rows add up to what was staged less those keys.
    old_rows_of_changed = _scalar(
        con, f'select count(*) from {RAW}."{table}" where not {arrived} and {RAW_KEY} {in_changed}'
    )
    previous_of_changed = (
        _scalar(con, f'select count(*) from {STAGING}."{table}" where {RAW_KEY} {in_changed}')
        + _scalar(
            con,
            f'select count(*) from {ICP}.{QUARANTINE} where "table" = ? and action = ? and row_key {in_changed}',
            [table, DROP_ROW],
        )
        + _scalar(
            con,
            f'select sum("rows") from {ICP}.{FINDINGS} where "table" = ? and rule = ? and row_key {in_changed}',
            [table, DUPLICATE],
        )
    )
    if old_rows_of_changed or raw_rows - new_rows != int(kept["raw_rows"]) - previous_of_changed:
        return None
    # A dropped duplicate whose raw key has no staged row lost to another raw key's row.
    crossed = _scalar(
        con,
        f'select count(*) from {ICP}.{FINDINGS} f where f."table" = ? and f.rule = ? and not exists '
        f'(select 1 from {STAGING}."{table}" s where s.{RAW_KEY} = f.row_key)',
        [table, DUPLICATE],
    )
    if crossed:
        return None

    arrivals = to_frame(con.sql(f'select * from {RAW}."{table}" where {arrived}'))
    changed = _stage_rows(con, arrivals, contract, config, as_of, now)
    if set(changed.frame.columns) != set(table_columns(con, STAGING, table)):
        return None  # a column came or went (a new column in the drop): every row gets the new layout
    key = " and ".join(f's."{c}" is not distinct from n."{c}"' for c in contract.primary_key)
    with contextlib.ExitStack() as frames:  # registered outside the transaction: unregistering never fails
        staged_columns = frames.enter_context(registered(con, "_new_staged", changed.frame))
        quarantine_columns = frames.enter_context(registered(con, "_new_quarantine", changed.quarantine))
        findings_columns = frames.enter_context(
            registered(con, "_new_findings", _findings_rows(table, changed))
        )
        con.execute("begin transaction")
        try:
            con.execute(f'delete from {STAGING}."{table}" where {RAW_KEY} {in_changed}')
            if _scalar(con, f'select count(*) from {STAGING}."{table}" s join _new_staged n on {key}'):
                con.execute("rollback")  # a changed key's row would meet another raw key's row
                return None
            con.execute(f'insert into {STAGING}."{table}" by name select {staged_columns} from _new_staged')
            for target, source, columns in (
                (QUARANTINE, "_new_quarantine", quarantine_columns),
                (FINDINGS, "_new_findings", findings_columns),
            ):
                con.execute(f'delete from {ICP}.{target} where "table" = ? and row_key {in_changed}', [table])
                con.execute(f"insert into {ICP}.{target} by name select {columns} from {source}")
            outcome = _whole_table_outcome(con, contract, config, changed, raw_rows, as_of, now)
            if outcome.blocked_reason is not None or not outcome.staged.rows_add_up:
                con.execute("rollback")  # staged as a whole instead, which reports a blocking rule as usual
                return None
            state = _inputs_row(table, fingerprints, _loads(con, table), outcome.staged, as_of, now)
            con.execute(f'delete from {ICP}.{STAGING_INPUTS} where "table" = ?', [table])
            names = ", ".join(f'"{column}"' for column in state.columns)
            con.execute(
                f"insert into {ICP}.{STAGING_INPUTS} ({names}) values ({', '.join('?' * len(state.columns))})",
                [v.item() if isinstance(v, np.generic) else v for v in state.iloc[0]],
            )
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    results = results_frame(outcome.staged.results, as_of)
    replace_slice(con, ICP, CONTRACT_RESULTS, results, {"table": table, "as_of": as_of})
    return outcome


def _stage_rows(
    con: duckdb.DuckDBPyConnection,
    raw: pd.DataFrame,
    contract: TableContract,
    config: IcpConfig,
    as_of: dt.date,
    now: dt.datetime,
) -> StagedTable:
    """`stage_table` and what staging adds to its rows: feeds matched to accounts, accounts'
    match keys. The same for a whole table and for the rows of its changed keys."""
    table = contract.table
    staged = stage_table(
        raw,
        contract,
        as_of=as_of,
        now=now,
        stages=config.stages.known,
        reference_keys=_reference_keys(con, contract),
        max_bad_share=config.contracts.max_bad_share.get(table),
        freshness_days=config.contracts.freshness_days.get(table),
    )
    if table in FEED_TABLES:
        normalized = _domains_normalized(contract)
        staged.frame = match_feed(staged.frame, account_index(con), domains_normalized=normalized)
    elif table == "accounts":
        staged.frame = _with_match_keys(staged.frame, contract)
    return staged


def _whole_table_outcome(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    config: IcpConfig,
    changed: StagedTable,
    raw_rows: int,
    as_of: dt.date,
    now: dt.datetime,
) -> StagingOutcome:
    """The table's outcome after the changed keys were restaged, counted from what it now holds."""
    table = contract.table
    failed = dict(
        con.execute(
            f'select rule, sum("rows")::bigint from {ICP}.{FINDINGS} where "table" = ? group by rule', [table]
        ).fetchall()
    )
    stored = con.execute(
        f"""select rule, row_key from (
            select rule, row_key, row_number() over (partition by rule order by row_key) as n
            from {ICP}.{FINDINGS} where "table" = ? and rule <> ?
        ) where n <= ?""",
        [table, DUPLICATE, SAMPLE_KEYS],
    ).fetchall()
    samples: dict[str, list[str]] = {r.rule_id: list(r.sample_keys) for r in changed.results}
    for rule, row_key in stored:
        samples.setdefault(rule, []).append(row_key)
    quarantine = _stored_quarantine(con, table)
    dropped = quarantine[quarantine["action"] != NULL_FIELD]
    changed_dropped = changed.quarantine[changed.quarantine["action"] != NULL_FIELD]
    staged_rows = _scalar(con, f'select count(*) from {STAGING}."{table}"')
    unique = next(r.passed for r in changed.results if r.rule_id == "table.key_unique")
    counts = RowCounts(
        raw_rows=raw_rows,
        failed={rule: int(n) for rule, n in failed.items() if rule != DUPLICATE},
        samples={rule: list(dict.fromkeys(keys))[:SAMPLE_KEYS] for rule, keys in samples.items()},
        quarantined=len(dropped),
        quarantine_sample=list(
            dict.fromkeys([*changed_dropped["row_key"], *dropped["row_key"].head(SAMPLE_KEYS)])
        )[:SAMPLE_KEYS],
        staged_rows=staged_rows,
        unique=unique,
    )
    rules = compile_rules(contract, now, config.stages.known)
    max_bad_share = config.contracts.max_bad_share.get(table)
    results = table_results(contract, rules, counts, max_bad_share)
    outcome = _outcome_in_warehouse(
        con,
        contract,
        config,
        results,
        quarantine,
        staged_rows,
        raw_rows,
        int(failed.get(DUPLICATE, 0)),
        as_of,
    )
    outcome.restaged_keys = _scalar(con, "select count(*) from _changed")
    return outcome


def _stored_quarantine(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
    return to_frame(con.sql(f'select * from {ICP}.{QUARANTINE} where "table" = ?', params=[table]))


def _outcome_in_warehouse(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    config: IcpConfig,
    results: list[RuleResult],
    quarantine: pd.DataFrame,
    staged_rows: int,
    raw_rows: int,
    duplicates_removed: int,
    as_of: dt.date,
) -> StagingOutcome:
    """The outcome of a table whose staged rows are in the warehouse (kept, or restaged in place):
    `results` but freshness, which is judged on the staged column at `as_of`; a feed's match
    summary is read back. The frame holds only the staged row count."""
    table = contract.table
    if contract.freshness is not None:
        column = read_table(con, STAGING, table, columns=[contract.freshness.column])
        assert column is not None
        freshness_days = config.contracts.freshness_days.get(table)
        results = [*results, freshness_result(column, contract, as_of, freshness_days)]
    staged = StagedTable(
        table,
        pd.DataFrame(index=pd.RangeIndex(staged_rows)),
        quarantine,
        results,
        raw_rows,
        duplicates_removed,
    )
    summary = None
    if table in FEED_TABLES:
        methods = read_table(con, STAGING, table, columns=["match_method"])
        summary = match_summary(methods) if methods is not None else None
    return StagingOutcome(staged, True, summary)


# Calls of `stage` in this process: staged evidence read before the last call may be stale.
_stage_calls = 0


def stage_calls() -> int:
    """How many times this process has staged a table (see `profile.learn.run_evidence`)."""
    return _stage_calls


def stage(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    config: IcpConfig,
    *,
    as_of: dt.date,
    now: dt.datetime,
) -> StagingOutcome:
    """Stage a table and write staging, quarantine and rule results to the warehouse; staged
    accounts also add their changed versions to `staging.account_history`."""
    outcome = _stage(con, contract, config, as_of=as_of, now=now)
    if contract.table == "accounts" and outcome.blocked_reason is None:
        record_account_history(con, config, as_of)
    return outcome


def _stage(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    config: IcpConfig,
    *,
    as_of: dt.date,
    now: dt.datetime,
) -> StagingOutcome:
    """Stage a table and write staging, quarantine and rule results to the warehouse.

    When nothing staging reads has changed since the table was last staged, the staged rows and
    quarantine are kept and only this date's rule results are written (see `_reuse`); when only
    some keys received new raw rows, only those are staged again (see `_restage_changed`).
    """
    global _stage_calls
    _stage_calls += 1
    table = contract.table
    fingerprints = inputs_fingerprints(con, contract, config)
    if fingerprints is not None:
        reused = _reuse(con, contract, config, fingerprints[0], as_of, now)
        if reused is not None:
            return reused
        restaged = _restage_changed(con, contract, config, fingerprints, as_of, now)
        if restaged is not None:
            return restaged
    # Forgotten first: a run killed between here and the end stages this table again next time.
    _record_inputs(con, table, None, None, as_of, now)
    raw = read_table(con, RAW, table)
    raw_present = raw is not None
    staged = _stage_rows(con, raw if raw is not None else _empty_raw(contract), contract, config, as_of, now)
    if not raw_present and not contract.file_required:
        # No rows ever delivered for an optional file: its absence is allowed, so is its staleness.
        # A required file that delivered no rows (header only) keeps its freshness rule and blocks.
        staged.results = [r for r in staged.results if not r.rule_id.endswith(".freshness")]
    summary = match_summary(staged.frame) if table in FEED_TABLES else None
    outcome = StagingOutcome(staged, raw_present, summary)
    replace_slice(con, ICP, QUARANTINE, staged.quarantine, {"table": table})
    replace_slice(
        con, ICP, CONTRACT_RESULTS, results_frame(staged.results, as_of), {"table": table, "as_of": as_of}
    )
    if outcome.blocked_reason is None:
        replace_slice(con, ICP, FINDINGS, _findings_rows(table, staged), {"table": table})
        replace_table(con, STAGING, table, staged.frame)
        _record_inputs(con, table, fingerprints, staged, as_of, now)
    return outcome
