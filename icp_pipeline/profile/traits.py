"""Account traits as they were at a moment: the vocabulary of the ICP.

Scoring describes every account at the as-of date; learning describes each deal by its account
as it was when the deal was created (point in time: a tool adopted after the win, a headcount
grown into, a segment relabelled later never explain the deal). CRM values come from the account
version valid then (`staging.account_history`), gaps are filled from the latest firmographic
observation made by then. Single-valued traits (industry, bands, country, funding stage, the
event traits) become one categorical column each; technologies, which an account has several
of, become a long table. Missing values are the level "unknown", so a score can say "Industry
unknown" rather than pretending to know.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from icp_pipeline.bands import company_age_band, employee_band, revenue_band
from icp_pipeline.config import SINGLE_TRAITS, TECHNOLOGY, EventTraitConfig
from icp_pipeline.frames import positions
from icp_pipeline.profile.events import EventInputs, headcount_trend
from icp_pipeline.profile.timeline import ORIGIN, Timeline, seconds_of

UNKNOWN = "unknown"
LAST_SECOND = 4_102_444_799  # 2099-12-31 23:59:59 UTC
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
# Traits whose values say it all ("CMO left in the last 12 months"), shown without a label.
SELF_DESCRIBED: frozenset[str] = frozenset(
    ("recent_funding", "leadership_change", "hiring_trend", "headcount_trend")
)
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

    def without(self, names: tuple[str, ...]) -> AccountTraits:
        """These traits without the named single-valued ones (same rows)."""
        dropped = self.accounts.drop(columns=[n for n in names if n in self.accounts])
        return AccountTraits(dropped, self.technologies, self.sources, self.source_rows)

    def with_row_ids(self) -> AccountTraits:
        """A copy identified by row number ("0", "1", ...) instead of account id: deals of one
        account are then told apart."""
        rows = pd.Series(np.arange(len(self.accounts)).astype("str"), dtype="str")
        owners = pd.Series(self.technologies[ACCOUNT_ROW].to_numpy().astype("str"), dtype="str")
        return AccountTraits(
            self.accounts.assign(account_id=rows.to_numpy()),
            self.technologies.assign(account_id=owners.to_numpy()),
            self.sources,
        )

    def take(self, rows: np.ndarray) -> AccountTraits:
        """The rows at `rows` (positions into `accounts`, repeats allowed), in that order, with
        their technologies."""
        tech = self.technologies
        owner = tech[ACCOUNT_ROW].to_numpy()
        order = np.argsort(owner, kind="stable")  # pairs come in row order already: a linear pass
        start = np.searchsorted(owner[order], np.arange(len(self.accounts) + 1))
        new_row, taken = _ranges(start[rows], np.diff(start)[rows])
        technologies = pd.DataFrame(
            {
                "account_id": tech["account_id"].iloc[order[taken]].reset_index(drop=True),
                TECHNOLOGY: tech[TECHNOLOGY].iloc[order[taken]].reset_index(drop=True),
                ACCOUNT_ROW: new_row,
            }
        )
        return AccountTraits(self.accounts.iloc[rows].reset_index(drop=True), technologies, self.sources)


def _ranges(first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) for the ranges first[i] .. first[i] + count[i] - 1, owner i, in order."""
    owner = np.repeat(np.arange(len(first), dtype=np.int64), count)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
    return owner, np.repeat(first, count) + offset


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

    Pairs are in feed row order, then in the order the stack names them; empty items and repeats
    within a stack are dropped. Each moment then picks the pairs of the rows it observes with
    integer takes, instead of splitting a million stacks again per date.
    """

    row: np.ndarray
    code: np.ndarray
    values: pa.Array
    _starts: np.ndarray | None = field(default=None, repr=False, compare=False)

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

    def row_starts(self, rows: int) -> np.ndarray:
        """Where each feed row's pairs start (pairs in row order), with the end appended."""
        if self._starts is None or len(self._starts) != rows + 1:
            self._starts = np.searchsorted(self.row, np.arange(rows + 1))
        return self._starts


