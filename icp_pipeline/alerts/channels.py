"""Alert delivery channels: a local JSONL outbox, Slack incoming webhooks and generic JSON webhooks.

The outbox is the default so the demo works offline. The two HTTP channels share one delivery
routine (timeout, bounded retries, Retry-After) that never puts the URL into an error or a log
line: a Slack webhook URL *is* the secret, and requests' exception texts contain it. The URL and
any extra header values are registered with `icp_pipeline.secrets`, and every failure reason is
scrubbed, so a server that echoes the request cannot put them into the ledger or a log.

Every message carries an idempotency key (`idempotency_key`: the alert id, or a hash of a digest's
alert ids) so that a message re-sent after a crash can be recognised: the outbox writes it on each
line (and the ledger's journal finds the lines a crashed run wrote, so the outbox never repeats one),
the generic webhook sends it as the `Idempotency-Key` header for the receiver to dedupe on. Slack
incoming webhooks take no such key: a crash during delivery can repeat the one message in flight.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import requests

from icp_pipeline.retries import retry_after_seconds
from icp_pipeline.secrets import register, register_url, scrub

logger = logging.getLogger(__name__)

SLACK_URL_ENV = "ICP_SLACK_WEBHOOK_URL"
WEBHOOK_URL_ENV = "ICP_ALERT_WEBHOOK_URL"
TRIGGER_LABELS = {
    "funding": "Funding round",
    "hiring_surge": "Hiring surge",
    "leadership_change": "Leadership change",
    "headcount_growth": "Headcount growth",
    "tech_change": "Tech stack change",
    "ops_notice": "ICP operations notice",
}
# Slack Block Kit limits: header text, section/context text, blocks per message.
HEADER_LIMIT, TEXT_LIMIT, MAX_BLOCKS = 150, 3000, 50


@dataclass(frozen=True)
class AlertMessage:
    """Everything a rep needs to act on one alert, already joined by the caller."""

    alert_id: str
    event_id: str
    account_id: str
    account_name: str
    owner_id: str | None
    owner_name: str | None
    owner_email: str | None
    slack_user_id: str | None
    tier: str
    fit_score: int
    top_reasons: str
    trigger_type: str
    occurred_at: str
    strength: float
    priority: float
    evidence: dict[str, Any]
    crm_url: str | None


@dataclass(frozen=True)
class Digest:
    """Alerts beyond a recipient's daily cap, folded into one message."""

    recipient_key: str
    owner_name: str | None
    slack_user_id: str | None
    messages: tuple[AlertMessage, ...]


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of one send; `error` is a short reason that never contains a URL or token."""

    status: Literal["sent", "failed"]
    attempts: int
    error: str | None


class Channel(Protocol):
    name: str

    def send(self, message: AlertMessage | Digest) -> DeliveryResult: ...


# --- evidence in words --------------------------------------------------------------------------


def describe_evidence(message: AlertMessage) -> str:
    """One line saying what happened, so a rep does not have to read the evidence JSON."""
    describe = _DESCRIBERS.get(message.trigger_type)
    day = _day(message.occurred_at)
    text = describe(message.evidence or {}, day) if describe else ""
    if text:
        return text
    label = trigger_label(message.trigger_type)
    return f"{label} on {day}" if day else label


def trigger_label(trigger_type: str) -> str:
    return TRIGGER_LABELS.get(trigger_type) or trigger_type.replace("_", " ").capitalize() or "Trigger"


def _funding(evidence: Mapping[str, Any], day: str) -> str:
    round_type = _text(evidence.get("round_type")) or "a funding round"
    amount = _number(evidence.get("amount_usd"))
    money = f", {_money(amount)}" if amount else ""
    return f"Raised {round_type}{money}" + (f" on {day}" if day else "")


def _hiring(evidence: Mapping[str, Any], day: str) -> str:
    count = _number(evidence.get("recent_postings"))
    if count is None:
        return ""
    days, baseline = _number(evidence.get("recent_days")), _number(evidence.get("monthly_baseline"))
    text = f"{_fmt(count)} job posting{'' if count == 1 else 's'}"
    text += f" in {_fmt(days)} days" if days else ""
    return text + (f" vs {_fmt(baseline)}/month before" if baseline is not None else "")


def _leadership(evidence: Mapping[str, Any], day: str) -> str:
    title, person = _text(evidence.get("title")), _text(evidence.get("person_name"))
    if not title and not person:
        return ""
    text = f"New {title or 'executive'}" + (f": {person}" if person else "")
    detail = " ".join(
        part for part in ((_text(evidence.get("change_type")) or "joined").lower(), day) if part
    )
    return f"{text} ({detail})"


def _headcount(evidence: Mapping[str, Any], day: str) -> str:
    before, now = _number(evidence.get("employees_before")), _number(evidence.get("employees_now"))
    if before is None or now is None:
        return ""
    growth = _number(evidence.get("growth"))
    if growth is None and before:
        growth = (now - before) / before
    change = f" ({growth:+.0%})" if growth is not None else ""
    return f"Headcount {_fmt(before)} -> {_fmt(now)}{change} between observations"


def _tech(evidence: Mapping[str, Any], day: str) -> str:
    added, dropped = _names(evidence.get("added")), _names(evidence.get("dropped"))
    parts = [f"Added {', '.join(added)}"] if added else []
    if dropped:
        parts.append(f"{'dropped' if parts else 'Dropped'} {', '.join(dropped)}")
    return "; ".join(parts)


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any], str], str]] = {
    "funding": _funding,
    "hiring_surge": _hiring,
    "leadership_change": _leadership,
    "headcount_growth": _headcount,
    "tech_change": _tech,
    "ops_notice": lambda evidence, _day: _text(evidence.get("message")) or "",
}


def _text(value: Any) -> str:
    """A display string; missing values (None, NaN, pandas' "<NA>" via default=str) become empty."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return ""
    text = str(value).strip()
    return "" if text in {"<NA>", "NaT", "nan", "None"} else text


def _number(value: Any) -> float | None:
    """A finite float from ints, floats or numeric strings; None otherwise (evidence is loose JSON)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _names(value: Any) -> list[str]:
    items = value.split(";") if isinstance(value, str) else value if isinstance(value, Sequence) else []
    return [str(item).strip() for item in items if str(item).strip()]


def _fmt(number: float) -> str:
    if number.is_integer():
        return f"{int(number):,}"
    return f"{number:,.2f}".rstrip("0").rstrip(".")


def _money(amount: float) -> str:
    for unit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(amount) >= unit:
            return f"${amount / unit:.1f}{suffix}"
    return f"${amount:,.0f}"


def _day(text: str | None) -> str:
    """The date part of an ISO timestamp; anything else as given."""
    match = re.match(r"\d{4}-\d{2}-\d{2}", text or "")
    return match.group(0) if match else (text or "").strip()


# --- payloads -----------------------------------------------------------------------------------


def slack_payload(message: AlertMessage | Digest) -> dict[str, Any]:
    """A Block Kit message with a plain `text` fallback (used for notifications and old clients)."""
    return _slack_digest(message) if isinstance(message, Digest) else _slack_alert(message)


def webhook_payload(message: AlertMessage | Digest) -> dict[str, Any]:
    """A stable JSON shape for other systems: every field plus the evidence in words."""
    if isinstance(message, Digest):
        return {
            "type": "icp_digest",
            "recipient_key": message.recipient_key,
            "owner_name": message.owner_name,
            "slack_user_id": message.slack_user_id,
            "alerts": [_alert_dict(item) for item in message.messages],
        }
    return {"type": "icp_alert", "alert": _alert_dict(message)}


def _alert_dict(message: AlertMessage) -> dict[str, Any]:
    """Every field plus the evidence in words. Fields are read directly (`asdict` deep-copies each
    message recursively: seconds for a night of alerts); the evidence dict is copied one level."""
    fields = {name: getattr(message, name) for name in _ALERT_FIELDS}
    fields["evidence"] = dict(message.evidence)
    return {**fields, "evidence_text": describe_evidence(message)}


_ALERT_FIELDS = tuple(field.name for field in dataclasses.fields(AlertMessage))


def _slack_alert(message: AlertMessage) -> dict[str, Any]:
    evidence = describe_evidence(message)
    label = trigger_label(message.trigger_type)
    fit = f"*Tier {_esc(message.tier)}* · fit score *{message.fit_score}*/100"
    reasons = f"\n{_esc(message.top_reasons)}" if message.top_reasons else ""
    owner = _mention(message.slack_user_id, message.owner_name) or "no owner"
    context = f"Owner: {owner} · priority {message.priority:.2f} · trigger strength {message.strength:.2f}"
    blocks = [
        _header(f"{label}: {message.account_name}"),
        _section(fit + reasons),
        _section(f"*{_esc(label)}:* {_esc(evidence)}"),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(context, TEXT_LIMIT)}]},
    ]
    if message.crm_url:
        blocks.append(_crm_button(message.crm_url))
    return {"text": _alert_fallback(message, label, evidence), "blocks": blocks}


def _alert_fallback(message: AlertMessage, label: str, evidence: str) -> str:
    account = f"{_esc(message.account_name)} (tier {_esc(message.tier)}, fit {message.fit_score})"
    text = f"{label}: {account} - {_esc(evidence)}"
    mention = _mention(message.slack_user_id, message.owner_name)
    text += f" - {mention}" if mention else ""
    return text + (f" - {_link(message.crm_url, 'Open in CRM')}" if message.crm_url else "")


def _slack_digest(digest: Digest) -> dict[str, Any]:
    count = len(digest.messages)
    title = f"{count} ICP alert{'' if count == 1 else 's'} for {digest.owner_name or digest.recipient_key}"
    who = _mention(digest.slack_user_id, digest.owner_name) or _esc(digest.recipient_key)
    blocks = [
        _header(title),
        _context(f"For {who}: more alerts than today's cap, highest priority first"),
        *_digest_sections([_digest_line(item) for item in digest.messages], MAX_BLOCKS - 2),
    ]
    names = "; ".join(f"{item.account_name} ({trigger_label(item.trigger_type)})" for item in digest.messages)
    return {"text": _clip(f"{_esc(title)}: {_esc(names)}", TEXT_LIMIT), "blocks": blocks}


def _digest_line(message: AlertMessage) -> str:
    label = trigger_label(message.trigger_type)
    line = (
        f"• *{_esc(message.account_name)}* (tier {_esc(message.tier)}, fit {message.fit_score}) - "
        f"{_esc(label)}: {_esc(describe_evidence(message))}"
    )
    return _clip(line, TEXT_LIMIT - 200) + (f" {_link(message.crm_url, 'CRM')}" if message.crm_url else "")


def _digest_sections(lines: list[str], max_sections: int) -> list[dict[str, Any]]:
    """Lines packed into sections under Slack's text limit; past the block limit, a count of the rest."""
    chunks: list[list[str]] = []
    for line in lines:
        if chunks and len("\n".join([*chunks[-1], line])) <= TEXT_LIMIT:
            chunks[-1].append(line)
        else:
            chunks.append([line])
    if len(chunks) > max_sections:
        rest = sum(len(chunk) for chunk in chunks[max_sections - 1 :])
        chunks = [*chunks[: max_sections - 1], [f"…and {rest} more alerts"]]
    return [_section("\n".join(chunk)) for chunk in chunks]


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _clip(text, HEADER_LIMIT), "emoji": True},
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, TEXT_LIMIT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, TEXT_LIMIT)}]}


