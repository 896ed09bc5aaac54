"""CRM write-back against a local HubSpot/Salesforce stand-in: only changed accounts, right-sized batches.

The stand-in speaks the real request and response shapes (HubSpot batch update 200/207, Salesforce
sObject Collections SaveResults) and checks the bearer token, so these tests pin what a real CRM
would receive: exactly the changed accounts, only the mapped fields, nothing in dry-run, and a
ledger that leaves refused or unsent accounts for the next run.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest
import requests
import yaml

from icp_pipeline.config import PROJECT_ROOT, IcpConfig, WritebackConfig
from icp_pipeline.errors import IcpConfigError
from icp_pipeline.resources import IcpSettings
from icp_pipeline.retries import retry_after_seconds
from icp_pipeline.writeback.assets import crm_writeback
from icp_pipeline.writeback.run import WritebackReport, run_writeback

AS_OF = dt.date(2026, 11, 1)
TOKEN = "pat-na1-test-token-123"
HUBSPOT_PATH = "/crm/v3/objects/companies/batch/update"
SALESFORCE_PATH = re.compile(r"^/services/data/v\d+\.\d/composite/sobjects$")


class FakeCrm:
    """HubSpot's batch update and Salesforce's sObject Collections on 127.0.0.1, with a record store.

    `script` holds forced answers (status, headers, body) served before normal handling; `refuse`
    maps record ids to the error the CRM gives for them.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, str], Any]] = []
        self.refuse: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                crm.handle(self)

            def do_PATCH(self) -> None:  # noqa: N802 - http.server API
                crm.handle(self)

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length", 0))
        body = json.loads(request.rfile.read(length) or b"null")
        with self.lock:
            self.requests.append(
                {
                    "method": request.command,
                    "path": request.path,
                    "auth": request.headers.get("Authorization"),
                    "body": body,
                }
            )
            forced = self.script.pop(0) if self.script else None
            if forced:
                status, headers, answer = forced
            elif request.headers.get("Authorization") != f"Bearer {TOKEN}":
                presented = request.headers.get("Authorization") or ""
                answer = {"category": "INVALID_AUTHENTICATION", "message": f"unknown token {presented}"}
                status, headers = 401, {}
            elif request.command == "POST" and request.path == HUBSPOT_PATH:
                status, headers, answer = self._hubspot(body)
            elif request.command == "PATCH" and SALESFORCE_PATH.match(request.path):
                status, headers, answer = self._salesforce(body)
            else:
                status, headers, answer = 404, {}, {"message": f"no route {request.command} {request.path}"}
        data = json.dumps(answer).encode()
        request.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _hubspot(self, body: Any) -> tuple[int, dict[str, str], Any]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
            return 400, {}, {"category": "VALIDATION_ERROR", "message": "inputs must hold 1 to 100 records"}
        results, refused = [], []
        for item in inputs:
            if item["id"] in self.refuse:
                refused.append(item["id"])
                continue
            self.records.setdefault(item["id"], {}).update(item["properties"])
            results.append({"id": item["id"], "properties": item["properties"], "archived": False})
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if not refused:
            return 200, {}, answer
        errors = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some COMPANY objects, they may be deleted or not exist.",
                "context": {"ids": refused},
            }
        ]
        return 207, {}, {**answer, "errors": errors, "numErrors": len(refused)}

    def _salesforce(self, body: Any) -> tuple[int, dict[str, str], Any]:
        records = body.get("records") if isinstance(body, dict) else None
        if (
            body.get("allOrNone") is not False
            or not isinstance(records, list)
            or not 1 <= len(records) <= 200
        ):
            return 400, {}, [{"errorCode": "INVALID_FIELD", "message": "records: 1 to 200 with allOrNone"}]
        results = []
        for record in records:
            if record.get("attributes", {}).get("type") != "Account":
                results.append(
                    {"success": False, "errors": [{"statusCode": "INVALID_TYPE", "message": "type"}]}
                )
            elif record["id"] in self.refuse:
                error = {
                    "statusCode": "ENTITY_IS_DELETED",
                    "message": self.refuse[record["id"]],
                    "fields": [],
                }
                results.append({"success": False, "errors": [error]})
            else:
                values = {key: value for key, value in record.items() if key not in ("attributes", "id")}
                self.records.setdefault(record["id"], {}).update(values)
                results.append({"id": record["id"], "success": True, "errors": []})
        return 200, {}, results

    def batch_sizes(self) -> list[int]:
        return [len(req["body"].get("inputs") or req["body"].get("records") or []) for req in self.requests]

    def sent_ids(self) -> list[str]:
        return [
            item["id"]
            for req in self.requests
            for item in (req["body"].get("inputs") or req["body"].get("records") or [])
        ]


