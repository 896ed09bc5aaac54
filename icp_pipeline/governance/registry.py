"""The model registry: every learned profile version, which one scores (champion), which one is
shadow-scored (challenger), and why each status changed.

Learning every night used to put each new profile live at once, so scores moved with re-learning
as well as with the data. Now a learned version only enters the registry; the champion's stored
points, hard-no items and tier cut-offs score today's traits until ops (or the `auto` policy)
promote another version. The version id is the profile's content hash (`profile_version`): an
override in `icp.yaml` changes the points, hence the id, and enters as a new challenger.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from icp_pipeline.errors import IcpInputError
from icp_pipeline.profile.derive import HARD_NO, MUST_HAVE, NICE_TO_HAVE, IcpProfile
from icp_pipeline.schemas import OUTPUT_SCHEMAS
from icp_pipeline.scoring.model import PointsModel
from icp_pipeline.warehouse import conform_table, table_exists, transaction

CHAMPION, CHALLENGER, RETIRED = "champion", "challenger", "retired"
_HARD_NO_FIELDS = ["win_rate_with", "base_win_rate", "closed_with"]


@dataclass(frozen=True)
class ModelChange:
    """One status change: what the commands and the nightly run report in one line."""

    version: str
    from_status: str | None
    to_status: str
    reason: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def input_fingerprint(outcomes: pd.DataFrame) -> str:
    """A hash of the closed deals learned from (id, outcome, close date): equal data, equal print."""
    closed = outcomes.loc[outcomes["closed"], ["opportunity_id", "won", "closed_at"]]
    closed = closed.sort_values("opportunity_id").astype("str")
    hashed = pd.util.hash_pandas_object(closed, index=False).to_numpy()
    mixed = np.bitwise_xor.reduce(
        hashed * np.uint64(0x9E3779B97F4A7C15) + np.arange(len(hashed), dtype=np.uint64)
    )
    return f"{len(closed)}:{int(mixed) if len(hashed) else 0:016x}"


def model_row(profile: IcpProfile, point_overrides: dict[str, int]) -> dict[str, Any]:
    """The registry row of a learned profile: all that is needed to score with it again, later."""
    points = profile.model.points
    points = points[points["points"] != 0][["trait", "value", "points"]]
    evidence = profile.evidence
    criteria = evidence[evidence["verdict"].isin([MUST_HAVE, NICE_TO_HAVE, HARD_NO])]
    criteria = criteria[["trait", "value", "verdict", "points", *_HARD_NO_FIELDS]]
    closed = profile.outcomes[profile.outcomes["closed"]]
    window = closed["closed_at"].dropna()
    return {
        "model_version": profile.version,
        "trained_as_of": profile.as_of,
        "deal_window_start": window.min().date() if len(window) else None,
        "deal_window_end": window.max().date() if len(window) else None,
        "closed_deals": int(profile.closed_deals),
        "won_deals": int(closed["won"].sum()),
        "input_fingerprint": input_fingerprint(profile.outcomes),
        "scored_by": profile.model.scored_by,
        "base_points": int(profile.model.base),
        "points": json.dumps(points.to_dict("records"), default=_plain),
        "criteria": json.dumps(criteria.to_dict("records"), default=_plain),
        "tier_cutoffs": json.dumps({k: int(v) for k, v in profile.tier_cutoffs.items()}),
        "point_overrides": json.dumps(point_overrides, sort_keys=True),
        "summary": profile.summary,
        "validation": None,
        "last_learned_as_of": profile.as_of,
        "created_at": _now(),
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def pinned_profile(row: dict[str, Any] | pd.Series, as_of: dt.date) -> IcpProfile:
    """A stored version as a profile `score_accounts` can apply to today's traits: its points, base,
    hard-no items and cut-offs, nothing re-learned."""
    points = pd.DataFrame(json.loads(row["points"]), columns=["trait", "value", "points"])
    criteria = pd.DataFrame(
        json.loads(row["criteria"]), columns=["trait", "value", "verdict", "points", *_HARD_NO_FIELDS]
    )
    model = PointsModel(
        base=int(row["base_points"]),
        points=points.assign(points=points["points"].astype(np.int64), coefficient=0.0),
        scored_by=row["scored_by"],
    )
    return IcpProfile(
        as_of=as_of,
        evidence=criteria,
        model=model,
        tier_cutoffs={k: int(v) for k, v in json.loads(row["tier_cutoffs"]).items()},
        version=str(row["model_version"]),
        summary=str(row["summary"] or ""),
        metrics=pd.DataFrame(),
        audit=pd.DataFrame(),
        outcomes=pd.DataFrame(),
        closed_deals=int(row["closed_deals"]),
    )


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The registry's two tables, created in (or migrated to) their declared types."""
    con.execute('create schema if not exists "icp"')
    for table in ("models", "model_events"):
        if table_exists(con, "icp", table):
            conform_table(con, "icp", table)
        else:
            columns = ", ".join(f'"{name}" {kind}' for name, kind in OUTPUT_SCHEMAS[table].items())
            con.execute(f'create table "icp"."{table}" ({columns})')


