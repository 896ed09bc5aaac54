"""Dated rows per account, asked "what was true at time t" for many (account, t) at once.

Learning describes each deal by its account as it was when the deal was created, and scoring
describes every account at the as-of date: both are the same question with one time per query.
Rows are kept ordered by a composite key (account position * SPAN + seconds), so an account's
last row at or before t is one binary search per query, and counting rows in a window is two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Seconds of a composite key's time part: from ORIGIN, 2**34 s (544 years) per account.
SPAN = np.int64(1 << 34)
ORIGIN = np.int64(-5_364_662_400)  # 1800-01-01 00:00 UTC
MISSING = np.iinfo(np.int64).min
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def seconds_of(values: pd.Series) -> np.ndarray:
    """Timestamps as int64 seconds since the epoch (MISSING for missing ones)."""
    if not len(values):
        return np.array([], dtype=np.int64)
    if not isinstance(values.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(values):
        values = pd.to_datetime(values, utc=True)
    missing = values.isna().to_numpy()
    raw = values.array.asi8 if hasattr(values.array, "asi8") else values.to_numpy().astype(np.int64)
    seconds = np.floor_divide(np.where(missing, 0, raw), _PER_SECOND[values.dt.unit])
    return np.where(missing, MISSING, seconds).astype(np.int64)


def day_end_seconds(timestamp: pd.Timestamp) -> int:
    """The last second of `timestamp`'s day: "at or before" that second is "by the end of the day"."""
    return int((timestamp.normalize() + pd.Timedelta(days=1)).timestamp()) - 1


def _clipped(seconds: np.ndarray) -> np.ndarray:
    return np.clip(seconds, ORIGIN, ORIGIN + SPAN - 1) - ORIGIN


@dataclass(frozen=True)
class Timeline:
    """Rows with an account position and a time, in (account, time) order, ties in row order."""

    rows: np.ndarray  # row positions in the source table, in key order
    keys: np.ndarray  # sorted composite keys

    @classmethod
    def of(cls, account: np.ndarray, seconds: np.ndarray) -> Timeline:
        """Rows without an account (-1) or a time (MISSING) are left out."""
        rows = np.flatnonzero((account >= 0) & (seconds != MISSING))
        keys = account[rows].astype(np.int64) * SPAN + _clipped(seconds[rows])
        order = np.argsort(keys, kind="stable")
        return cls(rows[order], keys[order])

    def __len__(self) -> int:
        return len(self.keys)

    def _owned(self, at: np.ndarray, account: np.ndarray) -> np.ndarray:
        inside = (at >= 0) & (at < len(self.keys))
        return inside & (self.keys[np.clip(at, 0, max(len(self.keys) - 1, 0))] // SPAN == account)

    def positions_at(self, account: np.ndarray, seconds: np.ndarray | int) -> np.ndarray:
        """Per query: the key position of the account's last row at or before `seconds` (-1: none)."""
        if not len(self.keys):
            return np.full(len(account), -1, dtype=np.int64)
        query = account.astype(np.int64) * SPAN + _clipped(np.asarray(seconds, dtype=np.int64))
        at = np.searchsorted(self.keys, query, side="right") - 1
        return np.where(self._owned(at, account), at, -1)

    def last_at(self, account: np.ndarray, seconds: np.ndarray | int) -> np.ndarray:
        """Per query: the account's row last at or before `seconds` (ties: the later row), or -1."""
        at = self.positions_at(account, seconds)
        return np.where(at >= 0, self.rows[np.maximum(at, 0)] if len(self.rows) else -1, -1)

    def first(self, account: np.ndarray) -> np.ndarray:
        """Per query: the account's earliest row, or -1."""
        if not len(self.keys):
            return np.full(len(account), -1, dtype=np.int64)
        at = np.searchsorted(self.keys, account.astype(np.int64) * SPAN, side="left")
        return np.where(self._owned(at, account), self.rows[np.minimum(at, len(self.rows) - 1)], -1)

    def count_within(
        self, account: np.ndarray, after: np.ndarray | int, upto: np.ndarray | int
    ) -> np.ndarray:
        """Per query: the account's rows with after < time <= upto."""
        if not len(self.keys):
            return np.zeros(len(account), dtype=np.int64)
        base = account.astype(np.int64) * SPAN
        high = np.searchsorted(self.keys, base + _clipped(np.asarray(upto, dtype=np.int64)), side="right")
        low = np.searchsorted(self.keys, base + _clipped(np.asarray(after, dtype=np.int64)), side="right")
        return np.maximum(high - low, 0)

    def running_best(self, rank: np.ndarray) -> np.ndarray:
        """Per key position: the row with the highest `rank` among the account's rows up to it (ties:
        the later row), so "the most advanced round by t" is `running_best` at `positions_at(t)`."""
        if not len(self.keys):
            return np.array([], dtype=np.int64)
        n = len(self.keys)
        account = self.keys // SPAN
        # Within an account the combined value only grows with a better (rank, position); accounts
        # are offset so one running maximum never carries a value into the next account.
        ranked = (rank[self.rows].astype(np.int64) + 1) * n + np.arange(n)
        levels = int(ranked.max()) + 1
        offset = (account - account.min()) * levels
        best = np.maximum.accumulate(ranked + offset) - offset
        return self.rows[best % n]
