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
