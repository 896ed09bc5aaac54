"""Map external feed rows to CRM accounts by normalised domain, then by normalised name.

Precedence, per feed row:

1. ``domain``: the normalised domain equals an account's normalised domain. A domain is
   the most reliable key a feed carries, so it always wins over the name.
2. ``name``: tried whenever step 1 gave no account, i.e. the row has no usable domain
   *or* its domain is unknown to the CRM (accounts often store a different web property
   than the feed, e.g. ``corporate.x.com`` vs ``x.com``). The normalised name must equal
   the normalised name of exactly one account.
3. ``ambiguous_name``: the normalised name belongs to several accounts. Not guessed:
   picking one would silently attach signals to the wrong account.
4. ``unmatched``: nothing usable matched.

Ties on the domain are resolved, not reported: when several accounts share a
normalised domain (CRM duplicates, subsidiaries registered under the parent's site),
the account with the smallest ``account_id`` owns the domain. That is deterministic
and keeps domain matching total; the alternative of refusing such domains would drop
the strongest key exactly for the largest customers, which have the most duplicates.
Names, being much weaker evidence, get the opposite rule (ambiguous -> no match).

Everything is vectorised: keys are normalised with pyarrow-backed string kernels
(:mod:`icp_pipeline.resolve.normalize`) and looked up with a hash join
(``pyarrow.compute.index_in``) against the de-duplicated account keys, both split into
per-CPU chunks run in threads (:func:`icp_pipeline.resolve.normalize.map_chunks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from icp_pipeline.resolve.normalize import (
    STR_DTYPE,
    map_chunks,
    normalize_domain,
    normalize_name,
)

__all__ = [
    "MATCH_METHODS",
    "AccountIndex",
    "MatchMethod",
    "account_match_keys",
    "build_account_index",
    "index_from_keys",
    "match_feed",
    "match_summary",
]


class MatchMethod(StrEnum):
    """How a feed row was attached to an account (values of ``match_method``)."""

    DOMAIN = "domain"
    NAME = "name"
    AMBIGUOUS_NAME = "ambiguous_name"
    UNMATCHED = "unmatched"


#: Category order of the ``match_method`` column and of :func:`match_summary`.
MATCH_METHODS: tuple[MatchMethod, ...] = (
    MatchMethod.DOMAIN,
    MatchMethod.NAME,
    MatchMethod.AMBIGUOUS_NAME,
    MatchMethod.UNMATCHED,
)
_CODE = {m: i for i, m in enumerate(MATCH_METHODS)}

ACCOUNT_COLUMNS: tuple[str, str, str] = ("account_id", "name", "domain")


@dataclass(frozen=True)
class AccountIndex:
    """Lookup tables built once from the CRM accounts, reused for every feed.

    Attributes:
        by_domain: Series indexed by unique normalised domain, values ``account_id``
            (the smallest ``account_id`` among accounts sharing the domain).
        by_name: DataFrame indexed by unique normalised name with columns
            ``account_id`` (missing when ambiguous) and ``n_accounts`` (number of
            distinct accounts carrying that name; ``> 1`` means ambiguous).

    ``account_id`` keeps the accounts' dtype, made nullable (integers become ``Int64``)
    so that unmatched rows can hold a missing id without turning ids into floats.
    """

    by_domain: pd.Series
    by_name: pd.DataFrame

    @property
    def ambiguous_names(self) -> pd.Index:
        """Normalised names shared by more than one account (never name-matched)."""
        return self.by_name.index[self.by_name["n_accounts"].to_numpy() > 1]


def account_match_keys(accounts: pd.DataFrame, domains_normalized: bool = False) -> pd.DataFrame:
    """``norm_domain`` and ``norm_name`` of each account row (same index): what the index is built from.

    Staging stores them with the accounts, so that a night which changed a few accounts
    normalises only those instead of a million names and domains.
    """
    frame = pd.DataFrame(index=accounts.index)
    domains = pd.DataFrame({"domain": accounts["domain"].array})
    norm_domain = (
        _renormalized(domains, "domain")
        if domains_normalized
        else _normalized(domains, "domain", normalize_domain)
    )
    frame["norm_domain"] = norm_domain.array
    frame["norm_name"] = normalize_name(pd.Series(accounts["name"].array, copy=False)).array
    return frame


def build_account_index(accounts: pd.DataFrame) -> AccountIndex:
    """Normalise the accounts' domains and names and de-duplicate them into lookups.

    ``accounts`` needs columns ``account_id``, ``name`` and ``domain``. Rows without an
    ``account_id`` are ignored; rows whose domain or name normalises to missing simply
    contribute nothing to that lookup. Shared domains go to the smallest ``account_id``
    (see the module docstring); shared names are marked ambiguous. The same account
    listed twice under one name is not ambiguous.
    """
    missing = [c for c in ACCOUNT_COLUMNS if c not in accounts.columns]
    if missing:
        raise KeyError(f"accounts is missing column(s) {missing}; need {ACCOUNT_COLUMNS}")
    keep = accounts["account_id"].notna().to_numpy()
    keys = account_match_keys(accounts[keep])
    return index_from_keys(
        pd.DataFrame(
            {
                "account_id": _nullable(accounts["account_id"][keep]).array,
                "norm_domain": keys["norm_domain"].array,
                "norm_name": keys["norm_name"].array,
            }
        )
    )


def index_from_keys(frame: pd.DataFrame) -> AccountIndex:
    """The lookups from accounts' ``account_id`` (none missing), ``norm_domain`` and ``norm_name``."""
    by_domain = (
        frame.loc[frame["norm_domain"].notna(), ["norm_domain", "account_id"]]
        .groupby("norm_domain", sort=False)["account_id"]
        .min()
    )
    by_domain.index.name = "norm_domain"

    names = frame.loc[frame["norm_name"].notna(), ["norm_name", "account_id"]]
    by_name = (
        names.drop_duplicates()
        .groupby("norm_name", sort=False)["account_id"]
        .agg(account_id="min", n_accounts="size")
    )
    by_name["n_accounts"] = by_name["n_accounts"].astype(np.int64)
    by_name["account_id"] = by_name["account_id"].mask(by_name["n_accounts"] > 1)
    return AccountIndex(by_domain=by_domain, by_name=by_name)


