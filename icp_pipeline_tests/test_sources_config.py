"""`sources:` in icp.yaml: the README's CRM and feed examples stay valid, mistakes name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icp_pipeline.config import PROJECT_ROOT, IcpConfig, contracts_dir, load_config
from icp_pipeline.contracts.spec import load_contracts
from icp_pipeline.errors import IcpConfigError


def readme_example(heading: str) -> IcpConfig:
    readme = (PROJECT_ROOT / "README.md").read_text()
    example = readme.split(heading)[1].split("```yaml")[1].split("```")[0]
    return IcpConfig.model_validate(yaml.safe_load(example))


def test_readme_crm_example_is_valid() -> None:
    crm = readme_example("### Connecting HubSpot and Salesforce").sources.crm
    assert crm.kind == "hubspot" and crm.properties == {"accounts": ("icp_segment",)}
    assert crm.fields == {"accounts": {"country": "icp_country_code"}} and crm.retry.max_retry_after_s == 300


def test_readme_feed_example_is_valid_and_maps_every_required_column() -> None:
    config = readme_example("### Mapping a provider feed")
    feed = config.sources.feeds["firmographics"]
    assert feed.auth == "api_key" and feed.paginator == {
        "type": "cursor",
        "cursor_path": "meta.next_cursor",
        "cursor_param": "cursor",
    }
    required = load_contracts(contracts_dir(config))["firmographics"].required_columns
    assert set(required) <= set(feed.fields)


def test_defaults_keep_the_file_drop() -> None:
    sources = IcpConfig().sources
    assert sources.crm.kind == "file_drop" and sources.feeds == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources:\n  crm: {kind: pipedrive}\n", "sources.crm.kind"),
        ("sources:\n  crm: {tables: [subscriptions]}\n", "sources.crm.tables.0"),
        ("sources:\n  crm: {kind: salesforce, api_version: '62'}\n", "sources.crm.api_version"),
        ("sources:\n  crm: {kind: hubspot, token_env: 'my token'}\n", "sources.crm.token_env"),
        ("sources:\n  feeds: {weather: {base_url: 'https://x.example'}}\n", "sources.feeds.weather"),
        (
            "sources:\n  feeds: {funding_rounds: {base_url: 'https://x.example', auth: bearer}}\n",
            "sources.feeds.funding_rounds: auth bearer needs token_env",
        ),
    ],
)
def test_invalid_sources_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "icp.yaml"
    file.write_text(text)
    with pytest.raises(IcpConfigError, match=message.replace(".", r"\.")):
        load_config(file)
