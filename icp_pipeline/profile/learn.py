"""Read the staged tables an ICP is learned from, as known at an as-of date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.staging import STAGING
from icp_pipeline.errors import IcpInputError
from icp_pipeline.profile.traits import AccountTraits, TraitInputs
from icp_pipeline.warehouse import read_table


@dataclass
class Evidence:
    """The staged inputs of learning and scoring."""

    accounts: pd.DataFrame
    opportunities: pd.DataFrame
    subscriptions: pd.DataFrame | None
    firmographics: pd.DataFrame | None
    funding_rounds: pd.DataFrame | None
    _traits: dict[tuple[dt.date, tuple[str, ...]], AccountTraits] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _inputs: dict[tuple[str, ...], TraitInputs] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def traits(self, config: IcpConfig, as_of: dt.date) -> AccountTraits:
        """Traits as known at the as-of date, built once per date (drift asks twice for the same one)
        from inputs prepared once (validation and drift ask for several dates)."""
        custom = tuple(config.icp.custom_columns)
        if custom not in self._inputs:
            self._inputs[custom] = TraitInputs.prepare(
                self.accounts, self.firmographics, self.funding_rounds, custom
            )
        key = (as_of, custom)
        if key not in self._traits:
            self._traits[key] = self._inputs[custom].traits(as_of)
        return self._traits[key]


def _optional(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame | None:
    frame = read_table(con, STAGING, table)
    return frame if frame is not None and len(frame) else None


def read_evidence(con: duckdb.DuckDBPyConnection) -> Evidence:
    accounts = read_table(con, STAGING, "accounts")
    opportunities = read_table(con, STAGING, "opportunities")
    if accounts is None or opportunities is None:
        raise IcpInputError("staging.accounts and staging.opportunities are needed; run ingestion first")
    return Evidence(
        accounts=accounts,
        opportunities=opportunities,
        subscriptions=_optional(con, "subscriptions"),
        firmographics=_optional(con, "firmographics"),
        funding_rounds=_optional(con, "funding_rounds"),
    )