def match_feed(
    feed: pd.DataFrame,
    index: AccountIndex,
    domain_col: str | None = "domain",
    name_col: str | None = "company_name",
    domains_normalized: bool = False,
) -> pd.DataFrame:
    """Attach ``account_id`` to every feed row that identifies a CRM account.

    Returns a copy of ``feed`` (same row order, same index, original columns untouched)
    with four columns added, overwriting columns of the same name:

    * ``norm_domain``, ``norm_name``: the normalised keys, kept for auditing misses; the name
      only of rows the domain did not match (the only rows matched by name; normalising names
      costs per row, and most feed rows match by domain), missing on the others;
    * ``account_id``: the matched account, missing unless matched by domain or name;
    * ``match_method``: a categorical of :class:`MatchMethod` values.

    Pass ``domain_col=None`` or ``name_col=None`` for feeds that only carry one of the
    two (e.g. job postings with a company name only); a named column that does not
    exist raises ``KeyError`` instead of silently matching nothing.

    ``domains_normalized=True`` says ``domain_col`` already holds :func:`normalize_domain`
    output (staging types it so): only values starting with ``www.`` are normalised again,
    the one case where normalising twice differs from once; the rest are used as they are.
    """
    n = len(feed)
    norm_domain = (
        _renormalized(feed, domain_col)
        if domains_normalized
        else _normalized(feed, domain_col, normalize_domain)
    )
    by_domain = index.by_domain
    by_name_id = index.by_name["account_id"]
    n_dom = len(by_domain)

    # Positions into the candidate array [domain ids..., name ids...]; -1 = no account.
    dom_pos = _lookup(norm_domain, by_domain.index)
    pos = dom_pos.copy()
    method = np.full(n, _CODE[MatchMethod.UNMATCHED], dtype=np.int8)
    by_dom = dom_pos >= 0
    method[by_dom] = _CODE[MatchMethod.DOMAIN]
    norm_name = _normalized(feed, name_col, normalize_name, rows=~by_dom)

    need_name = ~by_dom & norm_name.notna().to_numpy()
    if need_name.any():
        name_pos = np.full(n, -1, dtype=np.int64)
        name_pos[need_name] = _lookup(norm_name[need_name], by_name_id.index)
        found = name_pos >= 0
        ambiguous = np.zeros(n, dtype=bool)
        ambiguous[found] = index.by_name["n_accounts"].to_numpy()[name_pos[found]] > 1
        by_nm = found & ~ambiguous
        pos[by_nm] = n_dom + name_pos[by_nm]
        method[by_nm] = _CODE[MatchMethod.NAME]
        method[ambiguous] = _CODE[MatchMethod.AMBIGUOUS_NAME]

    candidates = pd.concat([by_domain, by_name_id], ignore_index=True).array
    out = feed.copy(deep=False)  # copy-on-write: the caller's frame is never modified
    out["norm_domain"] = norm_domain.array
    out["norm_name"] = norm_name.array
    out["account_id"] = candidates.take(pos, allow_fill=True)
    out["match_method"] = pd.Categorical.from_codes(method, categories=[str(m) for m in MATCH_METHODS])
    return out


