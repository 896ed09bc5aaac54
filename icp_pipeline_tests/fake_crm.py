"""Local stand-ins for HubSpot, Salesforce and a data provider, speaking their request and response shapes.

Each fake is a `ThreadingHTTPServer` on 127.0.0.1, port 0, in a daemon thread. It checks the
`Authorization: Bearer` header (401 in the provider's own error shape without it), pages like
the real API (HubSpot `results` / `paging.next.after` with the search endpoint's 200-per-page and
10,000-result limits; Salesforce `records` / `done` / `nextRecordsUrl` / `totalSize`), filters on
last-modified time like the real search and SOQL, records every request it saw, and plays scripted
faults (429 with Retry-After, 5xx, malformed JSON) on the next matching request.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import duckdb
import pandas as pd

from icp_pipeline.config import IcpConfig, contracts_dir
from icp_pipeline.contracts.spec import load_contracts
from icp_pipeline.errors import IcpError
from icp_pipeline.ingest.file_drop import TableLoadStats, file_drop_pipeline
from icp_pipeline.ingest.sources import build_raw_source

Response = tuple[int, Any, dict[str, str]]


@dataclass
class SeenRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class Fault:
    """A scripted answer for the next request(s) whose method and path match."""

    method: str
    path_prefix: str
    status: int
    body: bytes
    headers: dict[str, str]
    times: int = 1
    skip: int = 0


def iso_z(value: Any) -> str | None:
    """A timestamp as HubSpot writes it: `2026-01-02T03:04:05.000Z`; empty stays None."""
    if value is None or (isinstance(value, str) and not value.strip()) or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def sf_datetime(value: Any) -> str | None:
    """A timestamp as Salesforce writes it: `2026-01-02T03:04:05.000+0000`."""
    text = iso_z(value)
    return None if text is None else text[:-1] + "+0000"


def now_z() -> str:
    return iso_z(pd.Timestamp.now(tz="UTC")) or ""


@functools.cache
def _millis(value: Any) -> int | None:
    """A HubSpot filter or property value (epoch milliseconds or ISO) as epoch milliseconds."""
    if value is None or value == "":
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    stamp = pd.Timestamp(text)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return int(stamp.timestamp() * 1000)


class FakeApi:
    """Server plumbing shared by the fakes: auth, faults, request log, JSON answers."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[SeenRequest] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                api._serve(self, "GET")

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                api._serve(self, "POST")

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int = 500,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        skip: int = 0,
    ) -> None:
        """After letting `skip` matching requests through, answer the next `times` with this status,
        body (bytes as is) and headers."""
        raw = body if isinstance(body, bytes) else json.dumps(body or {"message": "scripted fault"}).encode()
        self.faults.append(Fault(method, path_prefix, status, raw, dict(headers or {}), times, skip))

    def seen(self, method: str | None = None, path_prefix: str = "") -> list[SeenRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and r.path.startswith(path_prefix)
        ]

    def authorized(self, headers: Mapping[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.token}"

    def unauthorized(self) -> Response:
        return 401, {"message": "not authorized"}, {}

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: dict[str, str]
    ) -> Response:
        raise NotImplementedError

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        seen = SeenRequest(method, parts.path, parse_qs(parts.query), body, headers)
        with self._lock:
            self.requests.append(seen)
        if not self.authorized(headers):
            status, payload, extra = self.unauthorized()
            self._reply(handler, status, json.dumps(payload).encode(), extra)
            return
        with self._lock:
            fault = next(
                (f for f in self.faults if f.method == method and parts.path.startswith(f.path_prefix)), None
            )
            if fault is not None and fault.skip > 0:
                fault.skip -= 1
                fault = None
            elif fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
        if fault is not None:
            self._reply(handler, fault.status, fault.body, fault.headers)
        else:
            with self._lock:
                status, payload, extra = self.handle(method, parts.path, seen.query, body, headers)
            self._reply(handler, status, json.dumps(payload).encode(), extra)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, raw: bytes, headers: Mapping[str, str]) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json;charset=utf-8")
        handler.send_header("Content-Length", str(len(raw)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(raw)


MODIFIED = {
    "companies": "hs_lastmodifieddate",
    "contacts": "lastmodifieddate",
    "deals": "hs_lastmodifieddate",
}
DEFAULT_PROPERTIES = {
    "companies": ("name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"),
    "contacts": ("firstname", "lastname", "email", "createdate", "lastmodifieddate", "hs_object_id"),
    "deals": (
        "dealname",
        "amount",
        "closedate",
        "pipeline",
        "dealstage",
        "createdate",
        "hs_lastmodifieddate",
        "hs_object_id",
    ),
}
PRIMARY_COMPANY = {"contacts": 1, "deals": 5}
UNLABELED_COMPANY = {"contacts": 279, "deals": 341}


@dataclass
class HubSpotData:
    """A portal's records: objects by type and id, company associations, deal pipelines, owners."""

    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"companies": {}, "contacts": {}, "deals": {}}
    )
    companies_of: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {"contacts": {}, "deals": {}}
    )
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    owners: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, object_type: str, record_id: str, properties: Mapping[str, Any], companies: Iterable[str] = ()
    ) -> None:
        props = {k: (None if v is None else str(v)) for k, v in properties.items()}
        props["hs_object_id"] = record_id
        created = props.get("createdate") or now_z()
        modified = props.get(MODIFIED[object_type]) or created
        props[MODIFIED[object_type]] = modified
        self.objects[object_type][record_id] = {
            "id": record_id,
            "properties": props,
            "createdAt": created,
            "updatedAt": modified,
            "archived": False,
        }
        if object_type in self.companies_of:
            self.companies_of[object_type][record_id] = list(companies)


