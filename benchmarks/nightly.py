"""Benchmark the nightly job (issue 7): per stage wall time, rows per second and peak RSS, a DuckDB-only
floor, an incremental second night, at one or more account counts.

For each size, in fresh child processes (so each peak RSS is its own): generate the demo drop; run
the floor (DuckDB alone reads every input CSV and writes one aggregated row per account into a new
file); run `nightly_icp` as of 2026-11-01 into a new warehouse; change 1% of the accounts and append a
day of feed rows; run it again as of the next day on the same warehouse. Prints a table, and with
--readme rewrites the figures between the bench markers in README.md.

    python benchmarks/nightly.py --accounts 100000 1000000 --readme
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AS_OF = dt.date(2026, 11, 1)
SEED = 7
RSS_INTERVAL_S = 0.2
CHANGED_ACCOUNT_SHARE = 0.01
FEED_DATE_COLUMNS = {
    "feeds/firmographics.csv": ("domain", "observed_at"),
    "feeds/funding_rounds.csv": ("round_id", "announced_at"),
    "feeds/job_postings.csv": ("posting_id", "posted_at"),
    "feeds/leadership_changes.csv": ("change_id", "effective_at"),
}
# Stages of the nightly job, in order: Dagster step key prefix -> stage name. Matching runs inside
# the feed tables' staging steps; its time is measured there and moved from staging to "matching".
STAGE_OF_STEP: tuple[tuple[str, str], ...] = (
    ("raw", "ingest"),
    ("staging", "contracts and staging"),
    ("icp_profile_and_scores", "evidence and scoring"),
    ("icp__score_validation", "validation"),
    ("icp__trigger_events", "triggers and alerts"),
    ("icp__alerts", "triggers and alerts"),
    ("icp__drift_metrics", "drift"),
    ("icp__report", "report"),
    ("icp__crm_writeback", "writeback"),
    ("icp__published", "publish"),
    ("freshness_check", "checks"),
)
STAGES = (
    "ingest",
    "contracts and staging",
    "matching",
    "evidence and scoring",
    "validation",
    "triggers and alerts",
    "drift",
)
MATCHING = "matching"
TARGETS = {"run_s": 90.0, "peak_rss_mb": 6 * 1024, "floor_ratio": 4.0, "growth": 11.0, "incremental": 0.5}


# --------------------------------------------------------------------------- child: generate


def generate(accounts: int, drop: Path) -> dict[str, Any]:
    """Write the demo drop; row counts per input file."""
    from icp_pipeline.demo.generate import DemoSpec, generate_demo

    started = time.perf_counter()
    truth = generate_demo(drop, DemoSpec(accounts=accounts, seed=SEED, as_of=AS_OF))
    rows = {name: count for name, count in truth["counts"].items() if not name.startswith("truth")}
    return {
        "generate_s": round(time.perf_counter() - started, 2),
        "generate_peak_rss_mb": _maxrss_mb(),
        "input_rows": sum(rows.values()),
        "file_rows": rows,
    }


# --------------------------------------------------------------------------- child: floor


FLOOR_SQL = """
create table account_floor as
with accounts as (select * from read_csv($accounts, header = true, all_varchar = true)),
contacts as (select account_id, count(*) as n from read_csv($contacts, header = true, all_varchar = true)
             group by account_id),
opportunities as (
    select account_id, count(*) as n, count(*) filter (where lower(stage) like '%won%') as won,
           sum(try_cast(amount as double)) as amount
    from read_csv($opportunities, header = true, all_varchar = true) group by account_id),
subscriptions as (select account_id, sum(try_cast(arr as double)) as arr
                  from read_csv($subscriptions, header = true, all_varchar = true) group by account_id),
owners as (select owner_id, any_value(name) as owner_name
           from read_csv($owners, header = true, all_varchar = true) group by owner_id),
feed_rows as (
    select lower(domain) as domain, 1 as firmographics, 0 as rounds, 0 as postings, 0 as changes
    from read_csv($firmographics, header = true, all_varchar = true)
    union all select lower(domain), 0, 1, 0, 0 from read_csv($funding_rounds, header = true, all_varchar = true)
    union all select lower(domain), 0, 0, 1, 0 from read_csv($job_postings, header = true, all_varchar = true)
    union all select lower(domain), 0, 0, 0, 1
    from read_csv($leadership_changes, header = true, all_varchar = true)
),
feeds as (select domain, sum(firmographics) as firmographics, sum(rounds) as rounds,
                 sum(postings) as postings, sum(changes) as changes
          from feed_rows group by domain)
