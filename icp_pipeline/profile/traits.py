"""Account traits as known at an as-of date: the vocabulary of the ICP.

CRM firmographics are filled from the latest feed observation made by the as-of date
(point in time: nothing observed later leaks in). Single-valued traits (industry, bands,
country, funding stage) become one categorical column each; technologies, which an account
has several of, become a long table. Missing values are the level "unknown", so a score can
say "Industry unknown" rather than pretending to know.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from icp_pipeline.bands import company_age_band, employee_band, revenue_band
from icp_pipeline.config import SINGLE_TRAITS, TECHNOLOGY
from icp_pipeline.frames import positions

UNKNOWN = "unknown"
# The column of `AccountTraits.technologies` holding the row of the account in `accounts`.
ACCOUNT_ROW = "account_row"
# A column of deals read with the evidence: the row of the deal's account among the accounts
# traits are built from (-1: none), so each date's traits place deals without a text join.
ACCOUNT_POSITION = "account_position"
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
    """One row per account with its single-valued traits, plus (account_id, technology) pairs;
    each pair carries its account's row in `accounts` (`account_row`) and the technology is a
    categorical, so learning and scoring place pairs with integer codes, not text joins."""

    accounts: pd.DataFrame
    technologies: pd.DataFrame
    sources: dict[str, str]
    # Each row's position among the accounts the traits were built from (`TraitInputs.accounts`).
    source_rows: np.ndarray | None = None

    @property
    def trait_names(self) -> list[str]:
        return [name for name in SINGLE_TRAITS if name in self.accounts] + [TECHNOLOGY]

    def rows_of(self, deals: pd.DataFrame) -> np.ndarray:
        """Each deal's account row in `accounts` (-1: none or not an account at this date).

        From the deals' `account_position` when they carry one and these traits know their
        positions (integer takes), else by account id (a hash join of text).
        """
        if ACCOUNT_POSITION not in deals or self.source_rows is None:
            return positions(deals["account_id"], self.accounts["account_id"])
        source = deals[ACCOUNT_POSITION].to_numpy(dtype=np.int64)
        size = max(int(source.max(initial=-1)), int(self.source_rows.max(initial=-1))) + 1
        row_of_position = np.full(size + 1, -1, dtype=np.int64)  # the last slot: position -1
        row_of_position[self.source_rows] = np.arange(len(self.source_rows))
        return row_of_position[source]


ACCOUNT_COLUMNS: tuple[str, ...] = ("account_id", "industry", "employee_count", "annual_revenue", "country")
FIRMOGRAPHIC_COLUMNS: tuple[str, ...] = (
    "account_id",
    "observed_at",
    "industry",
    "employee_count",
    "annual_revenue",
    "country",
    "founded_year",
    "tech_stack",
)


def _end_of(as_of: dt.date) -> pd.Timestamp:
    return pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)


def latest_observation(firmographics: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Each matched account's most recent firmographic observation made by the as-of date.

    Ties on `observed_at` go to the row delivered last (as a stable sort would order them).
    """
    known = firmographics[
        firmographics["account_id"].notna() & (firmographics["observed_at"] < _end_of(as_of))
    ]
    codes, _ = pd.factorize(known["account_id"])
    latest = _last_per_group(codes, known["observed_at"].array.asi8, np.arange(len(known)))
    return known.iloc[np.sort(latest[latest >= 0])].set_index("account_id")


def _last_per_group(group: np.ndarray, order_by: np.ndarray, rows: np.ndarray, groups: int = 0) -> np.ndarray:
    """Per group number (0..groups-1): the row (from `rows`) that sorts last by `order_by`, ties
    going to the later row, as a stable sort would leave them; -1 for a group without rows.

    A numpy lexsort on integer group numbers: sorting a million account ids as text took seconds.
    """
    size = max(groups, int(group.max()) + 1 if len(group) else 0)
    latest = np.full(size, -1, dtype=np.int64)
    if len(group):
        ordered = np.lexsort((order_by, group))
        ordered_group = group[ordered]
        last = np.append(ordered_group[1:] != ordered_group[:-1], True)
        latest[ordered_group[last]] = rows[ordered[last]]
    return latest


