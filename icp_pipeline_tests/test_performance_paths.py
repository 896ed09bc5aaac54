"""The fast paths added for issue 7 give the same answers as the slow ones they replace.

Each test pins one equivalence the nightly job relies on at a million accounts: arrow-kernel
membership equals pandas `isin`, the Arrow route out of DuckDB equals `.df()`, the batched outbox
writes what one send per alert wrote, the matching index is rebuilt when the accounts change, and
the benchmark's next-day drop changes what it says it changes.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from scipy import sparse, special

from icp_pipeline.alerts.channels import AlertMessage, OutboxChannel
from icp_pipeline.config import (
    HiringSurgeTrigger,
    ObservationTrigger,
    TriggerConfig,
    contracts_dir,
    load_config,
)
from icp_pipeline.contracts import staging, validate
from icp_pipeline.contracts.spec import load_contracts
from icp_pipeline.drift.metrics import js_distance, psi
from icp_pipeline.frames import grouped_order, isin, joined_per_group, records
from icp_pipeline.ingest import files
from icp_pipeline.ingest.file_drop import aligned_batches
from icp_pipeline.ingest.files import row_hash
from icp_pipeline.profile.outcomes import customer_value
from icp_pipeline.profile.timeline import Timeline, seconds_of
from icp_pipeline.profile.traits import (
    ACCOUNT_ROW,
    TECHNOLOGY,
    AccountTraits,
    TechnologyItems,
    TraitInputs,
    _last_per_group,
    _technology_pairs,
    latest_observation,
)
from icp_pipeline.resolve import match
from icp_pipeline.resolve.match import build_account_index, match_feed
from icp_pipeline.resolve.normalize import normalize_domain
from icp_pipeline.scoring import model
from icp_pipeline.scoring.assets import top_accounts
from icp_pipeline.scoring.model import distinct_rows, fit_logistic
from icp_pipeline.triggers import detect
from icp_pipeline.warehouse import replace_slice, replace_table, to_frame

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- isin


@pytest.mark.parametrize(
    ("values", "allowed"),
    [
        (["a", "b", None, "c"], ["b", "c", "z"]),
        (["a", "b", None], ["a", None]),
        (["a", "b"], []),
        ([], ["a"]),
    ],
)
def test_isin_on_text_matches_pandas(values: list[str | None], allowed: list[str | None]) -> None:
    series = pd.Series(values, dtype="str")
    expected = series.isin(pd.Index(allowed, dtype="str")).to_numpy()
    assert isin(series, pd.Index(allowed, dtype="str")).tolist() == expected.tolist()
    assert isin(series, pd.Series(allowed, dtype="str")).tolist() == expected.tolist()


def test_isin_falls_back_to_pandas_for_other_dtypes() -> None:
    numbers = pd.Series([1, 2, 3])
    assert isin(numbers, [2, 3]).tolist() == [False, True, True]
    mixed = pd.Series(["a", "b"], dtype=object)
    assert isin(mixed, ["b"]).tolist() == [False, True]


# --------------------------------------------------------------------------- to_frame


def test_to_frame_gives_the_dtypes_and_values_of_df() -> None:
    with duckdb.connect() as con:
        query = """
            select * from (values
                ('a', 1, 1.5, true, 7::utinyint, date '2026-11-01', timestamptz '2026-11-01 10:00:00+00'),
                (null, null, null, null, null, null, null),
                ('c', 3, 2.5, false, 9::utinyint, date '2026-11-02', timestamptz '2026-11-02 10:00:00+00')
            ) t(text, whole, number, flag, small, day, moment)
        """
        con.execute("create type method as enum ('domain', 'name')")
        enum_query = "select 'name'::method as m union all select 'domain'::method"
        for sql in (
            query,
            enum_query,
            "select 1 as x where false",
            "select [1, 2] as l, 1.5::decimal(4, 2) as d",
        ):
            pd.testing.assert_frame_equal(to_frame(con.sql(sql)), con.sql(sql).df())


# --------------------------------------------------------------------------- row hash


def test_row_hash_tells_rows_apart_by_content_and_column() -> None:
    table = pa.table(
        {
            "a": ["x", "x", "xy", None, "x"],
            "b": ["yz", "yz", "z", "yz", None],
        }
    )
    hashes = row_hash(table).to_pylist()
    assert hashes[0] == hashes[1], "equal rows hash equal"
    assert len({hashes[0], hashes[2], hashes[3], hashes[4]}) == 4, "moved text and missing values differ"
    assert row_hash(table).type == pa.int64()
    swapped = pa.table({"b": table["b"], "a": table["a"]})
    assert row_hash(swapped).to_pylist()[0] != hashes[0], "the column order is part of the content"


# --------------------------------------------------------------------------- outbox batch


def _message(alert_id: str) -> AlertMessage:
    return AlertMessage(
        alert_id=alert_id,
        event_id=f"e-{alert_id}",
        account_id="A1",
        account_name="Acme",
        owner_id="U1",
        owner_name="Ann",
        owner_email=None,
        slack_user_id=None,
        tier="A",
        fit_score=90,
        top_reasons="Industry = Software: +10",
        trigger_type="funding",
        occurred_at="2026-10-30",
        strength=0.7,
        priority=0.8,
        evidence={"round_type": "Series B", "amount_usd": 2.0e7},
        crm_url=None,
    )


def test_outbox_batch_writes_one_line_per_message_with_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr("icp_pipeline.alerts.channels.os.fsync", synced.append)
    outbox = OutboxChannel(tmp_path / "alerts.jsonl")
    results = outbox.send_many([_message("a1"), _message("a2"), _message("a3")])
    assert [r.status for r in results] == ["sent"] * 3
    assert len(synced) == 1
    lines = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [line["alert"]["alert_id"] for line in lines] == ["a1", "a2", "a3"]
    single = OutboxChannel(tmp_path / "single.jsonl")
    single.send(_message("a1"))
    first = json.loads((tmp_path / "single.jsonl").read_text())
    assert {k: v for k, v in first.items() if k != "written_at"} == {
        k: v for k, v in lines[0].items() if k != "written_at"
    }


def test_outbox_batch_that_cannot_be_written_fails_every_message(tmp_path: Path) -> None:
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the outbox folder should be")
    results = OutboxChannel(blocked / "alerts.jsonl").send_many([_message("a1"), _message("a2")])
    assert [r.status for r in results] == ["failed", "failed"]
    assert all(r.error and r.error.startswith("write failed") for r in results)


# --------------------------------------------------------------------------- matching index


def test_account_index_is_rebuilt_when_the_accounts_change(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    accounts = pd.DataFrame(
        {"account_id": ["A1", "A2"], "name": ["Acme Inc", "Beta"], "domain": ["acme.com", "beta.de"]}
    )
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema staging")
        con.register("frame", accounts)
        con.execute("create table staging.accounts as select * from frame")
        first = staging.account_index(con)
        assert staging.account_index(con) is first, "unchanged accounts reuse the index"
        con.execute("update staging.accounts set domain = 'acme.io' where account_id = 'A1'")
        second = staging.account_index(con)
    assert second is not first
    assert second.by_domain.to_dict() == {"acme.io": "A1", "beta.de": "A2"}


def test_index_from_stored_match_keys_equals_normalising_the_accounts(tmp_path: Path) -> None:
    contract = load_contracts(contracts_dir(load_config()))["accounts"]
    raw_domains = ["acme.com", "WWW.acme.com", "www.www.beta.de", None, "gamma.io", "delta.co.uk", "beta.de"]
    accounts = pd.DataFrame(
        {
            "account_id": ["A2", "A1", "B1", "C1", None, "D1", "B1"],
            "name": ["Acme Inc", "ACME, Inc.", "Beta GmbH", "Gamma", "Orphan", None, "Beta GmbH"],
            "domain": normalize_domain(pd.Series(raw_domains, dtype="str")),  # staged domains
        }
    ).astype("str")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        replace_table(con, "staging", "accounts", staging._with_match_keys(accounts, contract))
        stored = staging.account_index(con)
    expected = build_account_index(accounts)
    pd.testing.assert_series_equal(stored.by_domain.sort_index(), expected.by_domain.sort_index())
    pd.testing.assert_frame_equal(stored.by_name.sort_index(), expected.by_name.sort_index())
    assert expected.by_domain["acme.com"] == "A1" and expected.by_name.loc["acme", "n_accounts"] == 2


def test_looking_up_few_keys_finds_what_hashing_the_table_finds() -> None:
    rng = np.random.default_rng(7)
    table = pd.Index([f"k{i}" for i in range(5_000)], dtype="str")
    keys = pd.Series(
        rng.choice(np.array([*table[:50], "missing", "k99999", None], dtype=object), size=200), dtype="str"
    )
    assert len(keys) * match._FEW_KEYS_RATIO < len(table), "the few-keys path is taken"
    expected = table.get_indexer(keys.fillna("no such key"))
    np.testing.assert_array_equal(match._lookup(keys, table), expected)
    assert (expected >= 0).any() and (expected == -1).any()


# --------------------------------------------------------------------------- benchmark drop


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nightly_benchmark", ROOT / "benchmarks" / "nightly.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _read(file: Path) -> pd.DataFrame:
    return pacsv.read_csv(
        file,
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True, null_values=[""], column_types={}),
    ).to_pandas()


def test_benchmark_next_day_changes_one_percent_of_accounts_and_adds_a_day_of_feed_rows(
    tmp_path: Path,
) -> None:
    bench = _benchmark()
    drop = tmp_path / "drop"
    bench.generate(400, drop)
    before = {rel: _read(drop / rel) for rel in ["crm/accounts.csv", *bench.FEED_DATE_COLUMNS]}
    changed = bench.change_drop(drop, dt.date(2026, 11, 1))
    accounts, old = _read(drop / "crm/accounts.csv"), before["crm/accounts.csv"]
    moved = accounts["updated_at"].astype(str) != old["updated_at"].astype(str)
    assert changed["crm/accounts.csv"] == int(moved.sum()) == 4
    assert (accounts.loc[moved, "updated_at"] == "2026-11-02T06:00:00").all()
    assert accounts["account_id"].tolist() == old["account_id"].tolist()
    for relative, (id_column, date_column) in bench.FEED_DATE_COLUMNS.items():
        feed, old_feed = _read(drop / relative), before[relative]
        added = feed.iloc[len(old_feed) :]
        assert len(added) == changed[relative] == int(np.ceil(len(old_feed) / 365))
        assert added[date_column].astype(str).str.startswith("2026-11-02").all()
        if id_column != "domain":
            assert not added[id_column].isin(old_feed[id_column]).any()


def test_benchmark_floor_writes_one_row_per_account(tmp_path: Path) -> None:
    bench = _benchmark()
    drop = tmp_path / "drop"
    bench.generate(300, drop)
    result = bench.floor(drop, tmp_path / "floor.duckdb")
    assert result["floor_rows"] == 300
    with duckdb.connect(str(tmp_path / "floor.duckdb"), read_only=True) as con:
        opportunities = con.execute("select sum(opportunities) from account_floor").fetchall()[0][0]
    assert opportunities == len(_read(drop / "crm/opportunities.csv"))


# --------------------------------------------------------------------------- deduplication


def _latest_per_key_by_sorting(frame: pd.DataFrame, key: list[str], order: list[str]) -> np.ndarray:
    """The reference: a stable sort by `order` descending (missing last), first row per key."""
    ordered = frame.sort_values(order, ascending=False, na_position="last", kind="stable") if order else frame
    return np.sort(ordered[~ordered.duplicated(subset=key, keep="first")].index.to_numpy())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    ("key", "order"),
    [
        (["id"], ["updated_at", "_row_hash"]),
        (["id"], ["_row_hash"]),
        (["id", "day"], ["updated_at"]),
        (["id"], []),
    ],
)
def test_latest_per_key_keeps_the_rows_a_stable_sort_keeps(
    seed: int, key: list[str], order: list[str]
) -> None:
    rng = np.random.default_rng(seed)
    size = 400
    updated = pd.Series(
        pd.to_datetime(rng.integers(0, 5, size), unit="D", utc=True).astype("datetime64[us, UTC]")
    )
    updated[rng.random(size) < 0.2] = pd.NaT
    frame = pd.DataFrame(
        {
            "id": pd.Series(rng.choice(["a", "b", "c", None, "d"], size), dtype="str"),
            "day": pd.Series(rng.choice(["1", "2"], size), dtype="str"),
            "updated_at": updated,
            "_row_hash": rng.choice(
                np.array([np.iinfo(np.int64).min, -1, 0, 7, np.iinfo(np.int64).max]), size
            ),
        },
        index=rng.permutation(size) * 3,
    )
    kept, unique = validate._latest_per_key(frame, key, order)
    assert kept.tolist() == _latest_per_key_by_sorting(frame, key, order).tolist()
    assert unique
    distinct = frame.drop_duplicates(subset=key)  # one row per key: every row is kept
    kept, unique = validate._latest_per_key(distinct, key, order)
    assert kept.tolist() == np.sort(distinct.index.to_numpy()).tolist() and unique


def test_keys_whose_hashes_collide_are_told_apart_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pd.DataFrame(
        {"id": pd.array(["a", "b", "c", "a"], dtype="str"), "_row_hash": [1, 2, 3, 4]}, index=[9, 3, 5, 0]
    )
    assert validate._keys_hash_apart(frame[["id"]].iloc[:3])
    assert not validate._keys_hash_apart(frame[["id"]])  # equal keys always hash equal
    monkeypatch.setattr(validate, "row_hash", lambda table: pa.array(np.zeros(table.num_rows, np.int64)))
    assert not validate._keys_hash_apart(frame[["id"]].iloc[:3])
    kept, unique = validate._latest_per_key(frame.iloc[:3], ["id"], ["_row_hash"])
    assert kept.tolist() == [3, 5, 9] and unique  # every row kept though every hash is the same
    kept, unique = validate._latest_per_key(frame, ["id"], ["_row_hash"])
    assert kept.tolist() == [0, 3, 5] and unique  # of the two "a" rows, the larger _row_hash


# --------------------------------------------------------------------------- matching normalised domains


def test_matching_staged_domains_equals_normalising_them_again() -> None:
    raw = pd.Series(
        [
            "HTTPS://WWW.Acme.com/",
            "www.www.beta.de",
            "info@gamma.io",
            None,
            "not a domain",
            "www.delta.co.uk.",
        ],
        dtype="str",
    )
    staged_domains = normalize_domain(raw)  # what staging stores in `domain`
    feed = pd.DataFrame(
        {"domain": staged_domains, "company_name": ["Acme", "Beta", "Gamma", "Delta", "X", "Y"]}
    )
    index = build_account_index(
        pd.DataFrame(
            {
                "account_id": ["A1", "A2", "A3"],
                "name": ["Acme Inc", "Beta GmbH", "Delta Ltd"],
                "domain": ["acme.com", "beta.de", "delta.co.uk"],
            }
        )
    )
    expected = match_feed(feed, index)
    shortcut = match_feed(feed, index, domains_normalized=True)
    pd.testing.assert_frame_equal(shortcut, expected)
    assert expected["account_id"].tolist()[:2] == ["A1", "A2"], "www.www. is normalised a second time"


# --------------------------------------------------------------------------- number parsing


@pytest.mark.parametrize(
    "values",
    [
        ["162", "00012", "+5", "-0", "9007199254740993", "18446744073709551615"],
        ["162", None, "7"],
        ["1.5", "1e3", "-.5e-3", "inf", "NaN", "123456789012345678901234567890", "0.1234567890123456789"],
        ["1", "lots", "2"],
        ["0x10", "1_000", "1,5", "1d3", "--1", "TRUE"],
        # Some value with a fraction: one float parse, no integer casts.
        ["1.5", "2", None, "-0.25", "+3", "1e400", "9007199254740993"],
        ["7.0", "8.00", "-0"],  # decimals that are whole: the casts in turn
        ["0.5", "0xe"],  # a text the float parse refuses
        [None, None],
        [],
    ],
)
def test_text_to_number_matches_pandas(values: list[str | None]) -> None:
    text = pd.Series(values, dtype="str")
    expected = pd.to_numeric(text, errors="coerce")
    pd.testing.assert_series_equal(validate._to_number(text), expected)


@pytest.mark.parametrize(
    "values",
    [
        ["2026-01-01", "2024-02-29", "0001-01-01", "9999-12-31", None, ""],
        ["2026-01-01 10:00:00", "2026-01-01T10:00", "2026-01-01T10", "1970-01-01T00:00:00.000001"],
        ["2026-01-01T10:00:00Z", "2026-01-01T10:00:00+02:00", "2026-01-01T10:00:00-0530", None],
        ["2026-01-01T10:00:00Z", "2026-01-01"],  # offsets and none: pandas decides
        ["2026-1-1", "2026-01", "2026", "20260101T100000", "2026-01-01T10:00:00.Z"],
        ["2026-02-29", "2026-01-01T24:00:00", "2026-W01", "2026-01-01t10:00:00", "soon"],
        ["2026-01-01T10:00:00.123456789", "2026-01-01T10:00:00,5", "+2026-01-01"],
        [None, None],
        [],
    ],
)
def test_text_to_timestamp_matches_pandas(values: list[str | None]) -> None:
    text = pd.Series(values, dtype="str", index=np.arange(len(values)) * 7 + 3, name="at")
    expected = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce").astype("datetime64[us, UTC]")
    pd.testing.assert_series_equal(validate._to_timestamp(text), expected)


def test_text_to_timestamp_matches_pandas_on_random_times() -> None:
    rng = np.random.default_rng(11)
    moments = pd.Series(pd.to_datetime(rng.integers(-(4 * 10**9), 4 * 10**9, 5_000), unit="s"))
    for form in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S+01:30"):
        text = pd.Series(moments.dt.strftime(form), dtype="str")
        expected = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce").astype(
            "datetime64[us, UTC]"
        )
        pd.testing.assert_series_equal(validate._to_timestamp(text), expected)


def test_text_to_number_matches_pandas_on_random_decimals() -> None:
    rng = np.random.default_rng(5)
    numbers = rng.random(20_000) * 10.0 ** rng.integers(-6, 16, 20_000)
    text = pd.Series(
        [f"{v:.{int(d)}g}" for v, d in zip(numbers, rng.integers(1, 25, 20_000), strict=True)], dtype="str"
    )
    pd.testing.assert_series_equal(validate._to_number(text), pd.to_numeric(text, errors="coerce"))


# --------------------------------------------------------------------------- grouped text, warehouse writes


def test_joined_per_group_equals_pandas_join_aggregation() -> None:
    rng = np.random.default_rng(11)
    keys = pd.Series(rng.choice(["a", "b", "c", "d'e", "f"], 500), dtype="str", name="account_id")
    text = pd.Series([f"t{i}" for i in rng.integers(0, 50, 500)], dtype="str", name="text")
    expected = text.groupby(keys).agg("; ".join)
    pd.testing.assert_series_equal(joined_per_group(keys, text, "; "), expected)


def test_replace_table_through_arrow_stores_what_the_dataframe_scan_stored() -> None:
    frame = pd.DataFrame(
        {
            "text": pd.Series(["x", None, "it's"], dtype="str"),
            "method": pd.Categorical(["name", None, "domain"], categories=["domain", "name"], ordered=True),
            "count": pd.array([1, None, 3], dtype="Int64"),
            "share": [0.5, np.nan, 1.0],
            "flag": pd.array([True, None, False], dtype="boolean"),
            "at": pd.to_datetime(["2026-01-01T05:00:00", None, "2026-02-01T00:00:00"], utc=True).as_unit(
                "us"
            ),
            "day": [dt.date(2026, 1, 1), None, dt.date(2026, 3, 1)],
        }
    )
    con = duckdb.connect()
    con.register("pandas_scan", frame)
    con.execute("create table expected as select * from pandas_scan")
    replace_table(con, "main", "written", frame)
    replace_slice(con, "main", "sliced", frame, {"text": "none"})
    expected = con.sql("describe expected").fetchall()
    assert con.sql("describe written").fetchall() == expected
    assert con.sql("describe sliced").fetchall() == expected
    assert "ENUM('domain', 'name')" in [row[1] for row in expected]
    rows = con.sql("from expected").fetchall()
    assert con.sql("from written").fetchall() == rows
    assert con.sql("from sliced").fetchall() == rows


def test_replace_table_scans_frames_arrow_cannot_convert() -> None:
    frame = pd.DataFrame({"mixed": pd.Series([{"a": 1}, "b"], dtype=object), "n": [1, 2]})
    con = duckdb.connect()
    replace_table(con, "main", "written", frame)
    assert con.sql("select n from written order by n").fetchall() == [(1,), (2,)]


# --------------------------------------------------------------------------- technologies split once


def _technologies_by_splitting(
    traits_accounts: pd.DataFrame, firmographics: pd.DataFrame, as_of: dt.date
) -> list[tuple[str, str]]:
    """Each account's latest stack by the date, split in Python: the pairs traits must give."""
    latest = latest_observation(firmographics, as_of)
    pairs: list[tuple[str, str]] = []
    for account in traits_accounts["account_id"]:
        if account not in latest.index or pd.isna(latest.at[account, "tech_stack"]):
            continue
        seen: list[str] = []
        for item in str(latest.at[account, "tech_stack"]).split(";"):
            if item.strip() and item.strip() not in seen:
                seen.append(item.strip())
        pairs += [(account, item) for item in seen]
    return pairs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_technologies_split_once_equal_splitting_each_dates_stacks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    accounts = pd.DataFrame(
        {
            "account_id": pd.Series([f"A{i}" for i in range(120)], dtype="str"),
            "industry": pd.Series(rng.choice(["Software", None], 120), dtype="str"),
            "employee_count": rng.integers(1, 5000, 120),
            "annual_revenue": rng.integers(1, 10**8, 120).astype(float),
            "country": pd.Series(rng.choice(["US", "de"], 120), dtype="str"),
            "created_at": pd.Series(
                pd.to_datetime(rng.integers(0, 40, 120), unit="D", origin="2026-01-01", utc=True)
            ).where(rng.random(120) > 0.2),
        }
    )
    size = 500
    stacks = [" Snowflake;AWS", "AWS;;aws; AWS", "", ";", "dbt; Snowflake ;dbt", None, "Looker"]
    firmographics = pd.DataFrame(
        {
            "account_id": pd.Series(rng.choice([f"A{i}" for i in range(130)] + [None], size), dtype="str"),
            "observed_at": pd.Series(
                pd.to_datetime(rng.integers(0, 60, size), unit="D", origin="2026-01-01", utc=True)
            ),
            "industry": pd.Series(rng.choice(["Retail", None], size), dtype="str"),
            "employee_count": rng.integers(1, 5000, size).astype(float),
            "annual_revenue": np.nan,
            "country": pd.Series(rng.choice(["FR", None], size), dtype="str"),
            "founded_year": rng.integers(1990, 2020, size).astype(float),
            "tech_stack": pd.Series(rng.choice(np.array(stacks, dtype=object), size), dtype="str"),
        }
    )
    inputs = TraitInputs.prepare(accounts, firmographics)
    for as_of in (dt.date(2026, 1, 10), dt.date(2026, 2, 1), dt.date(2026, 6, 1)):
        traits = inputs.traits(as_of)
        tech = traits.technologies
        expected = _technologies_by_splitting(traits.accounts, firmographics, as_of)
        assert list(zip(tech["account_id"], tech[TECHNOLOGY], strict=True)) == expected
        assert expected, "the planted stacks give pairs on every date"
        held_by = traits.accounts["account_id"].to_numpy()[tech[ACCOUNT_ROW].to_numpy()]
        assert held_by.tolist() == tech["account_id"].tolist()


