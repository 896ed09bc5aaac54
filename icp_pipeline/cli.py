"""The `icp` command: demo data, the nightly run in-process (visible in the Dagster UI), the UI itself.

Failures end with one line naming what to fix and a non-zero exit. What can be checked before Dagster
starts is (paths, the as-of date, the drop's files and headers), so those errors come at once; a run's
step logs and stack traces go to a log file beside the warehouse, which the failure line names.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
import zoneinfo
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from icp_pipeline import config as settings
from icp_pipeline.errors import IcpError, IcpInputError

DAGSTER_HOME_DIR = ".dagster"
LOGS_DIR = "logs"
# `icp ui`: seconds the Dagster processes get to stop after a signal before they are killed.
UI_STOP_GRACE_S = 8.0
# Startup warnings `dagster dev` prints that an `icp ui` user cannot act on (`-W` matches a prefix).
UI_IGNORED_WARNINGS = ("Function `dev_command` is superseded",)  # "Use 'dg dev' instead."


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


def prepare_dagster_home(warehouse: Path) -> Path:
    """DAGSTER_HOME when set; else `<warehouse dir>/.dagster`, seeded with the project's dagster.yaml.

    One instance per warehouse: the UI then shows this warehouse's runs and asset history only."""
    if os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"])
        if not home.is_absolute() or not home.is_dir():
            raise IcpError(f"DAGSTER_HOME must be an existing absolute directory: {home}")
        return home
    home = warehouse.resolve().parent / DAGSTER_HOME_DIR
    home.mkdir(exist_ok=True)
    template = settings.PROJECT_ROOT / "dagster.yaml"
    if template.exists():
        shutil.copyfile(template, home / "dagster.yaml")
    return home


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block only (a second `main()` in one process starts clean)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _warehouse(args: argparse.Namespace) -> Path:
    """The warehouse file; a new one only in a directory that exists (a typo must not start a new
    warehouse in a new directory tree). The default `.icp/` work folder is the one created here."""
    from icp_pipeline.warehouse import checked_warehouse

    given = args.warehouse or os.environ.get("ICP_WAREHOUSE")
    warehouse = checked_warehouse(Path(given) if given else settings.default_warehouse())
    if given and not warehouse.parent.is_dir():
        origin = "--warehouse" if args.warehouse else "ICP_WAREHOUSE"
        raise IcpInputError(
            f"warehouse directory {warehouse.parent} does not exist; create it or fix {origin}"
        )
    return warehouse


def _check_as_of(as_of: dt.date, config: settings.IcpConfig) -> None:
    """The as-of date must be a daily partition: from `first_partition_date` to today."""
    first = config.first_partition_date
    if as_of < first:
        raise IcpInputError(
            f"as-of {as_of} is before the first partition date {first}; set first_partition_date in icp.yaml"
        )
    timezone = config.schedule.timezone
    # Dagster's partitions end today in the schedule's timezone (end_offset=1, see partitions.py).
    last = dt.datetime.now(zoneinfo.ZoneInfo("UTC" if timezone.lower() == "utc" else timezone)).date()
    if as_of > last:
        raise IcpInputError(
            f"as-of {as_of} is after today ({last} in {config.schedule.timezone}); a run cannot score the future"
        )


def _check_drop(source_dir: Path, config: settings.IcpConfig) -> None:
    """The drop's folder, files and headers against the contracts, for the tables no API delivers:
    the check the run's first step makes, made before Dagster starts."""
    from icp_pipeline.contracts.spec import load_contracts
    from icp_pipeline.ingest.sources import api_delivered_tables, drop_inventory

    contracts = load_contracts(settings.contracts_dir(config))
    from_api = api_delivered_tables(config)
    try:
        drop_inventory(source_dir, {table: c for table, c in contracts.items() if table not in from_api})
    except OSError as exc:
        raise IcpInputError(
            f"{exc.filename or source_dir}: cannot be read ({exc.strerror or exc.__class__.__name__})"
        ) from exc


@contextlib.contextmanager
def _terminal() -> Iterator[TextIO]:
    """Where progress goes while the run's own output goes to the log: stderr as it is now."""
    try:
        fd_backed = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        fd_backed = False
    if not fd_backed:
        yield sys.stderr
        return
    with os.fdopen(os.dup(2), "w", buffering=1) as terminal:
        yield terminal


