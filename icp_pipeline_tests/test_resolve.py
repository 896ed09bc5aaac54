"""Account matching: domain/name normalisation and feed-to-CRM matching.

Unit tables first, then the matching rules, then checks against real public data in
``../shared/data`` (skipped when that folder is absent, e.g. in a user's clone).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from icp_pipeline.resolve import normalize as normalize_module
from icp_pipeline.resolve.match import (
    MATCH_METHODS,
    AccountIndex,
    MatchMethod,
    build_account_index,
    match_feed,
    match_summary,
)
from icp_pipeline.resolve.normalize import (
    LEGAL_SUFFIXES,
    STR_DTYPE,
    normalize_domain,
    normalize_name,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FORTUNE_CSV = SHARED_DATA / "fortune-1000-2021" / "Fortune_1000.csv"
CRUNCHBASE_DIR = SHARED_DATA / "crunchbase-2013"


def _one(func, value: object) -> object:
    """Normalise a single value through the vectorised function."""
    result = func(pd.Series([value], dtype=object)).iloc[0]
    return None if pd.isna(result) else result


# ----------------------------------------------------------------- normalize_domain

DOMAIN_CASES = [
    ("x.com", "x.com"),
    ("www.x.com", "x.com"),
    ("X.COM", "x.com"),
    ("WWW.X.COM", "x.com"),
    ("HTTPS://X.COM/", "x.com"),
    ("https://www.x.com", "x.com"),
    ("http://x.com/about?x=1", "x.com"),
    ("https://x.com/#team", "x.com"),
    ("x.com?ref=feed", "x.com"),
    ("x.com.", "x.com"),
    ("x.com..", "x.com"),
    (" x.com ", "x.com"),
    ("\tx.com\n", "x.com"),
    ("info@x.com", "x.com"),
    ("Jane.Doe@X.COM", "x.com"),
    ("mailto:info@x.com", "x.com"),
    ("x.com:443", "x.com"),
    ("https://www.x.com:8443/path", "x.com"),
    ("https://user:secret@www.x.com/", "x.com"),
    ("//x.com/path", "x.com"),
    ("HTTPS://X.COM.:443/p", "x.com"),
    ("http://x.com/contact@y.com", "x.com"),  # "@" in the path is not user-info
    ("sub.x.co.uk", "sub.x.co.uk"),  # other subdomains are kept
    ("www2.x.com", "www2.x.com"),  # only "www." is dropped
    ("my-company.io", "my-company.io"),
    ("123.com", "123.com"),
    ("müller.de", "xn--mller-kva.de"),  # IDN -> punycode, meets the ASCII spelling
    ("xn--mller-kva.de", "xn--mller-kva.de"),
    # invalid -> missing
    ("x", None),
    ("localhost", None),
    ("x .com", None),
    ("x..com", None),
    ("-x.com", None),
    ("x-.com", None),
    ("x_y.com", None),
    ("192.168.0.1", None),
    ("x.c0m", None),
    ("www.com", None),
    ("http://", None),
    ("@x", None),
    ("", None),
    ("   ", None),
    (None, None),
    (np.nan, None),
    ("a" * 64 + ".com", None),  # label longer than 63
]


@pytest.mark.parametrize(("raw", "expected"), DOMAIN_CASES)
def test_normalize_domain_cases(raw: object, expected: str | None) -> None:
    assert _one(normalize_domain, raw) == expected


def test_normalize_domain_rejects_overlong_hostnames() -> None:
    host = ".".join(["a" * 60] * 5) + ".com"  # valid labels, 309 characters
    assert _one(normalize_domain, host) is None


def test_normalize_domain_keeps_index_name_and_returns_str_dtype() -> None:
    values = pd.Series(["WWW.A.COM", None, "b.io/x"], index=pd.Index([7, 7, 3], name="row"), name="domain")
    result = normalize_domain(values)
    assert result.dtype == STR_DTYPE
    assert result.index.equals(values.index) and result.name == "domain"
    assert result.iloc[0] == "a.com" and pd.isna(result.iloc[1]) and result.iloc[2] == "b.io"


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(dtype=object),
        pd.Series(dtype="str"),
        pd.Series([None, None]),
        pd.Series([1.5, np.nan]),
        pd.Series(["a.com", "b.com", "a.com"], dtype="category"),
        pd.Series(["a.com", None], dtype="string"),  # pd.NA-flavoured string dtype
    ],
)
def test_normalizers_accept_any_input_dtype(values: pd.Series) -> None:
    for func in (normalize_domain, normalize_name):
        result = func(values)
        assert result.dtype == STR_DTYPE
        assert len(result) == len(values)


# ------------------------------------------------------------------- normalize_name

NAME_CASES = [
    ("Lowe&#8217;s", "lowes"),
    ("Lowe's", "lowes"),
    ("LOWES", "lowes"),
    ("Lowe´s", "lowes"),
    ("Lowe's Companies", "lowes companies"),  # "companies" is not a legal suffix
    ("AT&amp;T Inc.", "at and t"),
    ("AT&T", "at and t"),
    ("AT and T", "at and t"),
    ("Zorvex Labs, Inc.", "zorvex labs"),
    ("ZORVEX LABS", "zorvex labs"),
    ("Zorvex Labs Inc", "zorvex labs"),
    ("Müller GmbH", "muller"),
    ("Muller", "muller"),
    ("The Home Depot", "home depot"),
    ("Home Depot, Inc.", "home depot"),
    ("Estée Lauder", "estee lauder"),
    ("Straße AG", "strasse"),
    ("Søren A/S", "soren as"),
    ("Anchor™", "anchor"),
    ("Acme Holdings Co., Ltd.", "acme holdings"),  # repeated suffixes, holdings kept
    ("Acme L.L.C.", "acme"),
    ("Ferrari S.p.A.", "ferrari"),
    ("JPMorgan Chase & Co.", "jpmorgan chase"),
    ("R.R. Donnelley & Sons", "rr donnelley and sons"),
    ("RR Donnelley and Sons", "rr donnelley and sons"),
    ("Barnes & Noble Education, Inc.", "barnes and noble education"),
    ("&amp;#8217;Quoted", "quoted"),  # double-encoded entity
    ("Smith&not Co", "smith and not"),  # legacy entity without ';' is not decoded
    ("Ａｃｍｅ ＆ Co", "acme"),  # full-width forms
    ("#NAME?", "name"),
    ("  Acme   Corp  ", "acme"),
    ("Company", "company"),  # a bare legal form is kept, not emptied
    ("The", "the"),
    ("北京科技", "北京科技"),  # non-Latin letters survive
    ("---", None),
    ("", None),
    ("   ", None),
    (None, None),
    (np.nan, None),
]


@pytest.mark.parametrize(("raw", "expected"), NAME_CASES)
def test_normalize_name_cases(raw: object, expected: str | None) -> None:
    assert _one(normalize_name, raw) == expected


@pytest.mark.parametrize("suffix", LEGAL_SUFFIXES)
def test_every_legal_suffix_is_dropped_but_never_alone(suffix: str) -> None:
    assert _one(normalize_name, f"Acme {suffix.upper()}.") == "acme"
    assert _one(normalize_name, suffix) == suffix


def test_normalize_name_keeps_distinguishing_words() -> None:
    names = pd.Series(["Barnes & Noble", "Barnes & Noble Education", "Acme Holdings", "Acme"])
    assert normalize_name(names).nunique() == 4


def test_chunked_parallel_path_equals_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-million-row inputs are split across threads; results must not change."""
    names = pd.Series([raw for raw, _ in NAME_CASES] * 7, dtype=object)
    domains = pd.Series([raw for raw, _ in DOMAIN_CASES] * 7, dtype=object)
    single = normalize_name(names), normalize_domain(domains)
    monkeypatch.setattr(normalize_module, "_MIN_ROWS_PER_CHUNK", 10)
    monkeypatch.setattr(normalize_module, "_WORKERS", 4)
    chunked = normalize_name(names), normalize_domain(domains)
    pd.testing.assert_series_equal(chunked[0], single[0])
    pd.testing.assert_series_equal(chunked[1], single[1])


