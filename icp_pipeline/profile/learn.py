"""Read the staged tables an ICP is learned from, as known at an as-of date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.contracts.staging import STAGING
from icp_pipeline.errors import IcpInputError
from icp_pipeline.profile.traits import AccountTraits, build_traits
from icp_pipeline.warehouse import read_table


@dataclass
class Evidence:
    """The staged inputs of learning and scoring."""

    accounts: pd.DataFrame
    opportunities: pd.DataFrame
    subscriptions: pd.DataFrame | None
    firmographics: pd.DataFrame | None
    funding_rounds: pd.DataFrame | None

    def traits(self, config: IcpConfig, as_of: dt.date) -> AccountTraits:
        return build_traits(
            self.accounts, as_of, self.firmographics, self.funding_rounds, config.icp.custom_columns
        )


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