# --------------------------------------------------------------------------- encoding check


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"id,name\n1,abcdefgh\n", "utf-8"),
        ("id,name\n1,abcdeé\n2,xyzxyzxyz\n".encode(), "utf-8"),  # é split across blocks, ASCII after
        (b"id,name\n1,abcde\xc3xyzxyzxy\xa9\n", "cp1252"),  # cut off by ASCII, then a continuation byte
        (b"id,name\n1,abcdefghijklmnop\n2,caf\xe9\n", "cp1252"),  # invalid only in a late block
        (b"id,name\r1,caf\xd5\r", "mac_roman"),
    ],
)
def test_encoding_check_skipping_ascii_blocks_finds_what_decoding_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, expected: str
) -> None:
    monkeypatch.setattr(files, "CSV_BLOCK_BYTES", 8)
    file = tmp_path / "t.csv"
    file.write_bytes(content)
    assert files.detect_encoding(file) == expected


# --------------------------------------------------------------------------- drift shares on categories


def test_population_drift_of_categorical_traits_equals_that_of_their_text() -> None:
    rng = np.random.default_rng(5)
    levels = ["Software", "Retail", "unknown", "Health", "Energy"]

    def trait(size: int, weights: list[float]) -> pd.Series:
        values = pd.Series(rng.choice(levels, size, p=weights), dtype="str")
        values[rng.random(size) < 0.05] = None
        return values.astype(pd.CategoricalDtype([*levels, "Unused"]))

    reference = trait(4000, [0.4, 0.3, 0.2, 0.1, 0.0])
    current = trait(3000, [0.2, 0.3, 0.3, 0.1, 0.1])
    as_text = reference.astype("str"), current.astype("str")
    assert psi(reference, current) == pytest.approx(psi(*as_text), rel=1e-12)
    assert js_distance(reference, current) == pytest.approx(js_distance(*as_text), rel=1e-12)
    assert psi(reference, current) > 0.05
    only_unknown = pd.Series(["unknown"] * 10, dtype="category")
    assert np.isnan(psi(only_unknown, current)) and np.isnan(js_distance(only_unknown, current))