@contextlib.contextmanager
def _output_to(log_file: Path) -> Iterator[None]:
    """Everything written to stdout and stderr in the block (Dagster's console log, library warnings,
    output of native code) goes to `log_file` instead."""
    log_file.parent.mkdir(exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with log_file.open("a", encoding="utf-8", buffering=1) as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    yield
            except Exception:
                log.write(traceback.format_exc())
                raise
            finally:
                log.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
    finally:
        _scrub_file(log_file)


def _scrub_file(log_file: Path) -> None:
    """The last net for the log, as `_say` is for the terminal: clients scrub their errors already."""
    from icp_pipeline.secrets import scrub

    text = log_file.read_text(encoding="utf-8", errors="replace")
    scrubbed = scrub(text)
    if scrubbed != text:
        log_file.write_text(scrubbed, encoding="utf-8")


class _StepProgress:
    """One line per finished step on the terminal, from the run's events (the log has the rest)."""

    def __init__(self, terminal: TextIO) -> None:
        self.terminal = terminal
        self.started: dict[str, float] = {}

    def __call__(self, entry: Any) -> None:
        from icp_pipeline.secrets import scrub

        event = entry.dagster_event
        if event is None or entry.step_key is None:
            return
        if event.is_step_start:
            self.started[entry.step_key] = entry.timestamp
        elif event.is_step_success:
            took = entry.timestamp - self.started.get(entry.step_key, entry.timestamp)
            print(scrub(f"  {entry.step_key} done in {took:.1f}s"), file=self.terminal, flush=True)


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
    from icp_pipeline.warehouse_lock import warehouse_lock

    source_dir = Path(args.source_dir) if args.source_dir else settings.default_source_dir()
    warehouse = _warehouse(args)
    config = settings.load_config(args.config)
    as_of = args.as_of or dt.date.today()
    _check_as_of(as_of, config)
    _check_drop(source_dir, config)
    run_id = str(uuid.uuid4())
    warehouse.parent.mkdir(parents=True, exist_ok=True)  # only the default `.icp/` can be missing here
    # The writer lock comes before Dagster and any DuckDB connection: a second run says who holds it.
    with warehouse_lock(warehouse, run_id, config.warehouse_lock_wait_s, notify=_say):
        import dagster as dg

        from icp_pipeline.runner import run_nightly

        home = prepare_dagster_home(warehouse)
        # The code location builds its partitions from ICP_CONFIG: the same file as this run's.
        pinned = {"DAGSTER_HOME": str(home)} | (
            {"ICP_CONFIG": str(Path(args.config).resolve())} if args.config else {}
        )
        log_file = warehouse.resolve().parent / LOGS_DIR / f"icp-run-{as_of}-{run_id}.log"
        _say(f"icp run: as of {as_of}, source {source_dir}, warehouse {warehouse}")
        started = time.perf_counter()
        config_file = Path(args.config) if args.config else None
        with _environment(pinned), dg.DagsterInstance.from_config(str(home)) as instance:
            if args.verbose:
                result = run_nightly(source_dir, warehouse, as_of, instance, config_file, run_id=run_id)
            else:
                try:
                    with _terminal() as terminal, _output_to(log_file):
                        instance.add_event_listener(run_id, _StepProgress(terminal))
                        result = run_nightly(
                            source_dir, warehouse, as_of, instance, config_file, run_id=run_id
                        )
                except IcpError:
                    raise
                except Exception as exc:  # the traceback is in the log
                    _say(f"icp run failed: {exc.__class__.__name__}: {_one_line(str(exc))}; log: {log_file}")
                    return 1
        elapsed = time.perf_counter() - started
        if not result.success:
            where = "" if args.verbose else f"; log: {log_file}"
            _say(f"icp run failed: {_one_line(_failure_reason(result))}{where}")
            return 1
        counts = warehouse_counts(warehouse)
        not_scored = _not_scored_line(warehouse, as_of, config)
        from icp_pipeline.governance.commands import run_line

        models_line = run_line(warehouse, as_of)
    print(f"icp run succeeded in {elapsed:.1f}s (run {result.run_id}, as of {as_of})")
    print(f"warehouse: {warehouse}")
    for table, rows in counts.items():
        print(f"  {table:<32} {rows:>12,} rows")
    print(not_scored)
    print(models_line)
    outputs = {
        "ICP document": warehouse.parent / "reports" / "icp_profile.html",
        "morning report": warehouse.parent / "reports" / "icp_report.html",
        "alert outbox": warehouse.parent / "outbox" / "alerts.jsonl",
        "run log": None if args.verbose else log_file,
    }
    for label, path in outputs.items():
        if path is not None and path.exists():
            print(f"{label}: {path}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


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


def cmd_model(args: argparse.Namespace) -> int:
    """`icp model list|show|diff|promote|rollback`, under the warehouse lock (a run cannot change
    the champion underneath); the last printed line says what happened."""
    from icp_pipeline.governance import commands
    from icp_pipeline.warehouse import checked_warehouse
    from icp_pipeline.warehouse_lock import warehouse_lock

    given = args.warehouse or os.environ.get("ICP_WAREHOUSE")
    warehouse = checked_warehouse(Path(given) if given else settings.default_warehouse())
    if not warehouse.exists():
        raise IcpInputError(f"no warehouse at {warehouse}; run `icp run` first or pass --warehouse")
    config = settings.load_config(args.config)
    with warehouse_lock(warehouse, f"icp model {args.action}", config.warehouse_lock_wait_s, notify=_say):
        if args.action == "list":
            lines = commands.list_models(warehouse)
        elif args.action == "show":
            lines = commands.show_model(warehouse, args.version)
        elif args.action == "diff":
            lines = commands.diff_models(warehouse, args.version, args.other, config)
        elif args.action == "promote":
            lines = commands.promote_model(warehouse, args.version)
        else:
            lines = commands.rollback_model(warehouse)
    print("\n".join(lines))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start `dagster dev` on 127.0.0.1 with the project loaded and the same instance as `icp run`.

    `dagster dev` runs in its own session, so a Ctrl-C reaches this process only; it is forwarded to
    the whole process group (webserver, daemon, code servers), which is killed if it has not stopped
    within UI_STOP_GRACE_S."""
    warehouse = _warehouse(args)
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    home = prepare_dagster_home(warehouse)
    env = {**os.environ, "DAGSTER_HOME": str(home), **_absolute_settings(warehouse)}
    command = [sys.executable]
    for warning in UI_IGNORED_WARNINGS:
        command += ["-W", f"ignore:{warning}"]
    command += [
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
    _say(f"Dagster UI on http://127.0.0.1:{args.port} for {warehouse} (Ctrl-C to stop)")
    # Run from the Dagster home: from a folder holding another dagster.yaml (the project's),
    # `dagster dev` warns that it is not used.
    process = subprocess.Popen(command, cwd=home, env=env, start_new_session=True)
    return _wait_forwarding_signals(process, UI_STOP_GRACE_S)


def _absolute_settings(warehouse: Path) -> dict[str, str]:
    """The paths `icp` resolved here, made absolute for processes that run from elsewhere."""
    values = {
        "ICP_WAREHOUSE": str(warehouse.resolve()),
        "ICP_SOURCE_DIR": str(settings.default_source_dir().resolve()),
    }
    config = os.environ.get("ICP_CONFIG") or ("icp.yaml" if Path("icp.yaml").exists() else "")
    if config:
        values["ICP_CONFIG"] = str(Path(config).resolve())
    return values


def _wait_forwarding_signals(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """Wait for `process` (a session leader); SIGINT or SIGTERM here is passed to its process group,
    which then gets `grace_s` to exit before SIGKILL. Returns the exit code (130 after Ctrl-C)."""
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        _signal_group(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while process.poll() is None and not received:
            time.sleep(0.2)
        if received:
            _stop_group(process, grace_s)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _signal_group(process.pid, signal.SIGKILL)  # stragglers left by a process that exited on its own
    if received:
        return 130 if received[0] == signal.SIGINT else 128 + received[0]
    return int(process.returncode or 0)


def _stop_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """`dagster dev` stops its webserver and daemon itself; code servers it started can outlive it
    (until their 45 s heartbeat timeout), so what is left of the group is ended after it."""
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _say(f"icp ui: Dagster did not stop within {grace_s:g}s; killing it")
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


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
    run.add_argument(
        "--verbose",
        action="store_true",
        help="Dagster's step logs on the terminal, not in <warehouse dir>/logs/",
    )
    run.set_defaults(handler=cmd_run)

    report = commands.add_parser("report", help="write the one-page HTML morning report (offline)")
    report.add_argument("--warehouse", help="DuckDB file (default: ICP_WAREHOUSE or .icp/warehouse.duckdb)")
    report.add_argument("--out", help="HTML file (default: <warehouse dir>/reports/icp_report.html)")
    report.add_argument("--as-of", type=_date, help="report this scored date (default: the latest)")
    report.set_defaults(handler=cmd_report)

    model = commands.add_parser("model", help="the model registry: list, show, diff, promote, rollback")
    actions = model.add_subparsers(dest="action", required=True)
    for action, text in (
        ("list", "every model version with its status"),
        ("show", "one version: training window, points, criteria, cut-offs, validation, history"),
        ("diff", "points, verdicts and cut-offs that differ, and the accounts that would move"),
        ("promote", "make a version the champion (it scores from the next run)"),
        ("rollback", "make the previous champion the champion again"),
    ):
        sub = actions.add_parser(action, help=text)
        if action in ("show", "diff", "promote"):
            sub.add_argument("version", help="model version (or a unique prefix), see `icp model list`")
        if action == "diff":
            sub.add_argument("other", help="the version to compare with")
        sub.add_argument("--warehouse", help="DuckDB file (default: ICP_WAREHOUSE or .icp/warehouse.duckdb)")
        sub.add_argument("--config", help="icp.yaml (default: ICP_CONFIG or ./icp.yaml when present)")
        sub.set_defaults(handler=cmd_model)

    ui = commands.add_parser("ui", help="open the Dagster UI on 127.0.0.1 with the project loaded")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument(
        "--warehouse", help="its Dagster instance is <warehouse dir>/.dagster unless DAGSTER_HOME is set"
    )
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
