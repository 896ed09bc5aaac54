"""HTTP for CRM writes, shared by HubSpot and Salesforce: retries, Retry-After and a per-run call budget.

Every request sent counts against the budget, retries included, because CRM API limits count them
too. Errors carry categories and the CRM's own short messages, never the token or exception texts;
a CRM that echoes the request in its error body is scrubbed (`icp_pipeline.secrets.scrub`).
Updates are idempotent (same values, same ids), so retrying a request that timed out is safe.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from icp_pipeline.config import HttpRetry
from icp_pipeline.errors import IcpConfigError
from icp_pipeline.retries import retry_after_seconds
from icp_pipeline.secrets import register, scrub

logger = logging.getLogger(__name__)
MESSAGE_LIMIT = 300


class CallBudgetExhausted(Exception):
    """The run's API-call budget is spent; what is left waits for the next run."""


class CrmUnavailable(Exception):
    """Stop writing for tonight: rate limited past the cap, or the CRM keeps failing."""


@dataclass(frozen=True)
class CrmResponse:
    status: int
    body: Any


@dataclass
class BatchOutcome:
    """Per-record result of one call: ids the CRM confirmed, and ids it refused with the reason.

    `rejected` is set when the CRM refused the whole call (e.g. HTTP 400), not single records.
    """

    pushed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rejected: str | None = None


class CrmWriter(Protocol):
    """One CRM's batch update call; `blank` is the value that clears a field there."""

    name: str
    batch_limit: int
    blank: Any

    def send_batch(self, ids: Sequence[str], records: Sequence[Mapping[str, Any]]) -> BatchOutcome: ...


class CrmClient:
    """Sends JSON with a bearer token; retries 429 (honouring Retry-After), 5xx and network errors."""

    def __init__(
        self,
        crm: str,
        token: str,
        token_env: str,
        retry: HttpRetry,
        max_calls: int,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.crm, self._token_env, self._retry, self._sleep = crm, token_env, retry, sleep
        self._token = token
        register(token)
        self.max_calls, self.calls = max_calls, 0
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
        }
        self._session = session or requests.Session()

    @property
    def budget_left(self) -> int:
        return max(0, self.max_calls - self.calls)

    def send(self, method: str, url: str, payload: Mapping[str, Any]) -> CrmResponse:
        """The CRM's answer to a request; raises when the budget is spent or the CRM stays unavailable.

        2xx and 4xx answers (other than 401 and 429) are returned for the writer to read per record.
        """
        body = json.dumps(payload, ensure_ascii=False, default=_json_default).encode("utf-8")
        reason = "not attempted"
        for attempt in range(1, self._retry.max_attempts + 1):
            if self.calls >= self.max_calls:
                raise CallBudgetExhausted(f"API-call budget of {self.max_calls} spent")
            self.calls += 1
            wait: float | None = None
            try:
                with self._session.request(
                    method,
                    url,
                    data=body,
                    headers=self._headers,
                    timeout=self._retry.timeout_s,
                    allow_redirects=False,
                ) as response:
                    status = response.status_code
                    if status == 401:
                        detail = error_detail(_json(response))
                        raise IcpConfigError(
                            scrub(
                                f"{self.crm} rejected the token (HTTP 401{detail}); check {self._token_env}"
                            )
                        )
                    if status == 429:
                        reason = "rate limited (HTTP 429)"
                        wait = retry_after_seconds(response.headers.get("Retry-After"))
                        if wait is not None and wait > self._retry.max_retry_after_s:
                            raise CrmUnavailable(
                                f"{self.crm} rate limit: Retry-After {math.ceil(wait)} s is beyond "
                                f"the {self._retry.max_retry_after_s:g} s cap"
                            )
                    elif status >= 500:
                        reason = f"HTTP {status}"
                    else:
                        return CrmResponse(status, _json(response))
            except requests.Timeout:
                reason = "timeout"
            except requests.ConnectionError:
                reason = "connection error"
            if attempt < self._retry.max_attempts:
                delay = wait if wait is not None else self._backoff(attempt)
                logger.info("%s: %s, retrying in %.1f s (attempt %d)", self.crm, reason, delay, attempt)
                self._sleep(delay)
        attempts = self._retry.max_attempts
        raise CrmUnavailable(f"{self.crm}: {reason} after {attempts} attempt{'' if attempts == 1 else 's'}")

    def _backoff(self, attempt: int) -> float:
        return min(self._retry.backoff_s * 2 ** (attempt - 1), self._retry.max_backoff_s)

    def __repr__(self) -> str:
        return f"CrmClient(crm={self.crm!r}, token=<redacted>, calls={self.calls}/{self.max_calls})"


def error_detail(body: Any) -> str:
    """The CRM's own short error text (HubSpot `category: message`, Salesforce `errorCode: message`)."""
    items = body if isinstance(body, list) else [body]
    parts = []
    for item in items[:3]:
        if not isinstance(item, Mapping):
            continue
        code = item.get("category") or item.get("errorCode") or item.get("statusCode")
        message = item.get("message")
        parts.append(": ".join(str(part) for part in (code, message) if part))
    text = "; ".join(part for part in parts if part)
    return f", {clip(text)}" if text else ""


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """One line of at most `limit` characters, scrubbed of secrets before it is cut."""
    text = scrub(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _json_default(value: Any) -> Any:
    """numpy scalars and dates from pandas frames."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
