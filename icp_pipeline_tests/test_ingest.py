"""File-drop ingestion: every delivered row lands in raw exactly once, changes merge in place, bad input says why."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import dlt
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from icp_pipeline.config import contracts_dir, load_config
from icp_pipeline.contracts.spec import load_contracts
from icp_pipeline.dlt_settings import load_settings
from icp_pipeline.errors import IcpInputError
from icp_pipeline.ingest.files import inventory, iter_identified_chunks
from icp_pipeline_tests.conftest import ACCOUNTS_CSV, OPPORTUNITIES_CSV, write_drop


def raw_rows(warehouse: Path, table: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(f'select * from raw."{table}" order by _raw_key, _row_hash').df()


def test_first_load_keeps_every_row_and_extra_columns(
    minimal_drop: Path, tmp_path: Path, materialize_raw
) -> None:
    extra = ACCOUNTS_CSV.replace("updated_at\n", "updated_at,crm_segment\n", 1).replace(
        "T00:00:00\n", "T00:00:00,enterprise\n"
    )
    write_drop(minimal_drop, {"crm/accounts.csv": extra})
    materialize_raw(minimal_drop)
    accounts = raw_rows(tmp_path / "warehouse.duckdb", "accounts")
    assert len(accounts) == 3
    assert set(accounts["crm_segment"]) == {"enterprise"}
    assert len(raw_rows(tmp_path / "warehouse.duckdb", "opportunities")) == 3


def test_rerun_of_same_drop_duplicates_nothing(minimal_drop: Path, tmp_path: Path, materialize_raw) -> None:
    materialize_raw(minimal_drop)
    first = raw_rows(tmp_path / "warehouse.duckdb", "accounts")
    result = materialize_raw(minimal_drop)
    second = raw_rows(tmp_path / "warehouse.duckdb", "accounts")
    assert len(second) == len(first) == 3
    assert list(second["_loaded_at"]) == list(first["_loaded_at"]), "unchanged rows must not be reloaded"
    metadata = result.asset_materializations_for_node("raw_file_drop")
    sent = {
        m.asset_key.path[-1]: m.metadata["rows_sent"].value for m in metadata if "rows_sent" in m.metadata
    }
    assert sent == {"accounts": 0, "opportunities": 0}


def unchanged_files(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    """Per raw table, whether its file was skipped as unchanged (from the asset's metadata)."""
    return {
        m.asset_key.path[-1]: m.metadata["unchanged_file"].value
        for m in result.asset_materializations_for_node("raw_file_drop")
        if "unchanged_file" in m.metadata
    }


def test_a_file_loaded_before_into_an_untouched_raw_table_is_not_read_again(
    minimal_drop: Path, tmp_path: Path, materialize_raw
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    assert unchanged_files(materialize_raw(minimal_drop)) == {"accounts": False, "opportunities": False}
    first = raw_rows(warehouse, "accounts")
    assert unchanged_files(materialize_raw(minimal_drop)) == {"accounts": True, "opportunities": True}
    pd.testing.assert_frame_equal(raw_rows(warehouse, "accounts"), first)

    # The same size, other bytes: read, and the changed row merged.
    write_drop(minimal_drop, {"crm/accounts.csv": ACCOUNTS_CSV.replace("Retail,40", "Retail,41")})
    assert unchanged_files(materialize_raw(minimal_drop)) == {"accounts": False, "opportunities": True}
    assert raw_rows(warehouse, "accounts").set_index("account_id").loc["A2", "employee_count"] == "41"

    # Raw changed behind ingest's back: the file is read again and restores the row.
    with duckdb.connect(str(warehouse)) as con:
        con.execute("delete from raw.accounts where account_id = 'A2'")
    assert unchanged_files(materialize_raw(minimal_drop)) == {"accounts": False, "opportunities": True}
    assert len(raw_rows(warehouse, "accounts")) == 3


def appended_files(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    """Per raw table, whether only the lines appended to its file were read (from the metadata)."""
    return {
        m.asset_key.path[-1]: m.metadata["appended_file"].value
        for m in result.asset_materializations_for_node("raw_file_drop")
        if "appended_file" in m.metadata
    }


def content(frame: pd.DataFrame) -> pd.DataFrame:
    """Raw rows without the load time, which differs between loads by design."""
    return frame.drop(columns=["_loaded_at"]).sort_values(["_raw_key", "_row_hash"]).reset_index(drop=True)


APPENDED = (
    "A4,Delta Inc,delta.io,Fintech,10,1000000,US,U1,2024-05-01,2026-02-02T00:00:00\n"
    ",No Id Corp,noid.com,Retail,5,1,US,,2024-01-01,2026-01-01T00:00:00\n"  # keyless
    '"A5,broken\n'  # an unterminated quote: a malformed line, kept for quarantine
)


def test_lines_appended_to_a_file_are_read_alone_and_load_what_reading_it_whole_loads(
    minimal_drop: Path, tmp_path: Path, materialize_raw
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    materialize_raw(minimal_drop)
    first_rows = raw_rows(warehouse, "accounts")
    write_drop(minimal_drop, {"crm/accounts.csv": ACCOUNTS_CSV + APPENDED})
    result = materialize_raw(minimal_drop)
    assert appended_files(result) == {"accounts": True, "opportunities": False}
    assert unchanged_files(result) == {"accounts": False, "opportunities": True}
    metadata = {
        m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("raw_file_drop")
    }
    assert metadata["accounts"]["rows_sent"].value == 3
    assert metadata["accounts"]["rows_in_file"].value == 6
    appended = raw_rows(warehouse, "accounts")
    old = appended[appended["_raw_key"].isin(first_rows["_raw_key"])].reset_index(drop=True)
    # The old rows were not loaded again (the malformed line added a column, empty for them).
    pd.testing.assert_frame_equal(old[first_rows.columns], first_rows)
    whole = tmp_path / "whole" / "warehouse.duckdb"
    materialize_raw(minimal_drop, whole)
    pd.testing.assert_frame_equal(content(appended), content(raw_rows(whole, "accounts")))
    assert appended["_malformed_row"].notna().sum() == 1

    # The next night the file is the one just loaded: skipped, as any unchanged file.
    assert unchanged_files(materialize_raw(minimal_drop)) == {"accounts": True, "opportunities": True}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # A key of the old lines appended again: its old row must be sent with it.
        (
            ACCOUNTS_CSV,
            ACCOUNTS_CSV + "A1,Acme Inc,acme.com,Software,130,5000000,US,U1,2024-01-01,2026-02-01T00:00:00\n",
        ),
        # The old file did not end its last line: the new bytes continue that line.
        (ACCOUNTS_CSV.rstrip("\n"), ACCOUNTS_CSV.rstrip("\n") + "9\n" + APPENDED),
        # An old line edited as well as lines appended.
        (ACCOUNTS_CSV, ACCOUNTS_CSV.replace("Retail,40", "Retail,41") + APPENDED),
    ],
    ids=["old-key-appended", "unended-last-line", "old-line-edited"],
)
def test_a_grown_file_that_is_not_only_new_keys_appended_is_read_whole(
    minimal_drop: Path, tmp_path: Path, materialize_raw, before: str, after: str
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    write_drop(minimal_drop, {"crm/accounts.csv": before})
    materialize_raw(minimal_drop)
    write_drop(minimal_drop, {"crm/accounts.csv": after})
    assert appended_files(materialize_raw(minimal_drop))["accounts"] is False
    whole = tmp_path / "whole" / "warehouse.duckdb"
    materialize_raw(minimal_drop, whole)
    pd.testing.assert_frame_equal(
        content(raw_rows(warehouse, "accounts")), content(raw_rows(whole, "accounts"))
    )


def test_changed_row_in_later_drop_updates_in_place(
    minimal_drop: Path, tmp_path: Path, materialize_raw
) -> None:
    materialize_raw(minimal_drop)
    changed = ACCOUNTS_CSV.replace("Beta GmbH,beta.de,Retail,40", "Beta GmbH,beta.de,Retail,55").replace(
        "2026-01-02T00:00:00", "2026-02-01T00:00:00"
    )
    added = changed + "A4,Delta Inc,delta.io,Fintech,10,1000000,US,U1,2024-05-01,2026-02-02T00:00:00\n"
    write_drop(minimal_drop, {"crm/accounts.csv": added})
    materialize_raw(minimal_drop)
    accounts = raw_rows(tmp_path / "warehouse.duckdb", "accounts").set_index("account_id")
    assert len(accounts) == 4
    assert accounts.loc["A2", "employee_count"] == "55"
    assert accounts.loc["A2", "updated_at"] == "2026-02-01T00:00:00"


def test_rows_sharing_a_key_are_all_kept_for_staging_to_judge(tmp_path: Path, materialize_raw) -> None:
    duplicated = (
        ACCOUNTS_CSV + "A1,Acme Inc,acme.com,Software,lots,5000000,US,U1,2024-01-01,2026-01-05T00:00:00\n"
    )
    duplicated += ",No Id Corp,noid.com,Retail,5,1,US,,2024-01-01,2026-01-01T00:00:00\n"
    drop = write_drop(
        tmp_path / "drop", {"crm/accounts.csv": duplicated, "crm/opportunities.csv": OPPORTUNITIES_CSV}
    )
    materialize_raw(drop)
    materialize_raw(drop)
    accounts = raw_rows(tmp_path / "warehouse.duckdb", "accounts")
    assert len(accounts) == 5
    assert (accounts["account_id"] == "A1").sum() == 2
    assert accounts["account_id"].isna().sum() == 1
    assert accounts.loc[accounts["account_id"].isna(), "_raw_key"].str.startswith("row:").all()


def test_jsonl_and_parquet_drops_load_like_csv(tmp_path: Path, materialize_raw) -> None:
    drop = tmp_path / "drop"
    (drop / "crm").mkdir(parents=True)
    accounts = pd.read_csv(pd.io.common.StringIO(ACCOUNTS_CSV))
    accounts.to_json(drop / "crm" / "accounts.jsonl", orient="records", lines=True)
    opportunities = pd.read_csv(pd.io.common.StringIO(OPPORTUNITIES_CSV))
    pq.write_table(
        pa.Table.from_pandas(opportunities, preserve_index=False), drop / "crm" / "opportunities.parquet"
    )
    materialize_raw(drop)
    warehouse = tmp_path / "warehouse.duckdb"
    loaded = raw_rows(warehouse, "accounts").set_index("account_id")
    assert len(loaded) == 3 and loaded.loc["A1", "employee_count"] == "120"
    assert len(raw_rows(warehouse, "opportunities")) == 3


def test_missing_optional_files_are_skipped_with_their_impact(minimal_drop: Path) -> None:
    found = inventory(minimal_drop, load_contracts(contracts_dir(load_config())))
    assert set(found.files) == {"accounts", "opportunities"}
    assert "hiring-surge" in found.missing_optional["job_postings"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"crm/opportunities.csv": OPPORTUNITIES_CSV}, "crm/accounts: required file missing"),
        (
            {
                "crm/accounts.csv": ACCOUNTS_CSV.replace(",updated_at\n", ",changed\n", 1),
                "crm/opportunities.csv": OPPORTUNITIES_CSV,
            },
            "crm/accounts.csv: missing required column 'updated_at'",
        ),
        (
            {"crm/accounts.csv": "", "crm/opportunities.csv": OPPORTUNITIES_CSV},
            "accounts.csv: the file is empty",
        ),
        (
            {
                "crm/accounts.csv": ACCOUNTS_CSV,
                "crm/accounts.jsonl": "{}\n",
                "crm/opportunities.csv": OPPORTUNITIES_CSV,
            },
            "more than one file",
        ),
    ],
)
def test_unusable_drop_is_a_one_line_error(tmp_path: Path, files: dict[str, str], message: str) -> None:
    drop = write_drop(tmp_path / "drop", files)
    with pytest.raises(IcpInputError) as caught:
        inventory(drop, load_contracts(contracts_dir(load_config())))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_source_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(IcpInputError, match="source directory not found"):
        inventory(tmp_path / "nope", load_contracts(contracts_dir(load_config())))


