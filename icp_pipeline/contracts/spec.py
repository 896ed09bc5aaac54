"""Typed data contracts parsed from `data_contracts/*.yaml`, the one place table rules live.

Ingestion reads the key, cursor and required columns from here; validation compiles the same
objects into Great Expectations suites, so no rule is written twice.
"""

from __future__ import annotations

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


class ColumnSpec(BaseModel):
    """One column of a canonical table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ColumnType = "string"
    required: bool = False


class TableContract(BaseModel):
    """One canonical table: where its file lives, its grain, key, cursor and columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    source: Literal["crm", "feeds"]
    grain: str
    file_required: bool = False
    missing_file_impact: str = ""
    primary_key: tuple[str, ...]
    cursor: str | None = None
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _key_and_cursor_are_columns(self) -> TableContract:
        for name in (*self.primary_key, *([self.cursor] if self.cursor else [])):
            if name not in self.columns:
                raise ValueError(f"'{name}' is used as key or cursor but is not a declared column")
        if not self.file_required and not self.missing_file_impact:
            raise ValueError("an optional file must say what its absence weakens (missing_file_impact)")
        return self

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
    return {table: load_contract(directory / f"{table}.yaml") for table in CANONICAL_TABLES}
