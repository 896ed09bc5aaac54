"""Detection delay of the ICP drift check on planted drift, and false alarms on stable demos.

For each size, a demo with a planted drift (one must-have industry stops winning, another starts
on the drift date) is staged once; the drift check then runs as it would on the first of each
later month, and the first month that raises the flag is reported with how many deals created
after the drift date had closed by then. Stable demos (no drift, 24 months of deals) are checked
on the demo's as-of date and on the first of each of the six months before it.

Usage: python benchmarks/drift_detection.py [--sizes 2000 5000 15000] [--stable-seeds 1 2 3 4 5]
       [--work DIR]   (DIR keeps the staged warehouses between runs)
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd

from icp_pipeline.config import IcpConfig
from icp_pipeline.demo.generate import DEMO_AS_OF, DemoSpec
from icp_pipeline.drift.metrics import drift_metrics
from icp_pipeline.profile.learn import Evidence, read_evidence
from icp_pipeline.profile.outcomes import opportunity_outcomes
from icp_pipeline_tests.staged_demo import staged_demo

DRIFT_DATE = dt.date(2026, 3, 1)


def staged_evidence(work: Path, spec: DemoSpec) -> Evidence:
    root = work / f"a{spec.accounts}_s{spec.seed}_{'drift' if spec.drift_date else 'stable'}"
    warehouse = root / "warehouse.duckdb"
    if not warehouse.exists():
        root.mkdir(parents=True, exist_ok=True)
        staged_demo(root, spec)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return read_evidence(con)


def month_starts(first: dt.date, count: int) -> list[dt.date]:
    return [(pd.Timestamp(first) + pd.DateOffset(months=k)).date() for k in range(count)]


def detection(evidence: Evidence, config: IcpConfig) -> dict[str, object]:
    """First monthly as-of date after the drift date that raises the flag, and what it named."""
    for as_of in month_starts(DRIFT_DATE, 9)[1:]:
        report = drift_metrics(evidence, config, as_of)
        if report.flagged:
            deals = opportunity_outcomes(evidence.opportunities, config.stages, as_of)
            after = deals[deals["created_at"] >= pd.Timestamp(DRIFT_DATE, tz="UTC")]
            months = (as_of.year - DRIFT_DATE.year) * 12 + as_of.month - DRIFT_DATE.month
            return {
                "first_flag": as_of,
                "months_after_drift": months,
                "post_drift_closed": int(after["closed"].sum()),
                "post_drift_created": len(after),
                "reason": report.reason,
                "findings": report.findings[:3],
            }
    return {"first_flag": None, "months_after_drift": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 15_000])
    parser.add_argument("--drift-seeds", type=int, nargs="+", default=[3])
    parser.add_argument("--stable-seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--stable-accounts", type=int, default=5000)
    parser.add_argument("--work", type=Path, help="keep staged warehouses here (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="icp_drift_bench_"))
    config = IcpConfig()
    print(f"drift date {DRIFT_DATE}; checks on the first of each month after it")
    for accounts in args.sizes:
        for seed in args.drift_seeds:
            started = time.perf_counter()
            evidence = staged_evidence(work, DemoSpec(accounts=accounts, seed=seed, drift_date=DRIFT_DATE))
            result = detection(evidence, config)
            judged = drift_metrics(evidence, config, DEMO_AS_OF)
            print(
                f"{accounts:>7,} accounts seed {seed}: first flag {result['first_flag']} "
                f"({result['months_after_drift']} months after), post-drift deals closed by then "
                f"{result.get('post_drift_closed')} of {result.get('post_drift_created')}; "
                f"judgeable at {DEMO_AS_OF}: {judged.judgeable} [{time.perf_counter() - started:.0f}s]"
            )
            for finding in result.get("findings", []):
                print(f"    {finding}")
    alarms = 0
    nightly_alarms = 0
    checks = 0
    for seed in args.stable_seeds:
        evidence = staged_evidence(work, DemoSpec(accounts=args.stable_accounts, seed=seed))
        flags = []
        for as_of in month_starts(DEMO_AS_OF - dt.timedelta(days=182), 7):
            report = drift_metrics(evidence, config, as_of)
            flags.append(report.flagged)
            checks += 1
        alarms += int(flags[-1])
        nightly_alarms += sum(flags)
        print(
            f"stable {args.stable_accounts:,} accounts seed {seed}: flag at {DEMO_AS_OF}: {flags[-1]}; monthly flags {flags}"
        )
    print(
        f"false alarms: {alarms} of {len(args.stable_seeds)} stable seeds at {DEMO_AS_OF}; "
        f"{nightly_alarms} of {checks} monthly checks"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
