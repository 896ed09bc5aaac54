"""Normalisation of company domains and names, the join keys of account matching.

External feeds (firmographics, funding rounds, job postings, leadership changes) name
a company by a domain written in any of a dozen forms (``HTTPS://WWW.X.COM/``,
``info@x.com``, ``x.com:443``, ``x.com.``) or by a free-text company name
(``AT&amp;T Inc.``, ``Lowe&#8217;s``, ``Müller GmbH``). Matching them to CRM accounts is
an exact join, so both sides must first be reduced to one canonical key; everything the
join can tolerate has to be decided here.

Performance notes. Feeds reach millions of rows, so all per-row work runs as pandas
``.str`` methods on the pyarrow-backed ``str`` dtype, i.e. as pyarrow compute kernels
using RE2 regular expressions (hence ``\\p{L}`` and no look-arounds in the vectorised
patterns, and ``\\Z`` rather than ``$``: pandas sends a pattern with ``$`` to slow
Python ``re`` as soon as one value contains a newline, because the two engines
disagree on ``$`` before a trailing newline). Three measures keep the cost down:

* expensive rewrites (regex replace) run only on the rows that need them, found by a
  cheap ``contains``/``fullmatch`` scan first; a feed that is already clean pays for
  the scan only;
* steps that need Python (HTML entities, Unicode folding, IDNA, joining initials) are
  applied once per *unique* affected value, never per row;
* large inputs are cut into one contiguous chunk per CPU and processed in threads
  (:func:`map_chunks`); pyarrow kernels release the GIL while they run.
"""

from __future__ import annotations

import html
import os
import re
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "LEGAL_SUFFIXES",
    "STR_DTYPE",
    "map_chunks",
    "normalize_domain",
    "normalize_name",
]

#: The pandas 3 default string dtype (pyarrow storage, NaN as missing value). Inputs are
#: converted to it so that the regexes below always run in pyarrow/RE2, whatever the
#: caller's dtype (object, ``string[python]``, categorical ...).
STR_DTYPE: pd.StringDtype = pd.StringDtype(storage="pyarrow", na_value=np.nan)

#: Legal-form words dropped from the end of a normalised name (repeatedly, so
#: ``"Acme Holdings Co Ltd"`` -> ``"acme holdings"``). Deliberately absent: ``holdings``,
#: ``group``, ``companies``, ``partners``, ``international``: they distinguish real
#: entities (``"Barnes & Noble"`` vs ``"Barnes & Noble Education"`` both exist).
#: Dotted forms (``L.L.C.``, ``S.p.A.``, ``N.V.``) are covered because runs of single
#: letters are joined before suffixes are dropped (``"l l c"`` -> ``"llc"``).
LEGAL_SUFFIXES: tuple[str, ...] = (
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "company",
    "ltd",
    "limited",
    "llc",
    "plc",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "bv",
    "nv",
    "oy",
    "ab",
    "pty",
    "srl",
    "spa",
    "kk",
    "lp",
    "llp",
)

# Chunked multi-threading (see map_chunks): one worker per usable CPU, capped, and only
# for inputs large enough that thread start-up and concatenation are noise.
_WORKERS: int = min(
    8,
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
)
_MIN_ROWS_PER_CHUNK: int = 250_000

# --------------------------------------------------------------------------- domains

# A plausible public hostname: dot-separated LDH labels (1-63 chars, no leading or
# trailing hyphen) and an alphabetic or punycode top-level label. Rejects IP addresses,
# single labels ("localhost"), spaces, underscores and empty labels ("x..com").
_HOST_RE = (
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)
_MAX_HOST_LEN = 253

# Everything around the host, removed in one regex pass. Left alternative (anchored):
# scheme with "//" (or scheme-relative "//", or "mailto:"), user-info / e-mail local
# part, and a single leading "www.". Right alternative: trailing dots, then port, path,
# query or fragment. The scheme needs its "//" so that "x.com:443" is not read as
# scheme "x.com:". Only "www." is dropped: "www2."/"www8." are real, distinct hosts.
_DOMAIN_JUNK_RE = (
    r"^(?:mailto:|(?:[a-z][a-z0-9+.\-]*:)?//)?(?:[^@/?#]*@)?(?:www\.)?"
    r"|\.*(?:[:/?#].*)?\Z"
)


