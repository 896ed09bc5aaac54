"""Alert delivery through the nightly job against a real HTTP server on 127.0.0.1: nothing is lost,
and a run killed during delivery repeats nothing on the rerun but the one webhook request in flight."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline.runner import run_nightly
from icp_pipeline_tests.staged_demo import staged_demo

AS_OF = dt.date(2026, 11, 1)


class ScriptedServer:
    """A Slack-webhook stand-in answering with a scripted status per request (then the last one forever)."""

    def __init__(self) -> None:
        self.statuses: list[int] = [200]
        self.bodies: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                server.bodies.append(json.loads(self.rfile.read(length)))
                status = server.statuses.pop(0) if len(server.statuses) > 1 else server.statuses[0]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"error")

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/services/T0/B0/SECRETTOKEN"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("delivery")
    drop, warehouse, _ = staged_demo(root, DemoSpec(accounts=1500, seed=21))
    config = root / "icp.yaml"
    config.write_text(
        "alerts:\n  channels:\n    - {kind: slack, max_attempts: 2, backoff_s: 0, timeout_s: 2}\n  daily_cap_per_owner: 1000\n"
    )
    return drop, warehouse, config


def run(drop: Path, warehouse: Path, config: Path) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return run_nightly(drop, warehouse, AS_OF, instance, config, log_level="WARNING")


def ledger(warehouse: Path) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("select * from icp.alerts").df()


def forget_alerts(warehouse: Path) -> None:
    """Start a test from an empty alert ledger on the shared staged warehouse."""
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema if not exists icp; drop table if exists icp.alerts")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_server_errors_leave_alerts_pending_and_the_next_run_delivers(
    demo, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop, warehouse, config = demo
    monkeypatch.setenv("ICP_SLACK_WEBHOOK_URL", server.url)
    server.statuses = [500]
    first = run(drop, warehouse, config)
    assert first.success
    alerts = ledger(warehouse)
    assert len(alerts) > 0
    assert (alerts["status"] == "pending").all()
    assert (alerts["attempts"] == 2).all()
    assert alerts["last_error"].str.contains("HTTP 500").all()
    assert not alerts["last_error"].str.contains("SECRETTOKEN").any()
    server.statuses = [200]
    requests_before = len(server.bodies)
    second = run(drop, warehouse, config)
    assert second.success
    after = ledger(warehouse)
    assert len(after) == len(alerts)
    assert (after["status"] == "sent").all()
    assert len(server.bodies) - requests_before == len(alerts)
    assert all("blocks" in body for body in server.bodies)


def test_rate_limit_then_success_within_one_run(
    demo, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop, warehouse, config = demo
    forget_alerts(warehouse)
    monkeypatch.setenv("ICP_SLACK_WEBHOOK_URL", server.url)
    server.statuses = [429, 200]
    assert run(drop, warehouse, config).success
    alerts = ledger(warehouse)
    assert (alerts["status"] == "sent").all()
    assert alerts["attempts"].sum() == len(alerts) + 1


def test_server_down_keeps_alerts_pending_and_the_run_succeeds(demo, monkeypatch: pytest.MonkeyPatch) -> None:
    drop, warehouse, config = demo
    forget_alerts(warehouse)
    monkeypatch.setenv("ICP_SLACK_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/services/T0/B0/SECRETTOKEN")
    result = run(drop, warehouse, config)
    assert result.success
    alerts = ledger(warehouse)
    assert len(alerts) > 0 and (alerts["status"] == "pending").all()
    assert alerts["last_error"].str.contains("connection").all()


def test_sensor_and_job_deliver_pending_alerts_between_nights(
    demo, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icp_pipeline.alerts.assets import pending_alerts_sensor
    from icp_pipeline.definitions import defs
    from icp_pipeline.resources import IcpSettings

    drop, warehouse, config = demo
    forget_alerts(warehouse)
    monkeypatch.setenv("ICP_SLACK_WEBHOOK_URL", server.url)
    server.statuses = [503]
    assert run(drop, warehouse, config).success
    settings = IcpSettings(warehouse=str(warehouse), config_file=str(config))
    with dg.build_sensor_context(resources={"icp": settings}) as context:
        tick = pending_alerts_sensor(context)
    assert len(tick.run_requests) == 1
    server.statuses = [200]
    job = defs.resolve_job_def("deliver_pending_alerts")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={
                "resources": {"icp": {"config": {"warehouse": str(warehouse), "config_file": str(config)}}}
            },
        )
    assert result.success
    assert (ledger(warehouse)["status"] == "sent").all()
    with dg.build_sensor_context(resources={"icp": settings}) as context:
        quiet = pending_alerts_sensor(context)
    assert not quiet.run_requests and "no pending" in quiet.skip_reason.skip_message


# --- a run killed during delivery, then a rerun: each alert once per channel ----------------------

KILL_AFTER_WEBHOOKS = 5


class SlowServer:
    """Slack and webhook stand-in that records each request when it arrives and answers 200 only
    after a delay, so a run can be killed while one request is in flight."""

    def __init__(self, delays: dict[str, float]) -> None:
        self.requests: list[tuple[str, str | None, dict]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    server.requests.append((self.path, self.headers.get("Idempotency-Key"), body))
                time.sleep(next((s for prefix, s in delays.items() if self.path.startswith(prefix)), 0))
                try:
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client was killed while waiting for this answer

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def received(self, prefix: str) -> list[tuple[str, str | None, dict]]:
        with self.lock:
            return [request for request in self.requests if request[0].startswith(prefix)]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_run_killed_during_delivery_then_rerun_sends_each_alert_once_per_channel(tmp_path: Path) -> None:
    """The issue's reproduction: outbox, Slack and a slow webhook; SIGKILL once the webhook has had
    a few requests (the outbox and Slack are done by then), then the same `icp run` again."""
    drop, warehouse = tmp_path / "drop", tmp_path / "warehouse.duckdb"
    generate_demo(drop, DemoSpec(accounts=1500, seed=21))
    config = tmp_path / "icp.yaml"
    config.write_text(
        "alerts:\n  daily_cap_per_owner: 1000\n  channels:\n    - {kind: outbox}\n"
        "    - {kind: slack, max_attempts: 1, timeout_s: 30}\n    - {kind: webhook, max_attempts: 1, timeout_s: 30}\n"
    )
    server = SlowServer({"/services/": 0.05, "/hook": 0.5})
    env = {
        **{k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
        "ICP_SLACK_WEBHOOK_URL": f"{server.base}/services/T0/B0/SECRETTOKEN",
        "ICP_ALERT_WEBHOOK_URL": f"{server.base}/hook",
        "DAGSTER_HOME": "",
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    args = [str(Path(sys.executable).parent / "icp"), "run", "--source-dir", str(drop)]
    args += ["--warehouse", str(warehouse), "--config", str(config), "--as-of", AS_OF.isoformat()]
    try:
        with (tmp_path / "killed.log").open("w") as log:
            killed = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 600
            while len(server.received("/hook")) < KILL_AFTER_WEBHOOKS:
                assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no webhook delivery within 600 s"
                time.sleep(0.01)
            killed.send_signal(signal.SIGKILL)
            killed.wait(60)
        in_flight = server.received("/hook")[-1][1]  # sent, its answer never seen by the killed run
        slack_before = len(server.received("/services/"))
        rerun = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    finally:
        server.stop()

    alerts = ledger(warehouse)
    assert (alerts["status"] == "sent").all()
    ids = {channel: set(rows["alert_id"]) for channel, rows in alerts.groupby("channel")}
    count = len(ids["outbox"])
    assert count > KILL_AFTER_WEBHOOKS and len(ids["slack"]) == len(ids["webhook"]) == count
    lines = [json.loads(line) for line in (tmp_path / "outbox" / "alerts.jsonl").read_text().splitlines()]
    assert sorted(line["idempotency_key"] for line in lines) == sorted(ids["outbox"]), "outbox: once each"
    slack = server.received("/services/")
    assert slack_before == count and len(slack) == count, "Slack: its messages were journaled as sent"
    keys = [key for _, key, _ in server.received("/hook")]
    assert set(keys) == ids["webhook"]
    # The one request in flight at the kill is the only one sent twice, with the same key both times.
    assert len(keys) <= count + 1
    assert {key for key in keys if keys.count(key) > 1} <= {in_flight}
    print(
        f"\n{count} alerts per channel: outbox {len(lines)} lines, Slack {len(slack)} posts, "
        f"webhook {len(keys)} requests ({len(keys) - count} re-sent in flight)"
    )
