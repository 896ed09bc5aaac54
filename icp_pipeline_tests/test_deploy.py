"""The deployment files agree with the code: the writer tag, the code location, the storage variables."""

from __future__ import annotations

import re

import yaml

from icp_pipeline.config import PROJECT_ROOT
from icp_pipeline.definitions import NIGHTLY_JOB, defs
from icp_pipeline.runner import WAREHOUSE_WRITER

DEPLOY = PROJECT_ROOT / "deploy"


def test_production_instance_limits_warehouse_writers_to_one_run() -> None:
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    limits = instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    (key,) = WAREHOUSE_WRITER
    assert {"key": key, "limit": 1} in limits
    assert defs.resolve_job_def(NIGHTLY_JOB).tags[key] == WAREHOUSE_WRITER[key]
    assert defs.resolve_job_def("deliver_pending_alerts").tags[key] == WAREHOUSE_WRITER[key]


def test_production_instance_reads_every_connection_setting_from_the_environment() -> None:
    database = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["storage"]["postgres"]["postgres_db"]
    assert database.pop("scheme") == "postgresql+psycopg2"
    assert all(set(value) == {"env"} for value in database.values()), database


def test_helm_values_run_this_code_location_with_the_same_writer_limit() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "icp_pipeline.definitions"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    (key,) = WAREHOUSE_WRITER
    assert {"key": key, "limit": 1} in coordinator["tagConcurrencyLimits"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_dockerfile_runs_a_code_server_as_a_non_root_user() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER icp$", dockerfile, re.MULTILINE)
    assert '"code-server", "start"' in dockerfile and '"icp_pipeline.definitions"' in dockerfile
    assert re.search(r"^FROM python:3\.11", dockerfile, re.MULTILINE)
