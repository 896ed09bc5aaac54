"""What `icp model list|show|diff|promote|rollback` do, as plain functions over a warehouse.

Each returns the text to print; its last line says what happened. Bad input raises
`IcpInputError` with one line (an unknown version, a retired one promoted, nothing to roll back to).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.errors import IcpInputError
from icp_pipeline.governance import registry
from icp_pipeline.governance.compare import TIER_ORDER
from icp_pipeline.warehouse import connect, table_exists

LIST_COLUMNS = ["model_version", "status", "trained_as_of", "closed_deals", "scored_by", "status_reason"]


def _no_registry(warehouse: Path) -> IcpInputError:
    return IcpInputError(f"no model registry in {warehouse}; run `icp run` first")


def list_models(warehouse: Path) -> list[str]:
    with connect(warehouse, read_only=True) as con:
        models = registry.read_models(con)
    if models.empty:
        raise _no_registry(warehouse)
    table = models[LIST_COLUMNS].to_string(index=False)
    counts = models["status"].value_counts()
    return [
        table,
        f"{len(models)} model version(s): champion {_of(models, registry.CHAMPION)}, "
        f"challenger {_of(models, registry.CHALLENGER)}, {int(counts.get(registry.RETIRED, 0))} retired",
    ]


def run_line(warehouse: Path, as_of: dt.date) -> str:
    """The `icp run` summary's line on the models: which scored, which is shadowed, tonight's decision."""
    with connect(warehouse, read_only=True) as con:
        models = registry.read_models(con)
        decision = (
            con.execute(
                "select note from icp.model_comparison where as_of = ? and metric = 'decision'", [as_of]
            ).fetchall()
            if table_exists(con, "icp", "model_comparison")
            else []
        )
    if models.empty:
        return "models: no model registry yet"
    scored = _of(models, registry.CHAMPION)
    line = f"models: champion {scored}, challenger {_of(models, registry.CHALLENGER)}"
    return line + (f"; {decision[0][0]}" if decision else "")


def _of(models: pd.DataFrame, status: str) -> str:
    held = models.loc[models["status"] == status, "model_version"]
    return str(held.iloc[0]) if len(held) else "none"


def show_model(warehouse: Path, version: str) -> list[str]:
    with connect(warehouse, read_only=True) as con:
        if not table_exists(con, "icp", "models"):
            raise _no_registry(warehouse)
        row = registry.find(con, version)
        events = registry.read_events(con)
    version = str(row["model_version"])
    lines = [f"{name}: {row[name]}" for name in row.index if name not in ("points", "criteria", "validation")]
    points = pd.DataFrame(json.loads(row["points"]))
    criteria = pd.DataFrame(json.loads(row["criteria"]))
    lines.append(f"points ({len(points)} non-zero):")
    lines.append(points.to_string(index=False) if len(points) else "  (none)")
    lines.append("criteria:")
    lines.append(
        criteria[["trait", "value", "verdict", "points"]].to_string(index=False)
        if len(criteria)
        else "  (none)"
    )
    validation = json.loads(row["validation"]) if isinstance(row["validation"], str) else {}
    figures = {k: v for k, v in validation.items() if k != "rows"}
    lines.append(f"validation: {json.dumps(figures) if figures else '(none recorded)'}")
    history = events[events["model_version"] == version]
    lines.append("history:")
    lines.append(
        history[["changed_at", "as_of", "from_status", "to_status", "actor", "reason"]].to_string(index=False)
        if len(history)
        else "  (none)"
    )
    lines.append(f"model {version}: {row['status']} ({row['status_reason']})")
    return lines


def _changes(first: pd.DataFrame, second: pd.DataFrame, column: str) -> pd.DataFrame:
    """(trait, value) rows whose `column` differs between two versions (missing = 0 / none)."""
    merged = first.merge(second, on=["trait", "value"], how="outer", suffixes=("_1", "_2"))
    one, two = merged[f"{column}_1"], merged[f"{column}_2"]
    differs = one.fillna(0 if column == "points" else "-").astype(str) != two.fillna(
        0 if column == "points" else "-"
    ).astype(str)
    return merged.loc[differs, ["trait", "value", f"{column}_1", f"{column}_2"]]


def diff_models(warehouse: Path, first: str, second: str, config: IcpConfig) -> list[str]:
    """Points, verdicts and cut-offs that differ, and the accounts that would move (scored on the
    latest scored date's traits)."""
    from icp_pipeline.profile.learn import read_evidence
    from icp_pipeline.scoring.model import build_design
    from icp_pipeline.scoring.score import shadow_scores

    with connect(warehouse, read_only=True) as con:
        if not table_exists(con, "icp", "models"):
            raise _no_registry(warehouse)
        one, two = registry.find(con, first), registry.find(con, second)
        latest = con.execute("select max(as_of) from icp.account_scores").fetchall()[0][0]
        evidence = read_evidence(con, config.icp.custom_columns)
    v1, v2 = str(one["model_version"]), str(two["model_version"])
    lines: list[str] = []
    points = _changes(
        pd.DataFrame(json.loads(one["points"])), pd.DataFrame(json.loads(two["points"])), "points"
    )
    crit_columns = ["trait", "value", "verdict"]
    verdicts = _changes(
        pd.DataFrame(json.loads(one["criteria"]), columns=crit_columns)[crit_columns],
        pd.DataFrame(json.loads(two["criteria"]), columns=crit_columns)[crit_columns],
        "verdict",
    )
    cut1, cut2 = json.loads(one["tier_cutoffs"]), json.loads(two["tier_cutoffs"])
    lines.append(f"points changed ({len(points)}):")
    lines.append(points.to_string(index=False) if len(points) else "  (none)")
    lines.append(f"verdicts changed ({len(verdicts)}):")
    lines.append(verdicts.to_string(index=False) if len(verdicts) else "  (none)")
    lines.append(f"base points: {one['base_points']} -> {two['base_points']}")
    cuts = [f"{t} {cut1.get(t)} -> {cut2.get(t)}" for t in "ABC" if cut1.get(t) != cut2.get(t)]
    lines.append(f"tier cut-offs changed: {', '.join(cuts) if cuts else 'none'}")
    as_of = latest if latest is not None else dt.date.today()
    design = build_design(evidence.traits(config, as_of))
    a = shadow_scores(registry.pinned_profile(one, as_of), design, as_of)
    b = shadow_scores(registry.pinned_profile(two, as_of), design, as_of)
    moved = a["tier"].to_numpy() != b["tier"].to_numpy()
    limit = TIER_ORDER[config.alerts.min_tier]
    alerted_a = (a["tier"].map(TIER_ORDER) <= limit) & ~a["disqualified"]
    alerted_b = (b["tier"].map(TIER_ORDER) <= limit) & ~b["disqualified"]
    crossing = (alerted_a != alerted_b).to_numpy()
    movers = pd.DataFrame(
        {
            "account_id": a["account_id"],
            "score_1": a["fit_score"],
            "score_2": b["fit_score"],
            "tier_1": a["tier"],
            "tier_2": b["tier"],
        }
    )[moved]
    lines.append(f"accounts that would change tier (traits as of {as_of}), first 20:")
    lines.append(movers.head(20).to_string(index=False) if len(movers) else "  (none)")
    lines.append(
        f"{v1} -> {v2}: {len(points)} point(s), {len(verdicts)} verdict(s), {len(cuts)} cut-off(s) differ; "
        f"{int(moved.sum()):,} of {len(a):,} accounts would change tier, {int(crossing.sum()):,} cross the "
        f"alert line (tier {config.alerts.min_tier})"
    )
    return lines


def promote_model(warehouse: Path, version: str) -> list[str]:
    with connect(warehouse) as con:
        if not table_exists(con, "icp", "models"):
            raise _no_registry(warehouse)
        changes = registry.promote(con, version, "promoted by ops (icp model promote)", "cli")
    new = changes[-1]
    old = changes[0].version if len(changes) > 1 else "none"
    return [f"promoted {new.version} to champion (was {old}); it scores from the next run"]


def rollback_model(warehouse: Path) -> list[str]:
    with connect(warehouse) as con:
        if not table_exists(con, "icp", "models"):
            raise _no_registry(warehouse)
        changes = registry.rollback(con)
    return [
        f"rolled back: {changes[-1].version} is the champion again (retired {changes[0].version}); it scores from the next run"
    ]