def normalize_domain(values: pd.Series) -> pd.Series:
    """Reduce domains/URLs/e-mail addresses to a bare lower-case hostname.

    ``"HTTPS://WWW.X.COM/"``, ``"http://x.com/about?x=1"``, ``"x.com."``, ``" x.com "``,
    ``"info@x.com"`` and ``"x.com:443"`` all become ``"x.com"``, so that a feed row and a
    CRM account agree on the join key however each system happened to store it.
    Internationalised hostnames are converted to punycode (``"müller.de"`` ->
    ``"xn--mller-kva.de"``) so Unicode and ASCII spellings of the same host meet.

    Only a leading ``www.`` is removed; other subdomains (``corporate.x.com``) are kept,
    because telling a brand subdomain from a registrable domain needs the public suffix
    list (``x.co.uk``), which this module does not carry.

    Returns a ``str``-dtype Series with the input's index and name; values that are
    missing, empty or not a plausible hostname afterwards (no dot, inner spaces, IP
    addresses, bad characters) are missing (NaN) rather than a wrong key.
    """
    return _restore(map_chunks(_normalize_domain_chunk, _to_str(values)), values)


def _normalize_domain_chunk(s: pd.Series) -> pd.Series:
    """:func:`normalize_domain` on a ``str`` Series with a RangeIndex."""
    s = s.str.strip().str.lower()

    # Fast path: already-clean hostnames (the common case) skip the rewrite.
    clean = s.str.fullmatch(_HOST_RE)
    todo = (~clean | s.str.startswith("www.")) & s.notna()
    if todo.any():
        sub = s[todo].str.replace(_DOMAIN_JUNK_RE, "", regex=True)
        non_ascii = ~sub.str.isascii() & sub.notna()
        if non_ascii.any():
            sub = _map_unique(sub, non_ascii, _to_idna)
        sub = sub.where(sub.str.fullmatch(_HOST_RE))
        s = _scatter(s, todo, sub)
    return s.where(s.str.len() <= _MAX_HOST_LEN)


