"""Settings: `icp.yaml` (every key has a default) plus paths from the environment.

A typo in `icp.yaml` is an error, not a silently ignored key: ops teams edit this file by hand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from icp_pipeline.errors import IcpConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORK_DIR_NAME = ".icp"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageMapping(_Section):
    """CRM stage names (case-insensitive) that mean won, lost or still open.

    A stage in none of the lists is treated as open and reported by the opportunities
    contract, so a renamed stage in the CRM shows up instead of silently skewing win rates.
    """

    won: tuple[str, ...] = ("closed won", "won")
    lost: tuple[str, ...] = ("closed lost", "lost")
    open: tuple[str, ...] = (
        "prospecting",
        "qualification",
        "discovery",
        "demo",
        "proposal",
        "negotiation",
        "open",
    )

    @property
    def known(self) -> tuple[str, ...]:
        return (*self.won, *self.lost, *self.open)


class ContractOverrides(_Section):
    """Per-table overrides of contract thresholds, for teams whose feeds arrive less often."""

    max_bad_share: dict[str, float] = Field(default_factory=dict)
    freshness_days: dict[str, int] = Field(default_factory=dict)


class ScheduleConfig(_Section):
    """When the nightly job runs; the schedule is created stopped, ops turn it on."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"


class Criterion(_Section):
    """One line of a written ICP: a trait and the values that satisfy it."""

    trait: str
    values: tuple[str, ...]


class WrittenIcp(_Section):
    """The ICP as the team wrote it down; audited against the data, used for cold start."""

    must_have: tuple[Criterion, ...] = ()
    nice_to_have: tuple[Criterion, ...] = ()
    hard_no: tuple[Criterion, ...] = ()


