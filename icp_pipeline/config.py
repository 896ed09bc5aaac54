"""Settings: `icp.yaml` (every key has a default) plus paths from the environment.

A typo in `icp.yaml` is an error, not a silently ignored key: ops teams edit this file by hand.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import string
import zoneinfo
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from icp_pipeline.contracts.spec import CANONICAL_TABLES
from icp_pipeline.errors import IcpConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORK_DIR_NAME = ".icp"


# The traits the profile builds (profile/traits.py), named here so config can check a points
# override or a written criterion without importing pandas; `icp.custom_columns` adds more.
SINGLE_TRAITS: tuple[str, ...] = (
    "industry",
    "employee_band",
    "revenue_band",
    "country",
    "company_age_band",
    "funding_stage",
    # Event traits: what happened in a window before the moment described (profile/events.py).
    "recent_funding",
    "leadership_change",
    "hiring_trend",
    "headcount_trend",
)
TECHNOLOGY = "technology"
BUILT_IN_TRAITS: tuple[str, ...] = (*SINGLE_TRAITS, TECHNOLOGY)
Share = Annotated[float, Field(ge=0, le=1)]
Days = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listed(names: Iterable[str]) -> str:
    return ", ".join(names)


def _unknown_trait(trait: str, custom_columns: Iterable[str]) -> str | None:
    known = (*BUILT_IN_TRAITS, *custom_columns)
    if trait in known:
        return None
    return f"unknown trait {trait!r}; traits: {_listed(known)} (more through icp.custom_columns)"


def _url_template(template: str | None, placeholders: tuple[str, ...]) -> str | None:
    """A link template is formatted with `placeholders` only; anything else fails, so fail at load."""
    if template is None:
        return None
    known = _listed("{" + name + "}" for name in placeholders)
    try:
        named = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); placeholders: {known}") from exc
    unknown = [name for name in named if re.split(r"[.\[]", name, maxsplit=1)[0] not in placeholders]
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; placeholders: {known}")
    try:
        template.format(**dict.fromkeys(placeholders, "x"))
    except (AttributeError, IndexError, KeyError, ValueError) as exc:
        raise ValueError(f"cannot be filled in ({exc}); placeholders: {known}") from exc
    return template


class StageMapping(_Section):
    """CRM stage names (case-insensitive) that mean won, lost or still open.

    A stage in none of the lists is treated as open and reported by the opportunities
    contract, so a renamed stage in the CRM shows up instead of silently skewing win rates.
    """

    won: tuple[str, ...] = ("closed won", "won")
    lost: tuple[str, ...] = Field(default=("closed lost", "lost"), validate_default=True)
    open: tuple[str, ...] = Field(
        default=(
            "prospecting",
            "qualification",
            "discovery",
            "demo",
            "proposal",
            "negotiation",
            "open",
        ),
        validate_default=True,
    )

    @field_validator("lost", "open")
    @classmethod
    def _listed_once(cls, names: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        """A stage in two lists is read as the first (a lost stage also listed as won counts as won)."""
        for earlier in ("won", "lost"):
            if earlier == info.field_name:
                break
            taken = {name.lower() for name in info.data.get(earlier, ())}
            twice = [name for name in names if name.lower() in taken]
            if twice:
                raise ValueError(
                    f"stage {twice[0]!r} is listed under both {earlier} and {info.field_name}; list each stage once"
                )
        return names

    @property
    def known(self) -> tuple[str, ...]:
        return (*self.won, *self.lost, *self.open)


class ContractOverrides(_Section):
    """Per-table overrides of contract thresholds, for teams whose feeds arrive less often."""

    max_bad_share: dict[str, Share] = Field(default_factory=dict)
    freshness_days: dict[str, Days] = Field(default_factory=dict)

    @field_validator("max_bad_share", "freshness_days")
    @classmethod
    def _canonical_tables(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """An override naming no canonical table claims a threshold that nothing applies."""
        unknown = [table for table in overrides if table not in CANONICAL_TABLES]
        if unknown:
            raise ValueError(f"unknown table {unknown[0]!r}; tables: {_listed(CANONICAL_TABLES)}")
        return overrides


class ScheduleConfig(_Section):
    """When the nightly job runs; the schedule is created stopped, ops turn it on."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _dagster_cron(cls, cron: str) -> str:
        """Checked as Dagster checks it when the schedule is built (5 fields, no 30 February)."""
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(cron):
            raise ValueError(f"not a cron expression Dagster accepts: {cron!r} (5 fields, e.g. '0 2 * * *')")
        return cron

    @field_validator("timezone")
    @classmethod
    def _iana_timezone(cls, timezone: str) -> str:
        if timezone in ("UTC", "utc"):
            return timezone
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {timezone!r} (an IANA name such as Europe/Berlin)") from None
        return timezone


