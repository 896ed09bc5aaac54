"""Daily partitions shared by every nightly asset: the partition key is the run's as-of date."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from icp_pipeline.config import config_or_defaults


def daily_partitions(timezone: str, first_date: dt.date) -> dg.DailyPartitionsDefinition:
    """Days from `first_partition_date` (icp.yaml) to today (end_offset=1), so tonight's run can score today."""
    return dg.DailyPartitionsDefinition(start_date=first_date.isoformat(), timezone=timezone, end_offset=1)


_config = config_or_defaults()[0]
nightly_partitions = daily_partitions(_config.schedule.timezone, _config.first_partition_date)

# One run per as-of date, for every nightly asset alike (Dagster warns when policies differ).
nightly_backfill = dg.BackfillPolicy.multi_run(1)
