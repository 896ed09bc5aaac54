"""Deterministic, vectorized demo data with a planted truth.

The demo exists so every later stage (ingest, entity resolution, profiling, trigger
detection, drift) can be checked against a known answer: the generator plants an
ICP (which traits move win rates), buying triggers (which accounts should fire)
and the true feed-row -> account mapping, writes them next to the raw file drop,
and returns them.

`DemoSpec.messy` adds a known number of bad rows of each kind a real export has (non-numeric
employee counts, unparseable dates, references to deleted accounts, repeated keys, lines that
do not parse), so the data-health section has something to show; their keys and the rule each
must trip are in ``truth.json["messy"]``. The clean rows stay exactly as without it.

Everything is drawn from one ``numpy.random.default_rng(seed)`` in a fixed order,
so the same :class:`DemoSpec` gives byte-identical files. Rows are produced with
array operations only (numpy for numbers, Arrow compute for strings), which keeps
1,000,000 accounts well inside a minute.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from icp_pipeline.bands import EMPLOYEE_LABELS, employee_band
from icp_pipeline.demo import _text as tx

DEMO_AS_OF: date = date(2026, 11, 1)


@dataclass(frozen=True)
class DemoSpec:
    """What to generate; equal specs give byte-identical output."""

    accounts: int = 2000
    seed: int = 7
    as_of: date = DEMO_AS_OF
    drift_date: date | None = None
    planted_icp: bool = True  # False: outcomes independent of every trait (null model)
    messy: bool = False  # True: append the planted bad rows of MESSY_ROWS to the CRM files


INDUSTRIES: tuple[str, ...] = (
    "Software", "Fintech", "Healthcare", "Retail", "Manufacturing",
    "Education", "Government", "Media", "Logistics", "Energy",
)  # fmt: skip
INDUSTRY_P: tuple[float, ...] = (0.20, 0.08, 0.13, 0.10, 0.11, 0.07, 0.06, 0.07, 0.09, 0.09)
COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "CA", "AU", "NL", "IN", "BR", "JP")
COUNTRY_P: tuple[float, ...] = (0.45, 0.10, 0.08, 0.06, 0.07, 0.05, 0.04, 0.07, 0.04, 0.04)
TECHNOLOGIES: tuple[str, ...] = (
    "Salesforce", "HubSpot", "Snowflake", "AWS", "GCP", "Azure", "Segment", "dbt",
    "Looker", "Tableau", "Stripe", "Zendesk", "Intercom", "Marketo", "Shopify",
)  # fmt: skip
# Relative popularity of every technology except Snowflake, whose share is fixed.
_OTHER_TECH_WEIGHTS: dict[str, float] = {
    "Salesforce": 3.0, "HubSpot": 2.0, "AWS": 3.0, "GCP": 1.5, "Azure": 1.5, "Segment": 1.0,
    "dbt": 1.0, "Looker": 1.0, "Tableau": 1.5, "Stripe": 1.5, "Zendesk": 1.5, "Intercom": 1.0,
    "Marketo": 1.0, "Shopify": 1.0,
}  # fmt: skip
SNOWFLAKE_SHARE = 0.20
MAX_EMPLOYEES = 200_000
# Point in time (drawn from a generator of their own, so every other row stays as it was):
# - a leak: a tool customers adopt after buying, seen only in observations dated after all of
#   their deals; it has no effect on winning, and only a profile that reads today's traits for
#   yesterday's deals credits it;
# - an event trait: the CMO left in the 12 months before a deal was created; it raises the win
#   probability of that deal.
LEAK_TECHNOLOGY = "Gainsight"
_LEAK_BIT = 15  # after the bits of TECHNOLOGIES
LEAK_SHARE = 0.8
DEPARTURE_SHARE = 0.2
DEPARTURE_TITLE = "Chief Marketing Officer"
EVENT_TERM: tuple[str, str, float] = ("leadership_change", "CMO left in the last 12 months", 1.2)
EVENT_WINDOW_DAYS = 365
# Deals created after the as-of date, kept in truth/future_opportunities.parquet with their
# outcome: what a score made on the as-of date is judged by.
FUTURE_DAYS = 180

# Planted win model (applies to every opportunity; drawn only for closed ones).
WIN_INTERCEPT = -2.0
MUST_HAVE_TERMS: tuple[tuple[str, str, float], ...] = (
    ("industry", "Software", 1.3),
    ("employee_band", "201-1000", 1.1),
    ("technology", "Snowflake", 1.0),
)
HARD_NO: tuple[tuple[str, str], ...] = (("industry", "Government"), ("employee_band", "1-10"))
HARD_NO_PROBABILITY = 0.02
DRIFT_REPLACES = ("industry", "Software")
DRIFT_TERM: tuple[str, str, float] = ("industry", "Healthcare", 1.5)
NULL_WIN_PROBABILITY = 0.25
CHURN_FIT, CHURN_NON_FIT, CHURN_NULL = 0.10, 0.35, 0.25
EXPANSION_PROBABILITY = 0.15

# Buying-trigger rules; the planted accounts pass them and every other account fails with margin.
FUNDING_WINDOW_DAYS = 90
OLD_ROUND_MIN_AGE_DAYS = 120
HIRING_RECENT_DAYS = 30
HIRING_BASELINE_DAYS = 180
HIRING_MIN_RECENT = 5
HIRING_MIN_RATIO = 3.0
LEADERSHIP_WINDOW_DAYS = 90
LEADERSHIP_OLD_MIN_AGE_DAYS = 120
FIRMOGRAPHIC_WINDOW_DAYS = 60
HEADCOUNT_MIN_GROWTH = 0.20
CHANGE_TYPES: tuple[str, ...] = ("joined", "left", "promoted")
_JOINED, _LEFT, _PROMOTED = 0, 1, 2

_TRIGGER_SHARE = {
    "funding": 0.04,
    "hiring_surge": 0.03,
    "leadership_change": 0.03,
    "headcount_growth": 0.03,
    "tech_change": 0.03,
}
# Planted bad rows (`DemoSpec.messy`): kind -> (file, rule it must trip, how many). All are rows
# appended to the clean files, with keys of their own, so no clean row changes and no clean child
# row loses its parent: each bad row trips exactly one rule.
MESSY_ROWS: dict[str, tuple[str, str, int]] = {
    "non_numeric_employee_count": ("accounts", "employee_count.type", 12),
    "bad_date": ("opportunities", "created_at.type", 9),
    "orphan_reference": ("contacts", "account_id.references", 7),
    "duplicate_key": ("accounts", "row.duplicate", 5),
    "malformed_line": ("accounts", "row.malformed", 2),
}
_BAD_EMPLOYEE_COUNTS: tuple[str, ...] = ("about 50", "1.2k", "fifty", "50-100", "~300", "200+")
_BAD_DATES: tuple[str, ...] = ("2026-02-30", "31/12/2025", "next week", "2025-13-01", "Q3 2025")

_SOFTWARE = INDUSTRIES.index("Software")
_GOVERNMENT = INDUSTRIES.index("Government")
_HEALTHCARE = INDUSTRIES.index("Healthcare")
_SNOWFLAKE_BIT = TECHNOLOGIES.index("Snowflake")
_BAND_FIT = EMPLOYEE_LABELS.index("201-1000")
_BAND_TINY = EMPLOYEE_LABELS.index("1-10")


@dataclass
class _Companies:
    """True traits of every company; the first ``n_crm`` are CRM accounts, the rest feed-only."""

    n_crm: int
    name: pa.Array  # "Zorvex Labs Inc": core name (unique after normalization) + optional legal suffix
    domain: pa.Array
    # Feed spellings stacked per style (style * total + company), so one `take` picks both:
    # domains = plain | www. | HTTPS://UPPER/ | null;
    # names = canonical | UPPER | "Core, Inc." | legal suffix toggled.
    feed_domains: pa.Array
    feed_names: pa.Array
    account_id: pa.Array  # null for feed-only companies
    industry: np.ndarray
    employees: np.ndarray
    band: np.ndarray  # index into EMPLOYEE_LABELS
    revenue: np.ndarray
    country: np.ndarray
    founded_year: np.ndarray
    tech_mask: np.ndarray  # bit i set = TECHNOLOGIES[i] in the stack

    @property
    def total(self) -> int:
        return len(self.industry)


class _Sink:
    """Writes tables, records row counts for truth.json and reports progress."""

    def __init__(self, out_dir: Path, progress: Callable[[str], None] | None) -> None:
        self.out_dir = out_dir
        self.progress = progress
        self.counts: dict[str, int] = {}

    def _path(self, rel: str) -> Path:
        path = self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _done(self, rel: str, rows: int) -> None:
        self.counts[rel] = rows
        if self.progress is not None:
            self.progress(f"wrote {rel} ({rows} rows)")

    def csv(self, rel: str, table: pa.Table) -> None:
        pacsv.write_csv(table, str(self._path(rel)), pacsv.WriteOptions(batch_size=65_536))
        self._done(rel, table.num_rows)

    def append_csv(self, rel: str, table: pa.Table) -> None:
        """Append rows, without a header, to a CSV written before; counted with its rows."""
        with self._path(rel).open("ab") as file:
            pacsv.write_csv(table, file, pacsv.WriteOptions(include_header=False))
        self._done(rel, self.counts[rel] + table.num_rows)

    def append_lines(self, rel: str, lines: list[str]) -> None:
        """Append raw text lines (which need not parse) to a CSV written before."""
        with self._path(rel).open("a", encoding="utf-8") as file:
            file.writelines(line + "\n" for line in lines)
        self._done(rel, self.counts[rel] + len(lines))

    def parquet(self, rel: str, table: pa.Table) -> None:
        pq.write_table(table, str(self._path(rel)))
        self._done(rel, table.num_rows)


def generate_demo(
    out_dir: Path, spec: DemoSpec, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write the file-drop layout + truth files; return the truth dict.

    The truth dict is also written to ``out_dir/truth.json`` so later stages can be graded offline.
    """
    _validate(spec)
    out_dir = Path(out_dir)
    rng = np.random.default_rng(spec.seed)
    as_of = tx.day_number(spec.as_of)
    sink = _Sink(out_dir, progress)

    comp = _companies(rng, spec.accounts, spec.as_of)
    n = comp.n_crm
    # Trigger membership is drawn for feed-only companies too, so their rows look alike.
    planted = {name: rng.random(comp.total) < share for name, share in _TRIGGER_SHARE.items()}

    timed = np.random.default_rng([spec.seed, 2])  # the point-in-time plantings' own draws
    departure = _departures(timed, n, as_of) if spec.planted_icp else np.full(n, -1, dtype=np.int64)
    owner_ids = _write_owners(rng, sink, max(5, n // 250))
    acct_created = as_of - rng.integers(1, 4 * 365 + 1, n)
    opps = _opportunities(rng, spec, comp, as_of, departure)
    # An account exists before its first deal.
    np.minimum.at(acct_created, opps["acct"], opps["created"])
    _write_opportunities(rng, sink, comp, opps, as_of)
    _write_subscriptions(rng, sink, spec, comp, opps, as_of)
    adoption = _adoption_days(timed, opps, comp.total, as_of) if spec.planted_icp else None
    sink.parquet(
        "truth/future_opportunities.parquet", _future_opportunities(timed, spec, comp, as_of, departure)
    )
    del opps
    _write_contacts(rng, sink, comp, acct_created, as_of)
    crm_blank = _write_accounts(rng, sink, comp, owner_ids, acct_created, as_of)

    matches: list[pa.Table] = []
    matches.append(_write_firmographics(rng, sink, comp, planted, crm_blank, as_of, adoption))
    matches.append(_write_funding(rng, sink, comp, planted["funding"], as_of))
    matches.append(_write_postings(rng, sink, comp, planted["hiring_surge"], as_of))
    matches.append(_write_leadership(rng, sink, comp, planted["leadership_change"], as_of, departure))
    sink.parquet("truth/feed_matches.parquet", pa.concat_tables(matches))
    # A generator of its own, drawn last: the clean files are the same with or without the mess.
    messy = (
        _plant_messy_rows(np.random.default_rng([spec.seed, 1]), sink, comp, as_of) if spec.messy else None
    )

    truth = _truth(spec, comp, planted, sink.counts)
    if spec.planted_icp:
        truth["point_in_time"] = {
            "leak": {
                "trait": "technology",
                "value": LEAK_TECHNOLOGY,
                "accounts": int((adoption >= 0).sum()) if adoption is not None else 0,
                "effect": "none; adopted 15-90 days after an account's last deal and first win",
            },
            "event_trait": {
                "trait": EVENT_TERM[0],
                "value": EVENT_TERM[1],
                "coefficient": EVENT_TERM[2],
                "accounts": int((departure >= 0).sum()),
                "applies_to": f"deals created within {EVENT_WINDOW_DAYS} days after the departure",
            },
            "future_opportunities": {
                "file": "truth/future_opportunities.parquet",
                "created": f"the {FUTURE_DAYS} days from as_of",
            },
        }
    if messy is not None:
        truth["messy"] = messy
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    if progress is not None:
        progress("wrote truth.json")
    return truth


def _validate(spec: DemoSpec) -> None:
    if spec.accounts < 1:
        raise ValueError("DemoSpec.accounts must be >= 1")
    if spec.drift_date is not None and spec.drift_date > spec.as_of:
        raise ValueError("DemoSpec.drift_date must not be after as_of")


# --------------------------------------------------------------------------- companies


def _companies(rng: np.random.Generator, n_crm: int, as_of: date) -> _Companies:
    """Unique names/domains and true traits for CRM accounts plus ~10% feed-only companies."""
    n_ext = max(1, round(n_crm / 9))  # feed-only companies are ~10% of all companies
    total = n_crm + n_ext
    n_syl = len(tx.SYLLABLES)
    capacity = n_syl * n_syl
    if total > capacity:
        raise ValueError(f"at most {capacity * 9 // 10} accounts supported, got {n_crm}")

    # Bijective scramble of the index -> two syllables: unique words, no neighbours alike.
    mult = tx.NAME_MULTIPLIERS[int(rng.integers(len(tx.NAME_MULTIPLIERS)))]
    code = (np.arange(total, dtype=np.int64) * mult + int(rng.integers(capacity))) % capacity
    syllables = pa.array(tx.SYLLABLES)
    word = pc.utf8_capitalize(tx.concat(syllables.take(code // n_syl), syllables.take(code % n_syl)))
    noun = tx.pick(tx.NOUNS, rng.integers(0, len(tx.NOUNS), total))
    core = tx.concat(word, " ", noun)

    industry = rng.choice(len(INDUSTRIES), size=total, p=INDUSTRY_P).astype(np.int8)
    log_emp = rng.normal(2.2, 1.1, total)
    employees = np.clip(np.rint(10.0**log_emp), 1, MAX_EMPLOYEES).astype(np.int64)
    revenue_per_head = np.exp(rng.normal(np.log(120_000), 0.6, total))
    revenue = np.maximum(np.rint(employees * revenue_per_head / 1000) * 1000, 1000).astype(np.int64)
    country = rng.choice(len(COUNTRIES), size=total, p=COUNTRY_P).astype(np.int8)
    age = np.exp(rng.normal(1.9 + 0.25 * np.log10(employees), 0.7))
    founded_year = (as_of.year - np.clip(np.rint(age), 1, 120)).astype(np.int16)

    suffix = rng.choice(len(tx.LEGAL_SUFFIXES), size=total, p=tx.LEGAL_SUFFIX_P)
    german = country == COUNTRIES.index("DE")
    gmbh = tx.LEGAL_SUFFIXES.index("GmbH")
    suffix = np.where(german & (suffix > 0) & (rng.random(total) < 0.7), gmbh, suffix)
    suffix = np.where(~german & (suffix == gmbh), tx.LEGAL_SUFFIXES.index("Inc"), suffix)
    spaced = tuple(f" {s}" if s else "" for s in tx.LEGAL_SUFFIXES)
    name = tx.concat(core, tx.pick(spaced, suffix))
    toggled = (" LLC",) + ("",) * (len(tx.LEGAL_SUFFIXES) - 1)
    tld = rng.choice(len(tx.TLDS), size=total, p=tx.TLD_P)
    tld = np.where(german & (rng.random(total) < 0.5), tx.TLDS.index(".de"), tld)
    domain = pc.utf8_lower(tx.concat(word, noun, tx.pick(tx.TLDS, tld)))

    account_id = pa.concat_arrays([tx.format_ids("A", n_crm), pa.nulls(n_ext, pa.string())])
    return _Companies(
        n_crm=n_crm,
        name=name,
        domain=domain,
        feed_domains=pa.concat_arrays(
            [
                domain,
                tx.concat("www.", domain),
                tx.concat("HTTPS://", pc.ascii_upper(domain), "/"),
                pa.nulls(total, pa.string()),
            ]
        ),
        feed_names=pa.concat_arrays(
            [
                name,
                pc.ascii_upper(name),
                tx.concat(core, tx.pick(tx.COMMA_SUFFIXES, suffix)),
                tx.concat(core, tx.pick(toggled, suffix)),
            ]
        ),
        account_id=account_id,
        industry=industry,
        employees=employees,
        band=employee_band(pd.Series(employees)).cat.codes.to_numpy().astype(np.int8),
        revenue=revenue,
        country=country,
        founded_year=founded_year,
        tech_mask=_tech_masks(rng, total),
    )


def _tech_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    """2-6 technologies per company, Snowflake in exactly-drawn ~20%, others by popularity."""
    k = rng.integers(2, 7, n)
    snowflake = rng.random(n) < SNOWFLAKE_SHARE
    others = [i for i, t in enumerate(TECHNOLOGIES) if t != "Snowflake"]
    weights = np.array([_OTHER_TECH_WEIGHTS[TECHNOLOGIES[i]] for i in others])
    # Weighted sampling without replacement (Efraimidis-Spirakis): keep the top-`need` keys.
    keys = rng.random((n, len(others))) ** (1.0 / weights)
    need = k - snowflake
    threshold = np.take_along_axis(np.sort(keys, axis=1), (len(others) - need)[:, None], axis=1)
    chosen = keys >= threshold
    bits = np.left_shift(1, np.array(others, dtype=np.int64))
    mask = (chosen * bits).sum(axis=1) | np.where(snowflake, 1 << _SNOWFLAKE_BIT, 0)
    return mask.astype(np.int32)


def _tech_stack(masks: np.ndarray) -> pa.Array:
    """';'-joined stack per mask; strings are built once per distinct mask, not per row."""
    distinct, inverse = np.unique(masks, return_inverse=True)
    names = (*TECHNOLOGIES, LEAK_TECHNOLOGY)  # the leak's bit follows the others
    labels = [";".join(t for i, t in enumerate(names) if int(m) >> i & 1) for m in distinct]
    return pa.array(labels).take(pa.array(inverse.astype(np.int64)))


def _win_probability(
    spec: DemoSpec, comp: _Companies, acct: np.ndarray, created: np.ndarray, departure: np.ndarray
) -> np.ndarray:
    """Planted probability per opportunity from TRUE traits (before CRM blanking), and from the
    CMO departure in the 12 months before the deal was created (`departure`: day per account, -1)."""
    if not spec.planted_icp:
        return np.full(len(acct), NULL_WIN_PROBABILITY)
    industry = comp.industry[acct]
    band = comp.band[acct]
    snowflake = (comp.tech_mask[acct] >> _SNOWFLAKE_BIT) & 1
    coefficient = {value: weight for _, value, weight in MUST_HAVE_TERMS}
    software_term = coefficient["Software"] * (industry == _SOFTWARE)
    logit = (
        WIN_INTERCEPT + coefficient["201-1000"] * (band == _BAND_FIT) + coefficient["Snowflake"] * snowflake
    )
    if spec.drift_date is None:
        logit = logit + software_term
    else:
        after = created >= tx.day_number(spec.drift_date)
        logit = logit + np.where(after, DRIFT_TERM[2] * (industry == _HEALTHCARE), software_term)
    left = departure[acct]
    logit = logit + EVENT_TERM[2] * ((left >= 0) & (left < created) & (created <= left + EVENT_WINDOW_DAYS))
    p = 1.0 / (1.0 + np.exp(-logit))
    hard_no = (industry == _GOVERNMENT) | (band == _BAND_TINY)
    return np.where(hard_no, HARD_NO_PROBABILITY, p)


def _departures(rng: np.random.Generator, n_crm: int, as_of: int) -> np.ndarray:
    """The day a CRM account's CMO left (-1: none), over the three years before the as-of date."""
    left = rng.random(n_crm) < DEPARTURE_SHARE
    return np.where(left, as_of - rng.integers(1, 3 * 365 + 1, n_crm), -1).astype(np.int64)


def _adoption_days(
    rng: np.random.Generator, opps: dict[str, np.ndarray], total: int, as_of: int
) -> np.ndarray:
    """The day a customer adopts the leak technology (-1: never): after its first win and its last
    deal, and before the tech-change trigger's window, so no trigger and no deal sees it."""
    never = np.iinfo(np.int64).max
    first_win = np.full(total, never, dtype=np.int64)
    np.minimum.at(first_win, opps["acct"][opps["won"]], opps["close"][opps["won"]])
    last_deal = np.full(total, -1, dtype=np.int64)
    np.maximum.at(last_deal, opps["acct"], opps["created"])
    day = np.maximum(first_win, last_deal) + rng.integers(15, 91, total)
    adopted = (
        (first_win < never) & (day <= as_of - FIRMOGRAPHIC_WINDOW_DAYS - 1) & (rng.random(total) < LEAK_SHARE)
    )
    return np.where(adopted, day, -1)


def _future_opportunities(
    rng: np.random.Generator, spec: DemoSpec, comp: _Companies, as_of: int, departure: np.ndarray
) -> pa.Table:
    """Deals created in the days after the as-of date, with the planted probability and outcome."""
    per_account = rng.poisson(1.5 * FUTURE_DAYS / 730, comp.n_crm)
    acct = np.repeat(np.arange(comp.n_crm, dtype=np.int64), per_account)
    created = as_of + rng.integers(0, FUTURE_DAYS, len(acct))
    p = _win_probability(spec, comp, acct, created, departure)
    return pa.table(
        {
            "account_id": comp.account_id.take(pa.array(acct)),
            "created_at": tx.dates(created),
            "win_probability": pa.array(p, pa.float64()),
            "won": pa.array(rng.random(len(acct)) < p),
        }
    )


def _fit(spec: DemoSpec, comp: _Companies, acct: np.ndarray) -> np.ndarray:
    """Account-level ICP fit used for churn/expansion: no hard-no trait and >= 1 must-have trait."""
    if not spec.planted_icp:
        return np.zeros(len(acct), dtype=bool)
    industry, band = comp.industry[acct], comp.band[acct]
    snowflake = ((comp.tech_mask[acct] >> _SNOWFLAKE_BIT) & 1).astype(bool)
    hard_no = (industry == _GOVERNMENT) | (band == _BAND_TINY)
    return ~hard_no & ((industry == _SOFTWARE) | (band == _BAND_FIT) | snowflake)


def _updated_seconds(rng: np.random.Generator, start_day: np.ndarray, as_of: int) -> np.ndarray:
    """A timestamp strictly after ``start_day`` 00:00 and strictly before ``as_of`` 00:00 UTC."""
    lo = start_day.astype(np.int64) * tx.SECONDS_PER_DAY + 1
    hi = np.int64(as_of) * tx.SECONDS_PER_DAY - 1
    return lo + np.floor(rng.random(len(lo)) * (hi - lo)).astype(np.int64)


def _uniform_days(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray | int) -> np.ndarray:
    """Uniform integer day in ``[lo, hi]`` per row (``hi >= lo`` assumed)."""
    return lo + np.floor(rng.random(len(lo)) * (hi - lo + 1)).astype(np.int64)


# --------------------------------------------------------------------------- CRM


def _write_owners(rng: np.random.Generator, sink: _Sink, count: int) -> pa.Array:
    """Sales reps; ~10% inactive so alert routing has to cope with departed owners."""
    idx = np.arange(count, dtype=np.int64)
    code = (idx * 7919 + int(rng.integers(tx.PERSON_COMBOS))) % tx.PERSON_COMBOS
    first, last = tx.person_names(code)
    local = pc.utf8_lower(tx.concat(first, ".", last))
    if count > tx.PERSON_COMBOS:  # keep emails unique beyond the name space
        repeat = pc.cast(pa.array(idx // tx.PERSON_COMBOS), pa.string())
        local = pc.if_else(pa.array(idx >= tx.PERSON_COMBOS), tx.concat(local, repeat), local)
    slack_space = 36**8
    slack = (idx * 1_234_567_890_121 + int(rng.integers(slack_space))) % slack_space  # bijective
    active = rng.random(count) >= 0.10
    active[0] = True
    owner_id = tx.format_ids("U", count)
    sink.csv(
        "crm/owners.csv",
        pa.table(
            {
                "owner_id": owner_id,
                "name": tx.concat(first, " ", last),
                "email": tx.concat(local, "@" + tx.OWNER_EMAIL_DOMAIN),
                "slack_user_id": tx.concat("U", tx.base36(slack, 8)),
                "active": pa.array(active),
            }
        ),
    )
    return owner_id


def _opportunities(
    rng: np.random.Generator, spec: DemoSpec, comp: _Companies, as_of: int, departure: np.ndarray
) -> dict[str, np.ndarray]:
    """Deals per account (negative binomial, mean 1.5), outcome drawn from the planted model."""
    per_account = np.minimum(rng.negative_binomial(0.8, 0.8 / 2.3, comp.n_crm), 15)
    acct = np.repeat(np.arange(comp.n_crm, dtype=np.int64), per_account)
    m = len(acct)
    created = as_of - rng.integers(1, 731, m)
    employees = comp.employees[acct]
    cycle = np.clip(np.rint(25 + 22 * np.log10(employees) + rng.normal(0, 20, m)), 20, 180)
    close = created + cycle.astype(np.int64)
    closed = close <= as_of - 1  # CRM dates stay strictly before as_of
    p = _win_probability(spec, comp, acct, created, departure)
    won = closed & (rng.random(m) < p)
    stage = np.where(closed, np.where(won, 4, 5), rng.integers(0, 4, m))
    amount = np.exp(rng.normal(np.log(4000) + 0.45 * np.log(employees), 0.45))
    order = np.argsort(tx.sort_key(created), kind="stable")  # rows are already in account order
    cols = {"acct": acct, "created": created, "close": close, "closed": closed, "won": won}
    cols |= {"stage": stage, "amount": np.round(amount, 2), "p": p}
    return {k: v[order] for k, v in cols.items()}


def _write_opportunities(
    rng: np.random.Generator, sink: _Sink, comp: _Companies, opps: dict[str, np.ndarray], as_of: int
) -> None:
    m = len(opps["acct"])
    opp_id = tx.format_ids("O", m)
    account_id = comp.account_id.take(pa.array(opps["acct"]))
    created = tx.dates(opps["created"])
    open_ = ~opps["closed"]
    last_change = np.where(open_, opps["created"], opps["close"])
    stages = (*tx.OPEN_STAGES, "Closed Won", "Closed Lost")
    sink.csv(
        "crm/opportunities.csv",
        pa.table(
            {
                "opportunity_id": opp_id,
                "account_id": account_id,
                "stage": tx.pick(stages, opps["stage"]),
                "amount": tx.money(opps["amount"]),
                "created_at": created,
                "closed_at": tx.dates(opps["close"], null_mask=open_),
                "updated_at": tx.timestamps(_updated_seconds(rng, last_change, as_of)),
            }
        ),
    )
    sink.parquet(
        "truth/opportunities.parquet",
        pa.table(
            {
                "opportunity_id": opp_id,
                "account_id": account_id,
                "created_at": created,
                "win_probability": pa.array(opps["p"], pa.float64()),
            }
        ),
    )


def _write_subscriptions(
    rng: np.random.Generator,
    sink: _Sink,
    spec: DemoSpec,
    comp: _Companies,
    opps: dict[str, np.ndarray],
    as_of: int,
) -> None:
    """Won deals become subscriptions; fit accounts churn less and some expand."""
    won = opps["won"]
    acct, start = opps["acct"][won], opps["close"][won]
    k = len(acct)
    arr = opps["amount"][won] * rng.uniform(0.9, 1.1, k)
    fit = _fit(spec, comp, acct)
    churn_p = np.where(fit, CHURN_FIT, CHURN_NON_FIT) if spec.planted_icp else np.full(k, CHURN_NULL)
    last = as_of - 1
    churn = (rng.random(k) < churn_p) & (start <= last - 30)
    end = _uniform_days(rng, start + 30, np.maximum(last, start + 30))
    may_expand = fit if spec.planted_icp else np.ones(k, dtype=bool)
    expand = ~churn & may_expand & (rng.random(k) < EXPANSION_PROBABILITY) & (start <= last - 60)
    expand_start = _uniform_days(rng, start + 60, np.maximum(last, start + 60))
    expand_arr = arr * rng.uniform(1.2, 2.0, k)

    acct = np.concatenate([acct, acct[expand]])
    start = np.concatenate([start, expand_start[expand]])
    end = np.concatenate([end, np.zeros(int(expand.sum()), dtype=np.int64)])
    ended = np.concatenate([churn, np.zeros(int(expand.sum()), dtype=bool)])
    arr = np.concatenate([arr, expand_arr[expand]])
    order = np.lexsort((acct, start))
    acct, start, end, ended, arr = acct[order], start[order], end[order], ended[order], arr[order]
    sink.csv(
        "crm/subscriptions.csv",
        pa.table(
            {
                "subscription_id": tx.format_ids("S", len(acct)),
                "account_id": comp.account_id.take(pa.array(acct)),
                "started_at": tx.dates(start),
                "ended_at": tx.dates(end, null_mask=~ended),
                "arr": tx.money(arr),
                "updated_at": tx.timestamps(_updated_seconds(rng, np.where(ended, end, start), as_of)),
            }
        ),
    )


def _write_contacts(
    rng: np.random.Generator, sink: _Sink, comp: _Companies, acct_created: np.ndarray, as_of: int
) -> None:
    """~1.2 contacts per account; names are distinct within an account so emails are unique."""
    per_account = rng.poisson(1.2, comp.n_crm)
    acct = np.repeat(np.arange(comp.n_crm, dtype=np.int64), per_account)
    m = len(acct)
    rank = np.arange(m) - np.repeat(np.cumsum(per_account) - per_account, per_account)
    base = rng.integers(0, tx.PERSON_COMBOS, comp.n_crm)
    first, last = tx.person_names((base[acct] + rank) % tx.PERSON_COMBOS)
    created = _uniform_days(rng, acct_created[acct], as_of - 1)
    title = rng.integers(0, len(tx.CONTACT_TITLES), m)
    email = pc.utf8_lower(tx.concat(first, ".", last, "@", comp.domain.take(pa.array(acct))))
    sink.csv(
        "crm/contacts.csv",
        pa.table(
            {
                "contact_id": tx.format_ids("C", m),
                "account_id": comp.account_id.take(pa.array(acct)),
                "email": email,
                "title": tx.pick(tx.CONTACT_TITLES, title),
                "created_at": tx.dates(created),
                "updated_at": tx.timestamps(_updated_seconds(rng, created, as_of)),
            }
        ),
    )


def _write_accounts(
    rng: np.random.Generator,
    sink: _Sink,
    comp: _Companies,
    owner_ids: pa.Array,
    created: np.ndarray,
    as_of: int,
) -> np.ndarray:
    """CRM accounts with some blanks the feed must fill; returns which accounts have blanks."""
    n = comp.n_crm
    no_industry = rng.random(n) < 0.05
    no_employees = rng.random(n) < 0.05
    no_revenue = rng.random(n) < 0.03
    owner = rng.integers(0, len(owner_ids), n)
    no_owner = rng.random(n) < 0.03
    sink.csv(
        "crm/accounts.csv",
        pa.table(
            {
                "account_id": comp.account_id.slice(0, n),
                "name": comp.name.slice(0, n),
                "domain": comp.domain.slice(0, n),
                "industry": tx.pick(INDUSTRIES, comp.industry[:n], no_industry),
                "employee_count": pa.array(comp.employees[:n], mask=no_employees),
                "annual_revenue": pa.array(comp.revenue[:n], mask=no_revenue),
                "country": tx.pick(COUNTRIES, comp.country[:n]),
                "owner_id": owner_ids.take(pa.array(owner, mask=no_owner)),
                "created_at": tx.dates(created),
                "updated_at": tx.timestamps(_updated_seconds(rng, created, as_of)),
            }
        ),
    )
    return no_industry | no_employees | no_revenue


# --------------------------------------------------------------------------- feeds


def _feed_identity(
    rng: np.random.Generator, comp: _Companies, idx: np.ndarray, name_only: bool = True
) -> tuple[pa.Array, pa.Array]:
    """(domain, company_name) as a feed writes them: 70% plain, 10% www., 10% HTTPS://UPPER/,
    10% name only (empty domain, name upper-cased, "Core, Inc." or with the suffix toggled).

    ``name_only=False`` (firmographics, whose contract keys rows by domain) spreads that 10%
    over the three domain spellings instead.
    """
    n = len(idx)
    shares = (0.7, 0.1, 0.1, 0.1) if name_only else (0.78, 0.11, 0.11, 0.0)
    style = rng.choice(4, size=n, p=shares)
    variant = np.where(style == 3, 1 + rng.integers(0, 3, n), 0)
    domain = comp.feed_domains.take(pa.array(idx + style * comp.total))
    return domain, comp.feed_names.take(pa.array(idx + variant * comp.total))


def _matches(table: str, row_key: pa.Array, comp: _Companies, idx: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "table": pa.repeat(pa.scalar(table, pa.string()), len(idx)),
            "row_key": row_key,
            "account_id": comp.account_id.take(pa.array(idx)),
        }
    )


def _write_firmographics(
    rng: np.random.Generator,
    sink: _Sink,
    comp: _Companies,
    planted: dict[str, np.ndarray],
    crm_blank: np.ndarray,
    as_of: int,
    adoption: np.ndarray | None = None,
) -> pa.Table:
    """One observation 740-1100 days old per covered company (before every deal, so deals are
    described by what was known when they were created); a second one carries the planted
    headcount growth (>= +25%) / tech change, or for others a < 5%, same-stack refresh. With
    `adoption`, a customer's observation on its adoption day adds the leak technology, and so
    does every later one."""
    total = comp.total
    growth, tech = planted["headcount_growth"], planted["tech_change"]
    covered = (rng.random(total) < 0.95) | growth | tech
    covered[: comp.n_crm] |= crm_blank  # the feed has to be able to fill CRM blanks
    first_idx = np.flatnonzero(covered)
    first_day = as_of - rng.integers(740, 1101, len(first_idx))
    first_day_all = np.zeros(total, dtype=np.int64)
    first_day_all[first_idx] = first_day

    p_idx = np.flatnonzero(growth | tech)
    p_day = as_of - rng.integers(0, FIRMOGRAPHIC_WINDOW_DAYS, len(p_idx))
    base_emp = comp.employees[p_idx]
    ratio = rng.uniform(1.25, 1.6, len(p_idx))
    grown = np.maximum(np.ceil(base_emp * ratio), base_emp + 1).astype(np.int64)
    p_growth = growth[p_idx]
    p_emp = np.where(p_growth, grown, base_emp)
    p_rev = np.where(p_growth, np.rint(comp.revenue[p_idx] * ratio / 1000) * 1000, comp.revenue[p_idx])
    p_mask = np.where(tech[p_idx], _flip_one_tech(rng, comp.tech_mask[p_idx]), comp.tech_mask[p_idx])

    n_idx = np.flatnonzero(covered & ~growth & ~tech & (rng.random(total) < 0.2))
    n_day = _uniform_days(rng, first_day_all[n_idx] + 1, as_of)
    n_base = comp.employees[n_idx]
    n_emp = n_base + np.trunc(n_base * rng.uniform(-0.03, 0.03, len(n_idx))).astype(np.int64)
    n_rev = np.rint(comp.revenue[n_idx] * rng.uniform(0.98, 1.02, len(n_idx)) / 1000) * 1000

    idx = np.concatenate([first_idx, p_idx, n_idx])
    day = np.concatenate([first_day, p_day, n_day])
    emp = np.concatenate([comp.employees[first_idx], p_emp, n_emp])
    rev = np.concatenate([comp.revenue[first_idx], p_rev, n_rev]).astype(np.int64)
    mask = np.concatenate([comp.tech_mask[first_idx], p_mask, comp.tech_mask[n_idx]])
    if adoption is not None:
        a_idx = np.flatnonzero(adoption >= 0)
        a_day = adoption[a_idx]
        taken = np.isin(a_idx * 100_000 + a_day, idx * 100_000 + day)  # one observation per company and day
        a_idx, a_day = a_idx[~taken], a_day[~taken]
        idx, day = np.concatenate([idx, a_idx]), np.concatenate([day, a_day])
        emp = np.concatenate([emp, comp.employees[a_idx]])
        rev = np.concatenate([rev, comp.revenue[a_idx]])
        mask = np.concatenate([mask, comp.tech_mask[a_idx]])
        adopted_by = np.where(adoption[idx] >= 0, adoption[idx], np.iinfo(np.int64).max)
        mask = np.where(day >= adopted_by, mask | (1 << _LEAK_BIT), mask).astype(np.int32)
    order = tx.chronological(rng, day)
    idx, day, emp, rev, mask = idx[order], day[order], emp[order], rev[order], mask[order]

    domain, company_name = _feed_identity(rng, comp, idx, name_only=False)
    observed = tx.dates(day)
    sink.csv(
        "feeds/firmographics.csv",
        pa.table(
            {
                "domain": domain,
                "company_name": company_name,
                "industry": tx.pick(INDUSTRIES, comp.industry[idx]),
                "employee_count": pa.array(emp),
                "annual_revenue": pa.array(rev),
                "country": tx.pick(COUNTRIES, comp.country[idx]),
                "founded_year": pa.array(comp.founded_year[idx].astype(np.int64)),
                "tech_stack": _tech_stack(mask),
                "observed_at": observed,
            }
        ),
    )
    key = tx.concat(domain, "|", pc.cast(observed, pa.string()))  # the contract's key, as written
    return _matches("firmographics", key, comp, idx)


def _flip_one_tech(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """Add or drop one non-Snowflake technology, keeping stacks within 2-6 where possible."""
    k = len(masks)
    count = np.bitwise_count(masks)
    add = np.where(count <= 2, True, np.where(count >= 6, False, rng.random(k) < 0.5))
    bits = (masks[:, None] >> np.arange(len(TECHNOLOGIES))) & 1
    eligible = np.where(add[:, None], bits == 0, bits == 1)
    eligible[:, _SNOWFLAKE_BIT] = False  # keep the planted ICP trait stable
    choice = np.argmax(np.where(eligible, rng.random(eligible.shape), -1.0), axis=1)
    return (masks ^ np.left_shift(1, choice)).astype(np.int32)


def _write_funding(
    rng: np.random.Generator, sink: _Sink, comp: _Companies, recent: np.ndarray, as_of: int
) -> pa.Table:
    """Planted companies: one round in [as_of-90, as_of]; ~25% have 1-3 rounds >= 120 days old."""
    r_idx = np.flatnonzero(recent)
    r_day = as_of - rng.integers(0, FUNDING_WINDOW_DAYS + 1, len(r_idx))
    old = rng.random(comp.total) < 0.25
    o_idx = np.repeat(np.flatnonzero(old), rng.integers(1, 4, int(old.sum())))
    o_day = as_of - rng.integers(OLD_ROUND_MIN_AGE_DAYS, 1801, len(o_idx))
    idx = np.concatenate([r_idx, o_idx])
    day = np.concatenate([r_day, o_day])
    kind = rng.choice(len(tx.ROUND_TYPES), size=len(idx), p=tx.ROUND_TYPE_P)
    lo, hi = np.log(np.array(tx.ROUND_AMOUNT_RANGE)).T
    amount = np.rint(np.exp(lo[kind] + rng.random(len(idx)) * (hi[kind] - lo[kind])) / 1000) * 1000
    order = tx.chronological(rng, day)
    idx, day, kind, amount = idx[order], day[order], kind[order], amount[order]

    round_id = tx.format_ids("F", len(idx))
    domain, company_name = _feed_identity(rng, comp, idx)
    sink.csv(
        "feeds/funding_rounds.csv",
        pa.table(
            {
                "round_id": round_id,
                "domain": domain,
                "company_name": company_name,
                "round_type": tx.pick(tx.ROUND_TYPES, kind),
                "amount_usd": pa.array(amount.astype(np.int64)),
                "announced_at": tx.dates(day),
            }
        ),
    )
    return _matches("funding_rounds", round_id, comp, idx)


def _write_postings(
    rng: np.random.Generator, sink: _Sink, comp: _Companies, surge: np.ndarray, as_of: int
) -> pa.Table:
    """Surge companies: 8-20 postings in the last 30 days over a baseline of <= 5 per 180 days.
    ~40% of the rest post steadily (0.2-1/month) with at most 2 postings in the last 30 days."""
    recent_lo = as_of - HIRING_RECENT_DAYS + 1  # first day of (as_of-30d, as_of]
    s_idx = np.flatnonzero(surge)
    sr_idx = np.repeat(s_idx, rng.integers(8, 21, len(s_idx)))
    sr_day = as_of - rng.integers(0, HIRING_RECENT_DAYS, len(sr_idx))
    sb_idx = np.repeat(s_idx, rng.integers(0, 6, len(s_idx)))
    sb_day = recent_lo - 1 - rng.integers(0, HIRING_BASELINE_DAYS, len(sb_idx))

    steady = ~surge & (rng.random(comp.total) < 0.40)
    st_comp = np.flatnonzero(steady)
    per_company = rng.poisson(12 * rng.uniform(0.2, 1.0, len(st_comp)))
    st_idx = np.repeat(st_comp, per_company)
    st_day = as_of - rng.integers(0, 365, len(st_idx))
    # Rows are grouped by company; rank each recent posting within its company.
    recent = st_day >= recent_lo
    seen = np.cumsum(recent)
    group_start = np.repeat(np.cumsum(per_company) - per_company, per_company)
    rank = seen - (seen[group_start] - recent[group_start]) - 1 if len(st_idx) else seen
    excess = recent & (rank >= 2)
    st_day = np.where(excess, recent_lo - 1 - rng.integers(0, 335, len(st_idx)), st_day)

    idx = np.concatenate([sr_idx, sb_idx, st_idx])
    day = np.concatenate([sr_day, sb_day, st_day])
    m = len(idx)
    dept = rng.choice(len(tx.DEPARTMENTS), size=m, p=tx.DEPARTMENT_P)
    slots = len(tx.POSTING_TITLES[0])
    title = dept * slots + rng.integers(0, slots, m)
    close = day + rng.integers(7, 61, m)
    still_open = (rng.random(m) < 0.5) | (close > as_of)
    order = tx.chronological(rng, day)
    idx, day, dept, title, close, still_open = (a[order] for a in (idx, day, dept, title, close, still_open))

    posting_id = tx.format_ids("P", m)
    domain, company_name = _feed_identity(rng, comp, idx)
    flat_titles = tuple(t for titles in tx.POSTING_TITLES for t in titles)
    sink.csv(
        "feeds/job_postings.csv",
        pa.table(
            {
                "posting_id": posting_id,
                "domain": domain,
                "company_name": company_name,
                "title": tx.pick(flat_titles, title),
                "department": tx.pick(tx.DEPARTMENTS, dept),
                "posted_at": tx.dates(day),
                "closed_at": tx.dates(close, null_mask=still_open),
            }
        ),
    )
    return _matches("job_postings", posting_id, comp, idx)


def _write_leadership(
    rng: np.random.Generator,
    sink: _Sink,
    comp: _Companies,
    planted: np.ndarray,
    as_of: int,
    departure: np.ndarray | None = None,
) -> pa.Table:
    """Planted: an executive joined/promoted within 90 days. Noise that must not count:
    non-executives in the window, executives who left in the window, executives who joined long ago."""
    titles = tx.EXECUTIVE_TITLES + tx.NON_EXECUTIVE_TITLES
    n_exec = len(tx.EXECUTIVE_TITLES)
    execs, others = (0, n_exec), (n_exec, len(titles))
    window = (0, LEADERSHIP_WINDOW_DAYS)
    old = (LEADERSHIP_OLD_MIN_AGE_DAYS, 1000)
    arrivals = (_JOINED, _PROMOTED)
    everything = (_JOINED, _LEFT, _PROMOTED)
    kinds: list[tuple[np.ndarray, tuple[int, int], tuple[int, ...], tuple[int, int]]] = [
        (planted, execs, arrivals, window),
        (rng.random(comp.total) < 0.08, others, everything, window),
        (rng.random(comp.total) < 0.03, execs, (_LEFT,), window),
        (rng.random(comp.total) < 0.08, execs, arrivals, old),
        (rng.random(comp.total) < 0.06, others, everything, old),
    ]
    parts_idx, parts_day, parts_title, parts_change = [], [], [], []
    for member, (t_lo, t_hi), changes, (age_lo, age_hi) in kinds:  # a handful of categories
        idx = np.flatnonzero(member)
        parts_idx.append(idx)
        parts_day.append(as_of - rng.integers(age_lo, age_hi + 1, len(idx)))
        parts_title.append(rng.integers(t_lo, t_hi, len(idx)))
        parts_change.append(np.array(changes)[rng.integers(0, len(changes), len(idx))])
    if departure is not None:  # the planted CMO departures (the event trait)
        left = np.flatnonzero(departure >= 0)
        parts_idx.append(left)
        parts_day.append(departure[left])
        parts_title.append(np.full(len(left), titles.index(DEPARTURE_TITLE)))
        parts_change.append(np.full(len(left), _LEFT))
    idx, day = np.concatenate(parts_idx), np.concatenate(parts_day)
    title, change = np.concatenate(parts_title), np.concatenate(parts_change)
    people = rng.integers(0, tx.PERSON_COMBOS, len(idx))
    order = tx.chronological(rng, day)
    idx, day, title, change, people = idx[order], day[order], title[order], change[order], people[order]

    change_id = tx.format_ids("L", len(idx))
    domain, company_name = _feed_identity(rng, comp, idx)
    first, last = tx.person_names(people)
    sink.csv(
        "feeds/leadership_changes.csv",
        pa.table(
            {
                "change_id": change_id,
                "domain": domain,
                "company_name": company_name,
                "person_name": tx.concat(first, " ", last),
                "title": tx.pick(titles, title),
                "change_type": tx.pick(CHANGE_TYPES, change),
                "effective_at": tx.dates(day),
            }
        ),
    )
    return _matches("leadership_changes", change_id, comp, idx)


# --------------------------------------------------------------------------- messy rows


def _plant_messy_rows(
    rng: np.random.Generator, sink: _Sink, comp: _Companies, as_of: int
) -> dict[str, dict[str, Any]]:
    """Append MESSY_ROWS to the CRM files; return per kind its table, rule, count and raw keys.

    Accounts with a bad employee count are new accounts without contacts or deals, and the bad
    dates are on new deals, so a quarantined row never takes a child row with it.
    """
    n = comp.n_crm
    opportunities = sink.counts["crm/opportunities.csv"]
    contacts = sink.counts["crm/contacts.csv"]
    count = {kind: planted for kind, (_, _, planted) in MESSY_ROWS.items()}
    ids = tx.format_ids("A", n + count["non_numeric_employee_count"] + count["orphan_reference"])
    bad_accounts = ids.slice(n, count["non_numeric_employee_count"])
    deleted_accounts = ids.slice(n + count["non_numeric_employee_count"])
    bad_count = len(bad_accounts)
    created = as_of - rng.integers(30, 400, bad_count)
    updated = _updated_seconds(rng, created, as_of)
    sink.append_csv(
        "crm/accounts.csv",
        pa.table(
            {
                "account_id": bad_accounts,
                "name": pa.array([f"Planted Bad Row {i + 1:02d} Ltd" for i in range(bad_count)]),
                "domain": pa.array([f"planted-bad-row-{i + 1:02d}.example" for i in range(bad_count)]),
                "industry": tx.pick(INDUSTRIES, rng.integers(0, len(INDUSTRIES), bad_count)),
                "employee_count": tx.pick(
                    _BAD_EMPLOYEE_COUNTS, np.arange(bad_count) % len(_BAD_EMPLOYEE_COUNTS)
                ),
                "annual_revenue": pa.nulls(bad_count, pa.string()),
                "country": tx.pick(COUNTRIES, rng.integers(0, len(COUNTRIES), bad_count)),
                "owner_id": pa.nulls(bad_count, pa.string()),
                "created_at": tx.dates(created),
                "updated_at": tx.timestamps(updated),
            }
        ),
    )

    # Repeats of existing account lines: the same key twice in one export. The clean lines hold no
    # quoted comma or line break, so a line is a row and its first field the key.
    with (sink.out_dir / "crm" / "accounts.csv").open(encoding="utf-8") as file:
        lines = file.read().splitlines()[1 : n + 1]
    repeated = np.sort(rng.choice(n, size=min(count["duplicate_key"], n), replace=False))
    duplicates = [lines[i] for i in repeated]
    sink.append_lines("crm/accounts.csv", duplicates)

    # Lines with too few and too many fields, as a hand-edited or truncated export has.
    malformed = [
        '"A9999999","Truncated Export Ltd","truncated-export.example"',
        '"A9999998","Extra Field Inc","extra-field.example","Software",120,,"US",,2025-06-01,'
        '"2025-06-01T00:00:00","unexpected"',
    ][: count["malformed_line"]]
    sink.append_lines("crm/accounts.csv", malformed)

    bad_deals = count["bad_date"]
    deal_ids = tx.format_ids("O", opportunities + bad_deals).slice(opportunities)
    deal_accounts = comp.account_id.take(pa.array(rng.integers(0, n, bad_deals)))
    sink.append_csv(
        "crm/opportunities.csv",
        pa.table(
            {
                "opportunity_id": deal_ids,
                "account_id": deal_accounts,
                "stage": tx.pick(tx.OPEN_STAGES, rng.integers(0, len(tx.OPEN_STAGES), bad_deals)),
                "amount": tx.money(np.round(rng.uniform(2_000, 50_000, bad_deals), 2)),
                "created_at": tx.pick(_BAD_DATES, np.arange(bad_deals) % len(_BAD_DATES)),
                "closed_at": pa.nulls(bad_deals, pa.string()),
                "updated_at": tx.timestamps(_updated_seconds(rng, np.full(bad_deals, as_of - 30), as_of)),
            }
        ),
    )

    orphans = len(deleted_accounts)
    contact_ids = tx.format_ids("C", contacts + orphans).slice(contacts)
    first, last = tx.person_names(rng.integers(0, tx.PERSON_COMBOS, orphans))
    contact_created = as_of - rng.integers(30, 400, orphans)
    sink.append_csv(
        "crm/contacts.csv",
        pa.table(
            {
                "contact_id": contact_ids,
                "account_id": deleted_accounts,
                "email": pc.utf8_lower(tx.concat(first, ".", last, "@deleted-account.example")),
                "title": tx.pick(tx.CONTACT_TITLES, rng.integers(0, len(tx.CONTACT_TITLES), orphans)),
                "created_at": tx.dates(contact_created),
                "updated_at": tx.timestamps(_updated_seconds(rng, contact_created, as_of)),
            }
        ),
    )

    keys = {
        "non_numeric_employee_count": bad_accounts.to_pylist(),
        "bad_date": deal_ids.to_pylist(),
        "orphan_reference": contact_ids.to_pylist(),
        "duplicate_key": [line.split(",", 1)[0].strip('"') for line in duplicates],
        "malformed_line": [],  # a line that does not parse has no key: it is keyed by its hash
    }
    return {
        kind: {"table": table, "rule": rule, "rows": len(keys[kind]) or planted, "keys": keys[kind]}
        for kind, (table, rule, planted) in MESSY_ROWS.items()
    }


# --------------------------------------------------------------------------- truth


def _truth(
    spec: DemoSpec, comp: _Companies, planted: dict[str, np.ndarray], counts: dict[str, int]
) -> dict[str, Any]:
    """The answers downstream stages are graded against."""
    crm_ids = comp.account_id.slice(0, comp.n_crm)
    triggers = {
        name: crm_ids.filter(pa.array(member[: comp.n_crm])).to_pylist()  # ids ascend with index
        for name, member in planted.items()
    }
    must_have = [{"trait": t, "value": v} for t, v, _ in MUST_HAVE_TERMS]
    hard_no = [{"trait": t, "value": v} for t, v in HARD_NO]
    drift = None
    if spec.planted_icp:
        terms = [{"trait": t, "value": v, "coefficient": c} for t, v, c in MUST_HAVE_TERMS]
        win_model: dict[str, Any] = {
            "kind": "logistic",
            "intercept": WIN_INTERCEPT,
            "terms": terms,
            "hard_no_probability": HARD_NO_PROBABILITY,
            "traits_from": "true company traits (before CRM blanking); technology = first firmographic stack",
            "after_drift": None,
        }
        if spec.drift_date is not None:
            after_terms = [t for t in terms if (t["trait"], t["value"]) != DRIFT_REPLACES]
            after_terms.append({"trait": DRIFT_TERM[0], "value": DRIFT_TERM[1], "coefficient": DRIFT_TERM[2]})
            win_model["after_drift"] = {
                "applies_to": "opportunities created on/after drift date",
                "terms": after_terms,
            }
            drift = {
                "date": spec.drift_date.isoformat(),
                "before": {"trait": DRIFT_REPLACES[0], "value": DRIFT_REPLACES[1]},
                "after": {"trait": DRIFT_TERM[0], "value": DRIFT_TERM[1]},
            }
        subscriptions = {
            "fit": "no hard_no trait and at least one must_have trait",
            "churn_probability": {"fit": CHURN_FIT, "non_fit": CHURN_NON_FIT},
            "expansion_probability_retained_fit": EXPANSION_PROBABILITY,
        }
    else:
        must_have, hard_no = [], []
        win_model = {"kind": "constant", "probability": NULL_WIN_PROBABILITY}
        subscriptions = {
            "churn_probability": CHURN_NULL,
            "expansion_probability_retained": EXPANSION_PROBABILITY,
        }
    return {
        "seed": spec.seed,
        "accounts": spec.accounts,
        "as_of": spec.as_of.isoformat(),
        "planted_icp": spec.planted_icp,
        "must_have": must_have,
        "hard_no": hard_no,
        "win_model": win_model,
        "drift": drift,
        "subscriptions": subscriptions,
        "companies": {"crm": comp.n_crm, "outside_crm": comp.total - comp.n_crm},
        "triggers": triggers,
        "trigger_rules": trigger_rules(),
        "counts": dict(counts),
    }


def trigger_rules() -> dict[str, Any]:
    """The documented trigger rules as data (windows are inclusive day ranges relative to as_of)."""
    return {
        "funding": {
            "table": "funding_rounds",
            "date_field": "announced_at",
            "window": {"from_days_before": FUNDING_WINDOW_DAYS, "to_days_before": 0},
            "min_rounds": 1,
            "non_trigger_rounds_at_least_days_before": OLD_ROUND_MIN_AGE_DAYS,
        },
        "hiring_surge": {
            "table": "job_postings",
            "date_field": "posted_at",
            "recent_window": {"from_days_before": HIRING_RECENT_DAYS - 1, "to_days_before": 0},
            "baseline_window": {
                "from_days_before": HIRING_RECENT_DAYS + HIRING_BASELINE_DAYS - 1,
                "to_days_before": HIRING_RECENT_DAYS,
            },
            "baseline_months": HIRING_BASELINE_DAYS // 30,
            "min_recent_postings": HIRING_MIN_RECENT,
            "min_ratio_to_monthly_baseline": HIRING_MIN_RATIO,
            "rule": "recent >= 5 and recent >= 3 * (baseline / 6)",
        },
        "leadership_change": {
            "table": "leadership_changes",
            "date_field": "effective_at",
            "window": {"from_days_before": LEADERSHIP_WINDOW_DAYS, "to_days_before": 0},
            "change_types": ["joined", "promoted"],
            "executive_titles": list(tx.EXECUTIVE_TITLES),
            "non_executive_titles": list(tx.NON_EXECUTIVE_TITLES),
        },
        "headcount_growth": {
            "table": "firmographics",
            "date_field": "observed_at",
            "window": {"from_days_before": FIRMOGRAPHIC_WINDOW_DAYS, "to_days_before": 0},
            "field": "employee_count",
            "compare_to": "previous observation of the same company",
            "min_growth": HEADCOUNT_MIN_GROWTH,
        },
        "tech_change": {
            "table": "firmographics",
            "date_field": "observed_at",
            "window": {"from_days_before": FIRMOGRAPHIC_WINDOW_DAYS, "to_days_before": 0},
            "field": "tech_stack",
            "compare_to": "previous observation of the same company (as a set, ';'-separated)",
            "min_changed_technologies": 1,
        },
    }
