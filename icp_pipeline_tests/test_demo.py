"""Tests for the demo generator: determinism, file contract, and that the planted truth is
recoverable from the written files alone (plus truth/feed_matches.parquet)."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from icp_pipeline.bands import EMPLOYEE_LABELS, employee_band
from icp_pipeline.demo.generate import DEMO_AS_OF, WIN_INTERCEPT, DemoSpec, generate_demo

AS_OF = pd.Timestamp(DEMO_AS_OF)
N = 5000

COLUMNS = {
    "crm/accounts.csv": [
        "account_id", "name", "domain", "industry", "employee_count", "annual_revenue",
        "country", "owner_id", "created_at", "updated_at",
    ],
    "crm/contacts.csv": ["contact_id", "account_id", "email", "title", "created_at", "updated_at"],
    "crm/opportunities.csv": [
        "opportunity_id", "account_id", "stage", "amount", "created_at", "closed_at", "updated_at",
    ],
    "crm/subscriptions.csv": ["subscription_id", "account_id", "started_at", "ended_at", "arr", "updated_at"],
    "crm/owners.csv": ["owner_id", "name", "email", "slack_user_id", "active"],
    "feeds/firmographics.csv": [
        "domain", "company_name", "industry", "employee_count", "annual_revenue", "country",
        "founded_year", "tech_stack", "observed_at",
    ],
    "feeds/funding_rounds.csv": [
        "round_id", "domain", "company_name", "round_type", "amount_usd", "announced_at",
    ],
    "feeds/job_postings.csv": [
        "posting_id", "domain", "company_name", "title", "department", "posted_at", "closed_at",
    ],
    "feeds/leadership_changes.csv": [
        "change_id", "domain", "company_name", "person_name", "title", "change_type", "effective_at",
    ],
}  # fmt: skip
DATE_COLUMNS = {
    "created_at", "closed_at", "started_at", "ended_at",
    "announced_at", "posted_at", "effective_at", "observed_at",
}  # fmt: skip
FEEDS = {
    "firmographics": None,
    "funding_rounds": "round_id",
    "job_postings": "posting_id",
    "leadership_changes": "change_id",
}
LEGAL = {"inc", "corp", "ltd", "llc", "gmbh"}


def _read(out: Path, rel: str) -> pd.DataFrame:
    return pd.read_csv(out / rel, dtype=str, keep_default_na=False)


def _generate(
    tmp_path_factory: pytest.TempPathFactory, name: str, spec: DemoSpec
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp(name)
    messages: list[str] = []
    truth = generate_demo(out, spec, progress=messages.append)
    assert len(messages) >= len(COLUMNS)  # one progress line per written table
    return out, truth


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return _generate(tmp_path_factory, "planted", DemoSpec(accounts=N, seed=11))


def _row_keys(out: Path, table: str) -> pd.DataFrame:
    """Feed rows with their true CRM account (NaN for companies outside the CRM)."""
    df = _read(out, f"feeds/{table}.csv")
    id_col = FEEDS[table]
    if id_col is None:
        df["row_key"] = df["domain"] + "|" + df["observed_at"]
    else:
        df["row_key"] = df[id_col]
    matches = pd.read_parquet(out / "truth/feed_matches.parquet")
    matches = matches[matches["table"] == table]
    assert matches["row_key"].is_unique
    assert set(matches["row_key"]) == set(df["row_key"])
    return df.merge(matches[["row_key", "account_id"]], on="row_key", how="left", validate="one_to_one")


def _days_before(values: pd.Series) -> pd.Series:
    return (AS_OF - pd.to_datetime(values)).dt.days


def _normalize(name: str) -> str:
    words = re.sub(r"[^a-z0-9 ]", " ", name.lower()).split()
    return " ".join(w for w in words if w not in LEGAL)


# --------------------------------------------------------------------------- determinism & contract


def test_same_spec_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    spec = DemoSpec(accounts=2000, seed=3, drift_date=date(2026, 1, 1))
    generate_demo(tmp_path / "a", spec)
    generate_demo(tmp_path / "b", spec)
    generate_demo(tmp_path / "c", DemoSpec(accounts=2000, seed=4, drift_date=date(2026, 1, 1)))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == len(COLUMNS) + 4  # + truth.json and three truth parquet files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes(), rel


def test_headers_and_counts_match_truth(planted: tuple[Path, dict[str, Any]]) -> None:
    out, truth = planted
    on_disk = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    assert on_disk == truth
    assert set(truth["counts"]) == set(COLUMNS) | {
        "truth/opportunities.parquet",
        "truth/future_opportunities.parquet",
        "truth/feed_matches.parquet",
    }
    for rel, columns in COLUMNS.items():
        df = _read(out, rel)
        assert list(df.columns) == columns, rel
        assert len(df) == truth["counts"][rel] > 0, rel
    for rel in ("truth/opportunities.parquet", "truth/feed_matches.parquet"):
        assert pq.ParquetFile(out / rel).metadata.num_rows == truth["counts"][rel]
    feed_rows = sum(truth["counts"][f"feeds/{t}.csv"] for t in FEEDS)
    assert truth["counts"]["truth/feed_matches.parquet"] == feed_rows
    assert truth["counts"]["crm/accounts.csv"] == truth["accounts"] == N
    assert truth["counts"]["crm/owners.csv"] == max(5, N // 250)


def test_no_date_after_as_of_and_formats(planted: tuple[Path, dict[str, Any]]) -> None:
    out, _ = planted
    for rel, columns in COLUMNS.items():
        df = _read(out, rel)
        for col in columns:
            values = df[col][df[col] != ""]
            if col in DATE_COLUMNS:
                assert values.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all(), (rel, col)
                assert (pd.to_datetime(values) <= AS_OF).all(), (rel, col)
            elif col == "updated_at":
                assert values.str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}").all(), rel
                updated = pd.to_datetime(values)
                assert (updated < AS_OF + timedelta(days=1)).all(), rel
                start = df["created_at"] if "created_at" in df else df["started_at"]
                assert (updated.dt.normalize() >= pd.to_datetime(start)).all(), rel
            elif col in {"amount", "arr", "amount_usd", "annual_revenue"}:
                assert values.str.fullmatch(r"\d+(\.\d{1,2})?").all(), (rel, col)
    owners = _read(out, "crm/owners.csv")
    assert set(owners["active"]) == {"true", "false"}
    assert owners["slack_user_id"].str.fullmatch(r"U[A-Z0-9]{8}").all()


def test_ids_unique_prefixed_and_referentially_sound(planted: tuple[Path, dict[str, Any]]) -> None:
    out, _ = planted
    id_columns = {
        "crm/accounts.csv": ("account_id", "A"),
        "crm/contacts.csv": ("contact_id", "C"),
        "crm/opportunities.csv": ("opportunity_id", "O"),
        "crm/subscriptions.csv": ("subscription_id", "S"),
        "crm/owners.csv": ("owner_id", "U"),
        "feeds/funding_rounds.csv": ("round_id", "F"),
        "feeds/job_postings.csv": ("posting_id", "P"),
        "feeds/leadership_changes.csv": ("change_id", "L"),
    }
    for rel, (col, prefix) in id_columns.items():
        ids = _read(out, rel)[col]
        assert ids.is_unique, rel
        assert ids.str.fullmatch(prefix + r"\d{7}").all(), rel
    accounts = _read(out, "crm/accounts.csv")
    owners = _read(out, "crm/owners.csv")
    assert owners["slack_user_id"].is_unique and owners["email"].is_unique
    assert accounts["domain"].is_unique
    assert _read(out, "crm/contacts.csv")["email"].is_unique
    for rel in ("crm/contacts.csv", "crm/opportunities.csv", "crm/subscriptions.csv"):
        assert _read(out, rel)["account_id"].isin(accounts["account_id"]).all(), rel
    owned = accounts["owner_id"][accounts["owner_id"] != ""]
    assert owned.isin(owners["owner_id"]).all()
    assert 0.01 < 1 - len(owned) / len(accounts) < 0.06  # ~3% unowned
    assert 0.03 < (owners["active"] == "false").mean() < 0.2 or len(owners) < 30


def test_company_traits_distributions(planted: tuple[Path, dict[str, Any]]) -> None:
    out, _ = planted
    accounts = _read(out, "crm/accounts.csv")
    industry = accounts["industry"][accounts["industry"] != ""]
    assert 0.02 < (accounts["industry"] == "").mean() < 0.08
    assert 0.02 < (accounts["employee_count"] == "").mean() < 0.08
    assert industry.value_counts(normalize=True).min() >= 0.045
    assert industry.nunique() == 10
    employees = pd.to_numeric(accounts["employee_count"], errors="coerce").dropna()
    assert employees.between(1, 200_000).all()
    bands = employee_band(employees).value_counts(normalize=True)
    assert set(bands.index) == set(EMPLOYEE_LABELS) and bands.min() >= 0.07
    revenue = pd.to_numeric(accounts["annual_revenue"], errors="coerce")
    both = revenue[employees.index].notna()
    assert np.corrcoef(np.log(employees[both]), np.log(revenue[employees.index][both]))[0, 1] > 0.6
    firmo = _read(out, "feeds/firmographics.csv")
    stacks = firmo["tech_stack"].str.split(";")
    assert stacks.map(len).between(1, 7).all() and stacks.map(len).between(2, 6).mean() > 0.97
    assert 0.15 < stacks.map(lambda s: "Snowflake" in s).mean() < 0.25
    per_account = _read(out, "crm/opportunities.csv").groupby("account_id").size()
    assert 1.2 < per_account.sum() / N < 1.8 and len(per_account) < 0.8 * N
    assert 1.0 < len(_read(out, "crm/contacts.csv")) / N < 1.4


def test_names_unique_after_normalization_and_feeds_are_messy(planted: tuple[Path, dict[str, Any]]) -> None:
    out, _ = planted
    accounts = _read(out, "crm/accounts.csv")
    crm_norm = accounts["name"].map(_normalize)
    assert crm_norm.is_unique
    by_account = dict(zip(accounts["account_id"], crm_norm, strict=True))
    crm_domains = set(accounts["domain"])
    frames = {t: _row_keys(out, t)[["domain", "company_name", "account_id"]] for t in FEEDS}
    rows = pd.concat(frames.values())
    assert (rows["company_name"] != "").all()
    outside = rows["account_id"].isna()
    assert 0.06 < outside.mean() < 0.14
    norm = rows["company_name"].map(_normalize)
    inside = ~outside
    # Every spelling normalizes to the true CRM name; outside companies never collide with CRM ones.
    assert (norm[inside] == rows.loc[inside, "account_id"].map(by_account)).all()
    assert not norm[outside].isin(set(crm_norm)).any()
    plain = rows["domain"].str.lower().str.replace(r"^https?://", "", regex=True)
    plain = plain.str.replace(r"^www\.", "", regex=True).str.rstrip("/")
    assert not plain[outside & (plain != "")].isin(crm_domains).any()
    assert plain[inside & (plain != "")].isin(crm_domains).all()
    for table, frame in frames.items():
        name_only = (frame["domain"] == "").mean()
        if table == "firmographics":  # its contract keys rows by (domain, observed_at)
            assert name_only == 0
        else:
            assert 0.07 < name_only < 0.13, table
        for prefix in ("www.", "HTTPS://"):
            assert 0.07 < frame["domain"].str.startswith(prefix).mean() < 0.14, (table, prefix)
    name_only = inside & (rows["domain"] == "")
    crm_names = dict(zip(accounts["account_id"], accounts["name"], strict=True))
    assert (rows.loc[name_only, "company_name"] != rows.loc[name_only, "account_id"].map(crm_names)).all()
    assert rows["company_name"].str.contains(", ").any() and rows["company_name"].str.isupper().any()


def test_crm_blanks_are_covered_by_firmographics(planted: tuple[Path, dict[str, Any]]) -> None:
    out, _ = planted
    accounts = _read(out, "crm/accounts.csv")
    blank = accounts[(accounts["industry"] == "") | (accounts["employee_count"] == "")]
    firmo = _row_keys(out, "firmographics")
    assert len(blank) > 0 and blank["account_id"].isin(firmo["account_id"]).all()
    coverage = accounts["account_id"].isin(firmo["account_id"]).mean()
    assert 0.92 < coverage < 0.99
    first = firmo.sort_values("observed_at").drop_duplicates("account_id")
    # Before every deal (created up to 730 days back); the few others are the leak's adoption rows
    # of customers the feed did not cover before.
    assert _days_before(first["observed_at"]).between(740, 1100).mean() > 0.97


# --------------------------------------------------------------------------- planted triggers


def _recompute_triggers(out: Path, rules: dict[str, Any]) -> dict[str, list[str]]:
    """The documented rules, computed independently from the written files."""
    found: dict[str, list[str]] = {}

    funding = _row_keys(out, "funding_rounds").dropna(subset=["account_id"])
    age = _days_before(funding["announced_at"])
    found["funding"] = sorted(set(funding.loc[age.between(0, 90), "account_id"]))

    posts = _row_keys(out, "job_postings").dropna(subset=["account_id"])
    age = _days_before(posts["posted_at"])
    recent = posts[age.between(0, 29)].groupby("account_id").size()
    baseline = posts[age.between(30, 209)].groupby("account_id").size().reindex(recent.index, fill_value=0)
    surge = recent[(recent >= 5) & (recent >= 3 * baseline / 6)]
    found["hiring_surge"] = sorted(surge.index)

    leaders = _row_keys(out, "leadership_changes").dropna(subset=["account_id"])
    age = _days_before(leaders["effective_at"])
    executive = leaders["title"].isin(rules["leadership_change"]["executive_titles"])
    arrived = leaders["change_type"].isin(["joined", "promoted"])
    found["leadership_change"] = sorted(
        set(leaders.loc[executive & arrived & age.between(0, 90), "account_id"])
    )

    firmo = (
        _row_keys(out, "firmographics")
        .dropna(subset=["account_id"])
        .sort_values(["account_id", "observed_at"])
    )
    firmo["employees"] = firmo["employee_count"].astype(int)
    firmo["stack"] = firmo["tech_stack"].str.split(";").map(frozenset)
    previous = firmo.groupby("account_id")[["employees", "stack"]].shift()
    in_window = _days_before(firmo["observed_at"]).between(0, 60) & previous["employees"].notna()
    grew = firmo["employees"] >= 1.2 * previous["employees"]
    changed = firmo["stack"] != previous["stack"]
    found["headcount_growth"] = sorted(set(firmo.loc[in_window & grew, "account_id"]))
    found["tech_change"] = sorted(set(firmo.loc[in_window & changed, "account_id"]))
    return found


def test_planted_triggers_equal_rules_computed_from_files(planted: tuple[Path, dict[str, Any]]) -> None:
    out, truth = planted
    names = ["funding", "hiring_surge", "leadership_change", "headcount_growth", "tech_change"]
    assert list(truth["triggers"]) == names
    recomputed = _recompute_triggers(out, truth["trigger_rules"])
    for name, expected in truth["triggers"].items():
        assert expected == sorted(expected)
        assert recomputed[name] == expected, name
    shares = {name: len(ids) / N for name, ids in truth["triggers"].items()}
    assert 0.025 < shares["funding"] < 0.055
    for name in ("hiring_surge", "leadership_change", "headcount_growth", "tech_change"):
        assert 0.015 < shares[name] < 0.045, name


def test_trigger_noise_is_present(planted: tuple[Path, dict[str, Any]]) -> None:
    """The non-planted rows exist and fail the rules for the documented reasons."""
    out, truth = planted
    leaders = _row_keys(out, "leadership_changes").dropna(subset=["account_id"])
    age = _days_before(leaders["effective_at"])
    executive = leaders["title"].isin(truth["trigger_rules"]["leadership_change"]["executive_titles"])
    assert (~executive & age.between(0, 90)).sum() > 50
    assert (executive & (leaders["change_type"] == "left") & age.between(0, 90)).sum() > 20
    assert (executive & leaders["change_type"].isin(["joined", "promoted"]) & (age >= 120)).sum() > 50
    funding = _row_keys(out, "funding_rounds").dropna(subset=["account_id"])
    age = _days_before(funding["announced_at"])
    assert not age.between(91, 119).any() and (age >= 120).sum() > N * 0.25
    posts = _row_keys(out, "job_postings").dropna(subset=["account_id"])
    steady = posts[~posts["account_id"].isin(truth["triggers"]["hiring_surge"])]
    assert steady["account_id"].nunique() > 0.3 * N
    recent = steady[_days_before(steady["posted_at"]).between(0, 29)].groupby("account_id").size()
    assert recent.max() <= 2


# --------------------------------------------------------------------------- planted ICP


def _closed_opps(out: Path) -> pd.DataFrame:
    opps = _read(out, "crm/opportunities.csv")
    accounts = _read(out, "crm/accounts.csv")[["account_id", "industry"]]
    closed = opps[opps["stage"].isin(["Closed Won", "Closed Lost"])].merge(accounts, on="account_id")
    closed["won"] = closed["stage"] == "Closed Won"
    return closed[closed["industry"] != ""]


def test_planted_icp_shapes_win_rates(planted: tuple[Path, dict[str, Any]]) -> None:
    out, truth = planted
    assert [m["value"] for m in truth["must_have"]] == ["Software", "201-1000", "Snowflake"]
    assert [h["value"] for h in truth["hard_no"]] == ["Government", "1-10"]
    assert truth["win_model"]["intercept"] == WIN_INTERCEPT and truth["drift"] is None
    rates = _closed_opps(out).groupby("industry")["won"].mean()
    others = rates.drop(["Software", "Government"])
    assert rates["Software"] > others.max() + 0.1
    assert rates["Government"] < 0.06
    opps = _read(out, "crm/opportunities.csv")
    assert (opps["closed_at"] == "").eq(~opps["stage"].str.startswith("Closed")).all()
    closed = opps[opps["closed_at"] != ""]
    cycle = (pd.to_datetime(closed["closed_at"]) - pd.to_datetime(closed["created_at"])).dt.days
    assert cycle.between(20, 180).all()
    probs = pd.read_parquet(out / "truth/opportunities.parquet")
    assert list(probs["opportunity_id"]) == list(opps["opportunity_id"])
    assert probs["win_probability"].between(0.02, 0.95).all()


def test_subscriptions_follow_won_deals(planted: tuple[Path, dict[str, Any]]) -> None:
    out, _ = planted
    opps = _read(out, "crm/opportunities.csv")
    won = opps[opps["stage"] == "Closed Won"]
    subs = _read(out, "crm/subscriptions.csv")
    starts = set(zip(subs["account_id"], subs["started_at"], strict=True))
    assert all(key in starts for key in zip(won["account_id"], won["closed_at"], strict=True))
    assert len(won) < len(subs) < 1.3 * len(won)  # expansions are extra rows
    ended = subs[subs["ended_at"] != ""]
    assert (pd.to_datetime(ended["ended_at"]) > pd.to_datetime(ended["started_at"])).all()
    assert 0.1 < len(ended) / len(subs) < 0.4


def test_null_model_has_flat_win_rates(tmp_path_factory: pytest.TempPathFactory) -> None:
    out, truth = _generate(tmp_path_factory, "null", DemoSpec(accounts=N, seed=11, planted_icp=False))
    assert truth["must_have"] == [] and truth["hard_no"] == []
    rates = _closed_opps(out).groupby("industry")["won"].mean()
    assert rates.between(0.17, 0.33).all() and rates.max() - rates.min() < 0.12
    probs = pd.read_parquet(out / "truth/opportunities.parquet")["win_probability"]
    assert (probs == 0.25).all()


def test_drift_moves_win_rates_from_software_to_healthcare(tmp_path_factory: pytest.TempPathFactory) -> None:
    drift = DEMO_AS_OF - timedelta(days=365)
    out, truth = _generate(tmp_path_factory, "drift", DemoSpec(accounts=N, seed=11, drift_date=drift))
    assert truth["drift"] == {
        "date": drift.isoformat(),
        "before": {"trait": "industry", "value": "Software"},
        "after": {"trait": "industry", "value": "Healthcare"},
    }
    closed = _closed_opps(out)
    closed["after"] = pd.to_datetime(closed["created_at"]) >= pd.Timestamp(drift)
    rates = closed.groupby(["industry", "after"])["won"].mean()
    assert rates[("Healthcare", True)] > rates[("Healthcare", False)] + 0.15
    assert rates[("Software", True)] < rates[("Software", False)] - 0.1
