"""The DuckDB column types of every `icp.*` table the pipeline writes from a DataFrame, declared once.

A table's types used to be whatever pandas inferred from the frame written first: an all-null
column became DuckDB's `NULL` type (`alerts.last_error`, `account_scores.disqualified_reason`), an
empty frame's timestamps VARCHAR (`quarantine.loaded_at`), a date TIMESTAMP (`alerts.as_of`).
`warehouse.replace_table` and `replace_slice` (and the trigger ledger's append) cast every declared
column to its type here, and bring an existing table to it (a missing column is added, a column of
another type converted), so readers and the published tables see one schema whatever a run held.
Columns are listed in table order; a column a writer leaves out is written as NULL of its type.
Dates are DATE, points in time TIMESTAMP WITH TIME ZONE (UTC).
"""

from __future__ import annotations

TEXT, INT, FLOAT, BOOL = "VARCHAR", "BIGINT", "DOUBLE", "BOOLEAN"
DATE, TIMESTAMP = "DATE", "TIMESTAMP WITH TIME ZONE"

OUTPUT_SCHEMAS: dict[str, dict[str, str]] = {
    "account_scores": {
        "account_id": TEXT,
        "as_of": DATE,
        "fit_score": INT,
        "tier": TEXT,
        "disqualified": BOOL,
        "disqualified_reason": TEXT,
        "base_points": INT,
        "profile_version": TEXT,
        "scored_by": TEXT,
        "reasons": TEXT,
        "top_positive": TEXT,
        "top_negative": TEXT,
        # The account's name and owner at scoring time, which every reader joined staging for.
        "name": TEXT,
        "owner_id": TEXT,
    },
    "alerts": {
        "alert_id": TEXT,
        "event_id": TEXT,
        "account_id": TEXT,
        "trigger_type": TEXT,
        "owner_id": TEXT,
        "recipient": TEXT,
        "channel": TEXT,
        "status": TEXT,
        "digest": BOOL,
        "priority": FLOAT,
        "attempts": INT,
        "created_at": TIMESTAMP,
        "sent_at": TIMESTAMP,
        "last_error": TEXT,
        "as_of": DATE,
    },
    "contract_results": {
        "as_of": DATE,
        "table": TEXT,
        "rule": TEXT,
        "severity": TEXT,
        "evaluated": INT,
        "failed": INT,
        "passed": BOOL,
        "sample_keys": TEXT,
        "detail": TEXT,
    },
    "drift_flags": {
        "as_of": DATE,
        "flagged": BOOL,
        "reason": TEXT,
        "recommendation": TEXT,
        "reference_date": DATE,
        "profile_version": TEXT,
        "notified": TEXT,
        "first_flagged": DATE,
        "evidence": TEXT,
        "findings": TEXT,
        "judgeable": BOOL,
    },
    "drift_metrics": {
        "as_of": DATE,
        "cohort": TEXT,
        "metric": TEXT,
        "segment": TEXT,
        "value": FLOAT,
        "reference": FLOAT,
        "threshold": FLOAT,
        "flagged": BOOL,
        "n": INT,
        "note": TEXT,
    },
    "icp_evidence": {
        "trait": TEXT,
        "value": TEXT,
        "accounts_with": INT,
        "best_with": INT,
        "closed_with": INT,
        "won_with": INT,
        "lost_with": INT,
        "closed_without": INT,
        "won_without": INT,
        "lost_without": INT,
        "share_of_accounts": FLOAT,
        "support_best": FLOAT,
        "lift": FLOAT,
        "win_rate_with": FLOAT,
        "win_rate_without": FLOAT,
        "win_rate_with_low": FLOAT,
        "win_rate_with_high": FLOAT,
        "win_rate_lift": FLOAT,
        "p_value": FLOAT,
        "sufficient": BOOL,
        "q_value": FLOAT,
        "significant": BOOL,
        "top_customers_with": INT,
        "top_customers": INT,
        "base_win_rate": FLOAT,
        "points": INT,
        "verdict": TEXT,
        "label": TEXT,
        "evidence": TEXT,
        "as_of": DATE,
        "profile_version": TEXT,
    },
    "icp_profile": {
        "as_of": DATE,
        "profile_version": TEXT,
        "section": TEXT,
        "trait": TEXT,
        "value": TEXT,
        "label": TEXT,
        "points": INT,
        "number": FLOAT,
        "detail": TEXT,
    },
    "loaded_files": {
        "table": TEXT,
        "file": TEXT,
        "size": INT,
        "sha256": TEXT,
        "reading": TEXT,
        "rows_in_file": INT,
        "raw_rows": INT,
        "raw_hash_sum": TEXT,
        "recorded_at": TIMESTAMP,
    },
    "net_new_accounts": {
        "domain": TEXT,
        "company_name": TEXT,
        "fit_score": INT,
        "tier": TEXT,
        "top_positive": TEXT,
        "observed_at": TIMESTAMP,
        "as_of": DATE,
    },
    "quarantine": {
        "table": TEXT,
        "row_key": TEXT,
        "rule": TEXT,
        "message": TEXT,
        "raw_row": TEXT,
        "loaded_at": TIMESTAMP,
        # drop_row: the row was held back from staging; null_field: the value was nulled, the row kept.
        "action": TEXT,
    },
    "score_validation": {
        "as_of": DATE,
        "method": TEXT,
        "metric": TEXT,
        "segment": TEXT,
        "value": FLOAT,
        "note": TEXT,
        "split_date": DATE,
        "profile_version": TEXT,
    },
    "staging_findings": {"table": TEXT, "row_key": TEXT, "rule": TEXT, "rows": INT},
    "staging_inputs": {
        "table": TEXT,
        "fingerprint": TEXT,
        "context": TEXT,
        "loads": TEXT,
        "as_of": DATE,
        "clock": TIMESTAMP,
        "raw_rows": INT,
        "staged_rows": INT,
        "duplicates_removed": INT,
    },
    "trigger_events": {
        "event_id": TEXT,
        "account_id": TEXT,
        "trigger_type": TEXT,
        "occurred_at": TIMESTAMP,
        "strength": FLOAT,
        "evidence": TEXT,
        "source_table": TEXT,
        "source_key": TEXT,
        "as_of": DATE,
    },
}

# Tables the pipeline creates with DDL of their own (ingest/absence.py, writeback/plan.py): their
# types are in that DDL, checked against nothing here but the "no NULL type" rule.
DDL_TABLES = frozenset(
    {"absent_accounts", "presence_checks", "raw_absences", "writeback_state", "writeback_runs"}
)


def declared(schema: str, table: str) -> dict[str, str] | None:
    """The declared column types of an output table, or None when it is not declared here."""
    return OUTPUT_SCHEMAS.get(table) if schema == "icp" else None