def _no_technologies() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": pd.Series(dtype="str"),
            TECHNOLOGY: pd.Categorical([], categories=pd.Index([], dtype="str")),
            ACCOUNT_ROW: pd.Series(dtype=np.int64),
        }
    )


def _technology_pairs(
    items: TechnologyItems, feed_rows: int, observed_rows: np.ndarray, ids: pd.Index
) -> pd.DataFrame:
    """(account_id, technology, account_row) of each query's observed feed row (-1: none), in query
    order, then in stack order; a feed row observed by several queries gives each its pairs.
    `items` come in feed row order (as `TechnologyItems.split` makes them). The account ids are a
    categorical: millions of pairs share a million ids, and copying the text took seconds."""
    start = items.row_starts(feed_rows)
    seen = np.flatnonzero(observed_rows >= 0)
    query, taken = _ranges(start[observed_rows[seen]], np.diff(start)[observed_rows[seen]])
    query = seen[query]
    id_codes, id_names = pd.factorize(ids)
    return pd.DataFrame(
        {
            "account_id": pd.Categorical.from_codes(id_codes[query], categories=id_names),
            TECHNOLOGY: pd.Categorical.from_codes(items.code[taken], categories=items.categories),
            ACCOUNT_ROW: query.astype(np.int64),
        }
    )


@dataclass
class DealTraits:
    """Each closed deal described as its account was when the deal was created.

    `traits.accounts` has one row per deal (its `account_id` is the deal's account); the flags say
    which deals had to be described with data recorded after them: the oldest CRM version (no
    history reaches back to the deal), the oldest firmographic observation (none made before the
    deal; technologies are then left out, never taken from later), or no technology data.
    """

    opportunity_ids: pd.Series
    traits: AccountTraits
    later_crm: np.ndarray
    later_firmographics: np.ndarray
    no_technologies: np.ndarray
    # Each deal's index label in the frame it was described from (lets a caller holding that
    # frame's rows find the deals by integers, see `rows_of`).
    labels: np.ndarray | None = None

    def rows_of(self, deals: pd.DataFrame) -> np.ndarray:
        """Each of `deals`' row in these deal traits (-1: not described): by index label where the
        labels are those of the same frame (checked on the ids), else by opportunity id."""
        if self.labels is not None and len(self.labels) and pd.api.types.is_integer_dtype(deals.index):
            index = deals.index.to_numpy()
            size = int(max(self.labels.max(), index.max(initial=-1))) + 1
            if index.min(initial=0) >= 0 and size <= 4 * max(len(index), len(self.labels)):
                row_of_label = np.full(size, -1, dtype=np.int64)
                row_of_label[self.labels] = np.arange(len(self.labels))
                rows = row_of_label[index]
                found = rows >= 0
                theirs = pa.array(deals["opportunity_id"].array).filter(pa.array(found))
                mine = pa.array(self.opportunity_ids.array).take(pa.array(rows[found]))
                same = pc.equal(theirs.cast(pa.large_string()), mine.cast(pa.large_string()))
                if pc.all(same).as_py() is not False:
                    return rows
        return positions(deals["opportunity_id"], self.opportunity_ids)

    def take(self, rows: np.ndarray) -> DealTraits:
        """The deals at `rows` (positions), in that order."""
        return DealTraits(
            self.opportunity_ids.iloc[rows].reset_index(drop=True),
            self.traits.take(rows),
            self.later_crm[rows],
            self.later_firmographics[rows],
            self.no_technologies[rows],
            None if self.labels is None else self.labels[rows],
        )

    @classmethod
    def at_moment(cls, traits: AccountTraits, deals: pd.DataFrame) -> DealTraits:
        """Every deal described by its account's traits at one moment (not when it was created):
        for callers without point-in-time inputs. Nothing is flagged, though it may be later."""
        rows = traits.rows_of(deals)
        placed = np.flatnonzero(rows >= 0)
        none = np.zeros(len(placed), dtype=bool)
        ids = deals["opportunity_id"].iloc[placed].reset_index(drop=True)
        labels = deals.index.to_numpy()[placed] if pd.api.types.is_integer_dtype(deals.index) else None
        return cls(ids, traits.take(rows[placed]), none, none, none.copy(), labels)

    def fallback_counts(self) -> dict[str, int]:
        return {
            "deals": len(self.later_crm),
            "later_crm_version": int(self.later_crm.sum()),
            "later_firmographics": int(self.later_firmographics.sum()),
            "no_technology_data": int(self.no_technologies.sum()),
        }