# --------------------------------------------------------------------------- logistic fit


def test_fit_on_distinct_rows_with_counts_equals_the_fit_on_one_row_per_deal() -> None:
    rng = np.random.default_rng(3)
    accounts, features = 400, 12
    design = sparse.random(accounts, features, density=0.3, format="csr", random_state=4)
    design.data[:] = 1.0
    rows = rng.integers(0, accounts, 1500)  # deals of one account share its row
    truth = 1 / (1 + np.exp(-(design @ rng.normal(0, 1.5, features) - 0.5)))
    won = rng.random(len(rows)) < truth[rows]
    per_deal = fit_logistic(design[rows], won, 2.0)
    first, deals, wins = distinct_rows(design[rows], won)
    assert deals.sum() == len(rows) and wins.sum() == won.sum()
    assert len(first) <= accounts  # equal rows are one row each
    grouped = fit_logistic(design[rows][first], wins, 2.0, trials=deals)
    assert grouped[0] == pytest.approx(per_deal[0], abs=1e-6)
    np.testing.assert_allclose(grouped[1], per_deal[1], atol=1e-6)
    assert np.abs(per_deal[1]).max() > 0.3  # the data has signal: the comparison is not of zeros


def test_fit_loss_per_row_block_equals_the_plain_formula_even_where_exp_overflows() -> None:
    rng = np.random.default_rng(5)
    x = sparse.random(300, 9, density=0.4, format="csr", random_state=6)
    y = rng.integers(0, 3, 300).astype(float)
    n = y + rng.integers(0, 3, 300)
    w = rng.normal(0, 300, 10)  # |z| up to the thousands: exp(-z) overflows on the plain path
    z = x @ w[1:] + w[0]
    with np.errstate(over="ignore"):
        plain_nll = np.sum(n * np.logaddexp(0.0, z) - y * z)
        residual = n * special.expit(z) - y
    bounds = [0, 70, 71, 300]
    parts = [
        model._block_loss(w, (model._row_block(x, a, b), y[a:b], n[a:b]))
        for a, b in itertools.pairwise(bounds)
    ]
    assert np.abs(z).max() > 800
    assert sum(p[0] for p in parts) == pytest.approx(plain_nll, rel=1e-12)
    assert sum(p[1] for p in parts) == pytest.approx(residual.sum(), rel=1e-12)
    np.testing.assert_allclose(sum(p[2] for p in parts), x.T @ residual, rtol=1e-12)


