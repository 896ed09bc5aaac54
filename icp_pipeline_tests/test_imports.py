"""Importing the Definitions stays cheap: Great Expectations (about 6 s of a 10 s import) loads only
when a table is validated, and scipy (about 1 s) only when evidence is tested or a model fitted, so
`icp` commands, code servers and test subprocesses do not pay for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

from icp_pipeline.config import contracts_dir, load_config
from icp_pipeline.contracts.spec import load_contracts

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == {package!r})))
"""


def _modules_after_importing(module: str, package: str) -> list[str]:
    """The modules of `package` that importing `module` in a fresh interpreter loaded."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, package=package)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1"},
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_definitions_does_not_import_great_expectations() -> None:
    assert _modules_after_importing("icp_pipeline.definitions", "great_expectations") == []


def test_importing_the_definitions_does_not_import_scipy() -> None:
    assert _modules_after_importing("icp_pipeline.definitions", "scipy") == []


def test_importing_the_cli_does_not_import_great_expectations() -> None:
    assert _modules_after_importing("icp_pipeline.cli", "great_expectations") == []


def test_validation_imports_great_expectations_and_applies_its_settings() -> None:
    """The lazy import still sets what validation relies on (no batch fingerprinting) before it runs."""
    from icp_pipeline.contracts.validate import compile_rules, run_expectations

    contract = load_contracts(contracts_dir(load_config()))["owners"]
    rules = compile_rules(contract, pd.Timestamp("2026-11-01", tz="UTC"))
    frame = pd.DataFrame({rule.expectation.column: ["x", None] for rule in rules})
    failing = run_expectations(frame, rules, "owners")

    import great_expectations.execution_engine.pandas_execution_engine as gx_pandas_engine

    assert gx_pandas_engine.HASH_THRESHOLD == 0
    assert {rule_id: list(rows) for rule_id, rows in failing.items()} == {
        "owner_id.not_null": [1],
        "email.pattern": [0],
        "slack_user_id.pattern": [0],
        "active.type": [0],
    }