def test_embedded_newlines_are_handled() -> None:
    assert _one(normalize_name, "Acme\nHoldings,\r\nInc.") == "acme holdings"
    assert _one(normalize_domain, "x.com\n") == "x.com"
    assert _one(normalize_domain, "x\n.com") is None


@pytest.mark.parametrize(
    "pattern",
    [
        normalize_module._HOST_RE,
        normalize_module._DOMAIN_JUNK_RE,
        normalize_module._APOSTROPHES_RE,
        normalize_module._NEEDS_PUNCT_RE,
        normalize_module._PUNCT_RE,
        normalize_module._INITIALS_RE,
        normalize_module._HAS_SUFFIX_RE,
        normalize_module._SUFFIX_RE,
    ],
)
def test_patterns_stay_on_the_pyarrow_path(pattern: str) -> None:
    """A pattern pandas hands to Python ``re`` (``$``, ``\\s``, ``\\u`` escapes ...) is
    10x slower on millions of rows, or fails outright (``\\p{L}``); guard against it."""
    tricky = pd.array(["a\nb", "é", "x"], dtype=STR_DTYPE)
    needs_python = getattr(tricky, "_needs_python_regex", None)
    if needs_python is None:
        pytest.skip("this pandas version has no _needs_python_regex to ask")
    assert not needs_python(pattern)


