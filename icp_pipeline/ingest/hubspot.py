"""HubSpot CRM v3 as dlt resources for raw accounts, contacts, opportunities and owners.

Companies, contacts and deals are read through the CRM search endpoint
(`POST /crm/v3/objects/{object}/search`), sorted by last-modified time and filtered with
`GTE` the cursor kept in dlt state, so a night reads only what changed since the last successful
load. Search pages stop at 10,000 results per query: past that, the read restarts at the newest
timestamp seen (skipping ids already read at it). Search results carry no associations, so
each page's primary company comes from the v4 associations batch endpoint. Deal stages are
mapped through the deal pipelines (`metadata.isClosed`, `metadata.probability` 1.0 won / 0.0 lost)
to a stage name that `stages` in icp.yaml classifies. Owners (`/crm/v3/owners`, active and
archived) have no modified filter and are read whole; they are few.

Values stay as HubSpot delivers them (numbers as strings, ISO timestamps); staging types them.
"""

from __future__ import annotations

import datetime as dt
import logging
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
from icp_pipeline.errors import IcpConfigError, IcpInputError
from icp_pipeline.ingest.api_client import JsonApi, RetryPolicy, Sleep, require_env
from icp_pipeline.ingest.api_tables import (
    api_stats,
    incremental_records,
    parse_timestamps,
    raw_api_resource,
    raw_chunk,
    rows_of,
    text_table,
)
from icp_pipeline.ingest.file_drop import TableLoadStats

log = logging.getLogger(__name__)

SOURCE = "hubspot"
HUBSPOT_API = "https://api.hubapi.com"
TOKEN_ENV = "ICP_HUBSPOT_TOKEN"
SEARCH_PAGE_MAX = 200
SEARCH_RESULT_CAP = 10_000
ASSOCIATION_BATCH = 100
OWNERS_PAGE = 100
AUTH_HINT = (
    "check the private-app token in {env} and its scopes (crm.objects.companies.read, "
    "crm.objects.contacts.read, crm.objects.deals.read, crm.objects.owners.read)"
)


@dataclass(frozen=True)
class HubSpotObject:
    """How one HubSpot object fills one canonical table."""

    table: str
    object_type: str
    modified_property: str
    columns: Mapping[str, str]
    required_properties: tuple[str, ...] = ()
    primary_association_type: int | None = None


COMPANIES = HubSpotObject(
    "accounts",
    "companies",
    "hs_lastmodifieddate",
    {
        "name": "name",
        "domain": "domain",
        "industry": "industry",
        "employee_count": "numberofemployees",
        "annual_revenue": "annualrevenue",
        "country": "country",
        "owner_id": "hubspot_owner_id",
        "created_at": "createdate",
        "updated_at": "hs_lastmodifieddate",
    },
)
CONTACTS = HubSpotObject(
    "contacts",
    "contacts",
    "lastmodifieddate",
    {"email": "email", "title": "jobtitle", "created_at": "createdate", "updated_at": "lastmodifieddate"},
    primary_association_type=1,
)
DEALS = HubSpotObject(
    "opportunities",
    "deals",
    "hs_lastmodifieddate",
    {"amount": "amount", "created_at": "createdate", "updated_at": "hs_lastmodifieddate"},
    required_properties=("dealname", "dealstage", "pipeline", "closedate", "hubspot_owner_id"),
    primary_association_type=5,
)
OBJECTS: dict[str, HubSpotObject] = {spec.table: spec for spec in (COMPANIES, CONTACTS, DEALS)}
# Returned on every search result whether asked for or not; `id` already carries it.
ALWAYS_RETURNED = ("hs_object_id",)


@dataclass(frozen=True)
class DealStage:
    """A deal stage as the pipelines endpoint describes it."""

    label: str
    closed: bool
    probability: float | None

    @property
    def outcome(self) -> str:
        if self.closed and self.probability is not None and self.probability >= 1.0:
            return "won"
        if self.closed and self.probability is not None and self.probability <= 0.0:
            return "lost"
        return "open"