@pytest.fixture
def crm() -> Iterator[FakeCrm]:
    running = FakeCrm()
    yield running
    running.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """No proxy from the environment between the client and 127.0.0.1."""
    http = requests.Session()
    http.trust_env = False
    yield http
    http.close()


def account_ids(target: str, count: int) -> list[str]:
    if target == "hubspot":
        return [str(1000 + n) for n in range(count)]
    return [f"001{n:015d}" for n in range(count)]


def scored_warehouse(path: Path, ids: list[str], as_of: dt.date = AS_OF) -> Path:
    """An `icp.account_scores` slice and a few `icp.trigger_events`, as scoring and triggers write them."""
    n = len(ids)
    scores = pd.DataFrame(
        {
            "account_id": ids,
            "as_of": [as_of] * n,
            "fit_score": [40 + i % 60 for i in range(n)],
            "tier": ["ABCD"[i % 4] for i in range(n)],
            "disqualified": [i % 10 == 9 for i in range(n)],
            "disqualified_reason": [
                "Industry = Government: 1% win rate" if i % 10 == 9 else None for i in range(n)
            ],
            "reasons": ["[]"] * n,
            "top_positive": [f"Industry = Software: +10; Employees = 201-1000: +{i % 9}" for i in range(n)],
            "top_negative": ["Uses Shopify: -1" if i % 2 else "" for i in range(n)],
            "profile_version": ["v1"] * n,
        }
    )
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "account_id": [ids[0], ids[0], ids[1]],
            "trigger_type": ["funding", "hiring_surge", "leadership_change"],
            "occurred_at": pd.to_datetime(["2026-08-03", "2026-10-20", "2026-09-15"], utc=True),
            "strength": [0.4, 0.7, 0.5],
            "evidence": ["{}"] * 3,
            "as_of": [as_of] * 3,
        }
    )
    with duckdb.connect(str(path)) as con:
        con.execute("create schema if not exists icp")
        con.register("_scores", scores)
        con.register("_events", events)
        con.execute("create or replace table icp.account_scores as select * from _scores")
        con.execute("create or replace table icp.trigger_events as select * from _events")
    return path


def change_scores(warehouse: Path, ids: list[str]) -> None:
    with duckdb.connect(str(warehouse)) as con:
        con.execute("update icp.account_scores set fit_score = fit_score + 1 where account_id in ?", [ids])


def writeback_config(target: str, url: str, **overrides: Any) -> WritebackConfig:
    return WritebackConfig(enabled=True, target=target, base_url=url, **overrides)


def run(
    warehouse: Path,
    config: WritebackConfig,
    session: requests.Session,
    sleeps: list[float] | None = None,
    as_of: dt.date = AS_OF,
) -> WritebackReport:
    waits = sleeps if sleeps is not None else []
    env = {config.resolved_token_env(): TOKEN}
    return run_writeback(warehouse, config, as_of, env, session=session, sleep=waits.append)


def ledger(warehouse: Path) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("select * from icp.writeback_state").df()


@pytest.mark.parametrize(("target", "sizes"), [("hubspot", [100, 100, 50]), ("salesforce", [200, 50])])
def test_changed_accounts_go_out_in_batches_of_the_crm_limit(
    tmp_path: Path, crm: FakeCrm, session: requests.Session, target: str, sizes: list[int]
) -> None:
    ids = account_ids(target, 250)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)

    report = run(warehouse, writeback_config(target, crm.url), session)

    assert crm.batch_sizes() == sizes
    assert sorted(crm.sent_ids()) == sorted(ids)
    assert {req["auth"] for req in crm.requests} == {f"Bearer {TOKEN}"}
    assert (report.pushed, report.failed, report.remaining, report.calls) == (250, 0, 0, len(sizes))
    assert set(crm.records) == set(ids)
    assert len(ledger(warehouse)) == 250