@pytest.mark.parametrize(
    ("line_end", "codec", "detected"),
    [("\r", "mac_roman", "mac_roman"), ("\r\n", "cp1252", "cp1252"), ("\n", "latin-1", "latin-1")],
)
def test_legacy_encodings_and_a_truncated_line(
    tmp_path: Path, line_end: str, codec: str, detected: str
) -> None:
    """Old-Mac exports (bare CR) are Mac Roman, Windows ones cp1252; bytes cp1252 lacks fall back to latin-1."""
    name = "Bêta\x81 GmbH" if codec == "latin-1" else "Bêta’s GmbH"
    text = ACCOUNTS_CSV.replace("Beta GmbH", name).replace("\n", line_end) + "A9,Trunc"
    drop = tmp_path / "drop"
    (drop / "crm").mkdir(parents=True)
    (drop / "crm" / "accounts.csv").write_bytes(text.encode(codec))
    (drop / "crm" / "opportunities.csv").write_text(OPPORTUNITIES_CSV)
    found = inventory(drop, load_contracts(contracts_dir(load_config())))
    assert found.files["accounts"].encoding == detected
    chunks = pa.concat_tables(iter_identified_chunks(found.files["accounts"]), promote_options="default")
    frame = chunks.to_pandas()
    assert name in set(frame["name"])
    assert frame["_malformed_row"].dropna().tolist() == ["A9,Trunc"]
    assert len(frame) == 4


