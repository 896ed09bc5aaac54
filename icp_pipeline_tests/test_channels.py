"""Alert channels against a real local HTTP server: payloads, retries, and no leaked webhook secrets."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from icp_pipeline.alerts.channels import (
    AlertMessage,
    DeliveryResult,
    Digest,
    OutboxChannel,
    SlackWebhookChannel,
    WebhookChannel,
    channel_from_config,
    describe_evidence,
    idempotency_key,
    outbox_keys_since,
)

SECRET = "SECRETTOKEN"
TOKEN_PATH = f"/services/T000/B000/{SECRET}"
HANG = -1  # scripted "status": accept the request and never answer
LOGGER = "icp_pipeline.alerts.channels"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeServer:
    """Records every POST and answers from a script of (status, headers, body); 200 `ok` when it runs out."""

    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(self, *responses: tuple[int, dict[str, str], str]) -> None:
        self.script.extend(responses)

    def url(self, path: str = TOKEN_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def next_response(self) -> tuple[int, dict[str, str], str]:
        with self.lock:
            return self.script.pop(0) if self.script else (200, {}, "ok")


class _Server(ThreadingHTTPServer):
    fake: FakeServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fake.requests.append(Recorded(self.path, dict(self.headers.items()), body))
        status, headers, text = fake.next_response()
        if status == HANG:
            fake.release.wait(5)
            return
        payload = text.encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables; the local server must be reached directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.fake = fake
    fake.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    fake.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def dead_url() -> str:
    """A URL on a port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{TOKEN_PATH}"


def make_message(**overrides: Any) -> AlertMessage:
    base: dict[str, Any] = {
        "alert_id": "al1",
        "event_id": "ev1",
        "account_id": "A1",
        "account_name": "Acme Inc",
        "owner_id": "O1",
        "owner_name": "Jane Smith",
        "owner_email": "jane@example.com",
        "slack_user_id": "U123ABC",
        "tier": "A",
        "fit_score": 87,
        "top_reasons": "Industry = Software: +10; Uses Snowflake: +8",
        "trigger_type": "funding",
        "occurred_at": "2026-10-12",
        "strength": 0.8,
        "priority": 0.9,
        "evidence": {"round_type": "Series B", "amount_usd": 25000000, "source_ids": ["F0001"]},
        "crm_url": "https://crm.example.com/accounts/A1",
    }
    return AlertMessage(**{**base, **overrides})


def make_digest(count: int = 3) -> Digest:
    messages = tuple(
        make_message(alert_id=f"al{i}", account_id=f"A{i}", account_name=f"Account {i}", crm_url=None)
        for i in range(1, count + 1)
    )
    return Digest("O1", "Jane Smith", "U123ABC", messages)


def slack(url: str, sleeps: list[float] | None = None, **kwargs: Any) -> SlackWebhookChannel:
    recorder = sleeps if sleeps is not None else []
    return SlackWebhookChannel(url, sleep=recorder.append, **kwargs)


def block_texts(payload: dict[str, Any]) -> str:
    """All text in a Block Kit payload, for 'does it mention X' checks."""
    return json.dumps(payload["blocks"])


# --- Slack --------------------------------------------------------------------------------------