# ------------------------------------------------------------------------- matching


@pytest.fixture
def accounts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": ["A1", "A2", "A3", "A4", "A5", "A6", "A7"],
            "name": [
                "Acme Inc",
                "Beta GmbH",
                "Gamma Ltd",
                "Delta Corp",
                "Delta Corporation",  # same normalised name as A4 -> ambiguous
                "Epsilon",
                None,
            ],
            "domain": [
                "acme.com",
                "https://www.beta.de/",
                None,
                "delta.com",
                "delta.io",
                "EPSILON.COM",
                "zeta.com",
            ],
        }
    )


@pytest.fixture
def index(accounts: pd.DataFrame) -> AccountIndex:
    return build_account_index(accounts)


def _match_one(index: AccountIndex, domain: object, name: object) -> tuple[object, str]:
    feed = pd.DataFrame({"domain": [domain], "company_name": [name]}, dtype=object)
    row = match_feed(feed, index).iloc[0]
    return (None if pd.isna(row["account_id"]) else row["account_id"]), row["match_method"]


@pytest.mark.parametrize(
    ("domain", "name", "expected_id", "expected_method"),
    [
        ("WWW.ACME.COM", None, "A1", "domain"),
        ("info@beta.de", "Unrelated Name", "A2", "domain"),
        ("acme.com", "Gamma Ltd", "A1", "domain"),  # domain beats a conflicting name
        ("epsilon.com", "Delta Corp", "A6", "domain"),  # domain beats an ambiguous name
        ("zeta.com", None, "A7", "domain"),  # an account without a name still matches
        (None, "GAMMA LIMITED", "A3", "name"),
        ("not a domain", "Gamma, Ltd.", "A3", "name"),  # invalid domain -> name
        ("unknown.com", "Gamma", "A3", "name"),  # unknown domain falls back to name
        ("unknown.com", "The Acme Company", "A1", "name"),
        (None, "Delta", None, "ambiguous_name"),  # two accounts -> never guessed
        ("unknown.com", "DELTA CORP.", None, "ambiguous_name"),
        ("unknown.com", "Omega", None, "unmatched"),
        ("unknown.com", None, None, "unmatched"),
        (None, None, None, "unmatched"),
        ("", "  ", None, "unmatched"),
    ],
)
def test_match_precedence(
    index: AccountIndex, domain: object, name: object, expected_id: str | None, expected_method: str
) -> None:
    assert _match_one(index, domain, name) == (expected_id, expected_method)


