"""No token leaks: a server that echoes the request back in its 401 and 500 bodies, pointed at every client.

The echo carries the Authorization header, the API-key header, the path and the query string (where a
feed's api_key travels) in the JSON error fields the clients quote (`message`, `category`,
`errorCode`). Each client's error must still say what failed (status, endpoint) without the secret;
the end-to-end run greps stderr, the warehouse directory, the Dagster home and the ops message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from icp_pipeline.alerts.channels import SlackWebhookChannel, WebhookChannel
from icp_pipeline.config import HttpRetry, IcpConfig, PublishConfig
from icp_pipeline.errors import IcpConfigError, IcpError
from icp_pipeline.ops.notices import failure_reason, run_failure_notice, send_ops
from icp_pipeline.publish import tables as publish_tables
from icp_pipeline.secrets import forget_all, register, register_url, scrub
from icp_pipeline.writeback.client import CrmClient, CrmResponse, CrmUnavailable
from icp_pipeline.writeback.hubspot import read_batch_response
from icp_pipeline.writeback.salesforce import read_save_results
from icp_pipeline_tests.conftest import AS_OF
from icp_pipeline_tests.fake_crm import icp_error, load_raw
from icp_pipeline_tests.test_channels import make_message

TOKEN = "pat-na1-7f3a9c1e-leak-5b2d-token"
FEED_KEY = "feedkey-91c4e7d2aa-leak"
HOOK_SECRET = "B07HOOKSECRET0leakXyZ"
DSN_PASSWORD = "pg-pass-4e1f-leak"
ALL_SECRETS = (TOKEN, FEED_KEY, HOOK_SECRET, DSN_PASSWORD)


class EchoServer:
    """Answers every request with `status` and a body repeating the request line and all its headers."""

    def __init__(self, status: int = 401) -> None:
        self.status = status
        self.seen: list[str] = []
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = dict(self.headers.items())
                said = f"{self.command} {self.path} with headers {headers}"
                # The credential it refused, as an API quoting it back would: bearer token or key header.
                presented = headers.get("Authorization") or headers.get("api_key")
                echo.seen.append(said)
                body = json.dumps(
                    {
                        "status": "error",
                        "errorCode": "INVALID_SESSION_ID",
                        "category": f"refused {presented}",
                        "message": said,
                        "headers": headers,
                    }
                ).encode()
                self.send_response(echo.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = _answer  # noqa: N815 - http.server API

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(params=[401, 500])
def echo(request: pytest.FixtureRequest) -> Iterator[EchoServer]:
    with EchoServer(request.param) as server:
        yield server


def exception_texts(exc: BaseException) -> str:
    """Everything an exception can show: its chain as formatted, plus every nested message and repr."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        parts += [str(error), repr(error)]
        linked = (error.__cause__, error.__context__, getattr(error, "exception", None))
        stack.extend(item for item in linked if isinstance(item, BaseException))
    return "\n".join(parts)


