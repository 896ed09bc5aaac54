"""Salesforce REST as dlt resources for raw accounts, contacts, opportunities and owners.

Each table is one SOQL query (`GET {instance}/services/data/vNN.N/query?q=...`) over Account,
Contact, Opportunity or User, filtered `SystemModstamp >=` the cursor kept in dlt state and
ordered by it; the result is paged by following `nextRecordsUrl` until `done`. SOQL takes
datetimes to the second, so the read starts at the cursor's second and skips the ids already
loaded at the cursor instant. An opportunity's stage comes from `IsClosed`/`IsWon`, named so that
`stages` in icp.yaml classifies it, and only a closed one keeps its `CloseDate` as `closed_at`
(an open one's is a forecast). The access token and instance URL come from the environment.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dlt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dlt.extract.resource import DltResource

from icp_pipeline.config import CrmSourceConfig, StageMapping
from icp_pipeline.contracts.spec import TableContract
from icp_pipeline.errors import IcpConfigError
from icp_pipeline.ingest.api_client import JsonApi, RetryPolicy, Sleep, require_env
from icp_pipeline.ingest.api_tables import (
    api_stats,
    incremental_records,
    raw_api_resource,
    raw_chunk,
    rows_of,
    text_table,
)
from icp_pipeline.ingest.file_drop import TableLoadStats

log = logging.getLogger(__name__)

SOURCE = "salesforce"
TOKEN_ENV = "ICP_SALESFORCE_TOKEN"
MODSTAMP = "SystemModstamp"
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")
AUTH_HINT = "refresh the OAuth access token in {env} (connected app with the api scope)"


@dataclass(frozen=True)
class SalesforceObject:
    """How one sObject fills one canonical table."""

    table: str
    sobject: str
    columns: Mapping[str, str]
    required_fields: tuple[str, ...] = ()


ACCOUNT = SalesforceObject(
    "accounts",
    "Account",
    {
        "account_id": "Id",
        "name": "Name",
        "domain": "Website",
        "industry": "Industry",
        "employee_count": "NumberOfEmployees",
        "annual_revenue": "AnnualRevenue",
        "country": "BillingCountry",
        "owner_id": "OwnerId",
        "created_at": "CreatedDate",
        "updated_at": "LastModifiedDate",
    },
)
CONTACT = SalesforceObject(
    "contacts",
    "Contact",
    {
        "contact_id": "Id",
        "account_id": "AccountId",
        "email": "Email",
        "title": "Title",
        "created_at": "CreatedDate",
        "updated_at": "LastModifiedDate",
    },
)
OPPORTUNITY = SalesforceObject(
    "opportunities",
    "Opportunity",
    {
        "opportunity_id": "Id",
        "account_id": "AccountId",
        "amount": "Amount",
        "created_at": "CreatedDate",
        "updated_at": "LastModifiedDate",
    },
    required_fields=("StageName", "IsClosed", "IsWon", "CloseDate", "Name", "OwnerId"),
)
USER = SalesforceObject("owners", "User", {"owner_id": "Id", "name": "Name", "email": "Email"}, ("IsActive",))
OBJECTS: dict[str, SalesforceObject] = {o.table: o for o in (ACCOUNT, CONTACT, OPPORTUNITY, USER)}


def field_value(record: Mapping[str, Any], name: str) -> Any:
    """A field of a query record; `Owner.Email` walks the relationship object SOQL nests."""
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def soql(sobject: str, fields: Sequence[str], since: pd.Timestamp | None) -> str:
    """The incremental query: unquoted datetime literal to the second, oldest change first."""
    where = (
        f" WHERE {MODSTAMP} >= {since.floor('s').strftime('%Y-%m-%dT%H:%M:%SZ')}" if since is not None else ""
    )
    return f"SELECT {', '.join(fields)} FROM {sobject}{where} ORDER BY {MODSTAMP} ASC"


class SalesforceClient:
    """SOQL queries against one org, paged by `nextRecordsUrl`."""

    def __init__(self, api: JsonApi, api_version: str, page_size: int | None) -> None:
        self.api = api
        self.api_version = api_version
        self.headers = {"Sforce-Query-Options": f"batchSize={page_size}"} if page_size else None

    def query(self, statement: str) -> Iterator[list[dict[str, Any]]]:
        data = self.api.get(
            f"/services/data/{self.api_version}/query", params={"q": statement}, headers=self.headers
        )
        while True:
            records = list(data.get("records") or [])
            if records:
                yield records
            next_url = data.get("nextRecordsUrl")
            if data.get("done", True) or not next_url:
                return
            data = self.api.get(next_url, headers=self.headers)


@dataclass(frozen=True)
class QueryPlan:
    """The fields to select for one table and where each lands."""

    spec: SalesforceObject
    contract: TableContract
    columns: dict[str, str]
    extras: tuple[str, ...]

    @property
    def fields(self) -> list[str]:
        return list(
            dict.fromkeys([*self.columns.values(), MODSTAMP, *self.spec.required_fields, *self.extras])
        )


def query_plan(spec: SalesforceObject, contract: TableContract, crm: CrmSourceConfig) -> QueryPlan:
    """Default mapping plus icp.yaml's overrides and extra fields; field names are checked (no SOQL injection)."""
    columns = {**spec.columns, **crm.fields.get(spec.table, {})}
    extras = tuple(dict.fromkeys(f for f in crm.properties.get(spec.table, ()) if f not in columns.values()))
    for name in (*columns.values(), *extras):
        if not FIELD_NAME.fullmatch(name):
            raise IcpConfigError(f"sources.crm: '{name}' is not a Salesforce field name")
    return QueryPlan(spec, contract, columns, extras)