def read_models(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    if not table_exists(con, "icp", "models"):
        return pd.DataFrame(columns=["model_version", "status"])
    return con.execute("select * from icp.models order by created_at, model_version").df()


def read_events(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    if not table_exists(con, "icp", "model_events"):
        return pd.DataFrame(
            columns=["model_version", "to_status", "previous_champion", "changed_at", "actor"]
        )
    return con.execute("select * from icp.model_events order by seq").df()


def _with_status(models: pd.DataFrame, status: str) -> pd.Series | None:
    held = models[models["status"] == status]
    return held.iloc[0] if len(held) else None


def champion(con: duckdb.DuckDBPyConnection) -> pd.Series | None:
    return _with_status(read_models(con), CHAMPION)


def challenger(con: duckdb.DuckDBPyConnection) -> pd.Series | None:
    return _with_status(read_models(con), CHALLENGER)


def _set_status(
    con: duckdb.DuckDBPyConnection,
    version: str,
    to_status: str,
    reason: str,
    actor: str,
    as_of: dt.date | None,
    previous_champion: str | None = None,
) -> ModelChange:
    row = con.execute("select status from icp.models where model_version = ?", [version]).fetchall()
    from_status = row[0][0] if row else None
    now = _now()
    con.execute(
        "update icp.models set status = ?, status_changed_at = ?, status_reason = ? where model_version = ?",
        [to_status, now, reason, version],
    )
    seq = con.execute("select coalesce(max(seq), 0) + 1 from icp.model_events").fetchall()[0][0]
    con.execute(
        "insert into icp.model_events (seq, changed_at, as_of, model_version, from_status, to_status, reason, actor, "
        "previous_champion) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [seq, now, as_of, version, from_status, to_status, reason, actor, previous_champion],
    )
    return ModelChange(version, from_status, to_status, reason)


def _insert(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    frame = pd.DataFrame([row])
    con.register("_model_row", frame)
    try:
        con.execute(f"insert into icp.models by name select {', '.join(frame.columns)} from _model_row")
    finally:
        con.unregister("_model_row")


def register_learned(
    con: duckdb.DuckDBPyConnection, row: dict[str, Any], as_of: dt.date
) -> list[ModelChange]:
    """Enter tonight's learned version: the first becomes champion; a new one the challenger (the
    previous challenger retires); one equal to the champion changes nothing. A version ops retired
    (rolled back, or replaced) is not shadowed again on its own."""
    ensure_tables(con)
    version = row["model_version"]
    changes: list[ModelChange] = []
    with transaction(con):
        models = read_models(con)
        known = models[models["model_version"] == version]
        current = _with_status(models, CHAMPION)
        shadow = _with_status(models, CHALLENGER)
        if len(known):
            con.execute(
                "update icp.models set last_learned_as_of = greatest(last_learned_as_of, ?) "
                "where model_version = ?",
                [as_of, version],
            )
        else:
            _insert(con, row | {"status": None})
        if current is None:
            changes.append(
                _set_status(con, version, CHAMPION, "first model of a new install", "nightly", as_of)
            )
            return changes
        status = known["status"].iloc[0] if len(known) else None
        if status in (CHAMPION, CHALLENGER, RETIRED):
            if status == CHAMPION and shadow is not None:
                changes.append(
                    _set_status(
                        con,
                        shadow["model_version"],
                        RETIRED,
                        f"superseded: the data of {as_of} re-learns the champion",
                        "nightly",
                        as_of,
                    )
                )
            return changes
        if shadow is not None:
            changes.append(
                _set_status(
                    con, shadow["model_version"], RETIRED, f"superseded by {version}", "nightly", as_of
                )
            )
        changes.append(
            _set_status(con, version, CHALLENGER, f"learned on the data of {as_of}", "nightly", as_of)
        )
    return changes


def record_validation(con: duckdb.DuckDBPyConnection, as_of: dt.date, figures: dict[str, Any]) -> None:
    """The holdout figures of tonight's validation, on the version learned tonight (kept once)."""
    if not table_exists(con, "icp", "models"):
        return
    con.execute(
        "update icp.models set validation = ? where last_learned_as_of = ? and validation is null",
        [json.dumps(figures, default=_plain), as_of],
    )


def find(con: duckdb.DuckDBPyConnection, version: str) -> pd.Series:
    """A version by its id (or a unique prefix); unknown ones fail with one line."""
    models = read_models(con)
    hit = models[models["model_version"].astype("str").str.startswith(version)] if version else models[:0]
    if len(hit) != 1:
        known = ", ".join(models["model_version"].astype("str").tolist()[-5:]) or "none"
        what = "ambiguous" if len(hit) > 1 else "unknown"
        raise IcpInputError(f"{what} model version {version!r} (known: {known}); see `icp model list`")
    return hit.iloc[0]


def promote(
    con: duckdb.DuckDBPyConnection, version: str, reason: str, actor: str, as_of: dt.date | None = None
) -> list[ModelChange]:
    """Make a version the champion; the champion it replaces retires (and is where rollback returns)."""
    target = find(con, version)
    version = str(target["model_version"])
    if target["status"] == RETIRED:
        raise IcpInputError(
            f"model {version} is retired ({target['status_reason']}); retired versions are not promoted "
            "(use `icp model rollback` to return to the previous champion)"
        )
    if target["status"] == CHAMPION:
        raise IcpInputError(f"model {version} is already the champion")
    current = champion(con)
    changes: list[ModelChange] = []
    with transaction(con):
        if current is not None:
            changes.append(
                _set_status(con, current["model_version"], RETIRED, f"replaced by {version}", actor, as_of)
            )
        changes.append(
            _set_status(
                con,
                version,
                CHAMPION,
                reason,
                actor,
                as_of,
                None if current is None else str(current["model_version"]),
            )
        )
    return changes


def previous_champion(con: duckdb.DuckDBPyConnection) -> str | None:
    """The champion the current one replaced (as recorded when it became champion), if any."""
    current = champion(con)
    if current is None:
        return None
    events = read_events(con)
    became = events[(events["model_version"] == current["model_version"]) & (events["to_status"] == CHAMPION)]
    if became.empty:
        return None
    previous = became["previous_champion"].iloc[-1]
    return None if pd.isna(previous) else str(previous)


def rollback(con: duckdb.DuckDBPyConnection, actor: str = "cli") -> list[ModelChange]:
    """Back to the previous champion (even though it is retired); repeated, walks further back."""
    ensure_tables(con)
    current = champion(con)
    previous = previous_champion(con)
    if current is None or previous is None:
        raise IcpInputError("no previous champion to roll back to (the current champion was the first)")
    events = read_events(con)
    restored = events[(events["model_version"] == previous) & (events["to_status"] == CHAMPION)]
    before = restored["previous_champion"].iloc[-1] if len(restored) else None
    version = str(current["model_version"])
    with transaction(con):
        changes = [_set_status(con, version, RETIRED, "rolled back", actor, None)]
        changes.append(
            _set_status(
                con,
                previous,
                CHAMPION,
                f"rollback from {version}",
                actor,
                None,
                None if before is None or pd.isna(before) else str(before),
            )
        )
    return changes


def last_promotion_as_of(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """The as-of date of the last automatic promotion, for the at-most-once-per-N-days rule."""
    events = read_events(con)
    promoted = events[(events["to_status"] == CHAMPION) & (events["actor"] == "auto")]
    return None if promoted.empty else pd.Timestamp(promoted["as_of"].iloc[-1]).date()
