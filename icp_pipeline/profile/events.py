"""Event traits: what happened to an account in a window before a moment.

For learning the moment is each deal's creation, for scoring the as-of date, so "a CMO left in
the last 12 months" means the same thing in the evidence and in a score. Each trait is one
categorical whose values name the event and the window ("CMO left in the last 12 months"), so a
reason reads as what a rep can check. Feed tables that are absent give no trait at all; an
account with no event in the window gets the explicit "no ..." value, which is evidence too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from icp_pipeline.config import EventTraitConfig
from icp_pipeline.frames import positions
from icp_pipeline.profile.timeline import MISSING, Timeline, seconds_of

DAY = 86_400
MONTH = int(30.4375 * DAY)
EVENT_TRAITS: tuple[str, ...] = ("recent_funding", "leadership_change", "hiring_trend", "headcount_trend")
# C-level titles by function, as reps say them; VPs and heads read "VP Sales", "Head of Data".
C_LEVEL: dict[str, str] = {
    "sales": "CRO",
    "marketing": "CMO",
    "data": "CDO",
    "engineering": "CTO",
    "product": "CPO",
    "operations": "COO",
    "finance": "CFO",
    "customer": "CCO",
}


def _categorical(codes: np.ndarray, labels: list[str]) -> pd.Categorical:
    """Codes into `labels` as a categorical of the labels used, sorted (as `astype("category")`)."""
    used = np.unique(codes)
    present = sorted({labels[code] for code in used})
    position = {label: i for i, label in enumerate(present)}
    remap = np.array([position.get(label, -1) for label in labels], dtype=np.int64)
    return pd.Categorical.from_codes(remap[codes], categories=pd.Index(present, dtype="str"))


def _role(level: pd.Series, function: pd.Series) -> pd.Series:
    """'CMO', 'VP Sales', 'Head of Data' from a title's level and function (missing: not an executive)."""
    name = function.astype("str").str.capitalize()
    role = pd.Series(pd.NA, index=level.index, dtype="str")
    role = role.mask(level == "c_level", function.map(C_LEVEL))
    role = role.mask(level == "vp", "VP " + name)
    role = role.mask(level == "head", "Head of " + name)
    return role.where(function.notna())


