"""Typed data contracts parsed from `data_contracts/*.yaml`, the one place table rules live.

Ingestion reads the key, cursor and required columns from here; validation compiles the same
objects into Great Expectations suites, so no rule is written twice.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from icp_pipeline.errors import IcpConfigError

CANONICAL_TABLES: tuple[str, ...] = (
    "accounts",
    "contacts",
    "opportunities",
    "subscriptions",
    "owners",
    "firmographics",
    "funding_rounds",
    "job_postings",
    "leadership_changes",
)

ColumnType = Literal["string", "integer", "number", "timestamp", "boolean"]
Severity = Literal["error", "warn", "block"]
RowRule = Literal["not_null", "type", "range", "allowed", "pattern", "not_future", "references"]
Normalizer = Literal["domain"]
# What a failing `error` rule does: drop the row to icp.quarantine, or null the one bad value (the
# row is kept and staged, the finding is recorded in icp.quarantine with action `null_field`).
Action = Literal["drop_row", "null_field"]
# Rules about the form of one value: on an optional column their default action is `null_field`.
FIELD_RULES: frozenset[str] = frozenset({"type", "range", "pattern", "allowed", "not_future"})


class Reference(BaseModel):
    """A column whose values must exist as keys of another (staged) table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    column: str


class ColumnSpec(BaseModel):
    """One column of a canonical table and the row rules its values must meet.

    `required` is about the file (the column must be there, else the run is blocked);
    `nullable: false` is about each value (a missing one quarantines the row).
    `allowed: "$stages"` takes the list from `icp.yaml` (the CRM's own stage names).
    `action` says per rule what an `error` failure does to the row (see `TableContract.action_of`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ColumnType = "string"
    required: bool = False
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | Literal["$stages"] | None = None
    case_insensitive: bool = False
    pattern: str | None = None
    not_future: bool = False
    references: Reference | None = None
    normalize: Normalizer | None = None
    severity: dict[RowRule, Severity] = Field(default_factory=dict)
    action: dict[RowRule, Action] = Field(default_factory=dict)

    def severity_of(self, rule: RowRule) -> Severity:
        return self.severity.get(rule, "error")


class Freshness(BaseModel):
    """The newest value of `column` must be at most `max_age_days` old at the as-of date."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    max_age_days: int = Field(ge=0)
    severity: Severity = "block"


class TableContract(BaseModel):
    """One canonical table: where its file lives, its grain, key, columns and rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    source: Literal["crm", "feeds"]
    grain: str
    file_required: bool = False
    missing_file_impact: str = ""
    primary_key: tuple[str, ...]
    cursor: str | None = None
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    freshness: Freshness | None = None
    max_bad_share: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _rules_name_declared_columns(self) -> TableContract:
        named = [*self.primary_key, *([self.cursor] if self.cursor else [])]
        named += [self.freshness.column] if self.freshness else []
        for name in named:
            if name not in self.columns:
                raise ValueError(f"'{name}' is used as key, cursor or freshness column but is not declared")
        if not self.file_required and not self.missing_file_impact:
            raise ValueError("an optional file must say what its absence weakens (missing_file_impact)")
        for name, spec in self.columns.items():
            if spec.pattern is not None:
                try:
                    re.compile(spec.pattern)
                except re.error as exc:
                    raise ValueError(f"columns.{name}.pattern: not a regular expression ({exc})") from exc
            if spec.min is not None and spec.max is not None and spec.min > spec.max:
                raise ValueError(f"columns.{name}: min is greater than max")
            if spec.not_future and spec.type != "timestamp":
                raise ValueError(f"columns.{name}: not_future applies to timestamp columns only")
            nulled = [rule for rule, action in spec.action.items() if action == "null_field"]
            if nulled and name in self._row_identity_columns:
                raise ValueError(
                    f"columns.{name}.action: a key or cursor column cannot be nulled, only dropped"
                )
            if nulled and not spec.nullable:
                raise ValueError(f"columns.{name}.action: a column with nullable: false cannot be nulled")
            if "not_null" in nulled:
                raise ValueError(f"columns.{name}.action: not_null cannot be answered by nulling the value")
        return self

    @property
    def _row_identity_columns(self) -> set[str]:
        return {*self.primary_key, *([self.cursor] if self.cursor else [])}

    def action_of(self, column: str, rule: RowRule) -> Action:
        """What a failing `error` rule does: the contract's `action` for it, else `null_field` for a
        type or format rule (type, range, pattern, allowed, not_future) on an optional column (not
        required, nullable, not the key or cursor) and `drop_row` for everything else."""
        spec = self.columns[column]
        if rule in spec.action:
            return spec.action[rule]
        optional = not spec.required and spec.nullable and column not in self._row_identity_columns
        return "null_field" if optional and rule in FIELD_RULES else "drop_row"

    @property
    def required_columns(self) -> list[str]:
        return [name for name, spec in self.columns.items() if spec.required]

    @property
    def relative_stem(self) -> str:
        """Path of the file in the drop without extension, e.g. `crm/accounts`."""
        return f"{self.source}/{self.table}"


def load_contract(file: Path) -> TableContract:
    """Parse one contract file; a malformed one is an error naming the file and the field."""
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise IcpConfigError(f"{file}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(raw, dict):
        raise IcpConfigError(f"{file}: a contract must be a mapping")
    try:
        contract = TableContract.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "contract"
        raise IcpConfigError(f"{file}: {where}: {first['msg']}") from exc
    if contract.table != file.stem:
        raise IcpConfigError(f"{file}: table '{contract.table}' does not match the file name")
    return contract


@cache
def load_contracts(directory: Path) -> dict[str, TableContract]:
    """The contracts of the nine canonical tables, in canonical order; extra files are ignored."""
    missing = [table for table in CANONICAL_TABLES if not (directory / f"{table}.yaml").exists()]
    if missing:
        raise IcpConfigError(f"{directory}: no data contract for {', '.join(missing)}")
    contracts = {table: load_contract(directory / f"{table}.yaml") for table in CANONICAL_TABLES}
    for contract in contracts.values():
        for name, spec in contract.columns.items():
            ref = spec.references
            if ref and (ref.table not in contracts or ref.column not in contracts[ref.table].columns):
                raise IcpConfigError(
                    f"{directory / contract.table}.yaml: columns.{name}.references "
                    f"{ref.table}.{ref.column}, which no contract declares"
                )
    return contracts