select a.account_id, a.industry, o.owner_name, coalesce(c.n, 0) as contacts,
       coalesce(p.n, 0) as opportunities, coalesce(p.won, 0) as won, p.amount, s.arr,
       coalesce(f.firmographics, 0) as firmographics, coalesce(f.rounds, 0) as funding_rounds,
       coalesce(f.postings, 0) as job_postings, coalesce(f.changes, 0) as leadership_changes,
       coalesce(p.won, 0) * 10 + least(coalesce(f.postings, 0), 10) as fit_score
from accounts a
left join contacts c using (account_id)
left join opportunities p using (account_id)
left join subscriptions s using (account_id)
left join owners o using (owner_id)
left join feeds f on f.domain = lower(a.domain)
"""


def floor(drop: Path, out: Path) -> dict[str, Any]:
    """DuckDB alone: read every input file (CSV with header) and write one aggregated row per account."""
    import duckdb

    files = {
        "accounts": "crm/accounts.csv",
        "contacts": "crm/contacts.csv",
        "opportunities": "crm/opportunities.csv",
        "subscriptions": "crm/subscriptions.csv",
        "owners": "crm/owners.csv",
        "firmographics": "feeds/firmographics.csv",
        "funding_rounds": "feeds/funding_rounds.csv",
        "job_postings": "feeds/job_postings.csv",
        "leadership_changes": "feeds/leadership_changes.csv",
    }
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    with duckdb.connect(str(out)) as con:
        con.execute("set enable_progress_bar = false")
        con.execute(FLOOR_SQL, {name: str(drop / rel) for name, rel in files.items()})
        rows = con.execute("select count(*) from account_floor").fetchall()[0][0]
    seconds = time.perf_counter() - started
    return {"floor_s": round(seconds, 2), "floor_rows": rows, "floor_peak_rss_mb": _maxrss_mb()}


# --------------------------------------------------------------------------- child: nightly run


class RssSampler:
    """Samples this process's resident set size every 0.2 s (VmRSS), with wall-clock timestamps."""

    def __init__(self, interval_s: float = RSS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), _vm_rss_kib()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), _vm_rss_kib()))

    def peak_mb(self, start: float, end: float) -> int:
        """The highest sample taken while [start, end] ran; for a step shorter than the sampling
        interval, the sample nearest to it."""
        inside = [kib for at, kib in self.samples if start <= at <= end]
        if not inside and self.samples:
            inside = [
                min(self.samples, key=lambda sample: min(abs(sample[0] - start), abs(sample[0] - end)))[1]
            ]
        return round(max(inside) / 1024) if inside else 0


