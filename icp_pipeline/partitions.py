"""Daily partitions shared by every nightly asset: the partition key is the run's as-of date."""

from __future__ import annotations

import dagster as dg

from icp_pipeline.config import config_or_defaults

FIRST_AS_OF = "2020-01-01"


def daily_partitions(timezone: str) -> dg.DailyPartitionsDefinition:
    """Days from FIRST_AS_OF to today (end_offset=1), so tonight's run can score today."""
    return dg.DailyPartitionsDefinition(start_date=FIRST_AS_OF, timezone=timezone, end_offset=1)


nightly_partitions = daily_partitions(config_or_defaults()[0].schedule.timezone)

# One run per as-of date, for every nightly asset alike (Dagster warns when policies differ).
nightly_backfill = dg.BackfillPolicy.multi_run(1)