def match_summary(matched: pd.DataFrame) -> pd.DataFrame:
    """Rows and share of rows per ``match_method``, every method listed (zeros too).

    Returns columns ``match_method``, ``rows``, ``share`` in :data:`MATCH_METHODS`
    order; ``share`` is 0.0 for an empty feed rather than NaN.
    """
    methods = matched["match_method"]
    # Counted on the categorical's codes when it is one (as match_feed makes it), not on text.
    counts = (
        (
            methods.value_counts()
            if isinstance(methods.dtype, pd.CategoricalDtype)
            else methods.astype(STR_DTYPE).value_counts()
        )
        .rename(index=str)
        .reindex([str(m) for m in MATCH_METHODS], fill_value=0)
        .astype(np.int64)
    )
    total = int(counts.sum())
    shares = counts / total if total else counts.astype(np.float64) * 0.0
    return pd.DataFrame(
        {
            "match_method": counts.index.to_numpy(dtype=object),
            "rows": counts.to_numpy(),
            "share": shares.to_numpy(dtype=np.float64),
        }
    )


# --------------------------------------------------------------------------- helpers


def _normalized(
    feed: pd.DataFrame,
    col: str | None,
    func: Callable[[pd.Series], pd.Series],
    rows: np.ndarray | None = None,
) -> pd.Series:
    """Normalise ``feed[col]`` on a RangeIndex; all-missing when ``col`` is None. With ``rows``
    (a boolean mask), only those rows are normalised and the others are missing."""
    if col is None:
        return pd.Series(pd.array([None] * len(feed), dtype=STR_DTYPE))
    if col not in feed.columns:
        raise KeyError(f"feed has no column {col!r}; pass None to skip it")
    if rows is None or rows.all():
        return func(pd.Series(feed[col].array, copy=False))
    missing = pa.nulls(len(feed), pa.large_string())
    if not rows.any():
        return pd.Series(pd.array(missing, dtype=STR_DTYPE), copy=False)
    values = func(pd.Series(feed[col].array[rows], copy=False))
    merged = pc.replace_with_mask(missing, pa.array(rows), _arrow(values).cast(pa.large_string()))
    return pd.Series(pd.array(merged, dtype=STR_DTYPE), copy=False)


def _renormalized(feed: pd.DataFrame, col: str | None) -> pd.Series:
    """``normalize_domain`` of already normalised domains: equal to them except after a "www." prefix."""
    if col is None or col not in feed.columns:
        return _normalized(feed, col, normalize_domain)
    values = pd.Series(feed[col].astype(STR_DTYPE).array, copy=False)
    again = values.str.startswith("www.").fillna(False).to_numpy(dtype=bool)
    if not again.any():
        return values
    values = values.copy()
    values[again] = normalize_domain(values[again]).array
    return values


def _lookup(keys: pd.Series, table: pd.Index) -> np.ndarray:
    """Position of each key in ``table`` (unique keys) or -1; missing keys give -1.

    A hash join via ``pyarrow.compute.index_in`` (several times faster than
    ``Index.get_indexer`` on millions of string keys), run chunk-parallel.
    """
    if len(table) == 0 or len(keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    value_set = _arrow(table.astype(STR_DTYPE))
    if len(keys) * _FEW_KEYS_RATIO < len(table):
        return _lookup_few(_arrow(pd.Series(keys.astype(STR_DTYPE).array, copy=False)), value_set)

    def probe(chunk: pd.Series) -> pd.Series:
        found = pc.index_in(_arrow(chunk), value_set=value_set).fill_null(-1)
        return pd.Series(found.to_numpy(zero_copy_only=False).astype(np.int64))

    positions = map_chunks(probe, pd.Series(keys.astype(STR_DTYPE).array, copy=False))
    return positions.to_numpy(dtype=np.int64)


# Below one key per this many table entries, the keys are hashed instead of the table: a night's
# few thousand new feed rows probed a million account keys, rebuilding their hash table each time.
_FEW_KEYS_RATIO = 16


def _lookup_few(keys: pa.Array, table: pa.Array) -> np.ndarray:
    """`_lookup` for few keys: the table is scanned against the keys' distinct values."""
    wanted = pc.unique(keys)
    hits = pc.index_in(table, value_set=wanted)  # per table entry: which wanted value it is
    found = pc.is_valid(hits)
    table_position = np.full(len(wanted), -1, dtype=np.int64)
    table_position[hits.filter(found).to_numpy()] = np.flatnonzero(found.to_numpy(zero_copy_only=False))
    which = pc.index_in(keys, value_set=wanted).to_numpy(zero_copy_only=False)
    return table_position[which.astype(np.int64)]


def _arrow(values: pd.Series | pd.Index) -> pa.Array:
    """String values as one contiguous pyarrow array (via ``__arrow_array__``)."""
    arr = pa.array(values.array)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _nullable(ids: pd.Series) -> pd.Series:
    """Integer ids as ``Int64`` so that a missing id never turns the column into floats.

    Whole-number float ids (integer ids read from a column that also held blanks) are
    turned back into ``Int64`` too; any other dtype is kept as is.
    """
    dtype = ids.dtype
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return ids
    if pd.api.types.is_integer_dtype(dtype):
        return ids.astype("Int64")
    if pd.api.types.is_float_dtype(dtype):
        values = ids.to_numpy()
        if np.isfinite(values).all() and (values == np.round(values)).all():
            return ids.astype("Int64")
    return ids
