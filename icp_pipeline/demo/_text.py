"""Vocabulary and vectorized string helpers for the demo generator.

Kept apart from the generator so the planted-truth logic in ``generate.py`` reads
as a model description rather than a wall of word lists and Arrow plumbing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EPOCH = date(1970, 1, 1)
SECONDS_PER_DAY = 86_400

# Company-name syllables: onset (consonants) + one vowel + one consonant coda.
# Because vowels are single letters and codas single consonants, a two-syllable
# word parses back into exactly one (syllable, syllable) pair, so distinct index
# pairs give distinct words even after lowercasing and removing spaces.
_ONSETS: tuple[str, ...] = (
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
    "br", "cr", "dr", "fr", "gr", "kr", "pr", "tr",
)  # fmt: skip
_VOWELS: tuple[str, ...] = ("a", "e", "i", "o", "u")
_CODAS: tuple[str, ...] = ("b", "d", "k", "l", "m", "n", "r", "s", "t", "x", "z")
SYLLABLES: tuple[str, ...] = tuple(o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS)

# Multipliers coprime with len(SYLLABLES)**2 = 1430**2 = 2^2 * 5^2 * 11^2 * 13^2, so
# i -> (i * m + offset) mod 1430**2 is a bijection that scatters neighbouring indices.
NAME_MULTIPLIERS: tuple[int, ...] = (1_000_003, 999_983, 1_299_709, 611_953, 1_046_527)

# None of these is a legal suffix or a word a name normalizer is likely to strip.
NOUNS: tuple[str, ...] = (
    "Labs", "Systems", "Analytics", "Health", "Logistics", "Robotics", "Dynamics", "Networks",
    "Software", "Cloud", "Data", "Energy", "Bio", "Media", "Works", "Foods", "Devices",
    "Security", "Payments", "Learning", "Motion", "Metrics", "Signals", "Forge",
)  # fmt: skip
LEGAL_SUFFIXES: tuple[str, ...] = ("", "Inc", "Corp", "Ltd", "GmbH", "LLC")
LEGAL_SUFFIX_P: tuple[float, ...] = (0.40, 0.20, 0.10, 0.10, 0.10, 0.10)
# How the "Name, Inc." spelling renders each suffix (no suffix -> ", Inc.").
COMMA_SUFFIXES: tuple[str, ...] = (", Inc.", ", Inc.", ", Corp.", ", Ltd.", ", GmbH", ", LLC")
TLDS: tuple[str, ...] = (".com", ".io", ".co", ".ai", ".net", ".de")
TLD_P: tuple[float, ...] = (0.60, 0.15, 0.10, 0.05, 0.05, 0.05)

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
    "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark",
    "Margaret", "Paul", "Sandra", "Steven", "Ashley", "Andrew", "Emily", "Kenneth", "Donna",
    "Joshua", "Michelle", "Kevin", "Carol", "Brian", "Amanda", "George", "Melissa", "Timothy",
    "Deborah", "Ronald", "Stephanie", "Jason", "Rebecca", "Edward", "Laura", "Jeffrey", "Sharon",
    "Ryan", "Cynthia", "Jacob", "Kathleen", "Gary", "Amy", "Nicholas", "Angela", "Eric", "Anna",
    "Jonathan", "Brenda", "Stephen", "Pamela", "Larry", "Nicole", "Justin", "Emma", "Scott",
    "Samantha", "Brandon", "Katherine", "Benjamin", "Christine", "Samuel", "Priya",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Mueller", "Schmidt", "Schneider",
    "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Dubois", "Laurent", "Bernard", "Moreau",
    "Tanaka", "Suzuki", "Sato", "Kumar", "Sharma", "Patel", "Singh", "Silva", "Santos",
    "Oliveira", "Costa", "Jansen", "DeVries", "Bakker", "Visser", "Murphy", "Kelly", "Chen",
)  # fmt: skip
PERSON_COMBOS = len(FIRST_NAMES) * len(LAST_NAMES)

CONTACT_TITLES: tuple[str, ...] = (
    "VP Sales", "Head of Revenue Operations", "Marketing Manager", "CFO", "Data Engineer",
    "Director of Sales", "Sales Operations Manager", "Head of Growth", "CTO", "Account Executive",
    "Procurement Manager", "IT Director", "Customer Success Lead", "Analytics Manager", "COO",
)  # fmt: skip

DEPARTMENTS: tuple[str, ...] = (
    "Sales", "Engineering", "Marketing", "Customer Success", "Finance", "Operations",
)  # fmt: skip
DEPARTMENT_P: tuple[float, ...] = (0.30, 0.30, 0.12, 0.12, 0.08, 0.08)
# Same number of titles per department so a (department, slot) pair indexes a flat array.
POSTING_TITLES: tuple[tuple[str, ...], ...] = (
    ("Account Executive", "Sales Development Representative", "Sales Manager",
     "Enterprise Account Executive"),
    ("Software Engineer", "Senior Backend Engineer", "Data Engineer", "Engineering Manager"),
    ("Marketing Manager", "Growth Marketer", "Content Strategist", "Product Marketing Manager"),
    ("Customer Success Manager", "Support Engineer", "Onboarding Specialist", "Account Manager"),
    ("Financial Analyst", "Controller", "Accountant", "FP&A Manager"),
    ("Operations Manager", "RevOps Analyst", "Recruiter", "Office Manager"),
)  # fmt: skip

EXECUTIVE_TITLES: tuple[str, ...] = (
    "Chief Revenue Officer", "CRO", "VP Sales", "SVP, Marketing", "Head of Data", "CTO",
    "Chief Marketing Officer", "VP of Engineering",
)  # fmt: skip
NON_EXECUTIVE_TITLES: tuple[str, ...] = ("Sales Manager", "Account Executive", "Data Analyst", "Recruiter")

ROUND_TYPES: tuple[str, ...] = ("Seed", "Series A", "Series B", "Series C", "Series D", "Debt", "Grant")
ROUND_TYPE_P: tuple[float, ...] = (0.25, 0.22, 0.15, 0.08, 0.04, 0.16, 0.10)
# Log-uniform amount range (USD) per round type.
ROUND_AMOUNT_RANGE: tuple[tuple[float, float], ...] = (
    (0.5e6, 4e6), (5e6, 20e6), (15e6, 60e6), (40e6, 150e6), (80e6, 400e6), (2e6, 100e6), (0.05e6, 2e6),
)  # fmt: skip

OPEN_STAGES: tuple[str, ...] = ("Prospecting", "Qualification", "Proposal", "Negotiation")
OWNER_EMAIL_DOMAIN = "revenue-demo.example"


def concat(*parts: pa.Array | str) -> pa.Array:
    """Element-wise string concatenation; plain strings broadcast as scalars."""
    return pc.binary_join_element_wise(*parts, "")


def pick(values: Sequence[str], index: np.ndarray, null_mask: np.ndarray | None = None) -> pa.Array:
    """Strings from a small vocabulary by integer code, null where ``null_mask`` is set."""
    return pa.array(values, pa.string()).take(pa.array(index, mask=null_mask))


def format_ids(prefix: str, count: int) -> pa.Array:
    """``prefix`` + zero-padded 1-based counter (``A0000001``); widens past 9,999,999."""
    width = max(7, len(str(count)))
    numbers = pc.cast(pa.array(np.arange(1, count + 1, dtype=np.int64)), pa.string())
    return concat(prefix, pc.utf8_lpad(numbers, width=width, padding="0"))


def day_number(d: date) -> int:
    """Days since 1970-01-01, the integer representation of Arrow's date32."""
    return (d - EPOCH).days


