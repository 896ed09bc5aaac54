"""External feeds over HTTP through dlt's rest_api source, mapped onto the canonical feed tables.

icp.yaml says per feed where it lives, how to sign in (bearer token or API key from a named
environment variable), how it pages (any rest_api paginator) and where the records sit
(`data_selector`); `fields` maps canonical columns to provider fields. The records then become
raw rows like a file's: text, lineage columns, other top-level provider fields kept as columns.
A feed is read whole each night (providers rarely offer a change filter); merging on the key
replaces what changed.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import requests
from dlt.extract.resource import DltResource
from dlt.sources.rest_api import rest_api_resources

from icp_pipeline.config import RestFeedConfig
from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.errors import IcpError, IcpInputError
from icp_pipeline.ingest.api_client import (
    RetryingSession,
    RetryPolicy,
    Sleep,
    describe_exception,
    describe_status,
    endpoint_of,
    require_env,
)
from icp_pipeline.ingest.api_tables import api_stats, raw_api_resource, raw_chunk, rows_of, text_table
from icp_pipeline.ingest.file_drop import TableLoadStats
from icp_pipeline.secrets import scrub

CHUNK_RECORDS = 5_000
_QUERY = re.compile(r"\?\S*")


def field_at(record: Mapping[str, Any], dotted: str) -> Any:
    """A provider field by dotted path (`company.domain`); missing anywhere on the way is None."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def map_records(records: Sequence[Mapping[str, Any]], fields: Mapping[str, str]) -> pa.Table:
    """Mapped canonical columns first, then every other top-level provider field as delivered."""
    columns: dict[str, list[Any]] = {
        canonical: [field_at(r, path) for r in records] for canonical, path in fields.items()
    }
    consumed = {path.split(".")[0] for path in fields.values()}
    provider_keys = dict.fromkeys(key for record in records for key in record)
    for key in provider_keys:
        if key not in consumed:
            columns.setdefault(key, [r.get(key) for r in records])
    return text_table(columns)


def rest_api_config(
    table: str, feed: RestFeedConfig, secret: str | None, session: requests.Session
) -> dict[str, Any]:
    """The rest_api source configuration of one feed: one endpoint, our retrying session."""
    client: dict[str, Any] = {"base_url": feed.base_url, "session": session}
    if feed.headers:
        client["headers"] = dict(feed.headers)
    if feed.auth == "bearer":
        client["auth"] = {"type": "bearer", "token": secret}
    elif feed.auth == "api_key":
        client["auth"] = {
            "type": "api_key",
            "name": feed.api_key_name,
            "api_key": secret,
            "location": feed.api_key_location,
        }
    endpoint: dict[str, Any] = {"path": feed.path, "method": feed.method}
    if feed.params:
        endpoint["params"] = dict(feed.params)
    if feed.body:
        endpoint["json"] = dict(feed.body)
    if feed.paginator is not None:
        endpoint["paginator"] = feed.paginator
    if feed.data_selector:
        endpoint["data_selector"] = feed.data_selector
    return {"client": client, "resources": [{"name": f"{table}_provider", "endpoint": endpoint}]}


def _failure(table: str, feed: RestFeedConfig, exc: BaseException, policy: RetryPolicy) -> str:
    """One line for a failed feed read: the innermost HTTP or JSON cause, never a URL's query or a secret."""
    return scrub(_failure_line(table, feed, exc, policy))


def _failure_line(table: str, feed: RestFeedConfig, exc: BaseException, policy: RetryPolicy) -> str:
    where = (
        f"feed {table}: {feed.method} {endpoint_of(feed.base_url.rstrip('/') + '/' + feed.path.lstrip('/'))}"
    )
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, requests.HTTPError) and cause.response is not None:
            hint = (
                f"check the secret in {feed.token_env}"
                if feed.token_env
                else "the feed needs auth in icp.yaml"
            )
            return f"{where}: {describe_status(cause.response, policy, hint)}"
        if isinstance(cause, requests.RequestException | ValueError) and not isinstance(cause, IcpError):
            return f"{where}: {describe_exception(cause)}"
        cause = cause.__cause__ or cause.__context__
    first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[-1]
    return f"{where}: {_QUERY.sub('?…', first_line)[:300]}"


def _feed_rows(
    table: str,
    contract: TableContract,
    feed: RestFeedConfig,
    secret: str | None,
    policy: RetryPolicy,
    sleep: Sleep,
    loaded_at: dt.datetime,
    stats: dict[str, TableLoadStats],
) -> Iterator[pa.Table]:
    label = f"feed:{table}"
    table_stats = api_stats(stats, table, label)
    session = RetryingSession(policy, sleep)
    (provider,) = rest_api_resources(rest_api_config(table, feed, secret, session))  # type: ignore[arg-type]
    buffer: list[Mapping[str, Any]] = []

    def flush() -> pa.Table:
        mapped = map_records(buffer, feed.fields)
        missing = [c for c in contract.required_columns if c not in mapped.column_names]
        if missing:
            raise IcpInputError(
                f"feed {table}: no provider field for required column '{missing[0]}'; "
                f"map it under sources.feeds.{table}.fields"
            )
        table_stats.rows_in_file += mapped.num_rows
        table_stats.rows_sent += mapped.num_rows
        buffer.clear()
        return raw_chunk(mapped, contract, label, loaded_at)

    failure: str | None = None
    try:
        for record in provider:
            if not isinstance(record, Mapping):
                raise IcpInputError(f"feed {table}: records are not JSON objects; check data_selector")
            buffer.append(record)
            if len(buffer) >= CHUNK_RECORDS:
                yield flush()
    except IcpError:
        raise
    except Exception as exc:
        failure = _failure(table, feed, exc, policy)
    if failure is not None:
        # Raised outside the handler: dlt's trace follows even a suppressed context, and requests'
        # HTTPError text holds the full URL, query key included.
        raise IcpInputError(failure)
    if buffer:
        yield flush()


def feed_resource(
    table: str,
    contract: TableContract,
    feed: RestFeedConfig,
    loaded_at: dt.datetime,
    stats: dict[str, TableLoadStats],
    env: Mapping[str, str],
    sleep: Sleep = time.sleep,
) -> DltResource:
    """The raw resource of one configured feed; its secret is read now, the provider only at extract."""
    secret = require_env(env, feed.token_env, f"sources.feeds.{table}") if feed.token_env else None
    policy = RetryPolicy.from_config(feed.retry)
    return raw_api_resource(
        table, rows_of(_feed_rows, table, contract, feed, secret, policy, sleep, loaded_at, stats)
    )