def assert_no_secret(text: str, where: str) -> None:
    for secret in ALL_SECRETS:
        assert secret not in text, f"{secret} leaked into {where}"


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under `root` whose bytes contain `secret` (the DuckDB file and sqlite stores too)."""
    needle = secret.encode()
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def retry(attempts: int = 2) -> dict[str, Any]:
    return {"max_attempts": attempts, "backoff_s": 0.01, "max_backoff_s": 0.01}


# --- sources -------------------------------------------------------------------------------------


def test_hubspot_source_error_keeps_status_and_endpoint_but_not_the_token(
    echo: EchoServer, minimal_drop: Path, tmp_path: Path
) -> None:
    config = IcpConfig.model_validate(
        {"sources": {"crm": {"kind": "hubspot", "base_url": echo.url, "retry": retry()}}}
    )
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    with pytest.raises(Exception) as failed:
        load_raw(config, minimal_drop, warehouse, {"ICP_HUBSPOT_TOKEN": TOKEN})
    assert any(TOKEN in said for said in echo.seen), "the server did echo the token"
    line = str(icp_error(failed.value))
    assert line.startswith(f"hubspot: POST /crm/v3/objects/companies/search: HTTP {echo.status}")
    assert_no_secret(exception_texts(failed.value), "the exception chain")
    assert files_holding(warehouse.parent, TOKEN) == []


def test_salesforce_source_error_keeps_status_and_endpoint_but_not_the_token(
    echo: EchoServer, minimal_drop: Path, tmp_path: Path
) -> None:
    config = IcpConfig.model_validate({"sources": {"crm": {"kind": "salesforce", "retry": retry()}}})
    env = {"ICP_SALESFORCE_TOKEN": TOKEN, "ICP_SALESFORCE_INSTANCE_URL": echo.url}
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    with pytest.raises(Exception) as failed:
        load_raw(config, minimal_drop, warehouse, env)
    assert any(TOKEN in said for said in echo.seen)
    line = str(icp_error(failed.value))
    assert line.startswith("salesforce: GET /services/data/") and f"HTTP {echo.status}" in line
    assert_no_secret(exception_texts(failed.value), "the exception chain")
    assert files_holding(warehouse.parent, TOKEN) == []


@pytest.mark.parametrize("location", ["query", "header"])
def test_feed_api_key_stays_out_of_the_error(
    echo: EchoServer, location: str, minimal_drop: Path, tmp_path: Path
) -> None:
    feed = {
        "base_url": echo.url,
        "path": "v2/companies",
        "auth": "api_key",
        "token_env": "ICP_FIRMO_KEY",
        "api_key_name": "api_key",
        "api_key_location": location,
        "data_selector": "data",
        "fields": {"domain": "domain", "observed_at": "as_of"},
        "retry": retry(),
    }
    config = IcpConfig.model_validate({"sources": {"feeds": {"firmographics": feed}}})
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    with pytest.raises(Exception) as failed:
        load_raw(config, minimal_drop, warehouse, {"ICP_FIRMO_KEY": FEED_KEY})
    assert any(FEED_KEY in said for said in echo.seen)
    line = str(icp_error(failed.value))
    assert line.startswith(f"feed firmographics: GET /v2/companies: HTTP {echo.status}")
    assert_no_secret(exception_texts(failed.value), "the exception chain")
    assert files_holding(warehouse.parent, FEED_KEY) == []


# --- write-back ----------------------------------------------------------------------------------


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_writeback_call_errors_hold_no_token(echo: EchoServer, crm: str) -> None:
    client = CrmClient(
        crm, TOKEN, f"ICP_{crm.upper()}_TOKEN", HttpRetry(**retry()), 10, sleep=lambda _s: None
    )
    url = f"{echo.url}/crm/v3/objects/companies/batch/update?hapikey={TOKEN}"
    if echo.status == 401:
        with pytest.raises(IcpConfigError) as failed:
            client.send("POST", url, {"inputs": []})
        assert "HTTP 401" in str(failed.value) and f"ICP_{crm.upper()}_TOKEN" in str(failed.value)
    else:
        with pytest.raises(CrmUnavailable) as failed:
            client.send("POST", url, {"inputs": []})
        assert "HTTP 500 after 2 attempts" in str(failed.value)
    assert any(TOKEN in said for said in echo.seen)
    assert_no_secret(exception_texts(failed.value), "the write-back error")


def test_writeback_rejection_reasons_for_the_ledger_hold_no_token() -> None:
    register(TOKEN)
    said = f"POST /x with headers {{'Authorization': 'Bearer {TOKEN}'}}"

    hubspot = read_batch_response(CrmResponse(400, {"category": "VALIDATION", "message": said}), ["1", "2"])
    salesforce = read_save_results(
        CrmResponse(200, [{"success": False, "errors": [{"statusCode": "X", "message": said}]}]), ["1"]
    )
    reasons = [hubspot.rejected or "", *hubspot.failed.values(), *salesforce.failed.values()]
    assert all("HTTP 400" in r or r.startswith("X:") for r in reasons)
    assert_no_secret("\n".join(reasons), "a ledger reason")


# --- alert channels ------------------------------------------------------------------------------


def test_slack_and_webhook_failures_hold_no_webhook_secret(
    echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{echo.url}/services/T000/{HOOK_SECRET}"
    channels = [
        SlackWebhookChannel(url, max_attempts=2, backoff_s=0.01),
        WebhookChannel(url, {"Authorization": f"Bearer {TOKEN}"}, max_attempts=2, backoff_s=0.01),
    ]
    for channel in channels:
        result = channel.send(make_message())
        assert result.status == "failed" and f"HTTP {echo.status}" in (result.error or "")
        assert_no_secret(result.error or "", f"the {channel.name} delivery error")
    assert any(HOOK_SECRET in said for said in echo.seen)
    assert_no_secret(caplog.text, "the log")


# --- publishing ----------------------------------------------------------------------------------


def test_publish_failure_names_the_destination_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = f"postgresql://loader:{DSN_PASSWORD}@127.0.0.1:1/icp"
    monkeypatch.setenv("ICP_PUBLISH_CREDENTIALS", dsn)

    def failing_run(*_args: object, **_kwargs: object) -> None:
        try:
            raise ConnectionError(f"could not connect with {dsn} (password={DSN_PASSWORD})")
        except ConnectionError as exc:
            raise RuntimeError(f"load step failed for {dsn}") from exc

    monkeypatch.setattr("dlt.Pipeline.run", failing_run)
    config = PublishConfig(enabled=True, destination="postgres", tables=("alerts",))
    with pytest.raises(IcpError) as failed:
        publish_tables.publish(tmp_path / "w.duckdb", dt.date(2026, 11, 1), config, tmp_path / "dlt")
    assert str(failed.value).startswith(
        "publishing to postgres failed: could not connect with postgresql://loader:***@127.0.0.1:1/icp"
    )
    assert_no_secret(exception_texts(failed.value), "the publish error")


def test_scrub_masks_registered_values_and_credential_patterns() -> None:
    register(TOKEN)
    register_url(f"https://hooks.slack.com/services/T000/{HOOK_SECRET}")
    text = scrub(
        f"Bearer {TOKEN}; POST /services/T000/{HOOK_SECRET}; GET /v2?cursor=2&api_key=abc123xyz; "
        "postgresql://u:hunter22@db/icp; Authorization: Basic dXNlcjpwYXNz; HTTP 401 at /crm/v3/search"
    )
    assert text == (
        "Bearer ***; POST ***; GET /v2?cursor=2&api_key=***; postgresql://u:***@db/icp; "
        "Authorization: ***; HTTP 401 at /crm/v3/search"
    )


# --- end to end ----------------------------------------------------------------------------------


class Capture:
    """A local webhook that records what it is sent (the ops message)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                capture.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/{HOOK_SECRET}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