def dates(days: np.ndarray, null_mask: np.ndarray | None = None) -> pa.Array:
    """date32 column; the CSV writer renders it as ``YYYY-MM-DD``."""
    return pa.array(days.astype(np.int32), mask=null_mask).cast(pa.date32())


def _clock_strings() -> pa.Array:
    """``THH:MM:SS`` for every second of a day (86,400 entries), built once."""
    second = np.arange(SECONDS_PER_DAY, dtype=np.int64)
    parts = [second // 3600, second // 60 % 60, second % 60]
    hh, mm, ss = (pc.utf8_lpad(pc.cast(pa.array(p), pa.string()), width=2, padding="0") for p in parts)
    return concat("T", hh, ":", mm, ":", ss)


_CLOCK = _clock_strings()


def timestamps(seconds: np.ndarray) -> pa.Array:
    """``YYYY-MM-DDTHH:MM:SS`` strings (UTC) from epoch seconds.

    Date cast + clock lookup is several times faster than ``pc.strftime`` at millions of rows.
    """
    seconds = seconds.astype(np.int64)
    day = pc.cast(dates(seconds // SECONDS_PER_DAY), pa.string())
    return concat(day, _CLOCK.take(pa.array(seconds % SECONDS_PER_DAY)))


def chronological(rng: np.random.Generator, day: np.ndarray) -> np.ndarray:
    """Row order by day with a seeded random tie-break.

    A random permutation followed by a stable sort on a small-int key (radix sort in numpy)
    is much faster than ``lexsort`` with a float tie-break column.
    """
    perm = rng.permutation(len(day))
    return perm[np.argsort(sort_key(day[perm]), kind="stable")]


def sort_key(day: np.ndarray) -> np.ndarray:
    """Days shifted to start at 0 in the narrowest unsigned dtype, so a stable sort is a radix sort."""
    if len(day) == 0:
        return day.astype(np.uint16)
    shifted = day - day.min()
    return shifted.astype(np.uint16 if shifted.max() < 2**16 else np.int64)


def money(values: np.ndarray) -> pa.Array:
    """Exact two-decimal rendering (decimal128), avoiding float exponent notation in the CSV."""
    return pa.array(np.round(values, 2)).cast(pa.decimal128(18, 2))


def person_names(codes: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """(first, last) names for codes in ``[0, PERSON_COMBOS)``."""
    n_last = len(LAST_NAMES)
    return pick(FIRST_NAMES, codes // n_last), pick(LAST_NAMES, codes % n_last)


def base36(values: np.ndarray, width: int) -> pa.Array:
    """Upper-case base-36 rendering, fixed width (loop is over digits, not rows)."""
    alphabet = pa.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    digits: list[pa.Array] = []
    rest = values.astype(np.int64)
    for _ in range(width):
        digits.append(alphabet.take(rest % 36))
        rest = rest // 36
    return concat(*reversed(digits))