def test_fit_does_not_depend_on_the_row_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    x = sparse.random(500, 8, density=0.3, format="csr", random_state=8)
    won = rng.random(500) < 1 / (1 + np.exp(-(x @ rng.normal(0, 2, 8))))
    monkeypatch.setattr(model, "FIT_BLOCKS", 1)
    one = fit_logistic(x, won, 2.0)
    monkeypatch.setattr(model, "FIT_BLOCKS", 7)
    seven = fit_logistic(x, won, 2.0)
    assert seven[0] == pytest.approx(one[0], abs=1e-7)
    np.testing.assert_allclose(seven[1], one[1], atol=1e-7)
    assert np.abs(one[1]).max() > 0.3


@pytest.mark.parametrize("sizes", [[7, 3, 11, 5], [30], [4, 4, 4], [1] * 13, [], [8], [3, 13]])
def test_load_batches_hold_the_same_rows_in_whole_duckdb_row_groups(sizes: list[int]) -> None:
    chunks, start = [], 0
    for size in sizes:
        chunks.append(pa.table({"n": pa.array(range(start, start + size), pa.int64())}))
        start += size
    malformed = pa.table({"n": pa.array([-1, -2], pa.int64()), "_malformed_row": ["a", "b"]})

    batches = list(aligned_batches(iter([*chunks, malformed]), rows=8))

    *clean, last = batches
    assert last.equals(malformed)  # other columns end the batch before them, never cast or dropped
    assert [row for b in clean for row in b.column("n").to_pylist()] == list(range(start))
    assert all(b.num_rows == 8 for b in clean[:-1])
    assert all(0 < b.num_rows <= 8 for b in clean)  # never an empty batch, e.g. after [8] + malformed


