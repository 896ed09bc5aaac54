"""The `icp` command: demo data, the nightly run in-process (visible in the Dagster UI), the UI itself.

Failures end with one line naming what to fix and a non-zero exit; the stack trace stays in the
Dagster run log, not on the operator's screen.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from icp_pipeline import config as settings
from icp_pipeline.errors import IcpError

DAGSTER_HOME_DIR = ".dagster"


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value}") from exc


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _say(message: str) -> None:
    """One line to stderr, scrubbed of secrets: the last net before an operator's terminal or a CI log."""
    from icp_pipeline.secrets import scrub

    print(scrub(message), file=sys.stderr, flush=True)


def prepare_dagster_home() -> Path:
    """Use DAGSTER_HOME when set; else `.dagster/` here, seeded with the project's dagster.yaml."""
    if os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"])
        if not home.is_absolute() or not home.is_dir():
            raise IcpError(f"DAGSTER_HOME must be an existing absolute directory: {home}")
        return home
    home = (Path.cwd() / DAGSTER_HOME_DIR).resolve()
    home.mkdir(parents=True, exist_ok=True)
    template = settings.PROJECT_ROOT / "dagster.yaml"
    if template.exists():
        shutil.copyfile(template, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _failure_reason(result: Any) -> str:
    """The one line to print: the innermost IcpError message, else the failed step's error."""
    from icp_pipeline.ops.notices import failure_reason

    failure = failure_reason(event for event in result.all_events if event.is_step_failure)
    if failure.expected or failure.step is None:
        return failure.reason
    return f"step {failure.step} failed: {failure.reason}"


def warehouse_counts(warehouse: Path) -> dict[str, int]:
    """Row counts of every table in the warehouse's raw, staging and icp schemas."""
    import duckdb

    if not warehouse.exists():
        return {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('raw', 'staging', 'icp') and table_name not like '\\_dlt%' escape '\\' "
            "order by table_schema, table_name"
        ).fetchall()
        return {
            f"{schema}.{name}": int(con.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[0])
            for schema, name in tables
        }


def _not_scored_line(warehouse: Path, as_of: dt.date, config: settings.IcpConfig) -> str:
    """The run summary's line on accounts left out of the scores (see `ingest.absence`)."""
    from icp_pipeline.ingest.absence import ABSENT, DELETED, not_scored_counts

    counts = not_scored_counts(warehouse, as_of)
    after = config.deletions.absent_after_loads
    rule = f"absent from {after}+ nightly loads of the drop" if after else "absence never counts"
    return (
        f"not scored: {counts.get(DELETED, 0):,} account(s) deleted in the CRM, "
        f"{counts.get(ABSENT, 0):,} absent ({rule})"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from icp_pipeline.demo.generate import DEMO_AS_OF, DemoSpec, generate_demo

    out = Path(args.out) if args.out else settings.default_source_dir()
    spec = DemoSpec(
        accounts=args.accounts,
        seed=args.seed,
        as_of=args.as_of or DEMO_AS_OF,
        drift_date=args.drift_date,
        planted_icp=not args.no_icp,
        messy=args.messy,
    )
    started = time.perf_counter()
    truth = generate_demo(out, spec, progress=_say)
    counts = ", ".join(f"{table} {rows:,}" for table, rows in truth["counts"].items())
    _say(f"demo data written to {out} in {time.perf_counter() - started:.1f}s: {counts}")
    _say(
        f"planted truth: {out / 'truth.json'}; score it with: icp run --source-dir {out} --as-of {spec.as_of}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from icp_pipeline.runner import run_nightly
    from icp_pipeline.warehouse import checked_warehouse
    from icp_pipeline.warehouse_lock import warehouse_lock

    source_dir = Path(args.source_dir) if args.source_dir else settings.default_source_dir()
    warehouse = checked_warehouse(Path(args.warehouse) if args.warehouse else settings.default_warehouse())
    config = settings.load_config(args.config)
    as_of = args.as_of or dt.date.today()
    run_id = str(uuid.uuid4())
    # The writer lock comes before Dagster and any DuckDB connection: a second run says who holds it.
    with warehouse_lock(warehouse, run_id, config.warehouse_lock_wait_s, notify=_say):
        import dagster as dg

        prepare_dagster_home()
        instance = dg.DagsterInstance.get()
        _say(f"icp run: as of {as_of}, source {source_dir}, warehouse {warehouse}")
        started = time.perf_counter()
        config_file = Path(args.config) if args.config else None
        result = run_nightly(source_dir, warehouse, as_of, instance, config_file, run_id=run_id)
        elapsed = time.perf_counter() - started
        if not result.success:
            _say(f"icp run failed: {_failure_reason(result)}")
            return 1
        counts = warehouse_counts(warehouse)
        not_scored = _not_scored_line(warehouse, as_of, config)
    print(f"icp run succeeded in {elapsed:.1f}s (run {result.run_id}, as of {as_of})")
    print(f"warehouse: {warehouse}")
    for table, rows in counts.items():
        print(f"  {table:<32} {rows:>12,} rows")
    print(not_scored)
    outputs = {
        "ICP document": warehouse.parent / "reports" / "icp_profile.html",
        "morning report": warehouse.parent / "reports" / "icp_report.html",
        "alert outbox": warehouse.parent / "outbox" / "alerts.jsonl",
    }
    for label, path in outputs.items():
        if path.exists():
            print(f"{label}: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the self-contained HTML morning report for one as-of date (default: the latest scored)."""
    from icp_pipeline.report.build import build_report
    from icp_pipeline.warehouse import checked_warehouse

    warehouse = checked_warehouse(Path(args.warehouse) if args.warehouse else settings.default_warehouse())
    config = settings.load_config()
    started = time.perf_counter()
    result = build_report(warehouse, Path(args.out) if args.out else None, args.as_of, config)
    print(
        f"report as of {result.as_of} written to {result.path} "
        f"({result.size_bytes / 1024:,.0f} KB, {len(result.charts)} charts, {time.perf_counter() - started:.1f}s)"
    )
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start `dagster dev` on 127.0.0.1 with the project loaded and the same instance as `icp run`."""
    prepare_dagster_home()
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(settings.PROJECT_ROOT / "workspace.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    _say(f"Dagster UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    return subprocess.call(command, cwd=settings.PROJECT_ROOT)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icp", description="Self-hosted, explainable ICP engine.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="write demo data with a planted truth in the file-drop layout")
    demo.add_argument("--out", help="output folder (default: ICP_SOURCE_DIR or .icp/demo)")
    demo.add_argument("--accounts", type=_positive, default=2000, help="number of CRM accounts")
    demo.add_argument("--seed", type=int, default=7, help="random seed; same seed, same files")
    demo.add_argument("--as-of", type=_date, help="the date the data ends (default: 2026-11-01)")
    demo.add_argument("--drift-date", type=_date, help="after this date the winning segment changes")
    demo.add_argument("--no-icp", action="store_true", help="outcomes independent of every trait")
    demo.add_argument(
        "--messy",
        action="store_true",
        help="add a known number of bad rows (listed in truth.json) for the data-health checks to catch",
    )
    demo.set_defaults(handler=cmd_demo)

    run = commands.add_parser("run", help="run the nightly job in-process")
    run.add_argument("--source-dir", help="file-drop folder (default: ICP_SOURCE_DIR or .icp/demo)")
    run.add_argument("--warehouse", help="DuckDB file (default: ICP_WAREHOUSE or .icp/warehouse.duckdb)")
    run.add_argument("--config", help="icp.yaml (default: ICP_CONFIG or ./icp.yaml when present)")
    run.add_argument("--as-of", type=_date, help="score as of this date (default: today)")
    run.set_defaults(handler=cmd_run)

    report = commands.add_parser("report", help="write the one-page HTML morning report (offline)")
    report.add_argument("--warehouse", help="DuckDB file (default: ICP_WAREHOUSE or .icp/warehouse.duckdb)")
    report.add_argument("--out", help="HTML file (default: <warehouse dir>/reports/icp_report.html)")
    report.add_argument("--as-of", type=_date, help="report this scored date (default: the latest)")
    report.set_defaults(handler=cmd_report)

    ui = commands.add_parser("ui", help="open the Dagster UI on 127.0.0.1 with the project loaded")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from icp_pipeline.secrets import register_environment

    args = build_parser().parse_args(argv)
    register_environment(os.environ)
    try:
        return int(args.handler(args))
    except IcpError as exc:
        _say(f"icp {args.command}: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