FEED = {
    "base_url": "",
    "path": "v2/companies",
    "auth": "api_key",
    "token_env": "ICP_FIRMO_KEY",
    "api_key_name": "api_key",
    "api_key_location": "query",
    "data_selector": "data",
    "fields": {"domain": "domain", "observed_at": "as_of"},
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "secret", "endpoint"),
    [
        ("hubspot", TOKEN, "hubspot: POST /crm/v3/objects/companies/search"),
        ("feed", FEED_KEY, "feed firmographics: GET /v2/companies"),
    ],
)
def test_icp_run_against_an_echoing_api_leaks_the_secret_nowhere(
    source: str,
    secret: str,
    endpoint: str,
    minimal_drop: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    warehouse_dir = tmp_path / "warehouse"
    warehouse_dir.mkdir()
    capture = Capture()
    config_file = tmp_path / "icp.yaml"
    with EchoServer(401) as echo:
        config_file.write_text(
            yaml.safe_dump(
                {
                    "sources": (
                        {"crm": {"kind": "hubspot", "base_url": echo.url, "retry": retry()}}
                        if source == "hubspot"
                        else {"feeds": {"firmographics": FEED | {"base_url": echo.url, "retry": retry()}}}
                    ),
                    "alerts": {"channels": [{"kind": "webhook", "max_attempts": 1}]},
                }
            )
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "DAGSTER_HOME": str(home),
            "ICP_HUBSPOT_TOKEN": TOKEN,
            "ICP_FIRMO_KEY": FEED_KEY,
            "ICP_ALERT_WEBHOOK_URL": capture.url,
        }
        started = time.perf_counter()
        finished = subprocess.run(
            [
                str(Path(sys.executable).parent / "icp"),
                "run",
                "--source-dir",
                str(minimal_drop),
                "--warehouse",
                str(warehouse_dir / "warehouse.duckdb"),
                "--config",
                str(config_file),
                "--as-of",
                AS_OF,
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        print(f"icp run against the echo ({source}): {time.perf_counter() - started:.1f} s")
    assert finished.returncode == 1, finished.stderr
    assert any(secret in said for said in echo.seen), "the server did echo the secret"
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith(f"icp run failed: {endpoint}: HTTP 401"), last
    assert ("ICP_HUBSPOT_TOKEN" if source == "hubspot" else "ICP_FIRMO_KEY") in last
    assert secret not in finished.stderr and secret not in finished.stdout
    assert files_holding(warehouse_dir, secret) == []
    assert files_holding(home, secret) == []
    # The grep reached the stores that do hold the error: run storage, compute logs, dlt's trace.
    holding = {Path(path).name for path in files_holding(tmp_path, f"{endpoint}: HTTP 401")}
    assert {"index.db", "trace.pickle"} <= holding and any(name.endswith(".err") for name in holding)

    # The ops notice the run-failure sensor sends, built from the stored step failure.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ICP_ALERT_WEBHOOK_URL", capture.url)
    forget_all()  # the sensor runs in another process: only what the store holds counts
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        failures = [
            entry.dagster_event
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        ]
    step, reason, expected = failure_reason(failures)
    assert expected and "HTTP 401" in reason and secret not in reason
    notice = run_failure_notice(run.job_name, run.run_id, step, reason, None, dt.datetime.now(dt.UTC))
    config = IcpConfig.model_validate(yaml.safe_load(config_file.read_text()))
    sent = send_ops(config, tmp_path, notice, logging.getLogger(__name__))
    assert sent["webhook"].status == "sent"
    capture.httpd.shutdown()
    ops_text = b"\n".join(capture.bodies).decode()
    assert f"{endpoint}: HTTP 401" in ops_text
    assert secret not in ops_text