def test_top_accounts_equal_the_head_of_the_whole_table_sorted() -> None:
    rng = np.random.default_rng(9)
    scores = pd.DataFrame(
        {
            "account_id": pd.Series([f"a{i:05d}" for i in rng.permutation(5000)], dtype="str"),
            "fit_score": rng.integers(60, 100, 5000),  # many ties at every score
        }
    )
    expected = scores.sort_values(["fit_score", "account_id"], ascending=[False, True]).head(10)
    pd.testing.assert_frame_equal(top_accounts(scores, 10), expected)
    assert top_accounts(scores.head(0), 10).empty
    assert len(top_accounts(scores.head(3), 10)) == 3


@pytest.mark.parametrize("span", [3, 60, 2**40])
def test_grouped_order_is_lexsorts_order_ties_included(span: int) -> None:
    rng = np.random.default_rng(span % 97)
    account = np.sort(rng.integers(0, 500, 4000))
    account[::7] = rng.integers(0, 500, len(account[::7]))  # nearly sorted, as matrix rows come
    rank = rng.integers(0, span, 4000)  # few ranks: many ties within an account
    np.testing.assert_array_equal(grouped_order(account, rank), np.lexsort((rank, account)))
    negative = rank - 1  # a rank below zero: the lexsort path
    np.testing.assert_array_equal(grouped_order(account, negative), np.lexsort((negative, account)))
    assert len(grouped_order(account[:0], rank[:0])) == 0