class Criterion(_Section):
    """One line of a written ICP: a trait and the values that satisfy it."""

    trait: str
    values: tuple[str, ...]


class WrittenIcp(_Section):
    """The ICP as the team wrote it down; audited against the data, used for cold start."""

    must_have: tuple[Criterion, ...] = ()
    nice_to_have: tuple[Criterion, ...] = ()
    hard_no: tuple[Criterion, ...] = ()


class EventTraitConfig(_Section):
    """Windows of the event traits, before deal creation (learning) or the as-of date (scoring)."""

    enabled: bool = True
    funding_months: int = Field(default=12, ge=1, le=120)
    leadership_months: int = Field(default=12, ge=1, le=120)
    hiring_days: int = Field(default=90, ge=7, le=730)
    headcount_months: int = Field(default=12, ge=1, le=120)


class ProfileConfig(_Section):
    """How the ICP is learned from evidence. Defaults are documented in the README."""

    best_customer_share: float = Field(default=0.2, gt=0, le=1)
    min_closed_with: int = Field(default=30, ge=1)
    min_won_with: int = Field(default=5, ge=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    must_have_min_win_rate_lift: float = Field(default=1.3, ge=1)
    hard_no_max_win_rate_ratio: float = Field(default=0.35, ge=0, le=1)
    cold_start_min_closed: int = Field(default=50, ge=0)
    l2: float = Field(default=2.0, gt=0)
    custom_columns: tuple[str, ...] = ()
    # Learning uses the deals created in the last N months before the as-of date.
    lookback_months: int = Field(default=24, ge=1, le=240)
    # Custom columns whose value never changes after a deal (a region, a segment fixed at signup):
    # without account history they describe a deal by today's value. Others are left unknown.
    static_columns: tuple[str, ...] = ()
    events: EventTraitConfig = Field(default_factory=EventTraitConfig)
    # The forward backtest scores as of this many months before the as-of date.
    backtest_months: int = Field(default=6, ge=1, le=60)
    written: WrittenIcp | None = None
    points: dict[str, int] = Field(default_factory=dict)
    cac: float | None = Field(default=None, gt=0)
    gross_margin: float = Field(default=0.8, gt=0, le=1)

    @field_validator("static_columns")
    @classmethod
    def _static_columns_are_custom(cls, static: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        custom = info.data.get("custom_columns", ())
        unknown = [name for name in static if name not in custom]
        if unknown:
            raise ValueError(f"{_listed(unknown)} not in icp.custom_columns ({_listed(custom) or 'none'})")
        return static

    @field_validator("written")
    @classmethod
    def _written_traits_known(cls, written: WrittenIcp | None, info: ValidationInfo) -> WrittenIcp | None:
        """A criterion on an unknown trait is audited as unsupported and never scores a cold start."""
        for section in ("must_have", "nice_to_have", "hard_no"):
            for number, criterion in enumerate(getattr(written, section, ())):
                problem = _unknown_trait(criterion.trait, info.data.get("custom_columns", ()))
                if problem:
                    raise ValueError(f"{section}[{number}]: {problem}")
        return written

    @field_validator("points")
    @classmethod
    def _points_name_traits(cls, points: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        """`"trait=value"`: an override on an unknown trait matches no row and changes nothing."""
        for key in points:
            trait, equals, value = key.partition("=")
            if not equals or not trait.strip() or not value.strip():
                raise ValueError(f"{key!r} is not 'trait=value' (e.g. 'industry=Software')")
            problem = _unknown_trait(trait.strip(), info.data.get("custom_columns", ()))
            if problem:
                raise ValueError(f"{key!r}: {problem}")
        return points


class TierConfig(_Section):
    """Minimum fit score per tier. Unset: A = top 5%, B = next 15%, C = next 30% of scored accounts."""

    A: int | None = Field(default=None, ge=0, le=100)
    B: int | None = Field(default=None, ge=0, le=100)
    C: int | None = Field(default=None, ge=0, le=100)

    @field_validator("B", "C")
    @classmethod
    def _below_higher_tiers(cls, cutoff: int | None, info: ValidationInfo) -> int | None:
        """Out-of-order cut-offs would be clamped in scoring, silently emptying a tier."""
        if cutoff is None:
            return cutoff
        for higher in ("A", "B"):
            if higher == info.field_name:
                break
            above = info.data.get(higher)
            if above is not None and cutoff >= above:
                raise ValueError(f"{cutoff} is not below {higher} ({above}); cut-offs must fall from A to C")
        return cutoff


class FundingTrigger(_Section):
    window_days: int = Field(default=90, ge=1)
    min_amount_usd: float = Field(default=0.0, ge=0)


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
    min_growth: float = Field(default=0.2, ge=0)
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
    timeout_s: float | None = Field(default=None, gt=0)
    max_attempts: int | None = Field(default=None, ge=1)
    backoff_s: float | None = Field(default=None, ge=0)
    max_retry_after_s: float | None = Field(default=None, ge=0)


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

    @field_validator("crm_url_template")
    @classmethod
    def _account_link(cls, template: str | None) -> str | None:
        return _url_template(template, ("account_id",))


class DriftConfig(_Section):
    """ICP drift monitoring: reference window, cohort minimums, thresholds (PSI 0.1 watch, 0.2 flag)."""

    reference_months: int = Field(default=12, ge=1)
    reference_window_months: int = Field(default=12, ge=1)
    min_cohort_deals: int = Field(default=40, ge=1)
    min_cohort_wins: int = Field(default=8, ge=1)
    min_closed_share: float = Field(default=0.6, ge=0, le=1)
    min_auc_drop: float = Field(default=0.05, ge=0, le=1)
    min_tier_a_lift: float = Field(default=1.5, gt=0)
    psi_watch: float = Field(default=0.1, ge=0)
    psi_flag: float = Field(default=0.2, ge=0, validate_default=True)
    false_alarm_rate: float = Field(default=0.05, gt=0, lt=1)
    window_months: list[int] = Field(default_factory=lambda: [3, 6])
    max_detectable_drop: float = Field(default=0.10, gt=0, le=1)

    @field_validator("psi_flag")
    @classmethod
    def _flag_above_watch(cls, psi_flag: float, info: ValidationInfo) -> float:
        watch = info.data.get("psi_watch")
        if watch is not None and psi_flag < watch:
            raise ValueError(
                f"{psi_flag} is below psi_watch ({watch}); a shift is watched before it is flagged"
            )
        return psi_flag


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

    @field_validator("run_url_template")
    @classmethod
    def _run_link(cls, template: str | None) -> str | None:
        return _url_template(template, ("run_id",))


class DeletionConfig(_Section):
    """When an account the drop no longer delivers stops being scored (see `ingest.absence`): after
    this many consecutive nightly loads of its file without it; 0 = never. A truthy `deleted`,
    `is_deleted` or a past `deleted_at` column stops it at once."""

    absent_after_loads: int = Field(default=3, ge=0)


class ModelsConfig(_Section):
    """Model governance (see `governance/`): how a learned challenger replaces the scoring champion.

    `manual`: ops promote with `icp model promote`. `auto`: the nightly comparison promotes the
    challenger when its AUC beats the champion's by `min_auc_gain` on the same deals and DeLong's
    paired test gives p < `alpha`, at most once every `min_days_between_promotions` days."""

    promotion: Literal["manual", "auto"] = "manual"
    min_auc_gain: float = Field(default=0.02, ge=0, le=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_days_between_promotions: int = Field(default=28, ge=0)


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
    deletions: DeletionConfig = Field(default_factory=DeletionConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    contracts_dir: Path | None = None
    # Seconds a run waits for another run holding the warehouse lock; 0 exits at once with one line.
    warehouse_lock_wait_s: float = Field(default=0, ge=0)
    # The first as-of date Dagster's daily partitions hold: set it earlier to score older history.
    first_partition_date: dt.date = dt.date(2020, 1, 1)

    @field_validator("first_partition_date")
    @classmethod
    def _not_in_the_future(cls, first: dt.date) -> dt.date:
        if first > dt.date.today():
            raise ValueError(f"{first} is in the future; the partitions must start on or before today")
        return first


def load_config(config_path: str | Path | None = None) -> IcpConfig:
    """Read `icp.yaml` from the argument, `ICP_CONFIG`, or `./icp.yaml`; defaults when none exists."""
    explicit = config_path or os.environ.get("ICP_CONFIG")
    path = Path(explicit) if explicit else Path("icp.yaml")
    if not path.exists():
        if explicit:
            raise IcpConfigError(f"config file not found: {path}")
        return IcpConfig()
    if path.is_dir():
        raise IcpConfigError(f"{path}: is a directory, not a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise IcpConfigError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} on line {line}); save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise IcpConfigError(f"{path}: cannot be read ({exc.strerror or exc.__class__.__name__})") from exc
    try:
        raw: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise IcpConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(raw, dict):
        raise IcpConfigError(f"{path}: expected a mapping at the top level")
    try:
        return IcpConfig.model_validate(raw)
    except ValidationError as exc:
        raise IcpConfigError(f"{path}: {validation_error_line(exc)}") from exc


@functools.cache
def _warn_once(message: str) -> None:
    """Once per process, though several modules build their definitions from the config."""
    logging.getLogger(__name__).warning(message)


def config_or_defaults() -> tuple[IcpConfig, IcpConfigError | None]:
    """The config Dagster's definitions are built with when the code location is imported.

    A broken `icp.yaml` must not stop the code location from loading (its schedules, sensors and run
    history would vanish from the UI): the definitions fall back to the defaults with a warning, and
    every run then fails at its first step with the same one-line error, which the ops sensor reports.
    """
    try:
        return load_config(), None
    except IcpConfigError as exc:
        _warn_once(f"Dagster definitions built with default settings: {exc}")
        return IcpConfig(), exc


def validation_error_line(exc: ValidationError) -> str:
    """The first error as one line, `dotted.key: what is wrong`, for the CLI and the run log."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "[key]")
    message = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    return f"{where}: {message}" if where else message


def work_dir() -> Path:
    """The git-ignored working folder for warehouse, dlt state and demo data."""
    return Path.cwd() / WORK_DIR_NAME


def default_source_dir() -> Path:
    return Path(os.environ.get("ICP_SOURCE_DIR") or work_dir() / "demo")


def default_warehouse() -> Path:
    return Path(os.environ.get("ICP_WAREHOUSE") or work_dir() / "warehouse.duckdb")


def contracts_dir(config: IcpConfig) -> Path:
    return config.contracts_dir or PROJECT_ROOT / "data_contracts"
