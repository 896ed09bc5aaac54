"""Account traits as known at an as-of date: the vocabulary of the ICP.

CRM firmographics are filled from the latest feed observation made by the as-of date
(point in time: nothing observed later leaks in). Single-valued traits (industry, bands,
country, funding stage) become one categorical column each; technologies, which an account
has several of, become a long table. Missing values are the level "unknown", so a score can
say "Industry unknown" rather than pretending to know.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from icp_pipeline.bands import company_age_band, employee_band, revenue_band

UNKNOWN = "unknown"
SINGLE_TRAITS: tuple[str, ...] = (
    "industry",
    "employee_band",
    "revenue_band",
    "country",
    "company_age_band",
    "funding_stage",
)
TECHNOLOGY = "technology"
TRAIT_LABELS: dict[str, str] = {
    "industry": "Industry",
    "employee_band": "Employees",
    "revenue_band": "Revenue",
    "country": "Country",
    "company_age_band": "Company age",
    "funding_stage": "Funding stage",
    "technology": "Uses",
}
FUNDING_STAGE_ORDER: tuple[str, ...] = (
    "Grant",
    "Debt",
    "Seed",
    "Series A",
    "Series B",
    "Series C",
    "Series D",
    "Series E+",
)


@dataclass
class AccountTraits:
    """One row per account with its single-valued traits, plus (account_id, technology) pairs."""

    accounts: pd.DataFrame
    technologies: pd.DataFrame
    sources: dict[str, str]

    @property
    def trait_names(self) -> list[str]:
        return [name for name in SINGLE_TRAITS if name in self.accounts] + [TECHNOLOGY]


def _end_of(as_of: dt.date) -> pd.Timestamp:
    return pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)


def latest_observation(firmographics: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Each matched account's most recent firmographic observation made by the as-of date."""
    known = firmographics[
        firmographics["account_id"].notna() & (firmographics["observed_at"] < _end_of(as_of))
    ]
    ordered = known.sort_values(["account_id", "observed_at"], kind="stable")
    return ordered.drop_duplicates("account_id", keep="last").set_index("account_id")


def _funding_stage(rounds: pd.DataFrame, as_of: dt.date) -> pd.Series:
    """The most advanced round type an account had announced by the as-of date."""
    known = rounds[rounds["account_id"].notna() & (rounds["announced_at"] < _end_of(as_of))]
    if known.empty:
        return pd.Series(dtype="str")
    stage = known["round_type"].astype("str").str.strip()
    stage = stage.where(~stage.str.match(r"(?i)^series [e-z]"), "Series E+")
    rank = stage.map({name: i for i, name in enumerate(FUNDING_STAGE_ORDER)}).fillna(-1)
    ordered = known.assign(stage=stage, rank=rank).sort_values(["account_id", "rank"], kind="stable")
    return ordered.drop_duplicates("account_id", keep="last").set_index("account_id")["stage"]


def _categorical(values: pd.Series) -> pd.Series:
    text = values.astype("str").str.strip()
    return text.where(text.notna() & (text != ""), UNKNOWN).astype("category")


def build_traits(
    accounts: pd.DataFrame,
    as_of: dt.date,
    firmographics: pd.DataFrame | None = None,
    funding_rounds: pd.DataFrame | None = None,
    custom_columns: tuple[str, ...] = (),
) -> AccountTraits:
    """Traits of every account that existed at the as-of date."""
    created = accounts["created_at"] if "created_at" in accounts else pd.Series(pd.NaT, index=accounts.index)
    current = accounts[created.isna() | (created < _end_of(as_of))].set_index("account_id")
    sources = {"crm": "accounts"}
    frame = pd.DataFrame(index=current.index)
    industry, employees, revenue, country = (
        current["industry"],
        current["employee_count"].astype("Float64"),
        current["annual_revenue"].astype("Float64"),
        current["country"],
    )
    founded = pd.Series(np.nan, index=current.index, dtype="Float64")
    stacks = pd.Series(dtype="str")
    if firmographics is not None and len(firmographics):
        observed = latest_observation(firmographics, as_of).reindex(current.index)
        industry = industry.fillna(observed["industry"])
        employees = employees.fillna(observed["employee_count"].astype("Float64"))
        revenue = revenue.fillna(observed["annual_revenue"].astype("Float64"))
        country = country.fillna(observed["country"])
        founded = observed["founded_year"].astype("Float64")
        stacks = observed["tech_stack"].dropna()
        sources["firmographics"] = "latest observation by as-of date"
    frame["industry"] = _categorical(industry)
    frame["employee_band"] = _categorical(employee_band(employees).astype("str"))
    frame["revenue_band"] = _categorical(revenue_band(revenue).astype("str"))
    frame["country"] = _categorical(country.astype("str").str.upper())
    frame["company_age_band"] = _categorical(company_age_band(as_of.year - founded).astype("str"))
    stage = pd.Series(UNKNOWN, index=current.index, dtype="str")
    if funding_rounds is not None and len(funding_rounds):
        stage = _funding_stage(funding_rounds, as_of).reindex(current.index)
        sources["funding_rounds"] = "most advanced round by as-of date"
    frame["funding_stage"] = _categorical(stage)
    for column in custom_columns:
        if column in current:
            frame[column] = _categorical(current[column])
    technologies = (
        stacks.astype("str").str.split(";").explode().str.strip().rename(TECHNOLOGY).reset_index()
        if len(stacks)
        else pd.DataFrame({"account_id": pd.Series(dtype="str"), TECHNOLOGY: pd.Series(dtype="str")})
    )
    technologies = technologies[technologies[TECHNOLOGY].notna() & (technologies[TECHNOLOGY] != "")]
    technologies = technologies.drop_duplicates(ignore_index=True)
    frame.index.name = "account_id"
    return AccountTraits(accounts=frame.reset_index(), technologies=technologies, sources=sources)