def _to_idna(host: str) -> str | None:
    """Punycode a Unicode hostname; None (-> missing) when it is not a valid IDN."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


# ----------------------------------------------------------------------------- names

# Only well-formed, ';'-terminated references are decoded. ``html.unescape`` alone also
# decodes legacy references without ';' ("&not", "&para", "&copy"), which would turn a
# plain "Smith&Nephew"-style name into garbage.
_ENTITY_RE = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
_ENTITY_PY = re.compile(_ENTITY_RE)
_MAX_UNESCAPE_PASSES = 3  # double-encoded feeds: "&amp;#8217;" -> "&#8217;" -> "’"

# Characters NFKD does not decompose but that people routinely write without the
# diacritic; acute/modifier accents used as apostrophes become apostrophes first so
# that "Lowe´s" folds to "lowes", not "lowe s"; trademark signs are dropped before NFKD
# would spell "™" as "TM" ("Anchor™" -> "anchor", not "anchortm").
_FOLD_TABLE = str.maketrans(
    {
        "™": " ",
        "℠": " ",
        "®": " ",
        "©": " ",
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "Th",
        "æ": "ae",
        "Æ": "Ae",
        "œ": "oe",
        "Œ": "Oe",
        "ı": "i",
        "\u00b4": "'",
        "\u02ca": "'",
    }
)

# Patterns below are handed to pyarrow, i.e. RE2: no "\\uXXXX" escapes (RE2 lacks them
# and pandas would silently fall back to slow Python ``re``), so non-ASCII characters
# are written literally.
_APOSTROPHES_RE = "['`\u2018\u2019\u02bc\u2032\u00b4\uff07]"
# Rows that need punctuation/whitespace clean-up: anything but letters, digits and
# single inner spaces. On those rows, runs of non-alphanumerics (punctuation and
# whitespace alike) become one space. Rows outside this mask are already clean.
_NEEDS_PUNCT_RE = r"[^\p{L}\p{N} ]|  |^ | \Z"
_PUNCT_RE = r"[^\p{L}\p{N}]+"
# Two or more single-letter tokens in a row: initials ("r r donnelley", "l l c").
_INITIALS_RE = r"(?:^| )\p{L} \p{L}(?: |\Z)"
_INITIALS_PY = re.compile(r"(?<!\S)[^\W\d_](?: [^\W\d_])+(?!\S)")
_SUFFIX_ALTERNATIVES = "|".join(sorted(LEGAL_SUFFIXES, key=len, reverse=True))
# Detection (ends with " <suffix>") is a cheap anchored full match; the removal pattern
# strips any number of trailing suffixes, each optionally preceded by "and"
# ("JPMorgan Chase & Co." -> "jpmorgan chase").
_HAS_SUFFIX_RE = rf".* (?:{_SUFFIX_ALTERNATIVES})"
_SUFFIX_RE = rf"(?: (?:and )?(?:{_SUFFIX_ALTERNATIVES}))+\Z"


def normalize_name(values: pd.Series) -> pd.Series:
    """Reduce company names to a comparable key for exact name matching.

    Steps, in order: decode HTML entities (``"AT&amp;T"``, ``"Lowe&#8217;s"``); lower-case;
    fold accents and compatibility forms (``"Müller"`` -> ``"muller"``); drop apostrophes
    (``"Lowe's"`` -> ``"lowes"``, so it meets ``"LOWES"``); read ``&`` as ``and``; turn all
    other punctuation and whitespace runs into one space; join runs of single letters
    (``"R.R. Donnelley"`` and ``"RR Donnelley"`` -> ``"rr donnelley"``); drop a leading
    ``the`` and trailing :data:`LEGAL_SUFFIXES` (``"The Home Depot"`` ==
    ``"Home Depot, Inc."``).

    The key is deliberately conservative: it removes spelling noise but never words that
    can tell two companies apart (``holdings``, ``group``, ``companies``), because a
    wrong match is worse than a missed one. A name that is nothing but a legal form
    (``"Company"``) is kept as is rather than emptied.

    Returns a ``str``-dtype Series with the input's index and name; missing or empty
    results are missing (NaN).
    """
    return _restore(map_chunks(_normalize_name_chunk, _to_str(values)), values)


def _normalize_name_chunk(s: pd.Series) -> pd.Series:
    """:func:`normalize_name` on a ``str`` Series with a RangeIndex."""
    # "&" rows only: decode entities, then read the (possibly decoded) "&" as "and".
    s = _map_unique(s, s.str.contains("&", regex=False), _unescape_ampersand)
    s = s.str.lower()
    s = _map_unique(s, ~s.str.isascii() & s.notna(), _fold)
    messy = s.str.contains(_NEEDS_PUNCT_RE, regex=True)
    if messy.any():
        sub = _replace_where(s[messy], _APOSTROPHES_RE, _APOSTROPHES_RE, "")
        sub = sub.str.replace(_PUNCT_RE, " ", regex=True).str.strip()
        s = _scatter(s, messy, sub)
    s = _map_unique(s, s.str.contains(_INITIALS_RE, regex=True), _join_initials)
    the = s.str.startswith("the ")
    if the.any():
        s = _scatter(s, the, s[the].str.slice(4))
    s = _replace_where(s, _HAS_SUFFIX_RE, _SUFFIX_RE, "", full=True)
    return s.where(s != "")


def _unescape_ampersand(name: str) -> str:
    """Decode ';'-terminated HTML references (repeatedly, for double-encoded text),
    then spell the remaining "&" as " and " (``"AT&amp;T"`` -> ``"AT and T"``)."""
    for _ in range(_MAX_UNESCAPE_PASSES):
        decoded = _ENTITY_PY.sub(lambda m: html.unescape(m.group(0)), name)
        if decoded == name:
            break
        name = decoded
    return name.replace("&", " and ")


def _fold(name: str) -> str:
    """Strip diacritics (NFKD, drop combining marks) and case-fold (``ß`` -> ``ss``)."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_FOLD_TABLE))
    folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return folded.replace("&", " and ")  # NFKD turns fullwidth "＆" into "&"


