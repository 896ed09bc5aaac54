"""The Dagster UI a data engineer opens: the real webserver, asked over its GraphQL API.

It lists the project's assets (each with a description stating its grain), checks, the nightly job
and its schedule; after `icp run` with the same DAGSTER_HOME, the run and its materialization
metadata (row counts, typed figures, Markdown previews, the report's path) are visible there too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from icp_pipeline.config import PROJECT_ROOT
from icp_pipeline.definitions import defs
from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline_tests.dagster_server import (
    dagster_process,
    free_port,
    graphql,
    repository_selector,
    wait_for_webserver,
    webserver_args,
)

pytestmark = pytest.mark.slow

AS_OF = dt.date(2026, 11, 1)

ASSETS = """
{ assetNodes { assetKey { path } description
    assetChecksOrError { ... on AssetChecks { checks { name } } } } }
"""
REPOSITORY = """
query($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    ... on Repository { jobs { name } schedules { name cronSchedule } sensors { name } }
  }
}
"""
RUNS = "{ runsOrError { ... on Runs { results { runId jobName status } } } }"
MATERIALIZATION = """
query($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 1) { runId metadataEntries {
      label __typename
      ... on IntMetadataEntry { intValue }
      ... on FloatMetadataEntry { floatValue }
      ... on MarkdownMetadataEntry { mdStr }
      ... on PathMetadataEntry { path }
    } } }
  }
}
"""


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "ICP_WAREHOUSE": str(root / "warehouse.duckdb")}
    port = free_port()
    with dagster_process(webserver_args(port), env, root / "webserver.log") as process:
        wait_for_webserver(port, process, root / "webserver.log")
        yield port, home


def test_webserver_lists_every_asset_with_its_grain_and_the_checks(webserver: tuple[int, Path]) -> None:
    port, _ = webserver
    nodes = graphql(port, ASSETS)["assetNodes"]
    listed = {"/".join(node["assetKey"]["path"]): node for node in nodes}
    expected = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(listed) == expected
    for key, node in listed.items():
        assert " per " in (node["description"] or ""), f"{key}: the description states no grain"
    checks = {check["name"] for node in nodes for check in node["assetChecksOrError"].get("checks", [])}
    assert {
        "accounts_meet_their_contract",
        "icp_still_predicts_wins",
        "alerts_are_never_duplicated",
    } <= checks
    assert "freshness_check" in checks


def test_webserver_lists_the_nightly_job_its_schedule_and_the_sensors(webserver: tuple[int, Path]) -> None:
    port, _ = webserver
    repository = graphql(port, REPOSITORY, {"selector": repository_selector(port)})["repositoryOrError"]
    assert {"nightly_icp", "deliver_pending_alerts"} <= {job["name"] for job in repository["jobs"]}
    assert {"name": "nightly_icp_schedule", "cronSchedule": "0 2 * * *"} in repository["schedules"]
    assert {"ops_run_failure_sensor", "pending_alerts_sensor"} <= {s["name"] for s in repository["sensors"]}


def test_an_icp_run_and_its_metadata_show_up_in_the_webserver(
    webserver: tuple[int, Path], tmp_path: Path
) -> None:
    port, home = webserver
    drop = tmp_path / "drop"
    generate_demo(drop, DemoSpec(accounts=1500, seed=9, as_of=AS_OF))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "icp"),
            "run",
            "--source-dir",
            str(drop),
            "--as-of",
            AS_OF.isoformat(),
            "--warehouse",
            str(tmp_path / "warehouse.duckdb"),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = graphql(port, RUNS)["runsOrError"]["results"]
    nightly = [run for run in runs if run["jobName"] == "nightly_icp"]
    assert nightly and nightly[0]["status"] == "SUCCESS"
    run_id = nightly[0]["runId"]

    scores = _metadata(port, ["icp", "account_scores"], run_id)
    assert scores["dagster/row_count"] == 1500
    assert "| account_id" in scores["top_accounts"]
    validation = _metadata(port, ["icp", "score_validation"], run_id)
    assert 0.5 < validation["backtest_auc"] <= 1.0 and validation["backtest_tier_a_lift"] > 1.0
    assert validation["backtest_auc_low"] < validation["backtest_auc"] and "holdout_auc" in validation
    drift = _metadata(port, ["icp", "drift_metrics"], run_id)
    assert isinstance(drift["flagged_metrics"], int) and "psi_fit_score" in drift
    staged = _metadata(port, ["staging", "accounts"], run_id)
    assert staged["dagster/row_count"] == 1500 and staged["quarantined_rows"] == 0
    report = _metadata(port, ["icp", "report"], run_id)
    assert any(str(value).endswith(".html") for value in report.values())


def _metadata(port: int, path: list[str], run_id: str) -> dict[str, Any]:
    asset = graphql(port, MATERIALIZATION, {"path": path})["assetOrError"]
    (latest,) = asset["assetMaterializations"]
    assert latest["runId"] == run_id
    values: dict[str, Any] = {}
    for entry in latest["metadataEntries"]:
        for field in ("intValue", "floatValue", "mdStr", "path"):
            if field in entry:
                values[entry["label"]] = entry[field]
    return values


# --- `icp ui` stops with Ctrl-C and SIGTERM ---------------------------------------------------------


def descendants(root: int) -> dict[int, str]:
    """Every process below `root`, read from /proc: pid -> command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            with contextlib.suppress(OSError):
                found[pid] = (Path("/proc") / str(pid) / "cmdline").read_text().replace("\0", " ")[:120]
            todo.append(pid)
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_icp_ui_stops_every_dagster_process(stop: str, tmp_path: Path) -> None:
    """Before: Ctrl-C left the webserver, daemon and code servers running for over 90 s, and
    SIGTERM stopped only the wrapper."""
    warehouse = tmp_path / "warehouse.duckdb"
    port = free_port()
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    env.pop("DAGSTER_HOME", None)
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        # Its own session, like a shell's foreground job: Ctrl-C is SIGINT to this process group.
        ui = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "icp"),
                "ui",
                "--warehouse",
                str(warehouse),
                "--port",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_webserver(port, ui, log, timeout_s=180)
        processes = descendants(ui.pid)
        assert len(processes) >= 3, processes  # dagster dev, webserver, daemon (+ code servers)
        if stop == "ctrl-c":
            os.killpg(ui.pid, signal.SIGINT)
        else:
            os.kill(ui.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(running(pid) for pid in [ui.pid, *processes]):
            ui.poll()
            time.sleep(0.2)
        left = {pid: command for pid, command in processes.items() if running(pid)}
        assert not left, f"still running 15 s after {stop}: {left}"
        assert ui.wait(timeout=5) == (130 if stop == "ctrl-c" else 128 + signal.SIGTERM)
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
        for pid in descendants(ui.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    said = log.read_text(errors="replace")
    assert "Use 'dg dev' instead" not in said and "dev_command" not in said, said[-2000:]
    assert "but your DAGSTER_HOME environment variable is set" not in said, said[-2000:]
    assert (tmp_path / ".dagster" / "dagster.yaml").exists(), "the instance of this warehouse"