def _rows_or_missing(frame: pd.DataFrame, picked: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """Rows `picked` of `frame` on `index` (-1: a row of missing values), like a reindex would give."""
    hit = picked >= 0
    taken = frame.iloc[np.where(hit, picked, 0)] if len(frame) else frame.reindex(range(len(picked)))
    columns = {}
    for name in frame.columns:
        values = taken[name].reset_index(drop=True)
        columns[name] = values if hit.all() else values.where(hit)
    return pd.DataFrame(columns).set_axis(index) if columns else pd.DataFrame(index=index)


def _funding_stages(rounds: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each round's stage name ("Series E+" for E and later) and its rank in FUNDING_STAGE_ORDER (-1)."""
    stage = rounds["round_type"].astype("str").str.strip()
    stage = stage.where(~stage.str.match(r"(?i)^series [e-z]"), "Series E+")
    rank = stage.map({name: i for i, name in enumerate(FUNDING_STAGE_ORDER)}).fillna(-1)
    return stage.to_numpy(), rank.to_numpy(dtype=np.float64)


def _categorical(values: pd.Series) -> pd.Series:
    """Trimmed text as a categorical, missing and empty values as "unknown"."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _categorical_of_categories(values)
    text = values.astype("str").str.strip()
    return text.where(text.notna() & (text != ""), UNKNOWN).astype("category")


def _categorical_of_categories(values: pd.Series) -> pd.Series:
    """`_categorical` of a categorical (the bands): cleaned once per category, not once per row.

    Gives what converting to text first gives: categories are the sorted labels present.
    """
    labels = pd.Series(values.cat.categories.astype("str")).str.strip()
    labels = labels.where(labels.notna() & (labels != ""), UNKNOWN).tolist() + [UNKNOWN]
    codes = values.cat.codes.to_numpy()  # -1 (missing) takes the trailing "unknown"
    used = np.unique(codes)
    present = sorted({labels[code] for code in used})
    position = {label: i for i, label in enumerate(present)}
    remap = np.array([position.get(label, -1) for label in labels], dtype=np.int64)
    categorical = pd.Categorical.from_codes(remap[codes], categories=pd.Index(present, dtype="str"))
    return pd.Series(categorical, index=values.index, name=values.name)


@dataclass
class TechnologyItems:
    """Every firmographic row's technologies, split once: pairs (feed row, technology code).

    Pairs are in feed row order (or grouped by the rows' accounts, `grouped_by`), then in the order
    the stack names them; empty items and repeats within a stack are dropped. Each as-of date then
    picks the pairs of the rows it observes with integer takes, instead of splitting a million
    stacks again per date.
    """

    row: np.ndarray
    code: np.ndarray
    values: pa.Array

    @property
    def categories(self) -> pd.Index:
        return pd.Index(pd.array(self.values, dtype="str"))

    @classmethod
    def split(cls, stacks: pd.Series) -> TechnologyItems:
        """Split with arrow kernels (`split_pattern`, `list_flatten`): pandas' `.str.split` builds a
        Python list per row. Items are trimmed; a missing stack has no items."""
        text = pa.array(stacks.astype("str").array, type=pa.large_string())
        text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
        parts = pc.split_pattern(text, ";")
        items = pc.utf8_trim_whitespace(pc.list_flatten(parts))
        row = pc.list_parent_indices(parts).to_numpy().astype(np.int64)
        encoded = pc.dictionary_encode(items)
        code = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        named = pc.not_equal(encoded.dictionary, "").to_numpy(zero_copy_only=False)
        values = encoded.dictionary.filter(pa.array(named))  # the blank item is no technology
        kept = named[code] if len(named) else np.ones(len(code), dtype=bool)
        code = (np.cumsum(named) - 1)[code] if len(named) else code
        # One pair per (row, technology): the first mention in a stack. Keys come nearly sorted (by
        # row), which a stable sort orders three times faster than a hash finds repeats.
        key = row * (len(values) + 1) + code
        order = np.argsort(key, kind="stable")
        repeat = np.zeros(len(key), dtype=bool)
        repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
        kept &= ~repeat
        return cls(row[kept], code[kept], values)

    def grouped_by(self, group_of_row: np.ndarray) -> TechnologyItems:
        """The pairs ordered by their row's group (stable: rows, then stack order, within one).

        Grouped by the rows' accounts, the pairs of any one observed row per account come in
        account order already, so `pairs` needs no sort per as-of date (0.4 s each at 1M).
        """
        order = np.argsort(group_of_row[self.row], kind="stable")
        return TechnologyItems(self.row[order], self.code[order], self.values)

    def pairs(self, owner_of_row: np.ndarray, owner_ids: pa.Array) -> pd.DataFrame:
        """(account_id, technology, account_row) for the rows with an owner (`owner_of_row` >= 0:
        the owner's position in `owner_ids`), in owner order, then in stack order."""
        owner = owner_of_row[self.row]
        taken = np.flatnonzero(owner >= 0)
        account_row = owner[taken]
        if (np.diff(account_row) < 0).any():
            order = np.argsort(account_row, kind="stable")
            taken, account_row = taken[order], account_row[order]
        return pd.DataFrame(
            {
                "account_id": pd.Series(pd.array(owner_ids.take(account_row), dtype="str"), copy=False),
                TECHNOLOGY: pd.Categorical.from_codes(self.code[taken], categories=self.categories),
                ACCOUNT_ROW: account_row,
            }
        )


def _no_technologies() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": pd.Series(dtype="str"),
            TECHNOLOGY: pd.Categorical([], categories=pd.Index([], dtype="str")),
            ACCOUNT_ROW: pd.Series(dtype=np.int64),
        }
    )


@dataclass(frozen=True)
class ObservationOrder:
    """Feed rows with an observation time, ordered by account, then time, then delivery.

    Each account's rows observed before a date are then a prefix of its run, so its latest one is
    where the run's prefix ends: a linear pass per as-of date instead of a sort (0.3 s each at 1M).
    """

    rows: np.ndarray  # feed row positions, in that order
    account: np.ndarray  # their account positions
    time: np.ndarray  # their observation times (int64, in `unit`)
    unit: str

    @classmethod
    def of(cls, account: np.ndarray, observed_at: pd.Series) -> ObservationOrder:
        timed = np.flatnonzero(observed_at.notna().to_numpy())
        time = observed_at.array.asi8[timed]
        order = np.lexsort((time, account[timed]))  # stable: ties keep delivery order
        return cls(timed[order], account[timed][order], time[order], observed_at.dt.unit)

    def latest_before(self, end: pd.Timestamp, groups: int) -> np.ndarray:
        """Per account position (0..groups-1): its row observed last before `end` (ties: the row
        delivered last), or -1; what `_last_per_group` of the rows before `end` gives."""
        latest = np.full(groups, -1, dtype=np.int64)
        before = np.flatnonzero(self.time < np.datetime64(end.tz_convert(None), self.unit).astype(np.int64))
        account = self.account[before]
        last = np.append(account[1:] != account[:-1], True) if len(account) else np.array([], dtype=bool)
        latest[account[last]] = self.rows[before[last]]
        return latest


@dataclass
class TraitInputs:
    """The staged frames traits are made of, prepared once for traits at several as-of dates.

    Feed rows keep only the columns traits read and are placed on their account's position among
    the accounts, so each as-of date's latest observation (a pass over rows ordered once, see
    `ObservationOrder`) and most advanced funding round are found with integer work instead of
    text joins (validation and drift build traits at four dates a night).
    """

    accounts: pd.DataFrame
    custom_columns: tuple[str, ...]
    firmographics: pd.DataFrame | None = None
    observation_order: ObservationOrder | None = None
    funding: pd.DataFrame | None = None
    funding_account: np.ndarray | None = None
    funding_stage: np.ndarray | None = None
    funding_rank: np.ndarray | None = None
    technologies: TechnologyItems | None = None

    @classmethod
    def prepare(
        cls,
        accounts: pd.DataFrame,
        firmographics: pd.DataFrame | None = None,
        funding_rounds: pd.DataFrame | None = None,
        custom_columns: tuple[str, ...] = (),
    ) -> TraitInputs:
        columns = [
            *ACCOUNT_COLUMNS,
            *(c for c in custom_columns if c in accounts and c not in ACCOUNT_COLUMNS),
        ]
        created = (
            accounts["created_at"] if "created_at" in accounts else pd.Series(pd.NaT, index=accounts.index)
        )
        own = accounts[columns].assign(created_at=created).reset_index(drop=True)
        inputs = cls(own, tuple(custom_columns))
        with ThreadPoolExecutor(max_workers=1) as pool:
            # The funding rounds are placed on a worker thread while the firmographics are split
            # here: both are mostly arrow kernels, which run without the GIL.
            has_funding = funding_rounds is not None and len(funding_rounds) > 0
            placed = pool.submit(inputs._place_funding, funding_rounds) if has_funding else None
            if firmographics is not None and len(firmographics):
                feed = firmographics[list(FIRMOGRAPHIC_COLUMNS)]
                account = positions(feed["account_id"], own["account_id"])
                kept = account >= 0  # rows of accounts outside the CRM never reach an account's traits
                observations = feed[kept].drop(columns="account_id").reset_index(drop=True)
                items = TechnologyItems.split(observations.pop("tech_stack"))
                inputs.technologies = items.grouped_by(account[kept])
                inputs.firmographics = observations
                inputs.observation_order = ObservationOrder.of(account[kept], observations["observed_at"])
            if placed is not None:
                placed.result()
        return inputs

    def _place_funding(self, funding_rounds: pd.DataFrame) -> None:
        """The funding rounds of CRM accounts, with their account's position and stage."""
        rounds = funding_rounds[["account_id", "round_type", "announced_at"]]
        account = positions(rounds["account_id"], self.accounts["account_id"])
        kept = account >= 0
        self.funding = rounds[kept].reset_index(drop=True)
        self.funding_account = account[kept]
        self.funding_stage, self.funding_rank = _funding_stages(self.funding)

    def traits(self, as_of: dt.date) -> AccountTraits:
        """Traits of every account that existed at the as-of date."""
        end = _end_of(as_of)
        created = self.accounts["created_at"]
        current_rows = np.flatnonzero((created.isna() | (created < end)).to_numpy())
        current = self.accounts.iloc[current_rows].drop(columns="created_at").set_index("account_id")
        sources = {"crm": "accounts"}
        frame = pd.DataFrame(index=current.index)
        industry, employees, revenue, country = (
            current["industry"],
            current["employee_count"].astype("Float64"),
            current["annual_revenue"].astype("Float64"),
            current["country"],
        )
        founded = pd.Series(np.nan, index=current.index, dtype="Float64")
        ids = pa.array(current.index.astype("str").array, type=pa.large_string())
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        technologies = _no_technologies()
        if self.firmographics is not None and self.observation_order is not None:
            feed = self.firmographics
            observed_rows = self.observation_order.latest_before(end, len(self.accounts))[current_rows]
            observed = _rows_or_missing(feed, observed_rows, current.index)
            industry = industry.fillna(observed["industry"])
            employees = employees.fillna(observed["employee_count"].astype("Float64"))
            revenue = revenue.fillna(observed["annual_revenue"].astype("Float64"))
            country = country.fillna(observed["country"])
            founded = observed["founded_year"].astype("Float64")
            if self.technologies is not None:
                owner_of_row = np.full(len(feed), -1, dtype=np.int64)
                seen = observed_rows >= 0
                owner_of_row[observed_rows[seen]] = np.flatnonzero(seen)
                technologies = self.technologies.pairs(owner_of_row, ids)
            sources["firmographics"] = "latest observation by as-of date"
        frame["industry"] = _categorical(industry)
        frame["employee_band"] = _categorical(employee_band(employees))
        frame["revenue_band"] = _categorical(revenue_band(revenue))
        frame["country"] = _categorical(country.astype("str").str.upper())
        frame["company_age_band"] = _categorical(company_age_band(as_of.year - founded))
        stage = pd.Series(UNKNOWN, index=current.index, dtype="str")
        if self.funding is not None and self.funding_account is not None:
            assert self.funding_stage is not None and self.funding_rank is not None
            known = np.flatnonzero((self.funding["announced_at"] < end).to_numpy())
            latest = _last_per_group(
                self.funding_account[known], self.funding_rank[known], known, len(self.accounts)
            )
            stages = pd.DataFrame({"stage": pd.Series(self.funding_stage, dtype="str")})
            stage = _rows_or_missing(stages, latest[current_rows], current.index)["stage"]
            sources["funding_rounds"] = "most advanced round by as-of date"
        frame["funding_stage"] = _categorical(stage)
        for column in self.custom_columns:
            if column in current:
                frame[column] = _categorical(current[column])
        frame.index.name = "account_id"
        return AccountTraits(frame.reset_index(), technologies, sources, source_rows=current_rows)


def build_traits(
    accounts: pd.DataFrame,
    as_of: dt.date,
    firmographics: pd.DataFrame | None = None,
    funding_rounds: pd.DataFrame | None = None,
    custom_columns: tuple[str, ...] = (),
) -> AccountTraits:
    """Traits of every account that existed at the as-of date."""
    return TraitInputs.prepare(accounts, firmographics, funding_rounds, custom_columns).traits(as_of)