def _join_initials(name: str) -> str:
    """``"r r donnelley"`` -> ``"rr donnelley"``; ``"acme l l c"`` -> ``"acme llc"``."""
    return _INITIALS_PY.sub(lambda m: m.group(0).replace(" ", ""), name)


# --------------------------------------------------------------------------- helpers


def _to_str(values: pd.Series) -> pd.Series:
    """``values`` as pyarrow-backed ``str`` on a fresh RangeIndex.

    Working on a RangeIndex keeps the masked assignments below positional, so duplicate
    or unsorted labels in the caller's index cannot trigger alignment.
    """
    arr = values.array if values.dtype == STR_DTYPE else values.astype(STR_DTYPE).array
    return pd.Series(arr, copy=False)


def _restore(result: pd.Series, like: pd.Series) -> pd.Series:
    """Put the caller's index and name back on a result computed positionally."""
    return pd.Series(result.array, index=like.index, name=like.name, copy=False)


def _replace_where(s: pd.Series, find: str, pattern: str, repl: str, *, full: bool = False) -> pd.Series:
    """``s.str.replace(pattern, repl, regex=True)`` on the rows matching ``find`` only.

    ``find`` is searched (``full=False``) or fully matched (``full=True``). A match scan
    is several times cheaper than a replace in pyarrow, and most rewrites touch only a
    minority of rows.
    """
    hit = s.str.fullmatch(find) if full else s.str.contains(find, regex=True)
    if not hit.any():
        return s
    return _scatter(s, hit, s[hit].str.replace(pattern, repl, regex=True))


def _map_unique(s: pd.Series, mask: pd.Series, func: Callable[[str], str | None]) -> pd.Series:
    """Apply a Python function to the masked rows, calling it once per unique value."""
    if not mask.any():
        return s
    codes, uniques = pd.factorize(s[mask])
    mapped = pd.array([func(v) for v in uniques], dtype=STR_DTYPE)
    return _scatter(s, mask, pd.Series(mapped.take(codes), copy=False))


def _scatter(s: pd.Series, mask: pd.Series, values: pd.Series) -> pd.Series:
    """Copy of ``s`` with the masked rows replaced, in order, by ``values``.

    Equivalent to ``out = s.copy(); out[mask] = values.array``, done with
    ``pyarrow.compute.replace_with_mask``, which is about twice as fast as pandas'
    masked ``__setitem__`` on arrow strings.
    """
    merged = pc.replace_with_mask(_arrow(s), pa.array(mask.to_numpy(dtype=bool)), _arrow(values))
    return pd.Series(pd.array(merged, dtype=STR_DTYPE), copy=False)


def _arrow(s: pd.Series) -> pa.Array:
    """The ``str`` Series as one contiguous pyarrow array (via ``__arrow_array__``)."""
    arr = pa.array(s.array)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def map_chunks(func: Callable[[pd.Series], pd.Series], s: pd.Series) -> pd.Series:
    """Apply a row-wise ``func`` to contiguous chunks of ``s`` in a thread pool.

    pyarrow's string kernels release the GIL, so the chunks of a multi-million-row
    Series really run concurrently (about 1.5x for the name normaliser on 2 CPUs, where
    the Python glue between kernels is the serial part). ``func`` must be
    row-wise (its result for a row must not depend on other rows) and take and return
    a Series on a RangeIndex; the result has a fresh RangeIndex. Small inputs run inline.
    """
    n_chunks = min(_WORKERS, len(s) // _MIN_ROWS_PER_CHUNK)
    if n_chunks <= 1:
        return func(s)
    bounds = np.linspace(0, len(s), n_chunks + 1).astype(np.int64)
    chunks = [pd.Series(s.array[lo:hi], copy=False) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    with ThreadPoolExecutor(max_workers=n_chunks) as pool:
        parts = list(pool.map(func, chunks))
    return pd.concat(parts, ignore_index=True)