def test_account_index_contents(index: AccountIndex) -> None:
    assert index.by_domain.to_dict() == {
        "acme.com": "A1",
        "beta.de": "A2",
        "delta.com": "A4",
        "delta.io": "A5",
        "epsilon.com": "A6",
        "zeta.com": "A7",
    }
    assert list(index.ambiguous_names) == ["delta"]
    assert pd.isna(index.by_name.loc["delta", "account_id"])
    assert index.by_name.loc["gamma", "account_id"] == "A3"
    assert index.by_name["n_accounts"].to_dict()["delta"] == 2


def test_shared_domain_goes_to_smallest_account_id() -> None:
    accounts = pd.DataFrame(
        {
            "account_id": [30, 10, 20, None],
            "name": ["Sub A", "Parent", "Sub B", "No Id"],
            "domain": ["www.parent.com", "PARENT.COM", "https://parent.com/sub", "parent.com"],
        }
    )
    index = build_account_index(accounts)
    assert index.by_domain.to_dict() == {"parent.com": 10}
    feed = pd.DataFrame({"domain": ["parent.com"], "company_name": ["Sub B"]})
    matched = match_feed(feed, index)
    assert matched["account_id"].iloc[0] == 10
    assert matched["match_method"].iloc[0] == MatchMethod.DOMAIN
    assert matched["account_id"].dtype == "Int64"  # integer ids stay integers


def test_same_account_listed_twice_is_not_ambiguous() -> None:
    accounts = pd.DataFrame(
        {"account_id": [1, 1], "name": ["Acme Inc", "ACME"], "domain": ["acme.com", "acme.io"]}
    )
    index = build_account_index(accounts)
    assert index.ambiguous_names.empty
    assert _match_one(index, None, "Acme") == (1, "name")


def test_match_keeps_index_order_and_original_columns(index: AccountIndex) -> None:
    feed = pd.DataFrame(
        {
            "domain": ["unknown.com", None, "acme.com", "beta.de", None],
            "company_name": ["Gamma", "Delta", None, "x", None],
            "payload": [1, 2, 3, 4, 5],
        },
        index=pd.Index(["r9", "r1", "r9", "r0", "r5"], name="feed_row"),
    )
    original = feed.copy()
    matched = match_feed(feed, index)
    pd.testing.assert_frame_equal(feed, original)  # input untouched
    assert matched.index.equals(feed.index)
    pd.testing.assert_frame_equal(matched[feed.columns], feed)
    assert list(matched.columns) == [
        *feed.columns,
        "norm_domain",
        "norm_name",
        "account_id",
        "match_method",
    ]
    assert matched["account_id"].tolist()[2:4] == ["A1", "A2"]
    assert matched["match_method"].tolist() == [
        "name",
        "ambiguous_name",
        "domain",
        "domain",
        "unmatched",
    ]
    assert matched["norm_domain"].dtype == STR_DTYPE and matched["norm_name"].dtype == STR_DTYPE
    assert list(matched["match_method"].cat.categories) == [str(m) for m in MATCH_METHODS]


def test_names_are_normalised_only_where_the_domain_did_not_match(index: AccountIndex) -> None:
    feed = pd.DataFrame(
        {
            "domain": ["acme.com", "unknown.com", None, "beta.de", "ACME.com", None] * 3,
            "company_name": ["Acme Inc.", "Gamma Ltd", "Delta", "The Beta GmbH", None, "Acme"] * 3,
        }
    )
    matched = match_feed(feed, index)
    by_domain = (matched["match_method"] == "domain").to_numpy()
    assert 0 < by_domain.sum() < len(feed)
    every = normalize_name(feed["company_name"])
    assert matched["norm_name"][by_domain].isna().all()
    pd.testing.assert_series_equal(
        matched["norm_name"][~by_domain], every[~by_domain], check_names=False, check_index=False
    )
    # What each row matched is what matching with every name normalised gives.
    by_name = index.by_name
    found = every.map(by_name["account_id"]).where(every.map(by_name["n_accounts"]) == 1)
    expected = matched["account_id"].where(by_domain, found)
    pd.testing.assert_series_equal(matched["account_id"], expected, check_names=False, check_dtype=False)
    assert (matched["match_method"][~by_domain & found.notna().to_numpy()] == "name").all()