def deal_pipeline(stage_labels: Iterable[str], won: Iterable[str], lost: Iterable[str]) -> dict[str, Any]:
    """A deal pipeline whose stages carry HubSpot's metadata strings (isClosed, probability)."""
    won_set, lost_set = {w.lower() for w in won}, {x.lower() for x in lost}
    stages = []
    for order, label in enumerate(dict.fromkeys(stage_labels)):
        closed = label.lower() in won_set | lost_set
        probability = "1.0" if label.lower() in won_set else "0.0" if label.lower() in lost_set else "0.4"
        stages.append(
            {
                "id": stage_id(label),
                "label": label,
                "displayOrder": order,
                "metadata": {"isClosed": "true" if closed else "false", "probability": probability},
                "createdAt": "2020-05-12T08:00:00.000Z",
                "updatedAt": "2020-05-12T08:00:00.000Z",
                "archived": False,
            }
        )
    return {
        "id": "default",
        "label": "Sales Pipeline",
        "displayOrder": 0,
        "stages": stages,
        "archived": False,
    }


def stage_id(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", label.lower())


def hubspot_data_from_drop(drop: Path) -> HubSpotData:
    """The CRM tables of a file drop as a HubSpot portal: the same ids, HubSpot-shaped values."""
    read = lambda name: pd.read_csv(drop / "crm" / f"{name}.csv", dtype=str, keep_default_na=False)  # noqa: E731
    data = HubSpotData()
    for row in read("accounts").to_dict("records"):
        data.add(
            "companies",
            row["account_id"],
            {
                "name": row["name"] or None,
                "domain": row["domain"] or None,
                "industry": row["industry"] or None,
                "numberofemployees": row["employee_count"] or None,
                "annualrevenue": row["annual_revenue"] or None,
                "country": row["country"] or None,
                "hubspot_owner_id": row["owner_id"] or None,
                "createdate": iso_z(row["created_at"]),
                "hs_lastmodifieddate": iso_z(row["updated_at"]),
            },
        )
    for row in read("contacts").to_dict("records"):
        first, _, last = row["email"].split("@")[0].partition(".")
        data.add(
            "contacts",
            row["contact_id"],
            {
                "firstname": first.title() or None,
                "lastname": last.title() or None,
                "email": row["email"] or None,
                "jobtitle": row["title"] or None,
                "createdate": iso_z(row["created_at"]),
                "lastmodifieddate": iso_z(row["updated_at"]),
            },
            [row["account_id"]] if row["account_id"] else [],
        )
    deals = read("opportunities")
    data.pipelines = [
        deal_pipeline(sorted(set(deals["stage"])), ["closed won", "won"], ["closed lost", "lost"])
    ]
    for row in deals.to_dict("records"):
        data.add(
            "deals",
            row["opportunity_id"],
            {
                "dealname": f"Deal {row['opportunity_id']}",
                "amount": row["amount"] or None,
                "dealstage": stage_id(row["stage"]),
                "pipeline": "default",
                "createdate": iso_z(row["created_at"]),
                "closedate": iso_z(row["closed_at"]),
                "hs_lastmodifieddate": iso_z(row["updated_at"]),
            },
            [row["account_id"]] if row["account_id"] else [],
        )
    owners_file = drop / "crm" / "owners.csv"
    if owners_file.exists():
        for number, row in enumerate(read("owners").to_dict("records"), start=1):
            first, _, last = row["name"].partition(" ")
            data.owners.append(
                {
                    "id": row["owner_id"],
                    "email": row["email"] or None,
                    "type": "PERSON",
                    "firstName": first,
                    "lastName": last,
                    "userId": 9000 + number,
                    "createdAt": "2024-01-01T00:00:00.000Z",
                    "updatedAt": "2024-01-01T00:00:00.000Z",
                    "archived": row["active"].lower() == "false",
                }
            )
    return data


def _json_id(value: str) -> Any:
    """Association targets come back as numbers in HubSpot; keep non-numeric test ids as strings."""
    return int(value) if value.isdigit() else value


class FakeHubSpot(FakeApi):
    """HubSpot's CRM v3 search, v4 association batch read, deal pipelines and owners."""

    def __init__(self, data: HubSpotData, token: str = "pat-test", result_cap: int = 10_000) -> None:
        super().__init__(token)
        self.data = data
        self.result_cap = result_cap
        self.results: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def unauthorized(self) -> Response:
        return (
            401,
            {
                "status": "error",
                "message": "Authentication credentials not found.",
                "correlationId": "00000000-0000-0000-0000-000000000000",
                "category": "INVALID_AUTHENTICATION",
            },
            {},
        )

    def modify(self, object_type: str, record_id: str, **properties: Any) -> str:
        """Change a record as a user would: properties set, last-modified time now."""
        record = self.data.objects[object_type][record_id]
        stamp = now_z()
        record["properties"].update({k: None if v is None else str(v) for k, v in properties.items()})
        record["properties"][MODIFIED[object_type]] = stamp
        record["updatedAt"] = stamp
        self.results.clear()
        return stamp

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: dict[str, str]
    ) -> Response:
        search = re.fullmatch(r"/crm/v3/objects/(\w+)/search", path)
        if method == "POST" and search and search.group(1) in self.data.objects:
            return self._search(search.group(1), body or {})
        assoc = re.fullmatch(r"/crm/v4/associations/(\w+)/companies/batch/read", path)
        if method == "POST" and assoc and assoc.group(1) in self.data.companies_of:
            return self._associations(assoc.group(1), body or {})
        if method == "GET" and path == "/crm/v3/pipelines/deals":
            return 200, {"results": self.data.pipelines}, {}
        if method == "GET" and path == "/crm/v3/owners":
            return self._owners(query)
        return (
            404,
            {"status": "error", "message": f"Unable to route {method} {path}", "category": "NOT_FOUND"},
            {},
        )

    def _search(self, object_type: str, body: Mapping[str, Any]) -> Response:
        limit = int(body.get("limit") or 10)
        after = int(body.get("after") or 0)
        if limit > 200:
            return 400, _validation_error("limit must be less than or equal to 200"), {}
        if after + limit > self.result_cap:
            return 400, _validation_error(f"paging beyond {self.result_cap} results is not supported"), {}
        query = (object_type, json.dumps([body.get("filterGroups"), body.get("sorts")], sort_keys=True))
        if query not in self.results:
            self.results[query] = self._filtered_sorted(object_type, body)
        records = self.results[query]
        wanted = list(
            dict.fromkeys(
                [
                    *(body.get("properties") or DEFAULT_PROPERTIES[object_type]),
                    "hs_object_id",
                    "createdate",
                    MODIFIED[object_type],
                ]
            )
        )
        page = records[after : after + limit]
        results = [
            {
                "id": r["id"],
                "properties": {name: r["properties"].get(name) for name in wanted},
                "createdAt": r["createdAt"],
                "updatedAt": r["updatedAt"],
                "archived": False,
            }
            for r in page
        ]
        payload: dict[str, Any] = {"total": len(records), "results": results}
        if after + limit < len(records):
            payload["paging"] = {
                "next": {"after": str(after + limit), "link": f"{self.url}?after={after + limit}"}
            }
        return 200, payload, {}

    def _filtered_sorted(self, object_type: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The records a query matches, in its order (kept per query: paging asks again and again)."""
        records = list(self.data.objects[object_type].values())
        groups = body.get("filterGroups") or []
        if groups:
            records = [r for r in records if any(_matches(r, g.get("filters") or []) for g in groups)]
        for sort in reversed(body.get("sorts") or []):
            name = sort["propertyName"]
            records.sort(key=lambda r: r["id"])
            records.sort(
                key=lambda r, name=name: _millis(r["properties"].get(name)) or 0,
                reverse=sort.get("direction") == "DESCENDING",
            )
        return records

    def _associations(self, object_type: str, body: Mapping[str, Any]) -> Response:
        results, errors = [], []
        for item in body.get("inputs") or []:
            source = str(item.get("id"))
            companies = self.data.companies_of[object_type].get(source) or []
            if not companies:
                errors.append(
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": f"No companies is associated with {object_type[:-1]} {source}.",
                        "context": {"fromObjectId": [source]},
                    }
                )
                continue
            targets = []
            for position, company in enumerate(companies):  # the first listed company is the primary
                kinds = [
                    {"category": "HUBSPOT_DEFINED", "typeId": UNLABELED_COMPANY[object_type], "label": None}
                ]
                if position == 0:
                    kinds.insert(
                        0,
                        {
                            "category": "HUBSPOT_DEFINED",
                            "typeId": PRIMARY_COMPANY[object_type],
                            "label": "Primary",
                        },
                    )
                targets.append({"toObjectId": _json_id(company), "associationTypes": kinds})
            # HubSpot lists targets by id, not primary first: the primary may come last.
            results.append({"from": {"id": source}, "to": targets[::-1]})
        payload: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now_z(),
            "completedAt": now_z(),
        }
        if errors:
            payload |= {"numErrors": len(errors), "errors": errors}
        return (207 if errors else 200), payload, {}

    def _owners(self, query: dict[str, list[str]]) -> Response:
        archived = (query.get("archived") or ["false"])[0] == "true"
        limit = int((query.get("limit") or ["100"])[0])
        after = int((query.get("after") or ["0"])[0])
        owners = [o for o in self.data.owners if bool(o.get("archived")) == archived]
        payload: dict[str, Any] = {"results": owners[after : after + limit]}
        if after + limit < len(owners):
            payload["paging"] = {
                "next": {
                    "after": str(after + limit),
                    "link": f"{self.url}/crm/v3/owners?after={after + limit}",
                }
            }
        return 200, payload, {}


def _validation_error(message: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "category": "VALIDATION_ERROR"}


def _matches(record: Mapping[str, Any], filters: Iterable[Mapping[str, Any]]) -> bool:
    compare: dict[str, Callable[[int, int], bool]] = {
        "GTE": lambda a, b: a >= b,
        "GT": lambda a, b: a > b,
        "LTE": lambda a, b: a <= b,
        "LT": lambda a, b: a < b,
        "EQ": lambda a, b: a == b,
    }
    for rule in filters:
        have = _millis(record["properties"].get(rule["propertyName"]))
        want = _millis(rule.get("value"))
        if have is None or want is None or not compare[rule["operator"]](have, want):
            return False
    return True


SOQL = re.compile(
    r"SELECT (?P<fields>.+?) FROM (?P<sobject>\w+)"
    r"(?: WHERE SystemModstamp >= (?P<since>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ))?"
    r" ORDER BY SystemModstamp ASC"
)


class FakeSalesforce(FakeApi):
    """Salesforce REST query: SOQL over in-memory sObjects, batches chained by `nextRecordsUrl`."""

    def __init__(
        self, records: dict[str, list[dict[str, Any]]], token: str = "00Dfake!token", version: str = "v62.0"
    ) -> None:
        super().__init__(token)
        self.records = records
        self.version = version
        self.cursors: dict[str, list[dict[str, Any]]] = {}

    def unauthorized(self) -> Response:
        return 401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], {}

    def modify(self, sobject: str, record_id: str, **fields: Any) -> str:
        record = next(r for r in self.records[sobject] if r["Id"] == record_id)
        stamp = sf_datetime(pd.Timestamp.now(tz="UTC")) or ""
        record.update(fields, SystemModstamp=stamp, LastModifiedDate=stamp)
        return stamp

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: dict[str, str]
    ) -> Response:
        base = f"/services/data/{self.version}/query"
        options = re.search(r"batchSize=(\d+)", headers.get("sforce-query-options", ""))
        batch = int(options.group(1)) if options else 2000
        if method == "GET" and path == base:
            return self._query((query.get("q") or [""])[0], batch)
        if method == "GET" and path.startswith(base + "/"):
            locator = path.rsplit("/", 1)[1]
            if locator not in self.cursors:
                return 404, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}], {}
            return self._page(locator, batch)
        return 404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}], {}

    def _query(self, soql: str, batch: int) -> Response:
        parsed = SOQL.fullmatch(soql.strip())
        if not parsed:
            return 400, [{"message": f"unexpected SOQL: {soql}", "errorCode": "MALFORMED_QUERY"}], {}
        sobject = parsed.group("sobject")
        if sobject not in self.records:
            return (
                400,
                [{"message": f"sObject type '{sobject}' is not supported.", "errorCode": "INVALID_TYPE"}],
                {},
            )
        fields = [f.strip() for f in parsed.group("fields").split(",")]
        rows = sorted(self.records[sobject], key=lambda r: (r["SystemModstamp"], r["Id"]))
        if parsed.group("since"):
            since = pd.Timestamp(parsed.group("since"))
            rows = [r for r in rows if pd.Timestamp(r["SystemModstamp"]) >= since]
        selected = [self._select(sobject, r, fields) for r in rows]
        locator = f"01gFAKE{len(self.cursors):04d}"
        self.cursors[locator] = selected
        return self._page(locator, batch, total=len(selected))

    def _page(self, locator: str, batch: int, total: int | None = None) -> Response:
        remaining = self.cursors[locator]
        page, rest = remaining[:batch], remaining[batch:]
        self.cursors[locator] = rest
        payload: dict[str, Any] = {
            "totalSize": total if total is not None else len(remaining),
            "done": not rest,
            "records": page,
        }
        if rest:
            payload["nextRecordsUrl"] = f"/services/data/{self.version}/query/{locator}"
        return 200, payload, {}

    def _select(self, sobject: str, record: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {
                "type": sobject,
                "url": f"/services/data/{self.version}/sobjects/{sobject}/{record['Id']}",
            }
        }
        for name in fields:
            out[name] = record.get(name)
        return out


class FakeFeed(FakeApi):
    """A data provider's company feed: API key header, cursor paging, records nested under `data.companies`."""

    def __init__(
        self, companies: list[dict[str, Any]], api_key: str = "feed-key", page_size: int = 2
    ) -> None:
        super().__init__(api_key)
        self.companies = companies
        self.page_size = page_size

    def authorized(self, headers: Mapping[str, str]) -> bool:
        return headers.get("x-api-key") == self.token

    def unauthorized(self) -> Response:
        return 401, {"error": {"type": "authentication_error", "message": "Invalid API key"}}, {}

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: dict[str, str]
    ) -> Response:
        if method != "GET" or path != "/v2/companies":
            return 404, {"error": {"type": "not_found", "message": path}}, {}
        start = int((query.get("cursor") or ["0"])[0])
        page = self.companies[start : start + self.page_size]
        following = start + self.page_size
        meta = {"next_cursor": str(following) if following < len(self.companies) else None}
        return 200, {"data": {"companies": page}, "meta": meta}, {}


