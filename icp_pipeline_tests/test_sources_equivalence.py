"""The same CRM served by a HubSpot-shaped API scores exactly like it does as a file drop.

A generated demo's accounts, contacts, opportunities and owners are turned into a HubSpot
portal (same ids, HubSpot-shaped values: numbers as strings, ISO timestamps with Z, stage ids with
pipeline metadata, associations); subscriptions and feeds stay files. The nightly job runs once on
the drop and once with `sources.crm.kind: hubspot`, and the scores must match row for row.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from icp_pipeline.demo.generate import DemoSpec, generate_demo
from icp_pipeline.runner import run_nightly
from icp_pipeline_tests.fake_crm import FakeHubSpot, hubspot_data_from_drop

AS_OF = dt.date(2026, 11, 1)
SCORE_COLUMNS = ["account_id", "fit_score", "tier", "disqualified", "reasons"]


def nightly(drop: Path, warehouse: Path, config: Path | None = None) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_nightly(drop, warehouse, AS_OF, instance, config_file=config, log_level="WARNING")
    assert result.success, [e.message for e in result.all_events if e.is_step_failure]


def scores(warehouse: Path) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        frame = con.sql(
            f"select {', '.join(SCORE_COLUMNS)} from icp.account_scores where as_of = ? order by account_id",
            params=[AS_OF],
        ).to_arrow_table()
    return frame.to_pandas()


def test_hubspot_crm_scores_like_the_file_drop(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop = tmp_path / "drop"
    generate_demo(drop, DemoSpec(accounts=1500, seed=5, as_of=AS_OF))
    nightly(drop, tmp_path / "files.duckdb")

    api_drop = tmp_path / "api_drop"
    shutil.copytree(drop / "feeds", api_drop / "feeds")
    (api_drop / "crm").mkdir()
    shutil.copy(drop / "crm" / "subscriptions.csv", api_drop / "crm" / "subscriptions.csv")
    with FakeHubSpot(hubspot_data_from_drop(drop), token="pat-equivalence") as hub:
        config = tmp_path / "icp.yaml"
        config.write_text(yaml.safe_dump({"sources": {"crm": {"kind": "hubspot", "base_url": hub.url}}}))
        monkeypatch.setenv("ICP_HUBSPOT_TOKEN", "pat-equivalence")
        nightly(api_drop, tmp_path / "api.duckdb", config)
        company_pages = len(hub.seen("POST", "/crm/v3/objects/companies/search"))

    from_files, from_api = scores(tmp_path / "files.duckdb"), scores(tmp_path / "api.duckdb")
    assert len(from_files) == 1500 and from_files["tier"].nunique() == 4
    pd.testing.assert_frame_equal(from_api, from_files)
    assert company_pages == 8, "1,500 companies in pages of 200"
    with duckdb.connect(str(tmp_path / "api.duckdb"), read_only=True) as con:
        sources = dict(con.execute("select _source_file, count(*) from raw.accounts group by 1").fetchall())
        stages = con.execute("select count(distinct stage) from raw.opportunities").fetchall()[0][0]
    assert sources == {"hubspot:companies": 1500}
    assert stages > 2
