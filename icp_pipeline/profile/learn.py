"""Read the staged tables an ICP is learned from, as known at an as-of date."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.history import ACCOUNT_HISTORY
from icp_pipeline.contracts.staging import STAGING, stage_calls
from icp_pipeline.errors import IcpInputError
from icp_pipeline.frames import positions
from icp_pipeline.profile.traits import (
    ACCOUNT_COLUMNS,
    ACCOUNT_POSITION,
    FIRMOGRAPHIC_COLUMNS,
    AccountTraits,
    DealTraits,
    TraitInputs,
)
from icp_pipeline.warehouse import connect, read_present_columns, read_table


@dataclass
class Evidence:
    """The staged inputs of learning and scoring."""

    accounts: pd.DataFrame
    opportunities: pd.DataFrame
    subscriptions: pd.DataFrame | None
    firmographics: pd.DataFrame | None
    funding_rounds: pd.DataFrame | None
    account_history: pd.DataFrame | None = None
    leadership_changes: pd.DataFrame | None = None
    job_postings: pd.DataFrame | None = None
    _traits: dict[tuple[dt.date, str], AccountTraits] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _inputs: dict[str, TraitInputs] = field(default_factory=dict, init=False, repr=False, compare=False)
    _deal_traits: dict[str, DealTraits] = field(default_factory=dict, init=False, repr=False, compare=False)

    def _prepared(self, config: IcpConfig) -> tuple[str, TraitInputs]:
        rules = config.icp
        key = repr((rules.custom_columns, rules.static_columns, rules.events))
        if key not in self._inputs:
            self._inputs[key] = TraitInputs.prepare(
                self.accounts,
                self.firmographics,
                self.funding_rounds,
                tuple(rules.custom_columns),
                history=self.account_history,
                leadership_changes=self.leadership_changes,
                job_postings=self.job_postings,
                events=rules.events,
                static_columns=tuple(rules.static_columns),
            )
        return key, self._inputs[key]

    def traits(self, config: IcpConfig, as_of: dt.date) -> AccountTraits:
        """Traits as known at the as-of date, built once per date (drift asks twice for the same one)
        from inputs prepared once (validation and drift ask for several dates)."""
        key, inputs = self._prepared(config)
        if (as_of, key) not in self._traits:
            self._traits[(as_of, key)] = inputs.traits(as_of)
        return self._traits[(as_of, key)]

    def deal_traits(self, config: IcpConfig) -> DealTraits:
        """Every closed or open deal as its account was when the deal was created, built once: what
        a deal was created into does not depend on the date learning looks from."""
        key, inputs = self._prepared(config)
        if key not in self._deal_traits:
            # Only a deal with a close date can be a closed deal at any date learning looks from.
            closed = self.opportunities[self.opportunities["closed_at"].notna().to_numpy()]
            self._deal_traits[key] = inputs.deal_traits(closed)
        return self._deal_traits[key]

    def forget_dates(self, keep: dt.date | None = None) -> None:
        """Drop the traits built per as-of date (a million rows each) but `keep`'s; the prepared
        inputs stay."""
        for key in [key for key in self._traits if key[0] != keep]:
            del self._traits[key]


# The columns learning, validation and drift read from each staged table (accounts: those traits
# are made of, plus the configured custom traits). Leaving out the lineage, raw and matching
# columns saves a third of the memory and of the reading time at a million accounts.
EVIDENCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "opportunities": (
        "opportunity_id",
        "account_id",
        "stage",
        "amount",
        "created_at",
        "closed_at",
        "updated_at",
    ),
    "subscriptions": ("subscription_id", "account_id", "started_at", "ended_at", "arr", "updated_at"),
    "firmographics": FIRMOGRAPHIC_COLUMNS,
    "funding_rounds": ("round_id", "account_id", "round_type", "amount_usd", "announced_at"),
    "leadership_changes": ("change_id", "account_id", "title", "change_type", "effective_at"),
    "job_postings": ("posting_id", "account_id", "posted_at"),
}


def _read(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame | None:
    wanted = EVIDENCE_COLUMNS.get(table)
    if wanted is None:
        return read_table(con, STAGING, table)
    return read_present_columns(con, STAGING, table, wanted)


def _optional(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame | None:
    frame = _read(con, table)
    return frame if frame is not None and len(frame) else None


def read_evidence(con: duckdb.DuckDBPyConnection, custom_columns: Sequence[str] | None = None) -> Evidence:
    """The staged evidence; with `custom_columns` (the config's custom traits), only the account
    columns traits are built from, else every account column."""
    accounts = (
        read_table(con, STAGING, "accounts")
        if custom_columns is None
        else read_present_columns(con, STAGING, "accounts", (*ACCOUNT_COLUMNS, "created_at", *custom_columns))
    )
    opportunities = _read(con, "opportunities")
    if accounts is None or opportunities is None:
        raise IcpInputError("staging.accounts and staging.opportunities are needed; run ingestion first")
    # Each deal's account position, found once: every date's traits then place deals by integers.
    opportunities[ACCOUNT_POSITION] = positions(opportunities["account_id"], accounts["account_id"])
    return Evidence(
        accounts=accounts,
        opportunities=opportunities,
        subscriptions=_optional(con, "subscriptions"),
        firmographics=_optional(con, "firmographics"),
        funding_rounds=_optional(con, "funding_rounds"),
        account_history=_optional(con, ACCOUNT_HISTORY),
        leadership_changes=_optional(con, "leadership_changes"),
        job_postings=_optional(con, "job_postings"),
    )


# The evidence of the last read, with its key: (run id, warehouse, custom columns, stage calls).
_run_evidence: tuple[tuple[str, str, tuple[str, ...], int], Evidence] | None = None


def run_evidence(run_id: str, warehouse: Path, custom_columns: Sequence[str], as_of: dt.date) -> Evidence:
    """The staged evidence, read once per run: learning, validation and drift ask in turn.

    The evidence is read again when the run, the warehouse or the custom traits differ, or when
    this process has staged a table since the last read (the nightly job stages every table
    before learning, but a hand-picked selection need not order them so). Each step gets the
    trait inputs already prepared (the costly part at a million accounts) and the traits at the
    run's as-of date (learning and drift both use them); other dates' traits are freed. A new
    read replaces the last, so one is held at most.
    """
    global _run_evidence
    key = (run_id, str(warehouse.resolve()), tuple(custom_columns), stage_calls())
    if _run_evidence is None or _run_evidence[0] != key:
        _run_evidence = None  # free the last read's frames before reading the new ones
        with connect(warehouse, read_only=True) as con:
            _run_evidence = (key, read_evidence(con, custom_columns))
    evidence = _run_evidence[1]
    evidence.forget_dates(keep=as_of)
    return evidence