def _stage_names(records: Sequence[Mapping[str, Any]], stages: StageMapping) -> tuple[list[Any], list[Any]]:
    """Stage and closed_at per opportunity: won/lost from IsClosed/IsWon, named as icp.yaml knows them."""
    won = {name.lower() for name in stages.won}
    lost = {name.lower() for name in stages.lost}
    won_name = stages.won[0] if stages.won else "closed won"
    lost_name = stages.lost[0] if stages.lost else "closed lost"
    names: list[Any] = []
    closed_at: list[Any] = []
    for record in records:
        stage = record.get("StageName")
        folded = str(stage or "").strip().lower()
        if record.get("IsClosed") is True:
            if record.get("IsWon") is True:
                stage = stage if folded in won else won_name
            else:
                stage = stage if folded in lost else lost_name
            closed_at.append(record.get("CloseDate"))
        else:
            closed_at.append(None)
        names.append(stage)
    return names, closed_at


def query_table(records: Sequence[Mapping[str, Any]], plan: QueryPlan, stages: StageMapping) -> pa.Table:
    """One batch of query records as text columns: canonical columns first, then the other fields."""
    columns: dict[str, list[Any]] = {}
    if plan.spec.table == "opportunities":
        columns["stage"], columns["closed_at"] = _stage_names(records, stages)
    if plan.spec.table == "owners":
        columns["active"] = [field_value(r, "IsActive") for r in records]
    ordered = [c for c in plan.contract.columns if c in plan.columns] + list(plan.columns)
    for canonical in dict.fromkeys(ordered):
        columns.setdefault(canonical, [field_value(r, plan.columns[canonical]) for r in records])
    for name in (*plan.spec.required_fields, *plan.extras, MODSTAMP):
        columns.setdefault(name, [field_value(r, name) for r in records])
    return text_table(columns)


def _query_rows(
    client: SalesforceClient,
    plan: QueryPlan,
    crm: CrmSourceConfig,
    stages: StageMapping,
    loaded_at: dt.datetime,
    stats: dict[str, TableLoadStats],
) -> Iterator[pa.Table]:
    spec = plan.spec
    label = f"{SOURCE}:{spec.sobject}"
    table_stats = api_stats(stats, spec.table, label)
    changed = incremental_records(
        lambda start: client.query(soql(spec.sobject, plan.fields, start)),
        lambda record: str(record.get("Id")),
        lambda record: record.get(MODSTAMP),
        dlt.current.resource_state().setdefault(SOURCE, {}),
        ",".join(sorted(plan.fields)),
        crm.lookback_s,
        table_stats,
    )
    skipped = 0
    for records in changed:
        table = query_table(records, plan, stages)
        if spec.table == "contacts":
            # A private contact (no account) is a person, not a contact of an account: nothing to score.
            table = table.filter(pc.is_valid(table.column("account_id")))
            skipped += len(records) - table.num_rows
        if table.num_rows:
            table_stats.rows_sent += table.num_rows
            table_stats.keys_changed += table.num_rows
            yield raw_chunk(table, plan.contract, label, loaded_at)
    if skipped:
        log.warning("%s: %d contact(s) without an account skipped", label, skipped)


def salesforce_client(
    crm: CrmSourceConfig, env: Mapping[str, str], sleep: Sleep = time.sleep
) -> SalesforceClient:
    """A client from config and the environment; the token is read here and nowhere logged."""
    token_env = crm.token_env or TOKEN_ENV
    token = require_env(env, token_env, "sources.crm (salesforce)")
    instance = crm.base_url or require_env(
        env, crm.instance_url_env, "sources.crm (salesforce instance URL)", secret=False
    )
    if not re.match(r"^https?://[^\s/]+", instance):
        raise IcpConfigError(f"sources.crm: {crm.instance_url_env} is not an http(s) URL")
    api = JsonApi(
        SOURCE,
        instance,
        {"Authorization": f"Bearer {token}", "Accept": "application/json"},
        RetryPolicy.from_config(crm.retry),
        AUTH_HINT.format(env=token_env),
        sleep,
    )
    return SalesforceClient(api, crm.api_version, crm.page_size)


def salesforce_resources(
    crm: CrmSourceConfig,
    stages: StageMapping,
    contracts: Mapping[str, TableContract],
    loaded_at: dt.datetime,
    stats: dict[str, TableLoadStats],
    env: Mapping[str, str],
    sleep: Sleep = time.sleep,
    client: SalesforceClient | None = None,
) -> dict[str, DltResource]:
    """One resource per configured CRM table; nothing is requested until dlt extracts."""
    org = client or salesforce_client(crm, env, sleep)
    resources: dict[str, DltResource] = {}
    for table in crm.tables:
        plan = query_plan(OBJECTS[table], contracts[table], crm)
        resources[table] = raw_api_resource(
            table, rows_of(_query_rows, org, plan, crm, stages, loaded_at, stats)
        )
    return resources