def test_match_with_single_key_columns(index: AccountIndex) -> None:
    names_only = pd.DataFrame({"employer": ["Gamma Ltd", "acme"]})
    matched = match_feed(names_only, index, domain_col=None, name_col="employer")
    assert matched["account_id"].tolist() == ["A3", "A1"]
    assert matched["norm_domain"].isna().all()

    domains_only = pd.DataFrame({"website": ["acme.com", "gamma.com"]})
    matched = match_feed(domains_only, index, domain_col="website", name_col=None)
    assert matched["match_method"].tolist() == ["domain", "unmatched"]

    with pytest.raises(KeyError, match="company_name"):
        match_feed(domains_only, index, domain_col="website")


def test_empty_feed_and_empty_accounts(index: AccountIndex) -> None:
    empty_feed = pd.DataFrame({"domain": pd.Series(dtype="str"), "company_name": pd.Series(dtype="str")})
    matched = match_feed(empty_feed, index)
    assert matched.empty and "account_id" in matched.columns
    summary = match_summary(matched)
    assert summary["rows"].tolist() == [0, 0, 0, 0] and summary["share"].tolist() == [0.0] * 4

    no_accounts = build_account_index(pd.DataFrame({"account_id": [], "name": [], "domain": []}))
    feed = pd.DataFrame({"domain": ["acme.com"], "company_name": ["Acme"]})
    assert match_feed(feed, no_accounts)["match_method"].tolist() == ["unmatched"]


def test_build_account_index_requires_columns() -> None:
    with pytest.raises(KeyError, match="domain"):
        build_account_index(pd.DataFrame({"account_id": [1], "name": ["x"]}))


def test_match_summary(index: AccountIndex) -> None:
    feed = pd.DataFrame(
        {
            "domain": ["acme.com", "beta.de", None, None, None],
            "company_name": [None, None, "Gamma", "Delta", "Nope"],
        }
    )
    summary = match_summary(match_feed(feed, index))
    assert summary["match_method"].tolist() == ["domain", "name", "ambiguous_name", "unmatched"]
    assert summary["rows"].tolist() == [2, 1, 1, 1]
    assert summary["share"].tolist() == pytest.approx([0.4, 0.2, 0.2, 0.2])


# ----------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def fortune() -> pd.DataFrame:
    if not FORTUNE_CSV.is_file():
        pytest.skip(f"real-data test: {FORTUNE_CSV} not found (shared data folder absent)")
    frame = pd.read_csv(FORTUNE_CSV)
    assert len(frame) == 1000
    return frame


def test_fortune_websites_and_names_normalize(fortune: pd.DataFrame) -> None:
    domains = normalize_domain(fortune["Website"])
    assert domains.notna().all()
    assert domains.str.fullmatch(r"[a-z0-9.-]+\.[a-z]{2,}").all()
    assert not domains.str.startswith("www.").any()
    assert domains[fortune["company"] == "Walmart"].item() == "stock.walmart.com"
    assert domains[fortune["company"] == "Best Buy"].item() == "investors.bestbuy.com"

    names = normalize_name(fortune["company"])
    assert names.notna().all() and names.is_unique
    assert not names.str.contains(r"[&;#']").any()
    with_entities = fortune["company"].str.contains("&#", regex=False)
    assert with_entities.sum() == 12
    by_company = dict(zip(fortune["company"], names, strict=True))
    assert by_company["Lowe&#8217;s"] == "lowes"
    assert by_company["O&#8217;Reilly Automotive"] == "oreilly automotive"
    assert by_company["Estée Lauder"] == "estee lauder"
    assert by_company["AT&T"] == "at and t"
    # the decoded spelling of every entity name meets its ASCII spelling
    decoded = fortune.loc[with_entities, "company"].map(html.unescape).str.replace("\u2019", "'")
    assert normalize_name(decoded).tolist() == names[with_entities].tolist()