def test_latest_observation_per_account_from_the_timeline_equals_a_sort_per_date() -> None:
    rng = np.random.default_rng(11)
    rows, accounts = 3000, 400
    account = rng.integers(0, accounts, rows)
    days = rng.integers(0, 60, rows)  # many same-day observations: ties go to the row delivered last
    observed_at = pd.Series(
        pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(days, unit="D"), dtype="datetime64[us, UTC]"
    )
    observed_at[rng.random(rows) < 0.05] = pd.NaT
    line = Timeline.of(account, seconds_of(observed_at))
    every = np.arange(accounts + 5)
    for as_of in (dt.date(2025, 12, 31), dt.date(2026, 1, 10), dt.date(2026, 2, 1), dt.date(2026, 6, 1)):
        end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
        known = np.flatnonzero((observed_at < end).to_numpy())
        expected = _last_per_group(account[known], observed_at.array.asi8[known], known, accounts + 5)
        latest = line.last_at(every, int(end.timestamp()) - 1)
        np.testing.assert_array_equal(latest, expected)
        # One moment per query (as for deals) gives each query its own account's answer.
        moments = np.full(len(every), int(end.timestamp()) - 1)
        np.testing.assert_array_equal(line.last_at(every, moments), expected)
    assert (latest >= 0).sum() > 300 and (expected == -1).sum() >= 5


def test_technology_pairs_of_observed_rows_equal_a_split_per_query() -> None:
    rng = np.random.default_rng(12)
    stacks = pd.Series(
        [";".join(rng.choice(list("ABCDEFG"), rng.integers(0, 4))) for _ in range(500)], dtype="str"
    )
    items = TechnologyItems.split(stacks)
    observed = rng.integers(-1, 500, 300)  # queries may share a feed row, or observe none (-1)
    ids = pd.Index([f"q{i}" for i in range(300)], dtype="str")
    pairs = _technology_pairs(items, len(stacks), observed, ids)
    expected = [
        (f"q{query}", technology)
        for query, row in enumerate(observed)
        if row >= 0
        for technology in dict.fromkeys(t.strip() for t in stacks[row].split(";") if t.strip())
    ]
    got = list(zip(pairs["account_id"], pairs["technology"].astype("str"), strict=True))
    assert got == expected and len(expected) > 300
    assert pairs["account_row"].tolist() == [int(q[1:]) for q, _ in expected]


# --------------------------------------------------------------------------- triggers