def stage_name(stage: DealStage, stages: StageMapping) -> str:
    """The name raw carries: the stage's label, unless icp.yaml would misread a won or lost stage.

    A won stage whose label is not among `stages.won` (say "Signed") becomes the first won name,
    so win rates never depend on how a portal labels its closed stages.
    """
    folded = stage.label.strip().lower()
    if stage.outcome == "won" and folded not in {name.lower() for name in stages.won}:
        return stages.won[0] if stages.won else "closed won"
    if stage.outcome == "lost" and folded not in {name.lower() for name in stages.lost}:
        return stages.lost[0] if stages.lost else "closed lost"
    return stage.label


def _probability(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_true(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"


class HubSpotClient:
    """The few HubSpot endpoints the source reads, paged as the API pages them."""

    def __init__(self, api: JsonApi, page_size: int, result_cap: int | None = None) -> None:
        self.api = api
        self.page_size = page_size
        self.result_cap = result_cap or SEARCH_RESULT_CAP

    def search(
        self,
        object_type: str,
        properties: Sequence[str],
        modified_property: str,
        since: pd.Timestamp | None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of records modified at or after `since` (all when None), oldest first."""
        window_start, skip = since, set[str]()
        while True:
            after: str | None = None
            newest: pd.Timestamp | None = None
            ids_at_newest: set[str] = set()
            while True:
                data = self.api.post(
                    f"/crm/v3/objects/{object_type}/search",
                    self._search_body(properties, modified_property, window_start, after),
                )
                records = list(data.get("results") or [])
                modified = parse_timestamps(
                    (r.get("properties") or {}).get(modified_property) for r in records
                )
                ids = [str(r.get("id")) for r in records]
                if skip and window_start is not None:
                    keep = ~((modified == window_start) & pd.Series(ids, dtype="str").isin(skip))
                    records = [r for r, k in zip(records, keep, strict=True) if k]
                valid = modified.dropna()
                if not valid.empty:
                    page_newest = valid.max()
                    at_page_newest = set(pd.Series(ids, dtype="str")[modified == page_newest])
                    if newest is None or page_newest > newest:
                        newest, ids_at_newest = page_newest, at_page_newest
                    elif page_newest == newest:
                        ids_at_newest |= at_page_newest
                if records:
                    yield records
                after = ((data.get("paging") or {}).get("next") or {}).get("after")
                if not after:
                    return
                if int(after) + self.page_size > self.result_cap:
                    break
            if newest is None or (window_start is not None and newest <= window_start):
                raise IcpInputError(
                    f"{SOURCE}: {object_type}: more than {self.result_cap:,} records share "
                    f"{modified_property} {newest}; the search endpoint cannot page past them"
                )
            window_start, skip = newest, ids_at_newest

    def _search_body(
        self,
        properties: Sequence[str],
        modified_property: str,
        since: pd.Timestamp | None,
        after: str | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "filterGroups": [],
            "sorts": [{"propertyName": modified_property, "direction": "ASCENDING"}],
            "properties": list(properties),
            "limit": self.page_size,
        }
        if since is not None:
            millis = str(int(since.timestamp() * 1000))
            body["filterGroups"] = [
                {"filters": [{"propertyName": modified_property, "operator": "GTE", "value": millis}]}
            ]
        if after:
            body["after"] = after
        return body

    def primary_companies(
        self, object_type: str, ids: Sequence[str], primary_type: int | None
    ) -> dict[str, str]:
        """Record id -> its primary company id (else its first associated company)."""
        companies: dict[str, str] = {}
        for start in range(0, len(ids), ASSOCIATION_BATCH):
            batch = ids[start : start + ASSOCIATION_BATCH]
            data = self.api.post(
                f"/crm/v4/associations/{object_type}/companies/batch/read",
                {"inputs": [{"id": record_id} for record_id in batch]},
            )
            for result in data.get("results") or []:
                source_id = str((result.get("from") or {}).get("id"))
                targets = result.get("to") or []
                chosen = next(
                    (t for t in targets if _is_primary(t, primary_type)), targets[0] if targets else None
                )
                if chosen is not None and chosen.get("toObjectId") is not None:
                    companies[source_id] = str(chosen["toObjectId"])
        return companies

    def deal_stages(self) -> dict[str, DealStage]:
        """Stage id -> stage, over every deal pipeline (stage ids are unique across pipelines)."""
        data = self.api.get("/crm/v3/pipelines/deals")
        stages: dict[str, DealStage] = {}
        for pipeline in data.get("results") or []:
            for stage in pipeline.get("stages") or []:
                metadata = stage.get("metadata") or {}
                stages[str(stage.get("id"))] = DealStage(
                    label=str(stage.get("label") or stage.get("id")),
                    closed=_is_true(metadata.get("isClosed")),
                    probability=_probability(metadata.get("probability")),
                )
        return stages

    def owners(self) -> Iterator[list[dict[str, Any]]]:
        """Pages of owners, active ones first, then archived (deactivated) ones."""
        for archived in ("false", "true"):
            after: str | None = None
            while True:
                params: dict[str, Any] = {"limit": OWNERS_PAGE, "archived": archived}
                if after:
                    params["after"] = after
                data = self.api.get("/crm/v3/owners", params=params)
                records = list(data.get("results") or [])
                if records:
                    yield records
                after = ((data.get("paging") or {}).get("next") or {}).get("after")
                if not after:
                    break


def _is_primary(target: Mapping[str, Any], primary_type: int | None) -> bool:
    for kind in target.get("associationTypes") or []:
        if str(kind.get("label") or "").lower() == "primary":
            return True
        if primary_type is not None and kind.get("typeId") == primary_type:
            return True
    return False


@dataclass(frozen=True)
class ObjectPlan:
    """What to request for one object and where each property lands."""

    spec: HubSpotObject
    contract: TableContract
    columns: dict[str, str]
    extras: tuple[str, ...]

    @property
    def properties(self) -> list[str]:
        wanted = [
            *self.columns.values(),
            self.spec.modified_property,
            *self.spec.required_properties,
            *self.extras,
        ]
        return list(dict.fromkeys(wanted))

    @property
    def key_column(self) -> str:
        return self.contract.primary_key[0]


def object_plan(spec: HubSpotObject, contract: TableContract, crm: CrmSourceConfig) -> ObjectPlan:
    """The default mapping with icp.yaml's overrides, and the extra (custom) properties to keep."""
    columns = {**spec.columns, **crm.fields.get(spec.table, {})}
    used = set(columns.values())
    extras = tuple(
        dict.fromkeys(
            p
            for p in (*spec.required_properties, *crm.properties.get(spec.table, ()))
            if p not in used and p not in ALWAYS_RETURNED
        )
    )
    return ObjectPlan(spec, contract, columns, extras)


def object_table(
    records: Sequence[Mapping[str, Any]],
    plan: ObjectPlan,
    companies: Mapping[str, str] | None,
    stage_names: Mapping[str, str] | None,
    closed_stages: frozenset[str] = frozenset(),
) -> pa.Table:
    """One page of search results as text columns: key, canonical columns, then extra properties."""
    ids = [str(r.get("id")) for r in records]
    props = [r.get("properties") or {} for r in records]
    columns: dict[str, list[Any]] = {plan.key_column: ids}
    if companies is not None:
        columns["account_id"] = [companies.get(i) for i in ids]
    if stage_names is not None:
        stage_ids = [p.get("dealstage") for p in props]
        columns["stage"] = [stage_names.get(s, s) if s is not None else None for s in stage_ids]
        # HubSpot's closedate on an open deal is the expected close; only a closed deal has closed_at.
        columns["closed_at"] = [
            p.get("closedate") if s in closed_stages else None for p, s in zip(props, stage_ids, strict=True)
        ]
    ordered = [c for c in plan.contract.columns if c in plan.columns and c not in columns]
    ordered += [c for c in plan.columns if c not in ordered and c not in columns]
    for canonical in ordered:
        prop = plan.columns[canonical]
        columns[canonical] = [p.get(prop) for p in props]
    for prop in plan.extras:
        columns.setdefault(prop, [p.get(prop) for p in props])
    return text_table(columns)


def owner_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Owners as the canonical owners table; an archived owner is inactive."""
    names = [
        " ".join(str(r[k]).strip() for k in ("firstName", "lastName") if r.get(k)) or None for r in records
    ]
    return text_table(
        {
            "owner_id": [r.get("id") for r in records],
            "name": names,
            "email": [r.get("email") for r in records],
            "active": [not bool(r.get("archived")) for r in records],
            "user_id": [r.get("userId") for r in records],
        }
    )


def _object_rows(
    client: HubSpotClient,
    plan: ObjectPlan,
    crm: CrmSourceConfig,
    stages: StageMapping,
    loaded_at: dt.datetime,
    stats: dict[str, TableLoadStats],
) -> Iterator[pa.Table]:
    spec = plan.spec
    label = f"{SOURCE}:{spec.object_type}"
    table_stats = api_stats(stats, spec.table, label)
    stage_names: dict[str, str] | None = None
    closed: frozenset[str] = frozenset()
    if spec.table == "opportunities":
        pipeline_stages = client.deal_stages()
        stage_names = {sid: stage_name(stage, stages) for sid, stage in pipeline_stages.items()}
        closed = frozenset(sid for sid, stage in pipeline_stages.items() if stage.closed)
    changed = incremental_records(
        lambda start: client.search(spec.object_type, plan.properties, spec.modified_property, start),
        lambda record: str(record.get("id")),
        lambda record: (record.get("properties") or {}).get(spec.modified_property),
        dlt.current.resource_state().setdefault(SOURCE, {}),
        ",".join(sorted(plan.properties)),
        crm.lookback_s,
        table_stats,
    )
    skipped = 0
    for records in changed:
        companies = None
        if spec.primary_association_type is not None:
            ids = [str(r.get("id")) for r in records]
            companies = client.primary_companies(spec.object_type, ids, spec.primary_association_type)
        table = object_table(records, plan, companies, stage_names, closed)
        if spec.table == "contacts":
            # A contact with no company is a person, not a contact of an account: nothing to score.
            table = table.filter(pc.is_valid(table.column("account_id")))
            skipped += len(records) - table.num_rows
        if table.num_rows:
            table_stats.rows_sent += table.num_rows
            table_stats.keys_changed += table.num_rows
            yield raw_chunk(table, plan.contract, label, loaded_at)
    if skipped:
        log.warning("%s: %d contact(s) without an associated company skipped", label, skipped)


def _owner_rows(
    client: HubSpotClient, contract: TableContract, loaded_at: dt.datetime, stats: dict[str, TableLoadStats]
) -> Iterator[pa.Table]:
    label = f"{SOURCE}:owners"
    table_stats = api_stats(stats, "owners", label)
    for records in client.owners():
        table = owner_table(records)
        table_stats.rows_in_file += table.num_rows
        table_stats.rows_sent += table.num_rows
        yield raw_chunk(table, contract, label, loaded_at)


def hubspot_client(crm: CrmSourceConfig, env: Mapping[str, str], sleep: Sleep = time.sleep) -> HubSpotClient:
    """A client from config and the environment; the token is read here and nowhere logged."""
    token_env = crm.token_env or TOKEN_ENV
    token = require_env(env, token_env, "sources.crm (hubspot)")
    page_size = crm.page_size or SEARCH_PAGE_MAX
    if page_size > SEARCH_PAGE_MAX:
        raise IcpConfigError(
            f"sources.crm.page_size: HubSpot search returns at most {SEARCH_PAGE_MAX} per page"
        )
    api = JsonApi(
        SOURCE,
        crm.base_url or HUBSPOT_API,
        {"Authorization": f"Bearer {token}", "Accept": "application/json"},
        RetryPolicy.from_config(crm.retry),
        AUTH_HINT.format(env=token_env),
        sleep,
    )
    return HubSpotClient(api, page_size)


def hubspot_resources(
    crm: CrmSourceConfig,
    stages: StageMapping,
    contracts: Mapping[str, TableContract],
    loaded_at: dt.datetime,
    stats: dict[str, TableLoadStats],
    env: Mapping[str, str],
    sleep: Sleep = time.sleep,
    client: HubSpotClient | None = None,
) -> dict[str, DltResource]:
    """One resource per configured CRM table; nothing is requested until dlt extracts."""
    hub = client or hubspot_client(crm, env, sleep)
    resources: dict[str, DltResource] = {}
    for table in crm.tables:
        contract = contracts[table]
        if table == "owners":
            resources[table] = raw_api_resource(table, rows_of(_owner_rows, hub, contract, loaded_at, stats))
            continue
        plan = object_plan(OBJECTS[table], contract, crm)
        resources[table] = raw_api_resource(
            table, rows_of(_object_rows, hub, plan, crm, stages, loaded_at, stats)
        )
    return resources
