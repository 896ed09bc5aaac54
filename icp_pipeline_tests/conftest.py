"""Shared fixtures: small hand-written drops and Dagster helpers that run on a warehouse under tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_dlt import DagsterDltResource

from icp_pipeline.resources import IcpSettings
from icp_pipeline.secrets import forget_all

AS_OF = "2026-11-01"

ACCOUNTS_CSV = """account_id,name,domain,industry,employee_count,annual_revenue,country,owner_id,created_at,updated_at
A1,Acme Inc,acme.com,Software,120,5000000,US,U1,2024-01-01,2026-01-01T00:00:00
A2,Beta GmbH,beta.de,Retail,40,900000,DE,U2,2024-02-01,2026-01-02T00:00:00
A3,Gamma Ltd,gamma.co.uk,Software,900,80000000,GB,,2024-03-01,2026-10-25T00:00:00
"""

OPPORTUNITIES_CSV = """opportunity_id,account_id,stage,amount,created_at,closed_at,updated_at
O1,A1,Closed Won,10000,2025-01-01,2025-02-01,2025-02-01T00:00:00
O2,A2,Closed Lost,5000,2025-03-01,2025-04-01,2025-04-01T00:00:00
O3,A3,Proposal,7000,2026-09-01,,2026-10-25T00:00:00
"""


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's icp.yaml, warehouse or Dagster home, nor another test's secrets."""
    for name in ("ICP_SOURCE_DIR", "ICP_WAREHOUSE", "ICP_CONFIG", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    forget_all()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway Dagster instance home, telemetry off, like the one `icp` prepares."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def write_drop(root: Path, files: dict[str, str]) -> Path:
    """Write `{"crm/accounts.csv": text}` files under root and return root."""
    for relative, text in files.items():
        file = root / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def minimal_drop(tmp_path: Path) -> Path:
    return write_drop(
        tmp_path / "drop",
        {"crm/accounts.csv": ACCOUNTS_CSV, "crm/opportunities.csv": OPPORTUNITIES_CSV},
    )


Materialize = Callable[..., dg.ExecuteInProcessResult]


@pytest.fixture
def materialize_raw(tmp_path: Path) -> Iterator[Materialize]:
    """Materialize the raw ingestion assets against a drop into tmp_path/warehouse.duckdb."""
    from icp_pipeline.ingest.assets import raw_file_drop

    instance = dg.DagsterInstance.ephemeral()

    def run(
        source_dir: Path, warehouse: Path | None = None, raise_on_error: bool = True
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [raw_file_drop],
            partition_key=AS_OF,
            instance=instance,
            raise_on_error=raise_on_error,
            resources={
                "dlt": DagsterDltResource(),
                "icp": IcpSettings(
                    source_dir=str(source_dir), warehouse=str(warehouse or tmp_path / "warehouse.duckdb")
                ),
            },
        )

    yield run
    instance.dispose()