def test_fortune_messy_feed_matches_back(fortune: pd.DataFrame) -> None:
    accounts = pd.DataFrame(
        {
            "account_id": "F" + fortune["rank"].astype(str).str.zfill(4),
            "name": fortune["company"],
            "domain": fortune["Website"],
        }
    )
    index = build_account_index(accounts)
    # Two real domain collisions: Raytheon/Raytheon Technologies (rtx.com) and
    # ConocoPhillips/Concho Resources (acquired). Each domain goes to the smaller id.
    expected_by_domain = (
        accounts.assign(d=normalize_domain(accounts["domain"])).groupby("d")["account_id"].transform("min")
    )
    collisions = accounts.loc[expected_by_domain != accounts["account_id"], "name"].tolist()
    assert collisions == ["Raytheon", "Concho Resources"]

    norm = normalize_domain(fortune["Website"])
    messy_domain = pd.DataFrame(
        {"domain": "HTTPS://WWW." + norm.str.upper() + "/", "company_name": None, "truth": expected_by_domain}
    )
    raw_upper = pd.DataFrame(
        {"domain": fortune["Website"].str.upper() + "/", "company_name": None, "truth": expected_by_domain}
    )
    name_only = pd.DataFrame(
        {
            "domain": None,
            "company_name": fortune["company"].str.upper() + ", INC.",
            "truth": accounts["account_id"],
        }
    )
    name_decoded = pd.DataFrame(
        {
            "domain": "unknown-" + norm,  # a domain the CRM does not know: falls back to name
            "company_name": "The " + fortune["company"].map(html.unescape) + " Corporation",
            "truth": accounts["account_id"],
        }
    )
    feed = pd.concat([messy_domain, raw_upper, name_only, name_decoded], ignore_index=True)
    feed = feed.sample(frac=1.0, random_state=7)  # shuffled: order must be preserved anyway
    matched = match_feed(feed, index)

    assert matched.index.equals(feed.index)
    assert (matched["account_id"] == matched["truth"]).all()  # 100 % matched, 100 % correct
    summary = match_summary(matched).set_index("match_method")["rows"]
    assert summary.to_dict() == {"domain": 2000, "name": 2000, "ambiguous_name": 0, "unmatched": 0}


def _read_crunchbase(name: str) -> pd.DataFrame:
    path = CRUNCHBASE_DIR / name
    if not path.is_file():
        pytest.skip(f"real-data test: {path} not found (shared data folder absent)")
    # Old-Mac export: CR-only line endings and Mac Roman text (0xD5 is "’", 0xAA is "™",
    # 0x8E is "é"); reading it as latin-1 parses too but yields "JohnÕs", "Anchorª".
    return pd.read_csv(path, encoding="mac_roman", lineterminator="\r")


def test_crunchbase_company_names_normalize() -> None:
    companies = _read_crunchbase("crunchbase-companies.csv")
    assert len(companies) == 17727
    names = normalize_name(companies["name"])
    assert names.isna().mean() < 0.001  # observed: 0 of 17,727
    lookup = dict(zip(companies["name"], names, strict=True))
    assert lookup["John’s Incredible Pizza Company"] == "johns incredible pizza"
    assert lookup["Anchor™"] == "anchor"
    assert lookup["MiaSolé"] == "miasole"
    assert lookup["#waywire"] == "waywire"


def test_crunchbase_rounds_match_companies_by_name() -> None:
    """A real name-only funding feed: every round carries its company's permalink, an
    independent ground truth for the name match."""
    companies = _read_crunchbase("crunchbase-companies.csv")
    rounds = _read_crunchbase("crunchbase-rounds.csv")
    accounts = pd.DataFrame({"account_id": companies["permalink"], "name": companies["name"], "domain": None})
    index = build_account_index(accounts)
    matched = match_feed(rounds, index, domain_col=None, name_col="company_name")

    by_name = matched["match_method"] == MatchMethod.NAME
    assert (matched.loc[by_name, "account_id"] == matched.loc[by_name, "company_permalink"]).all()
    assert by_name.mean() > 0.99  # observed: 31,657 of 31,679
    ambiguous = matched["match_method"] == MatchMethod.AMBIGUOUS_NAME
    assert matched.loc[ambiguous, "norm_name"].isin(index.ambiguous_names).all()
    assert (by_name | ambiguous).all()
