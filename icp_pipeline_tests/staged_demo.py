"""Build staged demo warehouses once per test module: the planted truth is what tests check against."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline.profile.learn import Evidence, read_evidence
from icp_pipeline.runner import run_nightly


def materialize_nightly(
    source_dir: Path, warehouse: Path, as_of: str, selection: str | None = None
) -> dg.ExecuteInProcessResult:
    """Run the nightly job's assets in-process against a drop, like `icp run` does; failures raise."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_nightly(
            source_dir,
            warehouse,
            dt.date.fromisoformat(as_of),
            instance,
            selection=selection,
            log_level="WARNING",
        )
    assert result.success, [e.message for e in result.all_events if e.is_step_failure]
    return result


def staged_demo(root: Path, spec: DemoSpec) -> tuple[Path, Path, dict[str, Any]]:
    """(drop folder, warehouse, truth) after ingesting and staging a generated demo drop."""
    drop, warehouse = root / "drop", root / "warehouse.duckdb"
    truth = generate_demo(drop, spec)
    materialize_nightly(drop, warehouse, spec.as_of.isoformat(), 'key:"raw/*" or key:"staging/*"')
    return drop, warehouse, truth


def load_evidence(warehouse: Path) -> Evidence:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return read_evidence(con)


def truth_of(drop: Path) -> dict[str, Any]:
    return json.loads((drop / "truth.json").read_text())
