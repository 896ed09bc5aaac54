"""Every version of each CRM account's trait columns, kept across nights (`staging.account_history`).

The CRM holds only today's values; learning needs what an account looked like when each deal was
created. After accounts are staged, each account whose tracked values differ from its open
version gets a new version, and the old one is closed. A version is valid from the record's
`updated_at` (the CRM's last modification: its values have held since then), so even the first
night reaches back to each record's last change, and a deal created before it is counted as
described by a later version. Plain SQL over the warehouse: the anti-join stays in DuckDB.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from icp_pipeline.config import IcpConfig
from icp_pipeline.warehouse import table_exists, transaction

ACCOUNT_HISTORY = "account_history"
SCHEMA = "staging"
# The CRM columns traits are made of; configured custom traits are tracked as well.
TRACKED: tuple[str, ...] = ("industry", "employee_count", "annual_revenue", "country")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def tracked_columns(con: duckdb.DuckDBPyConnection, config: IcpConfig) -> dict[str, str]:
    """Tracked column -> its DuckDB type in `staging.accounts` (the columns it has)."""
    types = dict(
        con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = 'accounts' order by ordinal_position",
            [SCHEMA],
        ).fetchall()
    )
    wanted = dict.fromkeys((*TRACKED, *config.icp.custom_columns))
    return {name: types[name] for name in wanted if name in types}


def record_account_history(con: duckdb.DuckDBPyConnection, config: IcpConfig, as_of: dt.date) -> int:
    """Add a version for each staged account that is new or whose tracked values changed; returns
    how many were added. Safe to run again: unchanged accounts add nothing."""
    if not table_exists(con, SCHEMA, "accounts"):
        return 0
    columns = tracked_columns(con, config)
    has_updated = "updated_at" in {
        row[0]
        for row in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = 'accounts'",
            [SCHEMA],
        ).fetchall()
    }
    history = f"{SCHEMA}.{ACCOUNT_HISTORY}"
    with transaction(con):
        con.execute(
            f"create table if not exists {history} (account_id varchar, valid_from timestamptz, "
            "valid_to timestamptz, recorded_on date)"
        )
        present = {row[0] for row in con.execute(f"select * from {history} limit 0").description or []}
        for name, kind in columns.items():
            if name not in present:
                con.execute(f"alter table {history} add column {_ident(name)} {kind}")
        same = " and ".join(f"a.{_ident(c)} is not distinct from h.{_ident(c)}" for c in columns) or "true"
        changed_at = "a.updated_at" if has_updated else "null::timestamptz"
        # Changed values with an `updated_at` that did not move: valid from when they were seen.
        con.execute(
            f"""
            create or replace temp table _changed_accounts as
            select a.account_id,
                   case when h.account_id is null then coalesce({changed_at}, current_timestamp)
                        when {changed_at} > h.valid_from then {changed_at}
                        else greatest(current_timestamp, h.valid_from + interval 1 second)
                   end as valid_from
                   {"".join(f", a.{_ident(c)}" for c in columns)}
            from {SCHEMA}.accounts a
            left join (select * from {history} where valid_to is null) h on h.account_id = a.account_id
            where a.account_id is not null and (h.account_id is null or not ({same}))
            """
        )
        con.execute(
            f"""
            update {history} set valid_to = c.valid_from
            from _changed_accounts c
            where {history}.account_id = c.account_id and {history}.valid_to is null
            """
        )
        names = "".join(f", {_ident(c)}" for c in columns)
        added = con.execute(
            f"""
            insert into {history} (account_id, valid_from, valid_to, recorded_on{names})
            select account_id, valid_from, null, ?{names} from _changed_accounts
            """,
            [as_of],
        ).fetchone()
        con.execute("drop table _changed_accounts")
    return int(added[0]) if added else 0