def _vm_rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _maxrss_mb() -> int:
    """Peak RSS of this process so far (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


@contextmanager
def _timed_calls(module: Any, names: tuple[str, ...], intervals: list[tuple[float, float]]) -> Iterator[None]:
    """Record the wall-clock interval of every call of module.<name> (the matching inside staging)."""
    originals = {name: getattr(module, name) for name in names}

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                return function(*args, **kwargs)
            finally:
                intervals.append((started, time.time()))

        return timed

    for name, function in originals.items():
        setattr(module, name, wrap(function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def _stage_of(step: str) -> str:
    return next((stage for prefix, stage in STAGE_OF_STEP if step.startswith(prefix)), step)


def nightly(drop: Path, warehouse: Path, as_of: dt.date) -> dict[str, Any]:
    """One in-process run of nightly_icp; per stage wall time and peak RSS, from the event log."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    started = time.perf_counter()
    import dagster as dg

    import icp_pipeline.contracts.staging as staging
    import icp_pipeline.definitions  # noqa: F401 - code loading is not part of a nightly run
    from icp_pipeline.runner import run_nightly

    startup_s = time.perf_counter() - started
    matching: list[tuple[float, float]] = []
    with (
        dg.DagsterInstance.ephemeral() as instance,
        _timed_calls(staging, ("match_feed", "account_index"), matching),
        RssSampler() as sampler,
    ):
        run_started = time.perf_counter()
        begun_at = time.time()
        result = run_nightly(drop, warehouse, as_of, instance, log_level="WARNING")
        run_s = time.perf_counter() - run_started
        ended_at = time.time()
        if not result.success:
            failures = [event.message for event in result.all_events if event.is_step_failure]
            raise SystemExit(f"nightly run as of {as_of} failed: {failures}")
        spans: dict[str, tuple[float, float]] = {}
        begun: dict[str, float] = {}
        for entry in instance.all_logs(result.run_id):
            event = entry.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                begun[event.step_key] = entry.timestamp
            elif event.event_type_value == "STEP_SUCCESS":
                spans[event.step_key] = (begun[event.step_key], entry.timestamp)
    stages: dict[str, dict[str, float]] = {}
    for step, (start, end) in spans.items():
        stage = stages.setdefault(_stage_of(step), {"s": 0.0, "peak_rss_mb": 0})
        stage["s"] += end - start
        stage["peak_rss_mb"] = max(stage["peak_rss_mb"], sampler.peak_mb(start, end))
    if matching:
        match_s = sum(end - start for start, end in matching)
        stages.setdefault("contracts and staging", {"s": 0.0, "peak_rss_mb": 0})["s"] -= match_s
        stages[MATCHING] = {
            "s": match_s,
            "peak_rss_mb": max(sampler.peak_mb(start, end) for start, end in matching),
        }
    return {
        "as_of": as_of.isoformat(),
        "startup_s": round(startup_s, 2),
        "run_s": round(run_s, 2),
        "stages": {
            name: {"s": round(v["s"], 2), "peak_rss_mb": v["peak_rss_mb"]} for name, v in stages.items()
        },
        "run_peak_rss_mb": sampler.peak_mb(begun_at, ended_at),
        "peak_rss_mb": _maxrss_mb(),
        "warehouse_mb": round(warehouse.stat().st_size / 2**20, 1),
        "stage_input_rows": _stage_input_rows(warehouse),
    }


def _stage_input_rows(warehouse: Path) -> dict[str, int]:
    """Rows each stage reads, from the warehouse after the run (for rows per second)."""
    import duckdb

    def count(con: Any, schema: str, tables: tuple[str, ...]) -> int:
        total = 0
        for table in tables:
            exists = con.execute(
                "select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
                [schema, table],
            ).fetchall()[0][0]
            if exists:
                total += con.execute(f'select count(*) from "{schema}"."{table}"').fetchall()[0][0]
        return int(total)

    crm = ("accounts", "contacts", "opportunities", "subscriptions", "owners")
    feeds = ("firmographics", "funding_rounds", "job_postings", "leadership_changes")
    learning = ("accounts", "opportunities", "subscriptions", "firmographics", "funding_rounds")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            "contracts and staging": count(con, "raw", crm + feeds),
            MATCHING: count(con, "staging", feeds),
            "evidence and scoring": count(con, "staging", learning),
            "validation": count(con, "staging", learning),
            "triggers and alerts": count(con, "staging", (*feeds, "accounts")),
            "drift": count(con, "staging", learning),
        }


# --------------------------------------------------------------------------- the next day's drop