def test_hubspot_request_shape(tmp_path: Path, crm: FakeCrm, session: requests.Session) -> None:
    ids = account_ids("hubspot", 3)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    run(warehouse, writeback_config("hubspot", crm.url), session)

    (request,) = crm.requests
    assert (request["method"], request["path"]) == ("POST", HUBSPOT_PATH)
    first = next(item for item in request["body"]["inputs"] if item["id"] == ids[0])
    assert first["properties"] == {
        "icp_fit_score": 40,
        "icp_tier": "A",
        "icp_reasons": "Industry = Software: +10; Employees = 201-1000: +0",
        "icp_latest_trigger": "hiring_surge",
        "icp_latest_trigger_date": "2026-10-20",
    }
    third = crm.records[ids[2]]
    assert third["icp_latest_trigger"] == "" and third["icp_latest_trigger_date"] == ""


def test_salesforce_request_shape(tmp_path: Path, crm: FakeCrm, session: requests.Session) -> None:
    ids = account_ids("salesforce", 10)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    run(warehouse, writeback_config("salesforce", crm.url, api_version="v61.0"), session)

    (request,) = crm.requests
    assert (request["method"], request["path"]) == ("PATCH", "/services/data/v61.0/composite/sobjects")
    assert request["body"]["allOrNone"] is False
    records = {record["id"]: record for record in request["body"]["records"]}
    assert records[ids[1]] == {
        "attributes": {"type": "Account"},
        "id": ids[1],
        "ICP_Fit_Score__c": 41,
        "ICP_Tier__c": "B",
        "ICP_Reasons__c": "Industry = Software: +10; Employees = 201-1000: +1 | Uses Shopify: -1",
        "ICP_Latest_Trigger__c": "leadership_change",
        "ICP_Latest_Trigger_Date__c": "2026-09-15",
    }
    assert records[ids[2]]["ICP_Latest_Trigger__c"] is None
    assert records[ids[9]]["ICP_Reasons__c"].startswith("Hard no: Industry = Government: 1% win rate | ")


@pytest.mark.parametrize("target", ["hubspot", "salesforce"])
def test_second_run_without_changes_sends_nothing_and_three_changes_send_three(
    tmp_path: Path, crm: FakeCrm, session: requests.Session, target: str
) -> None:
    ids = account_ids(target, 250)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    config = writeback_config(target, crm.url)
    run(warehouse, config, session)
    crm.requests.clear()

    unchanged = run(warehouse, config, session)
    assert crm.requests == []
    assert (unchanged.changed, unchanged.calls, unchanged.pushed) == (0, 0, 0)

    moved = [ids[5], ids[120], ids[249]]
    change_scores(warehouse, moved)
    report = run(warehouse, config, session)
    assert sorted(crm.sent_ids()) == sorted(moved)
    assert crm.batch_sizes() == [3]
    assert report.field_changes["fit_score"] == 3 and report.field_changes["tier"] == 0
    field = config.field_map()["fit_score"]
    assert crm.records[ids[5]][field] == 40 + 5 + 1


def test_a_new_trigger_alone_makes_an_account_change(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("hubspot", 20)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    config = writeback_config("hubspot", crm.url)
    run(warehouse, config, session)
    crm.requests.clear()
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "insert into icp.trigger_events values "
            "('e9', ?, 'funding', '2026-10-30 00:00:00+00', 0.9, '{}', DATE '2026-11-01')",
            [ids[7]],
        )

    report = run(warehouse, config, session)

    assert crm.sent_ids() == [ids[7]]
    assert report.field_changes == {
        "fit_score": 0,
        "tier": 0,
        "reasons": 0,
        "latest_trigger": 1,
        "latest_trigger_date": 1,
    }
    assert crm.records[ids[7]]["icp_latest_trigger_date"] == "2026-10-30"