@dataclass
class EventInputs:
    """The dated feed rows event traits are made of, placed on account positions once."""

    windows: EventTraitConfig
    funding: Timeline | None = None
    funding_seconds: np.ndarray | None = None
    funding_type: tuple[np.ndarray, list[str]] | None = None  # code per round, round types
    leadership: Timeline | None = None
    leadership_seconds: np.ndarray | None = None
    leadership_event: tuple[np.ndarray, list[str]] | None = None  # code per change, "CMO left"
    postings: Timeline | None = None

    @classmethod
    def prepare(
        cls,
        windows: EventTraitConfig,
        account_ids: pd.Series,
        funding_rounds: pd.DataFrame | None,
        leadership_changes: pd.DataFrame | None,
        job_postings: pd.DataFrame | None,
    ) -> EventInputs:
        from icp_pipeline.triggers.detect import title_function, title_level

        inputs = cls(windows)
        if funding_rounds is not None and len(funding_rounds):
            account = positions(funding_rounds["account_id"], account_ids)
            inputs.funding_seconds = seconds_of(funding_rounds["announced_at"])
            inputs.funding = Timeline.of(account, inputs.funding_seconds)
            kind = funding_rounds["round_type"].astype("str").str.strip()
            codes, names = pd.factorize(kind.where(kind.notna() & (kind != ""), "Undisclosed"))
            inputs.funding_type = codes, [str(name) for name in names]
        if leadership_changes is not None and len(leadership_changes):
            changes = leadership_changes
            # Titles and change types repeat: each distinct pair is parsed once, not once per row.
            pair_codes, pairs = pd.factorize(
                changes["title"].astype("str") + "\x1f" + changes["change_type"].astype("str")
            )
            title = pd.Series(pairs.str.split("\x1f").str[0], dtype="str")
            change = pd.Series(pairs.str.split("\x1f").str[1], dtype="str").str.strip().str.lower()
            role = _role(title_level(title), title_function(title))
            change = change.map({"joined": "joined", "promoted": "joined", "left": "left"})
            event_of_pair = (role + " " + change).where(role.notna() & change.notna())
            codes, names = pd.factorize(event_of_pair)  # -1: not an executive who joined or left
            event = np.where(pair_codes >= 0, np.append(codes, -1)[pair_codes], -1)
            account = positions(changes["account_id"], account_ids)
            account = np.where(event >= 0, account, -1)  # non-executives are no event
            inputs.leadership_seconds = seconds_of(changes["effective_at"])
            inputs.leadership = Timeline.of(account, inputs.leadership_seconds)
            inputs.leadership_event = event, [str(name) for name in names]
        if job_postings is not None and len(job_postings):
            account = positions(job_postings["account_id"], account_ids)
            inputs.postings = Timeline.of(account, seconds_of(job_postings["posted_at"]))
        return inputs

    def recent_funding(self, account: np.ndarray, at: np.ndarray | int) -> pd.Categorical | None:
        if self.funding is None or self.funding_seconds is None or self.funding_type is None:
            return None
        months = self.windows.funding_months
        codes, names = self.funding_type
        row = self.funding.last_at(account, at)
        within = (row >= 0) & (self.funding_seconds[np.maximum(row, 0)] > np.asarray(at) - months * MONTH)
        labels = [f"{name} round in the last {months} months" for name in names]
        labels.append(f"no round in the last {months} months")
        return _categorical(np.where(within, codes[np.maximum(row, 0)], len(names)), labels)

    def leadership_change(self, account: np.ndarray, at: np.ndarray | int) -> pd.Categorical | None:
        if self.leadership is None or self.leadership_seconds is None or self.leadership_event is None:
            return None
        months = self.windows.leadership_months
        codes, names = self.leadership_event
        row = self.leadership.last_at(account, at)
        recent = self.leadership_seconds[np.maximum(row, 0)] > np.asarray(at) - months * MONTH
        within = (row >= 0) & recent
        labels = [f"{name} in the last {months} months" for name in names]
        labels.append(f"no executive change in the last {months} months")
        return _categorical(np.where(within, codes[np.maximum(row, 0)], len(names)), labels)

    def hiring_trend(self, account: np.ndarray, at: np.ndarray | int) -> pd.Categorical | None:
        """Postings in the last window against the window before it."""
        if self.postings is None:
            return None
        days = self.windows.hiring_days
        at = np.asarray(at, dtype=np.int64)
        recent = self.postings.count_within(account, at - days * DAY, at)
        before = self.postings.count_within(account, at - 2 * days * DAY, at - days * DAY)
        window = f"(last {days} days vs the {days} before)"
        labels = [
            f"no job postings in the last {2 * days} days",
            f"job postings up 2x or more {window}",
            f"job postings up {window}",
            f"job postings level {window}",
            f"job postings down {window}",
        ]
        codes = np.select(
            [
                (recent == 0) & (before == 0),
                (recent >= 2 * np.maximum(before, 1)) & (recent >= 3),
                recent > before,
                recent == before,
            ],
            [0, 1, 2, 3],
            default=4,
        )
        return _categorical(codes, labels)


def headcount_trend(
    observations: Timeline | None,
    employees: np.ndarray | None,
    account: np.ndarray,
    at: np.ndarray | int,
    months: int,
) -> pd.Categorical | None:
    """Employees in the latest observation against the latest one `months` earlier; unknown when
    either is missing or no observation was made since the earlier one."""
    if observations is None or employees is None:
        return None
    at = np.asarray(at, dtype=np.int64)
    now = observations.last_at(account, at)
    then = observations.last_at(account, at - months * MONTH)
    known = (now >= 0) & (then >= 0) & (now != then)
    current = employees[np.maximum(now, 0)]
    earlier = employees[np.maximum(then, 0)]
    known &= ~np.isnan(current) & ~np.isnan(earlier) & (earlier > 0)
    growth = np.where(known, current / np.where(earlier > 0, earlier, 1.0) - 1.0, 0.0)
    labels = [
        "unknown",
        f"headcount up 20% or more in {months} months",
        f"headcount up 5-20% in {months} months",
        f"headcount level (within 5%) in {months} months",
        f"headcount down 5% or more in {months} months",
    ]
    codes = np.select([~known, growth >= 0.20, growth >= 0.05, growth > -0.05], [0, 1, 2, 3], default=4)
    return _categorical(codes, labels)


__all__ = ["EVENT_TRAITS", "EventInputs", "MISSING", "headcount_trend"]