def _firmographics_with_ties(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """Observations of a few accounts (some unmatched), many at equal times, in shuffled order."""
    days = rng.integers(0, 40, rows)
    observed = pd.Series(pd.Timestamp("2026-09-01", tz="UTC") + pd.to_timedelta(days, unit="D"))
    observed[rng.random(rows) < 0.05] = pd.NaT
    account = pd.Series(rng.choice([f"A{i:03d}" for i in range(60)], rows), dtype="str")
    account[rng.random(rows) < 0.1] = None
    return pd.DataFrame(
        {
            "account_id": account,
            "observed_at": observed.astype("datetime64[us, UTC]"),
            "employee_count": pd.array(rng.integers(10, 500, rows), dtype="Int64"),
            "tech_stack": pd.Series([f"t{i % 7};t{i % 3}" for i in range(rows)], dtype="str"),
            "_raw_key": pd.Series([f"r{i}" for i in range(rows)], dtype="str"),
            "company_name": pd.Series(["x"] * rows, dtype="str"),
        },
        index=pd.RangeIndex(rows) * 3 + 7,  # labels unlike positions
    )


def _latest_observations_by_sorted_codes(firmographics: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """The former formula: a sorted factorization and a lexsort over a copy of every known row."""
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    known = firmographics.loc[
        firmographics["account_id"].notna() & (firmographics["observed_at"] < end),
        list(detect.OBSERVATION_COLUMNS),
    ]
    codes, _ = pd.factorize(known["account_id"], sort=True)
    ordered = np.lexsort((known["observed_at"].array.asi8, codes))
    ordered_codes = codes[ordered]
    last = np.flatnonzero(np.append(ordered_codes[1:] != ordered_codes[:-1], True))
    has_previous = (last > 0) & (ordered_codes[np.maximum(last - 1, 0)] == ordered_codes[last])
    latest = known.iloc[ordered[last]]
    before = known.iloc[ordered[np.maximum(last - 1, 0)]]
    mask = pd.Series(has_previous, index=latest.index)
    return latest.assign(
        previous_employees=before["employee_count"].set_axis(latest.index).where(mask),
        previous_stack=before["tech_stack"].set_axis(latest.index).where(mask),
        previous_observed=before["observed_at"].set_axis(latest.index).where(mask),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_latest_observations_on_hash_codes_equal_the_sorted_formula_ties_included(seed: int) -> None:
    firmographics = _firmographics_with_ties(np.random.default_rng(seed), 900)
    for as_of in (dt.date(2026, 9, 10), dt.date(2026, 10, 15)):
        expected = _latest_observations_by_sorted_codes(firmographics, as_of)
        found = detect.latest_observations(firmographics, as_of)
        pd.testing.assert_frame_equal(found, expected)
        compared = detect.latest_observations(firmographics, as_of, compared_within_days=10)
        window = detect._window(expected["observed_at"], as_of, 10) & expected["previous_observed"].notna()
        assert 0 < len(compared) < len(expected)
        pd.testing.assert_frame_equal(compared, expected[window])
    assert detect.latest_observations(firmographics, dt.date(2020, 1, 1)).empty


def _hiring_surges_by_grouping_text(
    postings: pd.DataFrame, as_of: dt.date, rule: HiringSurgeTrigger
) -> pd.DataFrame:
    """The former formula: every window row grouped by account id (no departments configured)."""
    known = postings["account_id"].notna().to_numpy(dtype=bool)
    posted = postings["posted_at"]
    recent_mask = known & detect._window(posted, as_of, rule.recent_days - 1).to_numpy(dtype=bool)
    recent_start = pd.Timestamp(as_of, tz="UTC") - pd.Timedelta(days=rule.recent_days - 1)
    baseline_mask = known & (
        (posted < recent_start) & (posted >= recent_start - pd.Timedelta(days=rule.baseline_days))
    ).to_numpy(dtype=bool)
    recent = (
        postings.loc[recent_mask, ["account_id", "posting_id", "posted_at"]]
        .groupby("account_id")
        .agg(
            recent=("posting_id", "size"),
            first_posting=("posting_id", "min"),
            occurred_at=("posted_at", "max"),
        )
    )
    baseline = postings.loc[baseline_mask, ["account_id"]].groupby("account_id").size().rename("baseline")
    table = recent.join(baseline).fillna({"baseline": 0})
    table["monthly_baseline"] = table["baseline"] / (rule.baseline_days / 30)
    surge = table[
        (table["recent"] >= rule.min_postings)
        & (table["recent"] >= rule.min_ratio * table["monthly_baseline"])
    ]
    return surge.reset_index()[["account_id", "recent", "first_posting", "occurred_at", "monthly_baseline"]]


@pytest.mark.parametrize("seed", [0, 1])
def test_hiring_surges_counted_on_hash_codes_equal_grouping_every_window_row(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = 6000
    account = pd.Series(rng.choice([f"A{i:03d}" for i in range(120)], rows), dtype="str")
    account[rng.random(rows) < 0.05] = None
    # Recent postings are frequent for a third of the accounts: some surge, some only reach the count.
    days = np.where(
        account.str[-1:].isin(["0", "3", "7"]), rng.integers(0, 60, rows), rng.integers(0, 240, rows)
    )
    postings = pd.DataFrame(
        {
            "account_id": account,
            "posting_id": pd.Series([f"P{n:05d}" for n in rng.permutation(rows)], dtype="str"),
            "posted_at": (pd.Timestamp("2026-11-01", tz="UTC") - pd.to_timedelta(days, unit="D")).astype(
                "datetime64[us, UTC]"
            ),
            "department": pd.Series(rng.choice(["Sales", "Engineering"], rows), dtype="str"),
        }
    )
    rule = HiringSurgeTrigger(min_postings=4, min_ratio=1.5)
    config = TriggerConfig(hiring_surge=rule)
    as_of = dt.date(2026, 11, 1)
    expected = _hiring_surges_by_grouping_text(postings, as_of, rule)
    events = detect.hiring_surge_events(postings, as_of, config)
    assert 0 < len(events) < expected["account_id"].nunique() + 1
    assert events["account_id"].tolist() == expected["account_id"].tolist()
    assert events["source_key"].tolist() == expected["first_posting"].tolist()
    assert events["occurred_at"].tolist() == expected["occurred_at"].tolist()
    evidence = [json.loads(text) for text in events["evidence"]]
    assert [e["recent_postings"] for e in evidence] == expected["recent"].tolist()
    assert [e["monthly_baseline"] for e in evidence] == [
        round(float(b), 2) for b in expected["monthly_baseline"]
    ]


@pytest.mark.parametrize("watch", [(), ("Snowflake", "dbt", "Looker")])
def test_tech_change_evidence_equals_set_differences_of_each_accounts_two_stacks(
    watch: tuple[str, ...],
) -> None:
    rng = np.random.default_rng(5)
    tools = ["Snowflake", "dbt", "Looker", "Tableau", " HubSpot ", "Salesforce", ""]
    accounts = [f"A{i:03d}" for i in range(300)]

    def stack() -> str | None:
        if rng.random() < 0.08:
            return None
        return ";".join(rng.choice(tools, rng.integers(0, 5)))

    firmographics = pd.DataFrame(
        {
            "account_id": pd.Series(accounts * 2, dtype="str"),
            "observed_at": pd.Series(
                [pd.Timestamp("2026-06-01", tz="UTC")] * 300 + [pd.Timestamp("2026-10-20", tz="UTC")] * 300
            ).astype("datetime64[us, UTC]"),
            "employee_count": pd.array([100] * 600, dtype="Int64"),
            "tech_stack": pd.Series([stack() for _ in range(600)], dtype="str"),
            "_raw_key": pd.Series([f"r{i}" for i in range(600)], dtype="str"),
        }
    )
    config = TriggerConfig(tech_change=ObservationTrigger(window_days=30, watch=watch))

    def items(text: object) -> set[str]:
        names = {part.strip() for part in str(text).split(";")} if isinstance(text, str) else set()
        return {name for name in names if name and (not watch or name in watch)}

    expected = {}
    for account in accounts:
        rows = firmographics[firmographics["account_id"] == account]["tech_stack"].tolist()
        before, now = items(rows[0]), items(rows[1])
        if now != before:
            expected[account] = {"added": sorted(now - before), "dropped": sorted(before - now)}
    as_of = dt.date(2026, 11, 1)
    events = detect.tech_change_events(firmographics, as_of, config)
    found = {a: json.loads(e) for a, e in zip(events["account_id"], events["evidence"], strict=True)}
    assert 0 < len(found) < len(accounts)
    assert found == expected
    # Events already in the ledger are left out; the rest keep their evidence.
    known = pd.Index(events["event_id"].iloc[::3], dtype="str")
    rest = detect.tech_change_events(firmographics, as_of, config, seen=known)
    assert len(rest) == len(events) - len(known)
    assert {a: json.loads(e) for a, e in zip(rest["account_id"], rest["evidence"], strict=True)} == {
        a: found[a] for a in rest["account_id"]
    }


# --------------------------------------------------------------------------- design matrix


def _design_by_coordinates(traits: AccountTraits, min_tech_accounts: int = 1) -> sparse.csr_matrix:
    """The former construction: coordinates of every one, converted by scipy (repeats summed)."""
    frame, n = traits.accounts, len(traits.accounts)
    rows, cols, offset = [], [], 0
    for trait in [c for c in frame.columns if c != "account_id"]:
        codes = frame[trait].astype("category")
        rows.append(np.arange(n))
        cols.append(codes.cat.codes.to_numpy().astype(np.int64) + offset)
        offset += len(codes.cat.categories)
    tech = traits.technologies[TECHNOLOGY].astype("category")
    codes = tech.cat.codes.to_numpy().astype(np.int64)
    values = [str(v) for v in tech.cat.categories]
    counts = np.bincount(codes, minlength=len(values))
    kept = sorted((v, c) for c, v in enumerate(values) if counts[c] >= max(min_tech_accounts, 1))
    column_of_code = np.full(len(values), -1, dtype=np.int64)
    column_of_code[[c for _, c in kept]] = np.arange(len(kept))
    valid = column_of_code[codes] >= 0
    rows.append(traits.technologies[ACCOUNT_ROW].to_numpy()[valid])
    cols.append(column_of_code[codes][valid] + offset)
    every, at = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_matrix((np.ones(len(every)), (every, at)), shape=(n, offset + len(kept)))


@pytest.mark.parametrize(
    ("seed", "repeats", "missing"), [(0, False, False), (1, False, False), (2, True, False), (3, False, True)]
)
def test_design_built_in_place_equals_converting_coordinates(seed: int, repeats: bool, missing: bool) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    accounts = pd.DataFrame(
        {
            "account_id": pd.Series([f"A{i:05d}" for i in range(n)], dtype="str"),
            "industry": pd.Categorical(rng.choice(["b", "a", "c", "unknown"], n)),
            "country": pd.Categorical(rng.choice(["US", "DE"], n)),
        }
    )
    if missing:  # traits are never missing ("unknown" is a value); if one were, nothing changes
        accounts.loc[::7, "country"] = None
    # Each account's technologies in stack order (not sorted by name); some accounts have none.
    tools = ["Snowflake", "dbt", "Looker", "Tableau", "Rare"]
    pairs = [
        (row, tool)
        for row in range(n)
        for tool in rng.permutation(tools)[: rng.integers(0, 4)]
        if tool != "Rare" or row % 500 == 0
    ]
    if repeats:
        pairs += pairs[:50]  # the same (account, technology) twice: scipy sums them
    technologies = pd.DataFrame(
        {
            "account_id": pd.Series([f"A{row:05d}" for row, _ in pairs], dtype="str"),
            TECHNOLOGY: pd.Categorical([tool for _, tool in pairs]),
            ACCOUNT_ROW: np.array([row for row, _ in pairs], dtype=np.int64),
        }
    )
    traits = AccountTraits(accounts, technologies, {})
    for min_tech_accounts in (1, 5):
        expected = _design_by_coordinates(traits, min_tech_accounts)
        found = model.build_design(traits, min_tech_accounts).matrix
        assert found.shape == expected.shape and found.has_sorted_indices
        assert np.array_equal(found.indptr, expected.indptr)
        assert np.array_equal(found.indices, expected.indices)
        assert np.array_equal(found.data, expected.data)
        assert (found.data > 1).any() == (repeats or missing)


def _same_value(left: object, right: object) -> bool:
    """Equal values of the same type, a missing value matching a missing value of the same type."""
    if type(left) is not type(right):
        return False
    missing = pd.isna(left)
    return bool(missing and pd.isna(right)) or (not missing and left == right)


def test_records_are_what_to_dict_gives_for_every_kind_of_column() -> None:
    frame = pd.DataFrame(
        {
            "text": pd.array(["a", None, "c", "d"], dtype="str"),
            "count": np.array([1, 2, 3, 4], dtype=np.int64),
            "share": [0.5, np.nan, 1.0, -2.0],
            "at": pd.to_datetime(["2026-01-01", None, "2026-03-01", "2026-04-01"], utc=True),
            "flag": [True, False, True, False],
            "mixed": pd.Series([np.int64(3), "x", None, np.float64(2.5)], dtype=object),
            "maybe": pd.array([5, None, 7, None], dtype="Int64"),
            "tier": pd.Categorical(["A", "B", None, "A"]),
        },
        index=[7, 3, 9, 1],
    )
    expected = frame.to_dict("records")
    got = records(frame)
    assert [list(row) for row in got] == [list(row) for row in expected]
    for row, want in zip(got, expected, strict=True):
        assert all(_same_value(row[name], want[name]) for name in want), (row, want)
    assert records(frame.iloc[:0]) == [] == frame.iloc[:0].to_dict("records")


def _customer_value_by_groupby(
    opportunities: pd.DataFrame, subscriptions: pd.DataFrame | None, as_of: dt.date
) -> pd.DataFrame:
    """The grouping-and-joining formula `customer_value` replaced."""
    won = opportunities[opportunities["won"]]
    value = won.groupby("account_id", observed=True)["amount"].sum().rename("won_amount").to_frame()
    value["won_deals"] = won.groupby("account_id", observed=True).size()
    if subscriptions is not None and len(subscriptions):
        end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
        subs = subscriptions[subscriptions["started_at"] < end]
        active = subs["ended_at"].isna() | (subs["ended_at"] >= end)
        first = subs.sort_values("started_at", kind="stable").drop_duplicates("account_id")
        per_account = pd.DataFrame(
            {
                "arr": subs[active].groupby("account_id")["arr"].sum(),
                "first_arr": first.set_index("account_id")["arr"],
                "subscriptions": subs.groupby("account_id").size(),
            }
        )
        value = value.join(per_account, how="outer")
        value["arr"] = value["arr"].fillna(0.0)
        value["churned"] = value["subscriptions"].fillna(0).gt(0) & value["arr"].le(0)
        value["expanded"] = value["arr"] > value["first_arr"].fillna(np.inf)
        value["value"] = value["arr"].where(value["subscriptions"].fillna(0) > 0, value["won_amount"])
    else:
        value["churned"] = False
        value["expanded"] = False
        value["value"] = value["won_amount"]
    value["value"] = value["value"].fillna(0.0).astype("float64")
    value.index.name = "account_id"
    return value.reset_index()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_subscriptions", ["rows", "none", "none started"])
def test_customer_value_counted_on_account_numbers_equals_grouping_by_id(
    seed: int, with_subscriptions: str
) -> None:
    rng = np.random.default_rng(seed)
    accounts = np.array([f"A{i:04d}" for i in rng.permutation(400)])
    deals = 900
    opportunities = pd.DataFrame(
        {
            "account_id": pd.Series(accounts[rng.integers(0, 300, deals)], dtype="str"),
            "won": rng.random(deals) < 0.4,
            "amount": np.where(rng.random(deals) < 0.1, np.nan, rng.integers(1, 50, deals) * 1000.0),
        }
    )
    start = pd.Timestamp("2025-01-01", tz="UTC").as_unit("us")
    rows = 700
    # Starts on few distinct days (ties), some after the as-of date; a few missing ARRs; accounts
    # with subscriptions but no won deal, and won deals without subscriptions.
    started = start + pd.to_timedelta(rng.integers(0, 40, rows) * 15, unit="D")
    ended = started + pd.to_timedelta(rng.integers(30, 400, rows), unit="D")
    subscriptions = pd.DataFrame(
        {
            "account_id": pd.Series(accounts[rng.integers(100, 400, rows)], dtype="str"),
            "started_at": started,
            "ended_at": pd.Series(ended).where(rng.random(rows) < 0.6),
            "arr": np.where(rng.random(rows) < 0.05, np.nan, rng.integers(0, 30, rows) * 500.0),
        }
    )
    as_of = dt.date(2026, 2, 1)
    if with_subscriptions == "none":
        subscriptions = subscriptions.iloc[:0]
    elif with_subscriptions == "none started":
        subscriptions = subscriptions.assign(started_at=start + pd.Timedelta(days=800))
    expected = _customer_value_by_groupby(opportunities, subscriptions, as_of)
    got = customer_value(opportunities, subscriptions, as_of)
    pd.testing.assert_frame_equal(got, expected)
    assert got["churned"].any() or with_subscriptions != "rows"
    assert got["expanded"].any() or with_subscriptions != "rows"
