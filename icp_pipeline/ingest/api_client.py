"""HTTP for source APIs: bounded retries that honour Retry-After, then JSON or one clear error.

HubSpot, Salesforce and the rest_api feeds all send through `RetryingSession`, so a 429 or a 5xx
is handled the same way everywhere: a 429 waits what `Retry-After` asks (a wait beyond the cap
fails at once instead of stalling the night), a 5xx or a dropped connection backs off
exponentially, and after the last attempt the caller gets one line naming the source, the
endpoint path and the status. Messages never carry a query string or a token: an API key may
travel in the query, and requests' own exception texts include the full URL. A server that echoes
the request (its Authorization header, the query) in its error body is scrubbed too: every message
is built through `icp_pipeline.secrets.scrub`, and `require_env` registers each secret it reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from icp_pipeline.config import HttpRetry
from icp_pipeline.errors import IcpConfigError, IcpInputError
from icp_pipeline.retries import retry_after_seconds
from icp_pipeline.secrets import register, scrub

Sleep = Callable[[float], None]
RETRYABLE_EXCEPTIONS = (requests.ConnectionError, requests.Timeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for a response and how to retry one that did not work out."""

    timeout_s: float = 60.0
    max_attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_retry_after_s: float = 300.0

    @classmethod
    def from_config(cls, config: HttpRetry) -> RetryPolicy:
        return cls(
            timeout_s=config.timeout_s,
            max_attempts=config.max_attempts,
            backoff_s=config.backoff_s,
            max_backoff_s=config.max_backoff_s,
            max_retry_after_s=config.max_retry_after_s,
        )

    def backoff(self, attempt: int) -> float:
        """Exponential wait after the given (1-based) failed attempt, capped."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


def is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


class RetryingSession(requests.Session):
    """A requests session whose every send retries 429 and 5xx within a `RetryPolicy`.

    Retrying in `send` (not `request`) also covers dlt's RESTClient, which prepares requests
    itself and raises from a response hook: an `HTTPError` carrying a response is treated like
    the response.
    """

    def __init__(self, policy: RetryPolicy, sleep: Sleep = time.sleep) -> None:
        super().__init__()
        self.policy = policy
        self.sleep = sleep

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.policy.timeout_s)
        attempt = 1
        while True:
            error: requests.HTTPError | None = None
            try:
                response = super().send(request, **kwargs)
            except requests.HTTPError as exc:
                if exc.response is None:
                    raise
                response, error = exc.response, exc
            except RETRYABLE_EXCEPTIONS:
                if attempt >= self.policy.max_attempts:
                    raise
                self.sleep(self.policy.backoff(attempt))
                attempt += 1
                continue
            wait = self._retry_wait(response, attempt)
            if wait is None:
                if error is not None:
                    raise error
                return response
            response.close()
            self.sleep(wait)
            attempt += 1

    def _retry_wait(self, response: requests.Response, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to hand this response back."""
        if not is_retryable(response.status_code) or attempt >= self.policy.max_attempts:
            return None
        asked = retry_after_seconds(response.headers.get("Retry-After"))
        if asked is None:
            return self.policy.backoff(attempt)
        if asked > self.policy.max_retry_after_s:
            return None
        return asked


def require_env(env: Mapping[str, str], name: str, what: str, secret: bool = True) -> str:
    """A secret (registered for `scrub`) or a URL from the environment; missing is a config error
    naming the variable only."""
    value = env.get(name, "").strip()
    if not value:
        raise IcpConfigError(f"{what}: environment variable {name} is not set")
    if secret:
        register(value)
    return value


def endpoint_of(url: str) -> str:
    """The path of a URL, for messages: no host credentials, no query string."""
    return urlsplit(url).path or "/"


def describe_exception(exc: BaseException) -> str:
    """A short reason for a transport failure that never repeats the URL (it may hold a key)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed (server unreachable or connection dropped)"
    if isinstance(exc, json.JSONDecodeError | requests.JSONDecodeError):
        return f"returned invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    return exc.__class__.__name__


def _server_message(response: requests.Response) -> str:
    """The server's own short error text (HubSpot `message`, Salesforce `[{"message", "errorCode"}]`)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    first = body[0] if isinstance(body, list) and body else body
    if not isinstance(first, dict):
        return ""
    parts = [str(first[key]) for key in ("errorCode", "category", "message") if first.get(key)]
    # Scrub before clipping, so a clipped secret cannot slip past as an unrecognised prefix.
    return scrub(": ".join(parts))[:200]


def describe_status(response: requests.Response, policy: RetryPolicy, auth_hint: str) -> str:
    """Why a final response is an error, with what to do about it where that is known."""
    status = response.status_code
    said = _server_message(response)
    detail = f" ({said})" if said else ""
    if status in (401, 403):
        return f"HTTP {status}, not authorized{detail}; {auth_hint}"
    if status == 429:
        asked = retry_after_seconds(response.headers.get("Retry-After"))
        if asked is not None and asked > policy.max_retry_after_s:
            return (
                f"HTTP 429, rate limited: the server asks to wait {asked:.0f} s, more than "
                f"retry.max_retry_after_s ({policy.max_retry_after_s:g} s){detail}"
            )
        return f"HTTP 429, still rate limited after {policy.max_attempts} attempt(s){detail}"
    if status >= 500:
        return f"HTTP {status}, server error after {policy.max_attempts} attempt(s){detail}"
    return f"HTTP {status}{detail}"


class JsonApi:
    """One API's requests: base URL, auth header and retry policy; JSON back or an `IcpInputError`.

    The error names the source and the endpoint path (e.g. `hubspot: POST
    /crm/v3/objects/companies/search: HTTP 503, server error after 5 attempt(s)`), which is the
    line `icp run` prints.
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        headers: Mapping[str, str],
        policy: RetryPolicy,
        auth_hint: str,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/") + "/"
        self.policy = policy
        self.auth_hint = auth_hint
        self.session = RetryingSession(policy, sleep)
        self.session.headers.update(headers)

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base_url, path_or_url.lstrip("/")) if "://" not in path_or_url else path_or_url

    def get(
        self,
        path_or_url: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self._call("GET", path_or_url, params=params, headers=headers)

    def post(self, path_or_url: str, body: Mapping[str, Any]) -> Any:
        return self._call("POST", path_or_url, json=body)

    def _call(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        url = self.url(path_or_url)
        where = f"{self.source}: {method} {endpoint_of(url)}"
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise IcpInputError(scrub(f"{where}: {describe_exception(exc)}")) from None
        if response.status_code >= 400:
            reason = describe_status(response, self.policy, self.auth_hint)
            raise IcpInputError(scrub(f"{where}: {reason}"))
        try:
            return response.json()
        except ValueError as exc:
            raise IcpInputError(scrub(f"{where}: {describe_exception(exc)}")) from None
