"""icp.yaml: the README's example stays valid, typos are errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icp_pipeline.config import PROJECT_ROOT, IcpConfig, load_config
from icp_pipeline.errors import IcpConfigError


def test_readme_configuration_example_is_valid() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    example = readme.split("## Configuration")[1].split("```yaml")[1].split("```")[0]
    config = IcpConfig.model_validate(yaml.safe_load(example))
    assert config.tiers.A == 80 and config.alerts.channels[1].kind == "slack"


def test_defaults_without_a_file(tmp_path: Path) -> None:
    assert load_config() == IcpConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alerts:\n  min_teir: B\n", "alerts.min_teir"),
        ("tiers: {A: 120}\n", "tiers.A"),
        ("alerts:\n  channels: [{kind: pigeon}]\n", "alerts.channels.0.kind"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_invalid_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "icp.yaml"
    file.write_text(text)
    with pytest.raises(IcpConfigError, match=message.replace(".", r"\.")):
        load_config(file)


def test_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(IcpConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def _load_error(tmp_path: Path, text: str | bytes) -> str:
    file = tmp_path / "icp.yaml"
    if isinstance(text, bytes):
        file.write_bytes(text)
    else:
        file.write_text(text)
    with pytest.raises(IcpConfigError) as raised:
        load_config(file)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{file}: ")
    return message.removeprefix(f"{file}: ")


# Each of these used to load and quietly change scores, tiers, checks or alerts (issue 24, item 5).
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "stages: {won: [closed won, won], lost: [Closed Won, lost]}\n",
            "stages.lost: stage 'Closed Won' is listed under both won and lost; list each stage once",
        ),
        (
            "stages: {won: [won, lost]}\n",
            "stages.lost: stage 'lost' is listed under both won and lost; list each stage once",
        ),
        (
            "stages: {open: [demo, won]}\n",
            "stages.open: stage 'won' is listed under both won and open; list each stage once",
        ),
    ],
)
def test_a_stage_in_two_lists_is_refused(tmp_path: Path, text: str, message: str) -> None:
    assert _load_error(tmp_path, text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiers: {A: 60, B: 65, C: 50}\n", "tiers.B: 65 is not below A (60); cut-offs must fall from A to C"),
        ("tiers: {A: 80, B: 65, C: 70}\n", "tiers.C: 70 is not below B (65); cut-offs must fall from A to C"),
        ("tiers: {A: 50, C: 50}\n", "tiers.C: 50 is not below A (50); cut-offs must fall from A to C"),
    ],
)
def test_tier_cutoffs_out_of_order_are_refused(tmp_path: Path, text: str, message: str) -> None:
    assert _load_error(tmp_path, text) == message


def test_tier_cutoffs_in_order_or_partly_set_load(tmp_path: Path) -> None:
    file = tmp_path / "icp.yaml"
    file.write_text("tiers: {B: 65}\n")
    assert load_config(file).tiers.B == 65


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'icp: {points: {"industy=Software": 20}}\n',
            "icp.points: 'industy=Software': unknown trait 'industy'; traits: industry, employee_band, "
            "revenue_band, country, company_age_band, funding_stage, recent_funding, leadership_change, hiring_trend, "
            "headcount_trend, technology (more through icp.custom_columns)",
        ),
        (
            "icp: {points: {industry: 20}}\n",
            "icp.points: 'industry' is not 'trait=value' (e.g. 'industry=Software')",
        ),
        (
            "icp: {written: {hard_no: [{trait: industri, values: [Government]}]}}\n",
            "icp.written: hard_no[0]: unknown trait 'industri'; traits: industry, employee_band, "
            "revenue_band, country, company_age_band, funding_stage, recent_funding, leadership_change, hiring_trend, "
            "headcount_trend, technology (more through icp.custom_columns)",
        ),
        (
            "contracts: {max_bad_share: {acounts: 0.5}}\n",
            "contracts.max_bad_share: unknown table 'acounts'; tables: accounts, contacts, opportunities, "
            "subscriptions, owners, firmographics, funding_rounds, job_postings, leadership_changes",
        ),
        (
            "contracts: {freshness_days: {funding_round: 365}}\n",
            "contracts.freshness_days: unknown table 'funding_round'; tables: accounts, contacts, "
            "opportunities, subscriptions, owners, firmographics, funding_rounds, job_postings, "
            "leadership_changes",
        ),
    ],
)
def test_a_dict_key_that_names_nothing_is_refused(tmp_path: Path, text: str, message: str) -> None:
    assert _load_error(tmp_path, text) == message


def test_point_overrides_on_known_and_custom_traits_load(tmp_path: Path) -> None:
    file = tmp_path / "icp.yaml"
    file.write_text('icp: {custom_columns: [segment], points: {"segment=Mid": 5, "technology = dbt": 10}}\n')
    assert load_config(file).icp.points == {"segment=Mid": 5, "technology = dbt": 10}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "contracts: {max_bad_share: {accounts: -0.1}}\n",
            "contracts.max_bad_share.accounts: Input should be greater than or equal to 0",
        ),
        (
            "contracts: {max_bad_share: {accounts: 1.5}}\n",
            "contracts.max_bad_share.accounts: Input should be less than or equal to 1",
        ),
        (
            "contracts: {freshness_days: {funding_rounds: -1}}\n",
            "contracts.freshness_days.funding_rounds: Input should be greater than or equal to 0",
        ),
        (
            "alerts: {channels: [{kind: slack, max_attempts: 0}]}\n",
            "alerts.channels.0.max_attempts: Input should be greater than or equal to 1",
        ),
        (
            "alerts: {channels: [{kind: webhook, timeout_s: 0}]}\n",
            "alerts.channels.0.timeout_s: Input should be greater than 0",
        ),
        (
            "alerts: {channels: [{kind: webhook, backoff_s: -1}]}\n",
            "alerts.channels.0.backoff_s: Input should be greater than or equal to 0",
        ),
        ("icp: {cac: -5}\n", "icp.cac: Input should be greater than 0"),
        (
            "icp: {hard_no_max_win_rate_ratio: 1.4}\n",
            "icp.hard_no_max_win_rate_ratio: Input should be less than or equal to 1",
        ),
        (
            "icp: {cold_start_min_closed: -1}\n",
            "icp.cold_start_min_closed: Input should be greater than or equal to 0",
        ),
        (
            "triggers: {funding: {min_amount_usd: -1}}\n",
            "triggers.funding.min_amount_usd: Input should be greater than or equal to 0",
        ),
        (
            "triggers: {headcount_growth: {min_growth: -0.2}}\n",
            "triggers.headcount_growth.min_growth: Input should be greater than or equal to 0",
        ),
        ("drift: {psi_watch: -0.1}\n", "drift.psi_watch: Input should be greater than or equal to 0"),
        (
            "drift: {psi_watch: 0.3}\n",
            "drift.psi_flag: 0.2 is below psi_watch (0.3); a shift is watched before it is flagged",
        ),
        ("drift: {min_auc_drop: 1.5}\n", "drift.min_auc_drop: Input should be less than or equal to 1"),
    ],
)
def test_numbers_out_of_range_are_refused(tmp_path: Path, text: str, message: str) -> None:
    assert _load_error(tmp_path, text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'alerts: {crm_url_template: "https://crm.example.com/accounts/{acount_id}"}\n',
            "alerts.crm_url_template: unknown placeholder {acount_id}; placeholders: {account_id}",
        ),
        (
            'alerts: {crm_url_template: "https://crm.example.com/accounts/{}"}\n',
            "alerts.crm_url_template: unknown placeholder {}; placeholders: {account_id}",
        ),
        (
            'alerts: {crm_url_template: "https://crm.example.com/accounts/{account_id"}\n',
            "alerts.crm_url_template: not a valid template (expected '}' before end of string); "
            "placeholders: {account_id}",
        ),
        (
            'ops: {run_url_template: "https://dagster.example.com/runs/{run}"}\n',
            "ops.run_url_template: unknown placeholder {run}; placeholders: {run_id}",
        ),
    ],
)
def test_a_link_template_with_an_unknown_placeholder_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    assert _load_error(tmp_path, text) == message


def test_link_templates_with_known_placeholders_load(tmp_path: Path) -> None:
    file = tmp_path / "icp.yaml"
    file.write_text('alerts: {crm_url_template: "https://crm.example.com/a/{account_id}?x={{literal}}"}\n')
    assert load_config(file).alerts.crm_url_template is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'schedule: {cron: "0 25 * * *"}\n',
            "schedule.cron: not a cron expression Dagster accepts: '0 25 * * *' (5 fields, e.g. '0 2 * * *')",
        ),
        (
            'schedule: {cron: "0 2 * * * *"}\n',
            "schedule.cron: not a cron expression Dagster accepts: '0 2 * * * *' (5 fields, e.g. '0 2 * * *')",
        ),
        (
            "schedule: {timezone: Europe/Berln}\n",
            "schedule.timezone: unknown timezone 'Europe/Berln' (an IANA name such as Europe/Berlin)",
        ),
    ],
)
def test_an_invalid_cron_or_timezone_is_refused(tmp_path: Path, text: str, message: str) -> None:
    assert _load_error(tmp_path, text) == message


def test_a_valid_cron_and_timezone_load(tmp_path: Path) -> None:
    file = tmp_path / "icp.yaml"
    file.write_text('schedule: {cron: "30 1 * * 1-5", timezone: America/New_York}\n')
    assert load_config(file).schedule.timezone == "America/New_York"


def test_a_non_utf8_file_is_one_line_naming_it(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "alerts: {fallback_recipient: 'équipe'}\n".encode("latin-1"))
    assert message == "not UTF-8 text (byte 0xe9 on line 1); save it as UTF-8"


def test_a_directory_as_config_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(IcpConfigError) as raised:
        load_config(tmp_path)
    assert str(raised.value) == f"{tmp_path}: is a directory, not a YAML file"
