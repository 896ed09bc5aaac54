"""Dagster wiring of staging: one asset per canonical table with two blocking checks each."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from icp_pipeline.config import config_or_defaults, contracts_dir
from icp_pipeline.contracts.spec import CANONICAL_TABLES, load_contracts
from icp_pipeline.contracts.staging import FEED_TABLES, stage
from icp_pipeline.errors import IcpContractError
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.warehouse import connect

_CONTRACTS = load_contracts(contracts_dir(config_or_defaults()[0]))

# Staging order follows references: owners before accounts, accounts before what points at them.
_UPSTREAM_STAGED: dict[str, list[str]] = {
    "owners": [],
    "accounts": ["owners"],
    **{table: ["accounts"] for table in CANONICAL_TABLES if table not in ("owners", "accounts")},
}


def _check_name(table: str, predicate: str) -> str:
    return f"{table}_{predicate}"


def _markdown_table(frame: Any, limit: int = 10) -> str:
    return frame.head(limit).to_markdown(index=False) if len(frame) else "(none)"


def build_staging_asset(table: str) -> dg.AssetsDefinition:
    contract = _CONTRACTS[table]
    key = dg.AssetKey(["staging", table])
    meets = _check_name(table, "meet_their_contract")
    add_up = _check_name(table, "rows_add_up")

    @dg.asset(
        key=key,
        group_name="staging",
        partitions_def=nightly_partitions,
        backfill_policy=nightly_backfill,
        deps=[dg.AssetKey(["raw", table]), *(dg.AssetKey(["staging", up]) for up in _UPSTREAM_STAGED[table])],
        description=(
            f"{contract.grain} Typed and deduplicated by {', '.join(contract.primary_key)} "
            "(latest wins); rows breaking an `error` rule are in icp.quarantine instead, "
            "except a bad optional value, which is nulled (the row kept, the finding quarantined)."
            + (" Each row carries the matched account_id and match_method." if table in FEED_TABLES else "")
        ),
        check_specs=[
            dg.AssetCheckSpec(
                meets, asset=key, blocking=True, description="No blocking contract rule failed."
            ),
            dg.AssetCheckSpec(
                add_up,
                asset=key,
                blocking=True,
                description="raw = staged + quarantined (dropped) rows + duplicates removed.",
            ),
        ],
    )
    def staging_table(context: dg.AssetExecutionContext, icp: IcpSettings) -> Iterator[Any]:
        config = icp.load_config()
        as_of = partition_date(context)
        with connect(icp.warehouse_path()) as con:
            outcome = stage(con, icp.contracts()[table], config, as_of=as_of, now=dt.datetime.now(dt.UTC))
        staged = outcome.staged
        failed = [r for r in staged.results if not r.passed]
        rule_rows = [
            {
                "rule": r.rule_id,
                "severity": r.severity,
                "failed": r.failed,
                "sample": ", ".join(r.sample_keys),
            }
            for r in failed
        ]
        yield dg.AssetCheckResult(
            check_name=meets,
            asset_key=key,
            passed=outcome.blocked_reason is None,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rules_evaluated": len(staged.results),
                "rules_failed": len(failed),
                "unexpected_rows": sum(r.failed for r in failed if not r.rule_id.startswith("table.")),
                "failed_rules": dg.MetadataValue.md(_markdown_table(pd.DataFrame(rule_rows))),
                "blocked_reason": outcome.blocked_reason or "",
            },
        )
        counts = {
            "raw_rows": staged.raw_rows,
            "staged_rows": len(staged.frame),
            "quarantined_rows": staged.quarantined_rows,
            "duplicates_removed": staged.duplicates_removed,
        }
        nulled_fields = staged.nulled_fields
        yield dg.AssetCheckResult(
            check_name=add_up, asset_key=key, passed=staged.rows_add_up, metadata=dict(counts)
        )
        if outcome.blocked_reason:
            raise IcpContractError(outcome.blocked_reason)
        if not staged.rows_add_up:
            raise IcpContractError(f"{table}: rows do not add up: {counts}")
        metadata: dict[str, Any] = {**counts, "dagster/row_count": len(staged.frame)}
        metadata["warnings"] = sum(r.failed for r in failed if r.severity == "warn")
        metadata["nulled_fields"] = nulled_fields
        if not outcome.raw_present:
            metadata["note"] = f"no {contract.relative_stem} file: {contract.missing_file_impact}"
        if outcome.match_summary is not None:
            metadata["match_rate"] = float(
                1 - outcome.match_summary.set_index("match_method").loc["unmatched", "share"]
            )
            metadata["match_by_method"] = dg.MetadataValue.md(_markdown_table(outcome.match_summary))
        if len(staged.quarantine):
            metadata["quarantine_sample"] = dg.MetadataValue.md(
                _markdown_table(staged.quarantine[["row_key", "rule", "action", "message"]])
            )
        if outcome.reused_from is not None:
            metadata["reused_from"] = outcome.reused_from.isoformat()
            context.log.info(
                f"staging/{table}: raw rows, referenced keys, contract and config unchanged since "
                f"{outcome.reused_from}; staged rows and quarantine kept, rules re-reported"
            )
        if outcome.restaged_keys is not None:
            metadata["restaged_keys"] = outcome.restaged_keys
            context.log.info(
                f"staging/{table}: contract, config and context unchanged; only the "
                f"{outcome.restaged_keys:,} keys with new raw rows were staged again"
            )
        context.log.info(
            f"staging/{table}: {counts['raw_rows']:,} raw = {counts['staged_rows']:,} staged + "
            f"{counts['quarantined_rows']:,} quarantined + {counts['duplicates_removed']:,} duplicates; "
            f"{nulled_fields:,} bad optional values nulled in kept rows"
        )
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)

    return staging_table


staging_assets = [build_staging_asset(table) for table in CANONICAL_TABLES]
