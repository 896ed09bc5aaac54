"""icp_pipeline: an explainable, self-hosted ICP engine run nightly by Dagster."""

import os

# Runs must work offline and quietly: no telemetry lookups from dlt or Dagster.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