def _crm_button(url: str) -> dict[str, Any]:
    button = {
        "type": "button",
        "text": {"type": "plain_text", "text": "Open in CRM"},
        "url": url,
        "action_id": "open_crm",
    }
    return {"type": "actions", "elements": [button]}


def _mention(slack_user_id: str | None, owner_name: str | None) -> str:
    """`<@U123>` pings the owner; without a Slack id, the name is at least readable."""
    if slack_user_id and re.fullmatch(r"[UW][A-Z0-9]+", slack_user_id):
        return f"<@{slack_user_id}>"
    return _esc(owner_name or "")


def _link(url: str, label: str) -> str:
    return f"<{_esc(url)}|{label}>"


def _esc(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters (links, mentions)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def idempotency_key(message: AlertMessage | Digest) -> str:
    """The same key every time this message is sent: the alert id, or a hash of a digest's alert ids."""
    if isinstance(message, Digest):
        ids = ",".join(sorted(item.alert_id for item in message.messages))
        return "digest-" + hashlib.sha1(ids.encode()).hexdigest()[:16]
    return message.alert_id


def _item_name(message: AlertMessage | Digest) -> str:
    if isinstance(message, Digest):
        return f"digest for {message.recipient_key} ({len(message.messages)} alerts)"
    return f"alert {message.alert_id}"


def _failed(channel: str, attempts: int, error: str, item: str) -> DeliveryResult:
    """The one warning per failed delivery; `error` is scrubbed of URLs and tokens."""
    error = scrub(error)
    logger.warning("%s: delivery of %s failed: %s", channel, item, error)
    return DeliveryResult("failed", attempts, error)


# --- outbox -------------------------------------------------------------------------------------


class OutboxChannel:
    """Appends one JSON object per line; the default channel, needs no network.

    Each line carries `idempotency_key`; `position()` and `outbox_keys_since()` let the ledger's
    journal tell which lines a crashed delivery wrote, so the next run does not write them again.
    """

    name: str = "outbox"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def send(self, message: AlertMessage | Digest) -> DeliveryResult:
        return self.send_many([message])[0]

    def send_many(self, messages: Sequence[AlertMessage | Digest]) -> list[DeliveryResult]:
        """Append one line per message with one write and one fsync for the whole batch.

        A night's alerts cost one disk flush instead of one each (an fsync is about a millisecond);
        a failed write fails every message of the batch, which stays pending for the next run.
        """
        if not messages:
            return []
        written_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        lines = [
            json.dumps(
                {
                    "idempotency_key": idempotency_key(message),
                    **webhook_payload(message),
                    "written_at": written_at,
                },
                default=str,
                ensure_ascii=False,
            )
            + "\n"
            for message in messages
        ]
        try:
            _append_line(self.path, "".join(lines).encode("utf-8"))
        except OSError as exc:
            reason = f"write failed ({exc.strerror or type(exc).__name__})"
            item = _item_name(messages[0]) + (f" and {len(messages) - 1} more" if len(messages) > 1 else "")
            failed = _failed(self.name, 1, reason, item)
            return [failed] * len(messages)
        return [DeliveryResult("sent", 1, None)] * len(messages)

    def position(self) -> int:
        """The outbox's size in bytes: where the next batch will start."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def __repr__(self) -> str:
        return f"OutboxChannel(path={str(self.path)!r})"


def outbox_keys_since(path: Path, offset: int) -> set[str]:
    """The idempotency keys of the whole lines written at or after byte `offset`.

    A torn last line (the writer was killed mid-write) is not a delivered message.
    """
    try:
        with Path(path).open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return set()
    keys: set[str] = set()
    for line in data.split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("idempotency_key"), str):
            keys.add(record["idempotency_key"])
    return keys


def _append_line(path: Path, data: bytes) -> None:
    """One unbuffered append, then fsync: readers never see a half record from this write.

    If an earlier crash left a partial last line, start on a fresh line so this record stays parseable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b", buffering=0) as handle:
        if _ends_mid_line(handle):
            data = b"\n" + data
        written = 0
        while written < len(data):
            written += handle.write(data[written:]) or 0
        handle.flush()
        os.fsync(handle.fileno())


def _ends_mid_line(handle: Any) -> bool:
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return False
    handle.seek(size - 1)
    return handle.read(1) != b"\n"


# --- HTTP delivery (shared by Slack and webhook) ------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Per-send retry budget; the ledger retries failed alerts again on later runs."""

    timeout_s: float = 10
    max_attempts: int = 4
    backoff_s: float = 1.0
    max_retry_after_s: float = 30

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.timeout_s <= 0 or self.backoff_s < 0 or self.max_retry_after_s < 0:
            raise ValueError(
                "retry policy: need max_attempts >= 1, timeout_s > 0, backoff_s >= 0, max_retry_after_s >= 0"
            )


@dataclass(frozen=True)
class _Attempt:
    kind: Literal["sent", "retry", "fail"]
    reason: str = ""
    wait_s: float | None = None  # None: exponential backoff


class _HttpSender:
    """POSTs JSON with a timeout and bounded retries; errors are categories, never exception texts."""

    def __init__(
        self,
        channel: str,
        url: str,
        headers: Mapping[str, str] | None,
        policy: RetryPolicy,
        session: requests.Session | None,
        sleep: Callable[[float], None],
    ) -> None:
        self._channel, self._url, self._policy, self._sleep = channel, url, policy, sleep
        self._headers = {"Content-Type": "application/json; charset=utf-8", **dict(headers or {})}
        self._session = session or requests.Session()
        register_url(url)
        register(*(value for name, value in self._headers.items() if name.lower() != "content-type"))

    def post(
        self, payload: Mapping[str, Any], item: str, headers: Mapping[str, str] | None = None
    ) -> DeliveryResult:
        """POST with retries; `headers` are added to this message's requests (e.g. an idempotency key)."""
        body = json.dumps(payload, default=str, ensure_ascii=False).encode("utf-8")
        attempts = self._policy.max_attempts
        outcome = _Attempt("fail", "not attempted")
        for attempt in range(1, attempts + 1):
            outcome = self._attempt(body, headers)
            if outcome.kind == "sent":
                return DeliveryResult("sent", attempt, None)
            if outcome.kind == "fail":
                return _failed(self._channel, attempt, outcome.reason, item)
            if attempt < attempts:
                self._wait(outcome, attempt)
        plural = "" if attempts == 1 else "s"
        return _failed(self._channel, attempts, f"{outcome.reason} after {attempts} attempt{plural}", item)

    def _wait(self, outcome: _Attempt, attempt: int) -> None:
        wait = outcome.wait_s if outcome.wait_s is not None else self._policy.backoff_s * 2 ** (attempt - 1)
        logger.debug("%s: %s, retrying in %.1f s (attempt %d)", self._channel, outcome.reason, wait, attempt)
        self._sleep(wait)

    def _attempt(self, body: bytes, headers: Mapping[str, str] | None = None) -> _Attempt:
        try:
            with self._session.post(
                self._url,
                data=body,
                headers={**self._headers, **(headers or {})},
                timeout=self._policy.timeout_s,
                allow_redirects=False,
            ) as response:
                return self._classify(response)
        except requests.Timeout:
            return _Attempt("retry", "timeout")
        except requests.ConnectionError as exc:
            return _Attempt("retry", _connection_reason(exc))
        except requests.RequestException as exc:
            return _Attempt("fail", f"request error ({type(exc).__name__})")

    def _classify(self, response: requests.Response) -> _Attempt:
        status = response.status_code
        if 200 <= status < 300:
            return _Attempt("sent")
        if status == 429:
            return _rate_limited(response.headers.get("Retry-After"), self._policy.max_retry_after_s)
        if status >= 500:
            return _Attempt("retry", f"HTTP {status}")
        return _Attempt("fail", f"HTTP {status}{self._error_code(response)}")

    def _error_code(self, response: requests.Response) -> str:
        """Slack answers errors with a bare code (`invalid_payload`, `no_service`); keep only that shape."""
        text = response.text.strip()
        secrets = " ".join([self._url, *self._headers.values()]).lower()
        if re.fullmatch(r"[a-z][a-z_]{1,40}", text) and text.lower() not in secrets:
            return f" ({text})"
        return ""


def _rate_limited(retry_after: str | None, cap_s: float) -> _Attempt:
    wait = retry_after_seconds(retry_after)
    if wait is not None and wait > cap_s:
        return _Attempt("fail", f"rate limited (retry after {math.ceil(wait)} s)")
    return _Attempt("retry", "rate limited (HTTP 429)", wait)


def _connection_reason(exc: BaseException) -> str:
    """A short category from the exception chain; the texts themselves contain the URL."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        reason = _os_error_reason(error)
        if reason:
            return reason
        linked = (error.__cause__, error.__context__, getattr(error, "reason", None), *error.args)
        stack.extend(item for item in linked if isinstance(item, BaseException))
    return "connection error"


def _os_error_reason(error: BaseException) -> str | None:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, socket.gaierror):
        return "DNS lookup failed"
    if isinstance(error, ssl.SSLError | requests.exceptions.SSLError):
        return "TLS error"
    return None


class SlackWebhookChannel:
    """Slack incoming webhook: Block Kit message with owner mention and a CRM button.

    Incoming webhooks accept no idempotency key: a crash while a message is in flight (sent, its
    answer not yet recorded) repeats that one message on the next run.
    """

    name: str = "slack"

    def __init__(
        self,
        url: str,
        timeout_s: float = 10,
        max_attempts: int = 4,
        backoff_s: float = 1.0,
        max_retry_after_s: float = 30,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        policy = RetryPolicy(timeout_s, max_attempts, backoff_s, max_retry_after_s)
        self._http = _HttpSender(self.name, url, None, policy, session, sleep)

    def send(self, message: AlertMessage | Digest) -> DeliveryResult:
        return self._http.post(slack_payload(message), _item_name(message))

    def __repr__(self) -> str:
        return "SlackWebhookChannel(url=<redacted>)"


class WebhookChannel:
    """Generic JSON webhook for CRMs, Zapier-likes or in-house services.

    Each request carries `Idempotency-Key` (the same on every retry and after a crash), so a
    receiver that honours it shows a message re-sent after a crash once.
    """

    name: str = "webhook"

    def __init__(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10,
        max_attempts: int = 4,
        backoff_s: float = 1.0,
        max_retry_after_s: float = 30,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        policy = RetryPolicy(timeout_s, max_attempts, backoff_s, max_retry_after_s)
        self._http = _HttpSender(self.name, url, headers, policy, session, sleep)

    def send(self, message: AlertMessage | Digest) -> DeliveryResult:
        key = {"Idempotency-Key": idempotency_key(message)}
        return self._http.post(webhook_payload(message), _item_name(message), key)

    def __repr__(self) -> str:
        return "WebhookChannel(url=<redacted>)"


# --- configuration ------------------------------------------------------------------------------

_RETRY_SETTINGS: dict[str, Callable[[Any], float | int]] = {
    "timeout_s": float,
    "max_attempts": int,
    "backoff_s": float,
    "max_retry_after_s": float,
}


def channel_from_config(
    kind: str, settings: Mapping[str, Any], env: Mapping[str, str], outbox_dir: Path
) -> Channel:
    """A channel from `icp.yaml` settings; URLs (the secrets) come only from the environment."""
    kind = kind.strip().lower()
    if kind == "outbox":
        path = settings.get("path")
        return OutboxChannel(Path(path) if path else outbox_dir / "alerts.jsonl")
    if kind == "slack":
        return SlackWebhookChannel(
            _url_from_env(kind, settings, env, SLACK_URL_ENV), **_retry_settings(settings)
        )
    if kind == "webhook":
        return WebhookChannel(
            _url_from_env(kind, settings, env, WEBHOOK_URL_ENV), **_retry_settings(settings)
        )
    raise ValueError(f"unknown alert channel kind {kind!r} (expected outbox, slack or webhook)")


def _url_from_env(kind: str, settings: Mapping[str, Any], env: Mapping[str, str], default_var: str) -> str:
    """The URL from the named variable; errors name the variable, never echo its value."""
    variable = str(settings.get("url_env") or default_var)
    url = (env.get(variable) or "").strip()
    if not url:
        raise ValueError(f"{kind} channel: environment variable {variable} is not set")
    if not url.lower().startswith(("https://", "http://")):
        raise ValueError(f"{kind} channel: environment variable {variable} does not hold an http(s) URL")
    register_url(url)
    return url


def _retry_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: convert(settings[key])
        for key, convert in _RETRY_SETTINGS.items()
        if settings.get(key) is not None
    }