@dataclass
class TraitInputs:
    """The staged frames traits are made of, prepared once for traits at several moments.

    Every dated table (CRM account versions, firmographic observations, funding rounds, event
    feeds) is placed on its account's position and kept as a `Timeline`, so "the account as it
    was at t" is a binary search per (account, t): one t for every account (scoring at a date) or
    one t per deal (learning from what was true when each deal was created).
    """

    accounts: pd.DataFrame
    custom_columns: tuple[str, ...]
    static_columns: tuple[str, ...] = ()
    history: pd.DataFrame | None = None
    history_line: Timeline | None = None
    history_latest: int = 0
    firmographics: pd.DataFrame | None = None
    observations: Timeline | None = None
    employees: np.ndarray | None = None
    funding: pd.DataFrame | None = None
    funding_line: Timeline | None = None
    funding_best: np.ndarray | None = None
    funding_stage: np.ndarray | None = None
    technologies: TechnologyItems | None = None
    events: EventInputs | None = None

    @classmethod
    def prepare(
        cls,
        accounts: pd.DataFrame,
        firmographics: pd.DataFrame | None = None,
        funding_rounds: pd.DataFrame | None = None,
        custom_columns: tuple[str, ...] = (),
        *,
        history: pd.DataFrame | None = None,
        leadership_changes: pd.DataFrame | None = None,
        job_postings: pd.DataFrame | None = None,
        events: EventTraitConfig | None = None,
        static_columns: tuple[str, ...] = (),
    ) -> TraitInputs:
        """`history`: the CRM account versions (the account columns and `valid_from`); without it the
        current values describe every moment. `events`: the event traits' windows (None: none)."""
        columns = [
            *ACCOUNT_COLUMNS,
            *(c for c in custom_columns if c in accounts and c not in ACCOUNT_COLUMNS),
        ]
        created = (
            accounts["created_at"] if "created_at" in accounts else pd.Series(pd.NaT, index=accounts.index)
        )
        own = accounts[columns].assign(created_at=created).reset_index(drop=True)
        inputs = cls(own, tuple(custom_columns), tuple(static_columns))
        if history is not None and len(history):
            account = positions(history["account_id"], own["account_id"])
            kept = account >= 0
            wanted = [c for c in columns[1:] if c in history]
            inputs.history = history.loc[kept, wanted].reset_index(drop=True)
            valid_from = seconds_of(history.loc[kept, "valid_from"])
            inputs.history_line = Timeline.of(account[kept], valid_from)
            inputs.history_latest = int(valid_from.max(initial=0))
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
                inputs.technologies = TechnologyItems.split(observations.pop("tech_stack"))
                inputs.firmographics = observations
                inputs.observations = Timeline.of(account[kept], seconds_of(observations["observed_at"]))
                inputs.employees = observations["employee_count"].to_numpy(dtype=np.float64, na_value=np.nan)
            if placed is not None:
                placed.result()
        if events is not None and events.enabled:
            inputs.events = EventInputs.prepare(
                events, own["account_id"], funding_rounds, leadership_changes, job_postings
            )
        return inputs

    def _place_funding(self, funding_rounds: pd.DataFrame) -> None:
        """The funding rounds of CRM accounts on a timeline, with each one's most advanced round so far."""
        rounds = funding_rounds[["account_id", "round_type", "announced_at"]]
        account = positions(rounds["account_id"], self.accounts["account_id"])
        kept = account >= 0
        self.funding = rounds[kept].reset_index(drop=True)
        self.funding_stage, rank = _funding_stages(self.funding)
        self.funding_line = Timeline.of(account[kept], seconds_of(self.funding["announced_at"]))
        self.funding_best = self.funding_line.running_best(rank.astype(np.int64))

    def _crm_values(self, rows: np.ndarray, at: np.ndarray | int) -> tuple[pd.DataFrame, np.ndarray]:
        """The CRM columns of the accounts at `rows` as of `at`, and which of them come from a version
        recorded after `at` (the oldest version, or today's values where no history holds one)."""
        current = self.accounts.iloc[rows].drop(columns=["account_id", "created_at"]).reset_index(drop=True)
        if self.history is None or self.history_line is None:
            return current, np.ones(len(rows), dtype=bool)
        if np.ndim(at) == 0 and int(at) >= self.history_latest:
            return current, np.zeros(len(rows), dtype=bool)  # every version is known by then
        version = self.history_line.last_at(rows, at)
        later = version < 0
        version = np.where(later, self.history_line.first(rows), version)
        values = _rows_or_missing(self.history, version, current.index)
        missing = version < 0  # an account without any version yet: today's values
        for name in current.columns:
            if name not in values:
                values[name] = current[name]
            elif missing.any():
                values[name] = values[name].where(~missing, current[name])
        return values[list(current.columns)], later

    def _describe(
        self, rows: np.ndarray, at: np.ndarray | int, ids: pd.Index, *, deals: bool
    ) -> tuple[AccountTraits, dict[str, np.ndarray]]:
        """Traits of the accounts at `rows` as of `at` (seconds, one per row or one for all).

        For deals (`deals=True`) a missing earlier firmographic observation falls back to the oldest
        one for the single values; custom columns without history stay unknown unless declared
        static. The flags say where data recorded later was used.
        """
        n = len(rows)
        crm, later_crm = self._crm_values(rows, at)
        index = pd.RangeIndex(n)
        sources = {"crm": "accounts"}
        frame = pd.DataFrame(index=index)
        industry, country = crm["industry"], crm["country"]
        employees = crm["employee_count"].astype("Float64")
        revenue = crm["annual_revenue"].astype("Float64")
        founded = pd.Series(np.nan, index=index, dtype="Float64")
        technologies = _no_technologies()
        later_firmographics = np.zeros(n, dtype=bool)
        observed = np.full(n, -1, dtype=np.int64)
        if self.firmographics is not None and self.observations is not None:
            observed = self.observations.last_at(rows, at)
            described = observed
            if deals:
                oldest = self.observations.first(rows)
                later_firmographics = (observed < 0) & (oldest >= 0)
                described = np.where(observed < 0, oldest, observed)
            seen = _rows_or_missing(self.firmographics, described, index)
            industry = industry.fillna(seen["industry"])
            employees = employees.fillna(seen["employee_count"].astype("Float64"))
            revenue = revenue.fillna(seen["annual_revenue"].astype("Float64"))
            country = country.fillna(seen["country"])
            founded = seen["founded_year"].astype("Float64")
            if self.technologies is not None:
                technologies = _technology_pairs(self.technologies, len(self.firmographics), observed, ids)
            sources["firmographics"] = "latest observation at the moment described"
        moments = np.clip(np.atleast_1d(np.asarray(at, dtype=np.int64)), ORIGIN, LAST_SECOND)
        year = pd.to_datetime(moments, unit="s").year.to_numpy()
        frame["industry"] = _categorical(industry)
        frame["employee_band"] = _categorical(employee_band(employees))
        frame["revenue_band"] = _categorical(revenue_band(revenue))
        frame["country"] = _categorical(country.astype("str").str.upper())
        frame["company_age_band"] = _categorical(company_age_band(np.asarray(year) - founded))
        stage = pd.Series(UNKNOWN, index=index, dtype="str")
        if self.funding_line is not None and self.funding_best is not None and self.funding_stage is not None:
            at_round = self.funding_line.positions_at(rows, at)
            best = np.where(at_round >= 0, self.funding_best[np.maximum(at_round, 0)], -1)
            stages = pd.DataFrame({"stage": pd.Series(self.funding_stage, dtype="str")})
            stage = _rows_or_missing(stages, best, index)["stage"]
            sources["funding_rounds"] = "most advanced round by the moment described"
        frame["funding_stage"] = _categorical(stage)
        if self.events is not None:
            event_traits = {
                "recent_funding": self.events.recent_funding(rows, at),
                "leadership_change": self.events.leadership_change(rows, at),
                "hiring_trend": self.events.hiring_trend(rows, at),
                "headcount_trend": headcount_trend(
                    self.observations, self.employees, rows, at, self.events.windows.headcount_months
                ),
            }
            for name, values in event_traits.items():
                if values is not None:
                    frame[name] = values
        for column in self.custom_columns:
            if column in crm:
                values = crm[column]
                if deals and column not in self.static_columns:
                    values = values.where(~later_crm)  # no history: what it was then is unknown
                frame[column] = _categorical(values)
        frame.insert(0, "account_id", pd.Series(ids.astype("str").array, index=index))
        flags = {
            "later_crm": later_crm if deals else np.zeros(n, dtype=bool),
            "later_firmographics": later_firmographics,
            "no_technologies": observed < 0,
        }
        return AccountTraits(frame, technologies, sources), flags

    def traits(self, as_of: dt.date) -> AccountTraits:
        """Traits of every account that existed at the as-of date, as known by its end."""
        end = _end_of(as_of)
        created = self.accounts["created_at"]
        current_rows = np.flatnonzero((created.isna() | (created < end)).to_numpy())
        ids = pd.Index(self.accounts["account_id"].iloc[current_rows])
        at = int(end.timestamp()) - 1
        traits, _ = self._describe(current_rows, at, ids, deals=False)
        traits.source_rows = current_rows
        return traits

    def deal_traits(self, deals: pd.DataFrame) -> DealTraits:
        """Each deal (`opportunity_id`, `account_position`, `created_at`) as its account was when
        the deal was created; deals of no account are left out."""
        position = (
            deals[ACCOUNT_POSITION].to_numpy(dtype=np.int64)
            if ACCOUNT_POSITION in deals
            else positions(deals["account_id"], self.accounts["account_id"])
        )
        moment = seconds_of(deals["created_at"])
        # In (account, moment) order, every timeline is asked in key order: numpy's binary search
        # starts from the last answer then, several times faster than for queries in any order.
        placed_rows = np.flatnonzero(position >= 0)
        placed_rows = placed_rows[np.lexsort((moment[placed_rows], position[placed_rows]))]
        placed = deals.iloc[placed_rows]
        rows, at = position[placed_rows], moment[placed_rows]
        traits, flags = self._describe(rows, at, pd.Index(placed["account_id"]), deals=True)
        return DealTraits(
            placed["opportunity_id"].reset_index(drop=True),
            traits,
            flags["later_crm"],
            flags["later_firmographics"],
            flags["no_technologies"],
            placed.index.to_numpy() if pd.api.types.is_integer_dtype(placed.index) else None,
        )


def build_traits(
    accounts: pd.DataFrame,
    as_of: dt.date,
    firmographics: pd.DataFrame | None = None,
    funding_rounds: pd.DataFrame | None = None,
    custom_columns: tuple[str, ...] = (),
) -> AccountTraits:
    """Traits of every account that existed at the as-of date."""
    return TraitInputs.prepare(accounts, firmographics, funding_rounds, custom_columns).traits(as_of)