def load_raw(
    config: IcpConfig,
    drop: Path,
    warehouse: Path,
    env: Mapping[str, str],
    sleep: Callable[[float], None] = lambda _seconds: None,
) -> dict[str, TableLoadStats]:
    """One raw load the way the asset runs it: fresh source and pipeline, local dlt state dropped
    (so the cursor must come back from the warehouse). Sleeps go to `sleep`, not the clock."""
    stats: dict[str, TableLoadStats] = {}
    contracts = load_contracts(contracts_dir(config))
    plan = build_raw_source(config, contracts, drop, warehouse, stats, env=env, sleep=sleep)
    pipeline = file_drop_pipeline(warehouse, warehouse.parent / "dlt_pipelines")
    pipeline.drop()
    pipeline.run(plan.source)
    return stats


def icp_error(exc: BaseException) -> IcpError:
    """The IcpError inside dlt's wrapping exceptions: the line `icp run` prints."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, IcpError):
            return seen
        seen = getattr(seen, "exception", None) or seen.__cause__ or seen.__context__
    raise AssertionError(f"no IcpError inside {exc!r}")


def raw_frame(warehouse: Path, table: str, key: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return (
            con.sql(f'select * from raw."{table}"').to_arrow_table().to_pandas().set_index(key).sort_index()
        )