class ProfileConfig(_Section):
    """How the ICP is learned from evidence. Defaults are documented in the README."""

    best_customer_share: float = Field(default=0.2, gt=0, le=1)
    min_closed_with: int = Field(default=30, ge=1)
    min_won_with: int = Field(default=5, ge=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    must_have_min_win_rate_lift: float = 1.3
    hard_no_max_win_rate_ratio: float = 0.35
    cold_start_min_closed: int = 50
    l2: float = Field(default=2.0, gt=0)
    custom_columns: tuple[str, ...] = ()
    written: WrittenIcp | None = None
    points: dict[str, int] = Field(default_factory=dict)
    cac: float | None = None
    gross_margin: float = Field(default=0.8, gt=0, le=1)


class TierConfig(_Section):
    """Minimum fit score per tier. Unset: A = top 5%, B = next 15%, C = next 30% of scored accounts."""

    A: int | None = Field(default=None, ge=0, le=100)
    B: int | None = Field(default=None, ge=0, le=100)
    C: int | None = Field(default=None, ge=0, le=100)


class FundingTrigger(_Section):
    window_days: int = Field(default=90, ge=1)
    min_amount_usd: float = 0.0


class HiringSurgeTrigger(_Section):
    """Postings in the recent window against the account's own monthly baseline before it."""

    recent_days: int = Field(default=30, ge=1)
    baseline_days: int = Field(default=180, ge=30)
    min_postings: int = Field(default=5, ge=1)
    min_ratio: float = Field(default=3.0, gt=0)
    departments: tuple[str, ...] = ()


class LeadershipTrigger(_Section):
    """A C-level, VP or head-of joined or was promoted, optionally only in some functions."""

    window_days: int = Field(default=90, ge=1)
    change_types: tuple[str, ...] = ("joined", "promoted")
    levels: tuple[str, ...] = ("c_level", "vp", "head")
    functions: tuple[str, ...] = ()


class ObservationTrigger(_Section):
    """Change between two firmographic observations, the later one inside the window."""

    window_days: int = Field(default=60, ge=1)
    min_growth: float = 0.2
    watch: tuple[str, ...] = ()


class TriggerConfig(_Section):
    funding: FundingTrigger = Field(default_factory=FundingTrigger)
    hiring_surge: HiringSurgeTrigger = Field(default_factory=HiringSurgeTrigger)
    leadership_change: LeadershipTrigger = Field(default_factory=LeadershipTrigger)
    headcount_growth: ObservationTrigger = Field(default_factory=ObservationTrigger)
    tech_change: ObservationTrigger = Field(default_factory=ObservationTrigger)


class ChannelConfig(_Section):
    """An alert channel: `outbox` (JSONL file, default), `slack` or `webhook` (URL from the environment)."""

    kind: str = Field(default="outbox", pattern="^(outbox|slack|webhook)$")
    url_env: str | None = None
    path: Path | None = None
    timeout_s: float | None = None
    max_attempts: int | None = None
    backoff_s: float | None = None
    max_retry_after_s: float | None = None


class AlertConfig(_Section):
    """Who gets alerted, how often, through which channels."""

    min_tier: str = Field(default="B", pattern="^[ABCD]$")
    channels: tuple[ChannelConfig, ...] = (ChannelConfig(),)
    fallback_recipient: str = "revops"
    daily_cap_per_owner: int = Field(default=10, ge=1)
    cooldown_days: int = Field(default=30, ge=0)
    max_attempts: int = Field(default=20, ge=1)
    crm_url_template: str | None = None
    max_pending_age_hours: int = Field(default=48, ge=1)


class DriftConfig(_Section):
    """ICP drift monitoring: reference window, cohort minimums, thresholds (PSI 0.1 watch, 0.2 flag)."""

    reference_months: int = Field(default=12, ge=1)
    reference_window_months: int = Field(default=12, ge=1)
    min_cohort_deals: int = Field(default=40, ge=1)
    min_cohort_wins: int = Field(default=8, ge=1)
    min_closed_share: float = Field(default=0.6, ge=0, le=1)
    min_auc_drop: float = Field(default=0.05, ge=0)
    min_tier_a_lift: float = 1.5
    psi_watch: float = 0.1
    psi_flag: float = 0.2


class HttpRetry(_Section):
    """HTTP retries of API calls: 429 waits Retry-After (up to a cap), 5xx and timeouts back off.

    Defaults suit source reads; CRM write-back defaults to a shorter timeout and Retry-After cap.
    """

    timeout_s: float = Field(default=60, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    backoff_s: float = Field(default=1.0, ge=0)
    max_backoff_s: float = Field(default=60, ge=0)
    max_retry_after_s: float = Field(default=300, ge=0)


CrmTable = Literal["accounts", "contacts", "opportunities", "owners"]
FeedTable = Literal["firmographics", "funding_rounds", "job_postings", "leadership_changes"]
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class CrmSourceConfig(_Section):
    """Where the CRM tables come from: the file drop (default), HubSpot or Salesforce.

    `base_url` is HubSpot's API root or the Salesforce instance URL (else read from
    `instance_url_env`); tokens come only from the variable named by `token_env`
    (default ICP_HUBSPOT_TOKEN / ICP_SALESFORCE_TOKEN). `properties` adds provider properties
    (custom ones) per table, kept as extra raw columns; `fields` overrides which provider property
    fills a canonical column. Subscriptions always come from the file drop.
    """

    kind: Literal["file_drop", "hubspot", "salesforce"] = "file_drop"
    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    token_env: str | None = Field(default=None, pattern=_ENV_NAME)
    instance_url_env: str = Field(default="ICP_SALESFORCE_INSTANCE_URL", pattern=_ENV_NAME)
    api_version: str = Field(default="v62.0", pattern=r"^v\d+\.\d+$")
    tables: tuple[CrmTable, ...] = ("accounts", "contacts", "opportunities", "owners")
    properties: dict[CrmTable, tuple[str, ...]] = Field(default_factory=dict)
    fields: dict[CrmTable, dict[str, str]] = Field(default_factory=dict)
    page_size: int | None = Field(default=None, ge=1, le=2000)
    lookback_s: int = Field(default=0, ge=0)
    retry: HttpRetry = Field(default_factory=HttpRetry)


class RestFeedConfig(_Section):
    """One external feed read with dlt's rest_api: where, how to sign in and page, which field is which.

    `paginator` is a dlt rest_api paginator (e.g. `{type: json_link, next_url_path: next}`),
    `data_selector` the JSONPath of the records, `body` the JSON of a POST, `fields` maps canonical
    columns to provider fields (dotted paths); other top-level provider fields are kept as raw columns.
    """

    base_url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    path: str = ""
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    body: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Literal["none", "bearer", "api_key"] = "none"
    token_env: str | None = Field(default=None, pattern=_ENV_NAME)
    api_key_name: str = "X-API-Key"
    api_key_location: Literal["header", "query"] = "header"
    paginator: dict[str, Any] | str | None = None
    data_selector: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    retry: HttpRetry = Field(default_factory=HttpRetry)

    @model_validator(mode="after")
    def _secret_named(self) -> RestFeedConfig:
        if self.auth != "none" and not self.token_env:
            raise ValueError(f"auth {self.auth} needs token_env, the environment variable holding the secret")
        return self


class SourcesConfig(_Section):
    """Source selection: CRM tables and external feeds; the file drop stays the default for both."""

    crm: CrmSourceConfig = Field(default_factory=CrmSourceConfig)
    feeds: dict[FeedTable, RestFeedConfig] = Field(default_factory=dict)


def _writeback_retry() -> HttpRetry:
    return HttpRetry(timeout_s=30, backoff_s=2.0, max_retry_after_s=120)


WRITEBACK_FIELDS: tuple[str, ...] = ("fit_score", "tier", "reasons", "latest_trigger", "latest_trigger_date")
_WRITEBACK_TARGETS: dict[str, dict[str, Any]] = {
    "hubspot": {
        "base_url": "https://api.hubapi.com",
        "token_env": "ICP_HUBSPOT_TOKEN",
        "object_type": "companies",
        "max_batch": 100,
        "fields": {field: f"icp_{field}" for field in WRITEBACK_FIELDS},
    },
    "salesforce": {
        "base_url": None,
        "token_env": "ICP_SALESFORCE_TOKEN",
        "object_type": "Account",
        "max_batch": 200,
        "fields": {
            "fit_score": "ICP_Fit_Score__c",
            "tier": "ICP_Tier__c",
            "reasons": "ICP_Reasons__c",
            "latest_trigger": "ICP_Latest_Trigger__c",
            "latest_trigger_date": "ICP_Latest_Trigger_Date__c",
        },
    },
}


class WritebackConfig(_Section):
    """Push fit score, tier, reasons and the latest trigger to CRM fields; off by default.

    Unset values take the target's defaults (`_WRITEBACK_TARGETS`). `fields` maps canonical names to
    CRM field names and is the whole list of what is written: nothing outside it is ever touched.
    The token comes only from the environment variable named by `token_env`.
    """

    enabled: bool = False
    target: Literal["hubspot", "salesforce"] = "hubspot"
    dry_run: bool = False
    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_version: str = Field(default="v62.0", pattern=r"^v\d+\.\d+$")
    object_type: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    fields: dict[str, str] | None = None
    batch_size: int | None = Field(default=None, ge=1)
    max_calls: int = Field(default=1000, ge=1)
    reasons_max_chars: int = Field(default=255, ge=20)
    retry: HttpRetry = Field(default_factory=_writeback_retry)

    @model_validator(mode="after")
    def _fits_target(self) -> WritebackConfig:
        mapping = self.fields if self.fields is not None else {}
        unknown = sorted(set(mapping) - set(WRITEBACK_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; known: {list(WRITEBACK_FIELDS)}")
        if self.fields is not None and not self.fields:
            raise ValueError("fields is empty: map at least one of " + ", ".join(WRITEBACK_FIELDS))
        bad = sorted(name for name in mapping.values() if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name))
        if bad:
            raise ValueError(f"not a CRM field name: {bad}")
        cap = self.target_default("max_batch")
        if self.batch_size is not None and self.batch_size > cap:
            raise ValueError(f"batch_size {self.batch_size} is above the {self.target} limit of {cap}")
        if self.enabled and self.target == "salesforce" and not self.base_url:
            raise ValueError("salesforce needs base_url, the org's instance URL")
        return self

    def target_default(self, key: str) -> Any:
        return _WRITEBACK_TARGETS[self.target][key]

    def field_map(self) -> dict[str, str]:
        """Canonical field -> CRM field name, in canonical order."""
        mapping = self.fields if self.fields is not None else self.target_default("fields")
        return {field: mapping[field] for field in WRITEBACK_FIELDS if field in mapping}

    def resolved_base_url(self) -> str:
        return (self.base_url or self.target_default("base_url") or "").rstrip("/")

    def resolved_token_env(self) -> str:
        return self.token_env or self.target_default("token_env")

    def resolved_object_type(self) -> str:
        return self.object_type or self.target_default("object_type")

    def resolved_batch_size(self) -> int:
        return self.batch_size or self.target_default("max_batch")


PUBLISHABLE_TABLES: tuple[str, ...] = (
    "account_scores",
    "icp_profile",
    "icp_evidence",
    "score_validation",
    "trigger_events",
    "alerts",
    "drift_metrics",
    "drift_flags",
    "quarantine_summary",
)


class PublishConfig(_Section):
    """Copy the icp.* output tables to the team's warehouse through dlt; off by default.

    `destination` is any dlt destination name (postgres, snowflake, bigquery, motherduck, ...).
    Credentials come from the environment only: the variable named by `credentials_env`
    (a connection string), or dlt's own variables such as `DESTINATION__SNOWFLAKE__CREDENTIALS__*`.
    """

    enabled: bool = False
    destination: str = "postgres"
    dataset: str = "icp"
    credentials_env: str | None = "ICP_PUBLISH_CREDENTIALS"
    tables: tuple[str, ...] = PUBLISHABLE_TABLES
    chunk_rows: int = Field(default=100_000, ge=1_000)

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, tables: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(tables) - set(PUBLISHABLE_TABLES))
        if unknown:
            raise ValueError(f"unknown table(s) {unknown}; publishable: {list(PUBLISHABLE_TABLES)}")
        return tables


class OpsConfig(_Section):
    """Ops notifications: failed runs and a nightly run that has not succeeded by a deadline.

    Messages go through the alert channels (`alerts.channels`), addressed to the team.
    """

    fresh_by: str = Field(default="06:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    run_url_template: str | None = "http://127.0.0.1:3000/runs/{run_id}"
    sensor_interval_s: int = Field(default=30, ge=5)


class IcpConfig(_Section):
    """The whole of `icp.yaml`."""

    stages: StageMapping = Field(default_factory=StageMapping)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    contracts: ContractOverrides = Field(default_factory=ContractOverrides)
    icp: ProfileConfig = Field(default_factory=ProfileConfig)
    tiers: TierConfig = Field(default_factory=TierConfig)
    triggers: TriggerConfig = Field(default_factory=TriggerConfig)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    writeback: WritebackConfig = Field(default_factory=WritebackConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    ops: OpsConfig = Field(default_factory=OpsConfig)
    contracts_dir: Path | None = None
    # Seconds a run waits for another run holding the warehouse lock; 0 exits at once with one line.
    warehouse_lock_wait_s: float = Field(default=0, ge=0)


def load_config(config_path: str | Path | None = None) -> IcpConfig:
    """Read `icp.yaml` from the argument, `ICP_CONFIG`, or `./icp.yaml`; defaults when none exists."""
    explicit = config_path or os.environ.get("ICP_CONFIG")
    path = Path(explicit) if explicit else Path("icp.yaml")
    if not path.exists():
        if explicit:
            raise IcpConfigError(f"config file not found: {path}")
        return IcpConfig()
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise IcpConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(raw, dict):
        raise IcpConfigError(f"{path}: expected a mapping at the top level")
    try:
        return IcpConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise IcpConfigError(f"{path}: {where}: {first['msg']}") from exc


def work_dir() -> Path:
    """The git-ignored working folder for warehouse, dlt state and demo data."""
    return Path.cwd() / WORK_DIR_NAME


def default_source_dir() -> Path:
    return Path(os.environ.get("ICP_SOURCE_DIR") or work_dir() / "demo")


def default_warehouse() -> Path:
    return Path(os.environ.get("ICP_WAREHOUSE") or work_dir() / "warehouse.duckdb")


def contracts_dir(config: IcpConfig) -> Path:
    return config.contracts_dir or PROJECT_ROOT / "data_contracts"