@pytest.mark.parametrize("target", ["hubspot", "salesforce"])
def test_only_configured_fields_are_in_the_payload(
    tmp_path: Path, crm: FakeCrm, session: requests.Session, target: str
) -> None:
    ids = account_ids(target, 30)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    fields = {"fit_score": "Score_A", "tier": "Tier_B"}
    run(warehouse, writeback_config(target, crm.url, fields=fields), session)

    items = [
        item["properties"] if target == "hubspot" else item
        for req in crm.requests
        for item in (req["body"].get("inputs") or req["body"].get("records"))
    ]
    allowed = {"Score_A", "Tier_B"} | ({"attributes", "id"} if target == "salesforce" else set())
    assert len(items) == 30
    assert all(set(item) == allowed for item in items)


def test_a_new_field_mapping_sends_every_account_again(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("hubspot", 12)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    run(warehouse, writeback_config("hubspot", crm.url, fields={"fit_score": "icp_fit_score"}), session)
    crm.requests.clear()

    run(warehouse, writeback_config("hubspot", crm.url, fields={"fit_score": "icp_score_v2"}), session)

    assert sorted(crm.sent_ids()) == sorted(ids)


def test_budget_exhaustion_leaves_the_rest_for_the_next_run(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("hubspot", 250)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)

    first = run(warehouse, writeback_config("hubspot", crm.url, max_calls=2), session)

    assert crm.batch_sizes() == [100, 100]
    assert (first.pushed, first.remaining, first.budget_left) == (200, 50, 0)
    assert first.stopped and "budget of 2" in first.stopped
    sent_first = set(crm.sent_ids())
    crm.requests.clear()

    second = run(warehouse, writeback_config("hubspot", crm.url, max_calls=2), session)

    assert crm.batch_sizes() == [50]
    assert set(crm.sent_ids()) == set(ids) - sent_first
    assert (second.pushed, second.remaining, second.stopped) == (50, 0, None)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = con.execute(
            "select pushed, remaining, budget_left from icp.writeback_runs order by run_at"
        ).fetchall()
    assert runs == [(200, 50, 0), (50, 0, 1)]


def test_dry_run_sends_nothing_and_reports_what_would_change(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("salesforce", 250)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    config = writeback_config("salesforce", crm.url, dry_run=True)

    report = run_writeback(warehouse, config, AS_OF, {}, session=session)  # no token needed

    assert crm.requests == []
    assert (report.dry_run, report.changed, report.calls, report.pushed, report.calls_needed) == (
        True,
        250,
        0,
        0,
        2,
    )
    assert report.field_changes["fit_score"] == 250
    assert len(report.sample) == 10
    assert set(report.sample[0]) == {"id", *config.field_map().values()}
    assert ledger(warehouse).empty

    run(warehouse, writeback_config("salesforce", crm.url), session)
    assert len(crm.sent_ids()) == 250


def test_429_waits_for_retry_after(tmp_path: Path, crm: FakeCrm, session: requests.Session) -> None:
    ids = account_ids("hubspot", 10)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    crm.script.append((429, {"Retry-After": "7"}, {"status": "error", "category": "RATE_LIMITS"}))
    sleeps: list[float] = []

    report = run(warehouse, writeback_config("hubspot", crm.url), session, sleeps)

    assert sleeps == [7.0]
    assert len(crm.requests) == 2 and report.calls == 2
    assert report.pushed == 10 and set(crm.records) == set(ids)


def test_retry_after_beyond_the_cap_stops_for_tonight(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("hubspot", 10)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    crm.script.append((429, {"Retry-After": "3600"}, {"category": "RATE_LIMITS"}))
    sleeps: list[float] = []

    report = run(warehouse, writeback_config("hubspot", crm.url), session, sleeps)

    assert sleeps == [] and len(crm.requests) == 1
    assert report.pushed == 0 and report.remaining == 10
    assert report.stopped and "Retry-After 3600 s" in report.stopped


def test_500_is_retried_with_backoff_then_succeeds(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("salesforce", 10)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    crm.script += [(500, {}, [{"errorCode": "UNKNOWN"}]), (503, {}, [{"errorCode": "SERVER_UNAVAILABLE"}])]
    sleeps: list[float] = []
    config = writeback_config("salesforce", crm.url, retry={"backoff_s": 1.5})

    report = run(warehouse, config, session, sleeps)

    assert sleeps == [1.5, 3.0]
    assert len(crm.requests) == 3 and report.pushed == 10


def test_a_crm_that_keeps_failing_stops_the_run_and_pushes_nothing(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("hubspot", 10)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    crm.script += [(502, {}, {})] * 3

    report = run(warehouse, writeback_config("hubspot", crm.url, retry={"max_attempts": 3}), session)

    assert len(crm.requests) == 3
    assert report.stopped == "hubspot: HTTP 502 after 3 attempts"
    assert (report.pushed, report.failed, report.remaining) == (0, 0, 10)


def test_salesforce_partial_failure_leaves_the_failed_record_unpushed(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("salesforce", 250)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    crm.refuse[ids[3]] = "entity is deleted"
    config = writeback_config("salesforce", crm.url)

    report = run(warehouse, config, session)

    assert (report.pushed, report.failed, report.remaining) == (249, 1, 0)
    assert report.failures == [(ids[3], "ENTITY_IS_DELETED: entity is deleted")]
    state = ledger(warehouse).set_index("account_id")
    assert pd.isna(state.loc[ids[3], "pushed_at"]) and state.loc[ids[3], "failed_attempts"] == 1
    assert state["pushed_at"].notna().sum() == 249

    crm.requests.clear()
    del crm.refuse[ids[3]]
    retry = run(warehouse, config, session)
    assert crm.sent_ids() == [ids[3]]
    assert (retry.pushed, retry.failed) == (1, 0)


def test_hubspot_multi_status_marks_only_confirmed_ids(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("hubspot", 120)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    crm.refuse[ids[0]] = "deleted"

    report = run(warehouse, writeback_config("hubspot", crm.url), session)

    assert (report.pushed, report.failed) == (119, 1)
    assert report.failures[0][0] == ids[0] and report.failures[0][1].startswith("OBJECT_NOT_FOUND")
    state = ledger(warehouse).set_index("account_id")
    assert pd.isna(state.loc[ids[0], "pushed_at"])


def test_failing_accounts_go_last_so_they_cannot_starve_the_others(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("hubspot", 150)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    crm.refuse[ids[0]] = "deleted"
    run(warehouse, writeback_config("hubspot", crm.url), session)
    crm.requests.clear()
    change_scores(warehouse, ids[1:])

    run(warehouse, writeback_config("hubspot", crm.url, max_calls=1), session)

    assert ids[0] not in crm.sent_ids() and len(crm.sent_ids()) == 100


def test_rejected_token_is_a_config_error_without_the_token(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    warehouse = scored_warehouse(tmp_path / "w.duckdb", account_ids("hubspot", 5))
    config = writeback_config("hubspot", crm.url)
    with pytest.raises(IcpConfigError, match="HTTP 401.*ICP_HUBSPOT_TOKEN") as caught:
        run_writeback(warehouse, config, AS_OF, {"ICP_HUBSPOT_TOKEN": "wrong-secret"}, session=session)
    assert "wrong-secret" not in str(caught.value)
    assert len(crm.requests) == 1


def test_missing_token_variable_is_a_config_error(tmp_path: Path, session: requests.Session) -> None:
    warehouse = scored_warehouse(tmp_path / "w.duckdb", account_ids("salesforce", 5))
    config = writeback_config("salesforce", "https://example.my.salesforce.com", token_env="SF_TOKEN")
    with pytest.raises(IcpConfigError, match="SF_TOKEN is not set"):
        run_writeback(warehouse, config, AS_OF, {}, session=session)


def test_ids_the_crm_cannot_address_are_skipped_and_counted(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = [*account_ids("hubspot", 4), "A0000001", "acme-42"]
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)

    report = run(warehouse, writeback_config("hubspot", crm.url), session)

    assert sorted(crm.sent_ids()) == sorted(ids[:4])
    assert report.invalid_ids == 2 and report.invalid_id_sample == ["A0000001", "acme-42"]


def test_a_backfill_of_an_older_date_does_not_overwrite_the_crm(
    tmp_path: Path, crm: FakeCrm, session: requests.Session
) -> None:
    ids = account_ids("hubspot", 5)
    older = AS_OF - dt.timedelta(days=3)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "insert into icp.account_scores select * replace (?::date as as_of) from icp.account_scores",
            [older],
        )

    report = run(warehouse, writeback_config("hubspot", crm.url), session, as_of=older)

    assert crm.requests == []
    assert report.stopped and "backfill" in report.stopped


def test_no_scores_yet_sends_nothing(tmp_path: Path, crm: FakeCrm, session: requests.Session) -> None:
    warehouse = tmp_path / "empty.duckdb"
    duckdb.connect(str(warehouse)).close()

    report = run(warehouse, writeback_config("hubspot", crm.url), session)

    assert crm.requests == []
    assert (report.stopped, report.changed, report.calls) == ("no scores to write yet", 0, 0)


def test_reasons_are_cut_to_the_field_limit(tmp_path: Path, crm: FakeCrm, session: requests.Session) -> None:
    ids = account_ids("hubspot", 5)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    run(warehouse, writeback_config("hubspot", crm.url, reasons_max_chars=30), session)

    reasons = [record["icp_reasons"] for record in crm.records.values()]
    assert max(len(text) for text in reasons) == 30
    assert all(text.endswith("…") for text in reasons)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 150}, "above the hubspot limit of 100"),
        (
            {"target": "salesforce", "batch_size": 201, "base_url": "https://x.my.salesforce.com"},
            "limit of 200",
        ),
        ({"fields": {"score": "icp_score"}}, "unknown field"),
        ({"fields": {"tier": "ICP Tier"}}, "not a CRM field name"),
        ({"enabled": True, "target": "salesforce"}, "needs base_url"),
    ],
)
def test_invalid_writeback_settings_are_rejected(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WritebackConfig.model_validate(settings)


def test_readme_writeback_example_is_valid() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("### Writing scores back to the CRM")[1]
    examples = [block.split("```")[0] for block in section.split("```yaml")[1:3]]
    configs = [IcpConfig.model_validate(yaml.safe_load(example)).writeback for example in examples]
    hubspot, salesforce = configs
    assert hubspot.enabled and hubspot.dry_run and hubspot.target == "hubspot"
    assert hubspot.field_map()["fit_score"] == "icp_fit_score"
    assert salesforce.target == "salesforce" and salesforce.resolved_base_url().startswith("https://")
    assert salesforce.field_map()["tier"] == "ICP_Tier__c"


# --- Dagster ------------------------------------------------------------------------------------


def materialize_writeback(warehouse: Path, config_file: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [crm_writeback],
        partition_key=AS_OF.isoformat(),
        resources={"icp": IcpSettings(warehouse=str(warehouse), config_file=str(config_file))},
    )


def test_asset_sends_nothing_when_disabled(tmp_path: Path, crm: FakeCrm) -> None:
    warehouse = scored_warehouse(tmp_path / "w.duckdb", account_ids("hubspot", 20))
    config_file = tmp_path / "icp.yaml"
    config_file.write_text(yaml.safe_dump({"writeback": {"target": "hubspot", "base_url": crm.url}}))

    result = materialize_writeback(warehouse, config_file)

    metadata = result.asset_materializations_for_node("icp__crm_writeback")[0].metadata
    assert metadata["enabled"].value is False and metadata["calls_made"].value == 0
    assert crm.requests == []


def test_asset_writes_changed_accounts_when_enabled(
    tmp_path: Path, crm: FakeCrm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICP_HUBSPOT_TOKEN", TOKEN)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    ids = account_ids("hubspot", 120)
    warehouse = scored_warehouse(tmp_path / "w.duckdb", ids)
    config_file = tmp_path / "icp.yaml"
    config_file.write_text(
        yaml.safe_dump({"writeback": {"enabled": True, "target": "hubspot", "base_url": crm.url}})
    )

    first = materialize_writeback(warehouse, config_file)
    second = materialize_writeback(warehouse, config_file)

    metadata = first.asset_materializations_for_node("icp__crm_writeback")[0].metadata
    values = {key: metadata[key].value for key in ("accounts_changed", "calls_made", "records_pushed")}
    assert values == {"accounts_changed": 120, "calls_made": 2, "records_pushed": 120}
    assert metadata["records_failed"].value == 0 and metadata["dry_run"].value is False
    assert metadata["budget_left"].value == 1000 - 2
    assert crm.batch_sizes() == [100, 20]
    again = second.asset_materializations_for_node("icp__crm_writeback")[0].metadata
    assert again["accounts_changed"].value == 0 and again["calls_made"].value == 0