def test_slack_success_posts_block_kit_with_mention_and_crm_link(server: FakeServer) -> None:
    result = slack(server.url()).send(make_message())

    assert result == DeliveryResult("sent", 1, None)
    [request] = server.requests
    assert request.path == TOKEN_PATH
    assert request.headers["Content-Type"].startswith("application/json")
    body = request.json()
    assert body["text"] and isinstance(body["blocks"], list)
    header = body["blocks"][0]
    assert (
        header["type"] == "header"
        and "Acme Inc" in header["text"]["text"]
        and "Funding" in header["text"]["text"]
    )
    texts = block_texts(body)
    assert "<@U123ABC>" in texts
    assert "Raised Series B, $25.0M on 2026-10-12" in texts
    assert "Tier A" in texts and "87" in texts and "Uses Snowflake: +8" in texts
    buttons = [e for b in body["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons[0]["url"] == "https://crm.example.com/accounts/A1"


def test_slack_escapes_mrkdwn_and_names_owner_without_slack_id(server: FakeServer) -> None:
    message = make_message(account_name="AT&T <Labs>", slack_user_id=None, crm_url=None)

    slack(server.url()).send(message)

    body = server.requests[0].json()
    sections = [b["text"]["text"] for b in body["blocks"] if b["type"] in {"section"}]
    context = json.dumps([b for b in body["blocks"] if b["type"] == "context"])
    assert "AT&amp;T &lt;Labs&gt;" in body["text"]
    assert "<Labs>" not in "".join(sections) + body["text"]
    assert "Jane Smith" in context and "<@" not in context
    assert not any(b["type"] == "actions" for b in body["blocks"])


def test_slack_429_honours_retry_after(server: FakeServer) -> None:
    server.respond((429, {"Retry-After": "2"}, "rate_limited"), (200, {}, "ok"))
    sleeps: list[float] = []

    result = slack(server.url(), sleeps).send(make_message())

    assert (result.status, result.attempts) == ("sent", 2)
    assert len(server.requests) == 2
    assert 2 in sleeps


def test_500_then_200_is_retried_within_one_send(server: FakeServer) -> None:
    server.respond((500, {}, "boom"), (200, {}, "ok"))
    sleeps: list[float] = []

    result = slack(server.url(), sleeps).send(make_message())

    assert (result.status, result.attempts, result.error) == ("sent", 2, None)
    assert len(server.requests) == 2
    assert sleeps == [1.0]


def test_500_on_every_attempt_fails_with_exponential_backoff(server: FakeServer) -> None:
    server.respond(*[(500, {}, "boom")] * 4)
    sleeps: list[float] = []

    result = slack(server.url(), sleeps, max_attempts=4, backoff_s=0.5).send(make_message())

    assert (result.status, result.attempts) == ("failed", 4)
    assert result.error == "HTTP 500 after 4 attempts"
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(server.requests) == 4
    assert "127.0.0.1" not in result.error and SECRET not in result.error


def test_server_down_is_a_connection_error_without_url(dead_url: str) -> None:
    sleeps: list[float] = []

    result = slack(dead_url, sleeps, max_attempts=3).send(make_message())

    assert (result.status, result.attempts) == ("failed", 3)
    assert result.error is not None and "connection" in result.error
    assert result.error == "connection refused after 3 attempts"
    assert "127.0.0.1" not in result.error and SECRET not in result.error and "http" not in result.error
    assert len(sleeps) == 2


def test_timeout_is_retried_then_reported(server: FakeServer) -> None:
    server.respond((HANG, {}, ""), (HANG, {}, ""))

    result = slack(server.url(), timeout_s=0.2, max_attempts=2).send(make_message())

    assert (result.status, result.attempts, result.error) == ("failed", 2, "timeout after 2 attempts")
    assert len(server.requests) == 2


def test_400_fails_immediately_with_slack_error_code(server: FakeServer) -> None:
    server.respond((400, {}, "invalid_payload"))
    sleeps: list[float] = []

    result = slack(server.url(), sleeps).send(make_message())

    assert (result.status, result.attempts, result.error) == ("failed", 1, "HTTP 400 (invalid_payload)")
    assert len(server.requests) == 1 and sleeps == []


def test_retry_after_beyond_cap_gives_up_without_sleeping(server: FakeServer) -> None:
    server.respond((429, {"Retry-After": "3600"}, "rate_limited"))
    sleeps: list[float] = []

    result = slack(server.url(), sleeps, max_retry_after_s=30).send(make_message())

    assert (result.status, result.attempts) == ("failed", 1)
    assert result.error == "rate limited (retry after 3600 s)"
    assert sleeps == [] and len(server.requests) == 1


def test_slack_digest_is_one_request_listing_every_alert(server: FakeServer) -> None:
    result = slack(server.url()).send(make_digest(3))

    assert (result.status, result.attempts) == ("sent", 1)
    [request] = server.requests
    body = request.json()
    texts = block_texts(body)
    assert body["blocks"][0]["text"]["text"] == "3 ICP alerts for Jane Smith"
    assert all(f"Account {i}" in texts for i in (1, 2, 3))
    listing = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"]
    assert sum(line.startswith("• ") for text in listing for line in text.splitlines()) == 3
    assert "<@U123ABC>" in texts
    assert all(f"Account {i}" in body["text"] for i in (1, 2, 3))


def test_slack_channel_repr_hides_url() -> None:
    assert SECRET not in repr(SlackWebhookChannel(f"https://hooks.slack.com{TOKEN_PATH}"))


# --- generic webhook ----------------------------------------------------------------------------


def test_webhook_posts_every_field_with_custom_headers(server: FakeServer) -> None:
    channel = WebhookChannel(server.url("/hook"), headers={"X-Api-Key": "k1"}, sleep=lambda s: None)

    result = channel.send(make_message())

    assert result.status == "sent"
    [request] = server.requests
    assert request.headers["X-Api-Key"] == "k1"
    assert request.headers["Content-Type"].startswith("application/json")
    body = request.json()
    assert body["type"] == "icp_alert"
    fields = {f.name for f in dataclasses.fields(AlertMessage)}
    assert fields <= set(body["alert"])
    assert body["alert"]["evidence"]["source_ids"] == ["F0001"]
    assert body["alert"]["evidence_text"] == "Raised Series B, $25.0M on 2026-10-12"


def test_webhook_digest_payload_lists_alerts(server: FakeServer) -> None:
    WebhookChannel(server.url("/hook"), sleep=lambda s: None).send(make_digest(3))

    body = server.requests[0].json()
    assert body["type"] == "icp_digest" and body["recipient_key"] == "O1"
    assert [a["alert_id"] for a in body["alerts"]] == ["al1", "al2", "al3"]


def test_webhook_shares_retry_rules(server: FakeServer) -> None:
    server.respond((503, {}, ""), (200, {}, ""))
    sleeps: list[float] = []

    result = WebhookChannel(server.url("/hook"), sleep=sleeps.append, backoff_s=0.25).send(make_message())

    assert (result.status, result.attempts) == ("sent", 2) and sleeps == [0.25]


# --- secrets never leak -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        [(500, {}, "boom")] * 3,
        [(400, {}, SECRET.lower())],
        [(403, {}, f"no access to {TOKEN_PATH}")],
        [(429, {"Retry-After": "999"}, "")],
        "down",
    ],
    ids=["500s", "400-echo", "403-echo", "429-long", "down"],
)
def test_secret_never_in_error_or_logs(
    script: Any, server: FakeServer, dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    url = dead_url if script == "down" else server.url()
    if script != "down":
        server.respond(*script, *script)  # once per channel

    results = [
        slack(url, max_attempts=3).send(make_message()),
        WebhookChannel(
            url, headers={"Authorization": f"Bearer {SECRET}"}, max_attempts=3, sleep=lambda s: None
        ).send(make_message()),
    ]

    assert [r.status for r in results] == ["failed", "failed"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 2
    logged = " ".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for text in [*(r.error or "" for r in results), logged]:
        assert SECRET not in text and SECRET.lower() not in text
        assert "/services/" not in text and "127.0.0.1" not in text


def test_webhook_sends_the_same_idempotency_key_on_every_retry(server: FakeServer) -> None:
    # A receiver that honours Idempotency-Key sees a message re-sent after a crash or a retry once.
    server.respond((503, {}, "busy"))
    channel = WebhookChannel(server.url("/hook"), max_attempts=2, sleep=lambda s: None)

    assert channel.send(make_message()).status == "sent"
    channel.send(make_digest(3))

    keys = [request.headers["Idempotency-Key"] for request in server.requests]
    assert keys[:2] == ["al1", "al1"]
    assert keys[2] == idempotency_key(make_digest(3)) and keys[2].startswith("digest-")


# --- outbox -------------------------------------------------------------------------------------


def test_outbox_lines_carry_the_idempotency_key_and_can_be_found_from_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    outbox = OutboxChannel(path)
    outbox.send(make_message(alert_id="first"))
    offset = outbox.position()
    outbox.send_many([make_message(alert_id="second"), make_digest(2)])
    with path.open("ab") as handle:  # a writer killed mid-line: that line was not delivered
        handle.write(b'{"idempotency_key": "torn", "type": "icp_al')

    assert json.loads(path.read_text().splitlines()[0])["idempotency_key"] == "first"
    assert outbox_keys_since(path, offset) == {"second", idempotency_key(make_digest(2))}
    assert outbox_keys_since(tmp_path / "missing.jsonl", 0) == set()


def test_outbox_appends_json_lines_and_creates_dirs(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "outbox" / "alerts.jsonl"

    first = OutboxChannel(path).send(make_message())
    OutboxChannel(path).send(make_digest(2))

    assert (first.status, first.attempts) == ("sent", 1)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["icp_alert", "icp_digest"]
    assert records[0]["alert"]["alert_id"] == "al1" and len(records[1]["alerts"]) == 2


def test_outbox_starts_a_fresh_line_after_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"type": "icp_alert", "alert": {"alert_id": "half', encoding="utf-8")

    OutboxChannel(path).send(make_message())

    last = path.read_text(encoding="utf-8").splitlines()[-1]
    assert json.loads(last)["alert"]["alert_id"] == "al1"


def test_outbox_write_failure_is_a_failed_result(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "alerts.jsonl"
    blocked.mkdir()

    result = OutboxChannel(blocked).send(make_message())

    assert result.status == "failed" and result.error is not None and result.error.startswith("write failed")
    assert any(r.levelno == logging.WARNING for r in caplog.records)


# --- configuration ------------------------------------------------------------------------------


def test_channel_from_config_reads_slack_url_from_env(server: FakeServer, tmp_path: Path) -> None:
    channel = channel_from_config("slack", {}, {"ICP_SLACK_WEBHOOK_URL": server.url()}, tmp_path)

    assert channel.name == "slack"
    assert channel.send(make_message()).status == "sent"
    assert server.requests[0].path == TOKEN_PATH


def test_channel_from_config_webhook_uses_named_variable_and_retry_settings(
    server: FakeServer, tmp_path: Path
) -> None:
    server.respond(*[(500, {}, "")] * 5)
    env = {"MY_HOOK": server.url("/custom"), "ICP_ALERT_WEBHOOK_URL": server.url("/default")}
    settings = {"url_env": "MY_HOOK", "max_attempts": 2, "backoff_s": 0}

    result = channel_from_config("webhook", settings, env, tmp_path).send(make_message())

    assert isinstance(channel_from_config("webhook", settings, env, tmp_path), WebhookChannel)
    assert (result.status, result.attempts) == ("failed", 2)
    assert [r.path for r in server.requests] == ["/custom", "/custom"]


def test_channel_from_config_outbox_paths(tmp_path: Path) -> None:
    default = channel_from_config("outbox", {"path": None}, {}, tmp_path / "out")
    custom = channel_from_config("outbox", {"path": tmp_path / "x.jsonl"}, {}, tmp_path / "out")

    assert isinstance(default, OutboxChannel) and default.path == tmp_path / "out" / "alerts.jsonl"
    assert isinstance(custom, OutboxChannel) and custom.path == tmp_path / "x.jsonl"


def test_channel_from_config_missing_variable_names_it_without_values(tmp_path: Path) -> None:
    env = {"ICP_ALERT_WEBHOOK_URL": f"https://hooks.example.com{TOKEN_PATH}"}

    with pytest.raises(ValueError) as missing:
        channel_from_config("slack", {}, env, tmp_path)
    with pytest.raises(ValueError) as not_url:
        channel_from_config("webhook", {}, {"ICP_ALERT_WEBHOOK_URL": SECRET}, tmp_path)

    assert str(missing.value) == "slack channel: environment variable ICP_SLACK_WEBHOOK_URL is not set"
    assert "ICP_ALERT_WEBHOOK_URL" in str(not_url.value)
    assert SECRET not in str(missing.value) + str(not_url.value)


def test_channel_from_config_rejects_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown alert channel kind 'email'"):
        channel_from_config("email", {}, {}, tmp_path)


# --- evidence in words --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger_type", "evidence", "occurred_at", "expected"),
    [
        (
            "funding",
            {"round_type": "Series B", "amount_usd": 25e6},
            "2026-10-12",
            "Raised Series B, $25.0M on 2026-10-12",
        ),
        ("funding", {"round_type": "Seed", "amount_usd": None}, "2026-10-12", "Raised Seed on 2026-10-12"),
        ("funding", {}, "2026-10-12T00:00:00+00:00", "Raised a funding round on 2026-10-12"),
        (
            "hiring_surge",
            {"recent_postings": 14, "recent_days": 30, "monthly_baseline": 0.7},
            "2026-10-30",
            "14 job postings in 30 days vs 0.7/month before",
        ),
        (
            "leadership_change",
            {"title": "Chief Revenue Officer", "person_name": "Jane Doe", "change_type": "joined"},
            "2026-09-30T00:00:00+00:00",
            "New Chief Revenue Officer: Jane Doe (joined 2026-09-30)",
        ),
        (
            "headcount_growth",
            {"employees_before": 240, "employees_now": 310, "growth": 0.292},
            "2026-10-01",
            "Headcount 240 -> 310 (+29%) between observations",
        ),
        (
            "tech_change",
            {"added": ["Snowflake"], "dropped": ["Tableau"]},
            "",
            "Added Snowflake; dropped Tableau",
        ),
        ("tech_change", {"added": [], "dropped": ["Tableau", "Looker"]}, "", "Dropped Tableau, Looker"),
        ("web_visit", {}, "2026-10-12", "Web visit on 2026-10-12"),
    ],
)
def test_describe_evidence(
    trigger_type: str, evidence: dict[str, Any], occurred_at: str, expected: str
) -> None:
    message = make_message(trigger_type=trigger_type, evidence=evidence, occurred_at=occurred_at)

    assert describe_evidence(message) == expected
