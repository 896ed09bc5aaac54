"""Secrets known to the run, and `scrub`, which takes them out of any error text before it leaves a client.

An API may echo the request in its error body (the Authorization header, the query string with an
API key), and exception texts carry URLs (a Slack webhook URL *is* its secret, a DSN holds a
password). Every secret is registered where it is read from the environment; every client builds
its error text through `scrub`, and so do the last nets (the `icp` one-line failure, ops notices).
Patterns (`Bearer x`, `Authorization: x`, `api_key=x`, `user:password@`) catch what was never
registered. Errors only: nothing here runs per row.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
# Shorter values would mask ordinary words in messages; real tokens and keys are longer, and a short
# password in a DSN is still caught by the `user:password@` and `password=` patterns.
MIN_SECRET_LENGTH = 8
# A URL path shorter than this is no secret ("/", "/hooks"); a Slack webhook path is about 60 chars.
MIN_SECRET_PATH = 12

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization / Proxy-Authorization headers as echoed in text, JSON or a Python dict repr.
    (
        re.compile(
            r"""(?i)(\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:(?:bearer|basic|token)\s+)?[^\s"',;}]+"""
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=!:-]{4,}"), rf"\1 {MASK}"),
    # Credentials in query strings and form bodies.
    (
        re.compile(
            r"(?i)([?&;\s\"']"
            r"(?:api[_-]?key|apikey|key|token|access[_-]?token|refresh[_-]?token|client[_-]?secret|secret"
            r"|password|passwd|pwd|sig|signature|auth)=)[^&;,)\s\"'<>]+"
        ),
        rf"\1{MASK}",
    ),
    # Header-style keys (X-Api-Key: x) and key=value DSNs (password=x).
    (
        re.compile(r"""(?i)(\b(?:x-)?api[_-]?key["']?\s*:\s*["']?)[^\s"',;}]+"""),
        rf"\1{MASK}",
    ),
    (re.compile(r"(?i)(\bpassword\s*=\s*)[^\s&;,)\"']+"), rf"\1{MASK}"),
    # user:password@host in URLs and DSNs.
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\1{MASK}@"),
)


def register(*values: str | None) -> None:
    """Remember secret values (tokens, keys, passwords) so `scrub` masks them in any later text."""
    added = set()
    for value in values:
        text = (value or "").strip()
        if len(text) < MIN_SECRET_LENGTH:
            continue
        # The forms an echo may take: as sent, URL-encoded, JSON-escaped.
        added.update({text, quote(text, safe=""), quote(text, safe="/"), json.dumps(text)[1:-1]})
    _add(added)


def register_url(url: str | None) -> None:
    """Remember a URL that is itself a secret (a webhook) or holds one (a DSN's password, a key in the query).

    A URL with `user:password@` (a DSN) registers the password, so host and database still show in
    errors; any other URL is the secret as a whole, with its path and query (what a server echoes
    back: `POST /services/T0/B0/XXXX`). Query values are registered either way.
    """
    text = (url or "").strip()
    if not text:
        return
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        register(text)
        return
    if password:
        register(password, unquote(password))
    else:
        register(text)
        if len(parts.path) >= MIN_SECRET_PATH:
            register(parts.path, parts.path + (f"?{parts.query}" if parts.query else ""))
    for pair in parts.query.split("&") if parts.query else []:
        _, _, value = pair.partition("=")
        register(value, unquote(value))


# Environment variables whose names say they hold a secret (the defaults and the usual spellings).
_SECRET_NAME = re.compile(r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|_KEY$|WEBHOOK|CREDENTIALS|DSN)")


def register_environment(env: Mapping[str, str], names: Iterable[str | None] = ()) -> None:
    """Register the values of `names` and of every variable whose name says it holds a secret.

    For the last nets (the CLI, ops notices), which may run in a process where no client has read
    its secret yet.
    """
    wanted = {name for name in names if name}
    for name, value in env.items():
        if name in wanted or _SECRET_NAME.search(name):
            if "://" in value:
                register_url(value)
            else:
                register(value)


def secret_env_names(config: object) -> set[str]:
    """The environment variables an `IcpConfig` names as holding secrets (tokens, URLs, DSNs)."""
    sources = getattr(config, "sources", None)
    crm = getattr(sources, "crm", None)
    feeds = getattr(sources, "feeds", None) or {}
    channels = getattr(getattr(config, "alerts", None), "channels", None) or ()
    writeback = getattr(config, "writeback", None)
    names = {
        getattr(crm, "token_env", None),
        getattr(getattr(config, "publish", None), "credentials_env", None),
        writeback.resolved_token_env() if writeback is not None else None,
        *(getattr(feed, "token_env", None) for feed in feeds.values()),
        *(getattr(channel, "url_env", None) for channel in channels),
    }
    return {name for name in names if name}


def scrub(text: object) -> str:
    """`text` with every registered secret and every credential-shaped pattern replaced by `***`."""
    result = str(text)
    known = _known_pattern()
    if known is not None:
        result = known.sub(MASK, result)
    for pattern, replacement in _PATTERNS:
        result = pattern.sub(replacement, result)
    return result


def forget_all() -> None:
    """Drop every registered secret (tests)."""
    global _pattern
    with _lock:
        _known.clear()
        _pattern = None


def _add(values: set[str]) -> None:
    global _pattern
    with _lock:
        fresh = values - _known
        if fresh:
            _known.update(fresh)
            _pattern = None


def _known_pattern() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _known:
            # Longest first, so a URL is masked whole before its path or password alone.
            _pattern = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))
        return _pattern