def test_a_load_left_unfinished_by_a_killed_run_does_not_replace_tonights_drop(
    minimal_drop: Path, tmp_path: Path, materialize_raw
) -> None:
    """dlt's `run` loads a pending package instead of new data; tonight's drop must win.

    dagster-dlt drops pending packages before each run; this pins that behaviour we rely on."""
    from icp_pipeline.ingest.file_drop import file_drop_pipeline, file_drop_source

    warehouse = tmp_path / "warehouse.duckdb"
    materialize_raw(minimal_drop)
    contracts = load_contracts(contracts_dir(load_config()))
    write_drop(minimal_drop, {"crm/accounts.csv": ACCOUNTS_CSV.replace("Retail,40", "Retail,41")})
    killed = file_drop_pipeline(warehouse, tmp_path / "dlt_pipelines")
    killed.extract(file_drop_source(inventory(minimal_drop, contracts), contracts, warehouse))
    assert killed.has_pending_data, "the simulated killed run must leave a package behind"

    write_drop(minimal_drop, {"crm/accounts.csv": ACCOUNTS_CSV.replace("Retail,40", "Retail,42")})
    materialize_raw(minimal_drop)
    accounts = raw_rows(warehouse, "accounts").set_index("account_id")
    assert accounts.loc["A2", "employee_count"] == "42"
    assert len(accounts) == 3