def change_drop(drop: Path, as_of: dt.date) -> dict[str, int]:
    """1% of accounts changed (later updated_at, more employees); a day of new rows in each feed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    next_day = as_of + dt.timedelta(days=1)
    changed: dict[str, int] = {}

    def read_text(file: Path) -> pa.Table:
        header = pacsv.open_csv(file).schema.names
        options = pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
        )
        return pacsv.read_csv(file, convert_options=options)

    accounts_file = drop / "crm" / "accounts.csv"
    accounts = read_text(accounts_file)
    step = round(1 / CHANGED_ACCOUNT_SHARE)
    picked = pa.array([i % step == 0 for i in range(accounts.num_rows)])
    has_count = pc.not_equal(accounts["employee_count"], "")
    counts = pc.if_else(has_count, accounts["employee_count"], "0")
    employees = pc.cast(pc.cast(counts, pa.float64()), pa.int64(), safe=False)
    grown = pc.cast(pc.add(employees, 1), pa.string())
    stamp = pa.scalar(f"{next_day.isoformat()}T06:00:00")
    accounts = accounts.set_column(
        accounts.schema.get_field_index("employee_count"),
        "employee_count",
        pc.if_else(pc.and_(picked, has_count), grown, accounts["employee_count"]),
    )
    accounts = accounts.set_column(
        accounts.schema.get_field_index("updated_at"),
        "updated_at",
        pc.if_else(picked, stamp, accounts["updated_at"]),
    )
    pacsv.write_csv(accounts, accounts_file)
    changed["crm/accounts.csv"] = int(pc.sum(picked).as_py())

    for relative, (id_column, date_column) in FEED_DATE_COLUMNS.items():
        file = drop / relative
        feed = read_text(file)
        new_rows = max(1, math.ceil(feed.num_rows / 365))
        tail = feed.slice(feed.num_rows - new_rows)
        sample = tail[date_column][0].as_py()
        day = next_day.isoformat() + (sample[10:] if len(sample) > 10 else "")
        tail = tail.set_column(
            tail.schema.get_field_index(date_column), date_column, pa.repeat(pa.scalar(day), new_rows)
        )
        if id_column != "domain":
            tail = tail.set_column(
                tail.schema.get_field_index(id_column),
                id_column,
                pc.binary_join_element_wise(pa.scalar("N"), tail[id_column], ""),
            )
        with file.open("ab") as handle:
            pacsv.write_csv(tail, handle, write_options=pacsv.WriteOptions(include_header=False))
        changed[relative] = new_rows
    return changed


# --------------------------------------------------------------------------- parent


def _child(*args: str) -> dict[str, Any]:
    """Run this script in a fresh process for one measurement; its last stdout line is JSON."""
    process = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if process.returncode != 0:
        raise SystemExit(f"benchmark step {args} failed:\n{process.stderr[-4000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def measure(accounts: int, workdir: Path) -> dict[str, Any]:
    drop = workdir / "drop"
    result: dict[str, Any] = {"accounts": accounts}
    result |= _child("--generate", str(accounts), "--dir", str(workdir))
    result |= _child("--floor", "--dir", str(workdir))
    result["first"] = _child("--run", AS_OF.isoformat(), "--dir", str(workdir))
    result["changed"] = change_drop(drop, AS_OF)
    result["second"] = _child("--run", (AS_OF + dt.timedelta(days=1)).isoformat(), "--dir", str(workdir))
    result["second"]["input_rows"] = result["input_rows"] + sum(
        v for k, v in result["changed"].items() if k.startswith("feeds")
    )
    return result


def _machine() -> str:
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return (
        f"{os.cpu_count()} cores, {memory_kib / 2**20:.0f} GB RAM, "
        f"{platform.python_implementation()} {platform.python_version()}, measured {dt.date.today()}"
    )


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "-"


def render(results: list[dict[str, Any]]) -> str:
    """The README tables: one row per size and run; stage cells are `s (rows/s, peak MB)`."""
    runs_header = (
        "| accounts | run | input rows | nightly run s | floor s | run / floor | peak RSS MB | warehouse MB |"
    )
    runs = [runs_header, "|---" * (runs_header.count("|") - 1) + "|"]
    stages_header = "| accounts | run | " + " | ".join(STAGES) + " | other steps |"
    stages = [stages_header, "|---" * (stages_header.count("|") - 1) + "|"]
    for r in results:
        for label, run in (("first", r["first"]), ("incremental", r["second"])):
            input_rows = r["input_rows"] if label == "first" else run["input_rows"]
            runs.append(
                f"| {r['accounts']:,} | {label} | {input_rows:,} | {run['run_s']:.1f} | {r['floor_s']:.1f} "
                f"| {run['run_s'] / r['floor_s']:.1f}x | {run['peak_rss_mb']:,} | {run['warehouse_mb']:,.1f} |"
            )
            cells = []
            for stage in STAGES:
                figures = run["stages"].get(stage)
                if figures is None:
                    cells.append("-")
                    continue
                rows = input_rows if stage == "ingest" else run["stage_input_rows"].get(stage, 0)
                cells.append(f"{figures['s']:.1f} ({_rate(rows, figures['s'])}, {figures['peak_rss_mb']:,})")
            other = sum(v["s"] for k, v in run["stages"].items() if k not in STAGES)
            stages.append(f"| {r['accounts']:,} | {label} | " + " | ".join(cells) + f" | {other:.1f} |")
    note = (
        "Stage cells: seconds (input rows per second, peak RSS MB). Input rows: ingest reads every file "
        "row; staging every raw row; matching the staged feed rows; learning, validation and drift the "
        "staged accounts, opportunities, subscriptions, firmographics and funding rounds; triggers and "
        "alerts the staged feeds and accounts."
    )
    return "\n".join(runs) + "\n\n" + "\n".join(stages) + "\n\n" + note + "\n\n" + _summary(results)


def _summary(results: list[dict[str, Any]]) -> str:
    by_size = {r["accounts"]: r for r in results}
    notes = []
    for r in results:
        notes.append(
            f"- {r['accounts']:,} accounts: demo data {r['generate_s']:.1f} s; code loading {r['first']['startup_s']:.1f} s "
            f"(not in the run time); other steps: "
            + (
                ", ".join(f"{k} {v['s']:.1f} s" for k, v in r["first"]["stages"].items() if k not in STAGES)
                or "none"
            )
            + f"; incremental run: {r['changed'].get('crm/accounts.csv', 0):,} accounts changed, "
            f"{sum(v for k, v in r['changed'].items() if k.startswith('feeds')):,} feed rows added."
        )
    lines = ["Targets at 1,000,000 accounts:"]
    big = by_size.get(1_000_000)
    small = by_size.get(100_000)
    if big is None:
        lines.append("- not measured at 1,000,000 accounts in this run")
    else:
        first, second = big["first"], big["second"]
        checks = [
            (
                f"full nightly run <= {TARGETS['run_s']:.0f} s",
                first["run_s"] <= TARGETS["run_s"],
                f"{first['run_s']:.1f} s",
            ),
            (
                f"peak RSS <= {TARGETS['peak_rss_mb'] / 1024:.0f} GB",
                first["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
                f"{first['peak_rss_mb'] / 1024:.2f} GB",
            ),
            (
                f"full run <= {TARGETS['floor_ratio']:.0f}x the floor",
                first["run_s"] <= TARGETS["floor_ratio"] * big["floor_s"],
                f"{first['run_s'] / big['floor_s']:.1f}x ({big['floor_s']:.1f} s floor)",
            ),
            (
                f"incremental second run <= {TARGETS['incremental']:.0%} of the first",
                second["run_s"] <= TARGETS["incremental"] * first["run_s"],
                f"{second['run_s'] / first['run_s']:.0%}",
            ),
        ]
        if small is not None:
            growth = first["run_s"] / small["first"]["run_s"]
            checks.append(
                (f"1M cost <= {TARGETS['growth']:.0f}x 100k", growth <= TARGETS["growth"], f"{growth:.1f}x")
            )
        lines += [f"- {name}: {'met' if ok else 'NOT met'} ({value})" for name, ok, value in checks]
    return (
        "\n".join(lines + [""] + notes)
        + f"\n\nMachine: {_machine()}. Generated by `python benchmarks/nightly.py`."
    )


def write_readme(rendered: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        raise SystemExit("README.md has no bench markers")
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{rendered}\n{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[100_000])
    parser.add_argument("--readme", action="store_true", help="rewrite the README's benchmark table")
    parser.add_argument("--keep", type=Path, help="keep the drops and warehouses under this folder")
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=dt.date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generate(args.generate, args.dir / "drop")))
        return 0
    if args.floor:
        print(json.dumps(floor(args.dir / "drop", args.dir / "floor.duckdb")))
        return 0
    if args.run:
        print(json.dumps(nightly(args.dir / "drop", args.dir / "warehouse.duckdb", args.run)))
        return 0
    results = []
    for accounts in args.accounts:
        print(f"benchmark: {accounts:,} accounts ...", file=sys.stderr, flush=True)
        workdir = (
            args.keep / f"accounts_{accounts}" if args.keep else Path(tempfile.mkdtemp(prefix="icp_bench_"))
        )
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            results.append(measure(accounts, workdir))
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    rendered = render(results)
    print(rendered)
    if args.readme:
        write_readme(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