def test_loaded_data_files_are_not_kept_beside_the_warehouse(
    minimal_drop: Path, tmp_path: Path, materialize_raw
) -> None:
    materialize_raw(minimal_drop)
    write_drop(minimal_drop, {"crm/accounts.csv": ACCOUNTS_CSV.replace("Retail,40", "Retail,41")})
    materialize_raw(minimal_drop)

    pipelines = tmp_path / "dlt_pipelines"
    assert list(pipelines.rglob("package_completed.json")), "the loads' packages are where dlt keeps them"
    assert not [
        path for path in pipelines.rglob("*") if path.suffix in (".parquet", ".jsonl", ".insert_values")
    ]
    assert len(raw_rows(tmp_path / "warehouse.duckdb", "accounts")) == 3


@pytest.mark.parametrize(("transient", "compression"), [(True, "UNCOMPRESSED"), (False, "SNAPPY")])
def test_only_transient_load_files_are_written_uncompressed(
    tmp_path: Path, transient: bool, compression: str
) -> None:
    pipeline = dlt.pipeline(
        pipeline_name="settings",
        destination=dlt.destinations.duckdb(str(tmp_path / "w.duckdb")),
        dataset_name="raw",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    with load_settings(transient_files=transient):
        pipeline.extract([pa.table({"a": ["x"] * 10})], table_name="t")
        pipeline.normalize()
    files = list((tmp_path / "pipelines").rglob("*.parquet"))
    assert files and {pq.ParquetFile(f).metadata.row_group(0).column(0).compression for f in files} == {
        compression
    }


def _load_drop(drop: Path, root: Path, spooled: bool) -> None:
    """One load of the drop into root/warehouse.duckdb, its tables as load files or as arrow tables."""
    from icp_pipeline.ingest.file_drop import file_drop_pipeline, file_drop_source, spool

    contracts = load_contracts(contracts_dir(load_config()))
    warehouse = root / "warehouse.duckdb"
    pipelines = root / "dlt_pipelines"
    with spool(pipelines) as directory, load_settings(transient_files=True):
        source = file_drop_source(
            inventory(drop, contracts), contracts, warehouse, spool_dir=directory if spooled else None
        )
        file_drop_pipeline(warehouse, pipelines).run(source)
    assert not directory.exists()


def _raw_schema(root: Path) -> list[tuple[object, ...]]:
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(
            "select table_name, column_name, data_type, is_nullable from duckdb_columns() "
            "where schema_name = 'raw' and not starts_with(table_name, '_dlt') order by table_name, column_index"
        ).fetchall()


def _dlt_tables(root: Path) -> dict[str, object]:
    from icp_pipeline.ingest.file_drop import PIPELINE_NAME

    (schema,) = (root / "dlt_pipelines" / PIPELINE_NAME / "schemas").glob("*.json")
    tables = json.loads(schema.read_text())["tables"]
    return {name: table for name, table in tables.items() if not name.startswith("_dlt")}


def test_tables_written_as_load_files_load_what_arrow_tables_handed_to_dlt_load(
    minimal_drop: Path, tmp_path: Path
) -> None:
    """The file-drop resources write their own parquet (`load_files`); raw and dlt's schema must be
    what dlt makes of the same rows handed over as arrow tables: a first load with an extra column
    and a malformed line (a second schema: a second file), then a merge of changed and new rows."""
    extra = ACCOUNTS_CSV.replace("updated_at\n", "updated_at,crm_segment\n", 1).replace(
        "T00:00:00\n", "T00:00:00,enterprise\n"
    )
    broken = extra + '"A5,broken\n'
    write_drop(minimal_drop, {"crm/accounts.csv": broken})
    changed = (ACCOUNTS_CSV.replace("Retail,40", "Retail,41") + APPENDED).replace('"A5,broken\n', "")
    for night, files in enumerate(({}, {"crm/accounts.csv": changed})):
        write_drop(minimal_drop, files)
        for spooled in (True, False):
            _load_drop(minimal_drop, tmp_path / str(spooled), spooled)
        spooled_root, arrow_root = tmp_path / "True", tmp_path / "False"
        assert _raw_schema(spooled_root) == _raw_schema(arrow_root)
        assert _dlt_tables(spooled_root) == _dlt_tables(arrow_root)
        for table in ("accounts", "opportunities"):
            pd.testing.assert_frame_equal(
                content(raw_rows(spooled_root / "warehouse.duckdb", table)),
                content(raw_rows(arrow_root / "warehouse.duckdb", table)),
            )
        accounts = raw_rows(spooled_root / "warehouse.duckdb", "accounts").set_index("_raw_key")
        assert accounts["_malformed_row"].notna().sum() == 1
        assert len(accounts) == (4 if night == 0 else 6)
        if night:
            assert accounts.loc["A2", "employee_count"] == "41"


def test_load_files_are_one_per_schema_with_a_row_group_per_table(tmp_path: Path) -> None:
    from icp_pipeline.ingest.file_drop import load_files

    plain = pa.table({"a": ["x", "y"]})
    wider = pa.table({"a": [None], "_malformed_row": ['x,"y']})
    items = list(load_files(iter([plain, plain.slice(1), wider]), tmp_path, "t"))
    assert [item.meta.metrics.items_count for item in items] == [3, 1]
    first, second = (pq.ParquetFile(item.meta.file_path) for item in items)
    assert first.metadata.num_row_groups == 2
    assert first.read().equals(pa.concat_tables([plain, plain.slice(1)]))
    assert second.read().equals(wider)
    assert items[1].data.schema == wider.schema and items[1].data.num_rows == 0
    assert list(load_files(iter([]), tmp_path, "empty")) == []
