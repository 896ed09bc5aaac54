"""Dagster wiring of trigger detection: new events into the `icp.trigger_events` ledger."""

import json
from typing import Any

import dagster as dg
import pandas as pd

from icp_pipeline.contracts.staging import STAGING
from icp_pipeline.partitions import nightly_backfill, nightly_partitions
from icp_pipeline.resources import IcpSettings, partition_date
from icp_pipeline.scoring.assets import PROFILE
from icp_pipeline.triggers.detect import EVENT_COLUMNS, FEED_COLUMNS, detect_all
from icp_pipeline.triggers.net_new import model_from_profile_rows, net_new_accounts
from icp_pipeline.warehouse import (
    conform_table,
    connect,
    read_present_columns,
    read_table,
    registered,
    replace_slice,
    table_exists,
    typed_select,
)

TRIGGER_EVENTS = dg.AssetKey(["icp", "trigger_events"])
FEEDS = ("funding_rounds", "job_postings", "leadership_changes", "firmographics")


def append_new_events(con: Any, events: pd.DataFrame) -> int:
    """Insert events whose id the ledger does not hold yet; returns how many were new."""
    con.execute("create schema if not exists icp")
    conform_table(con, "icp", "trigger_events")
    with registered(con, "_events", events) as columns:  # as arrow: a pandas scan reads text by value
        query = typed_select("icp", "trigger_events", [str(c) for c in events.columns], "_events", columns)
        if not table_exists(con, "icp", "trigger_events"):
            con.execute(f"create table icp.trigger_events as {query} limit 0")
        before = con.execute("select count(*) from icp.trigger_events").fetchall()[0][0]
        con.execute(
            f"insert into icp.trigger_events by name select * from ({query}) "
            "where event_id not in (select event_id from icp.trigger_events)"
        )
        after = con.execute("select count(*) from icp.trigger_events").fetchall()[0][0]
    return int(after - before)


@dg.asset(
    key=TRIGGER_EVENTS,
    deps=[*(dg.AssetKey(["staging", feed]) for feed in FEEDS), PROFILE],
    group_name="triggers",
    partitions_def=nightly_partitions,
    backfill_policy=nightly_backfill,
    description=(
        "One row per trigger fact (funding round, hiring surge, leadership change, headcount or tech change), "
        "kept from the as-of date it was first detected. Also writes icp.net_new_accounts: feed companies "
        "outside the CRM that fit the ICP."
    ),
)
def trigger_events(context: dg.AssetExecutionContext, icp: IcpSettings) -> dg.MaterializeResult:
    """Detect triggers as of the partition date; only events never seen before are built and added."""
    config = icp.load_config()
    as_of = partition_date(context)
    with connect(icp.warehouse_path(), read_only=True) as con:
        feeds = {feed: read_present_columns(con, STAGING, feed, FEED_COLUMNS[feed]) for feed in FEEDS}
        profile_rows = con.execute("select * from icp.icp_profile where as_of = ?", [as_of]).df()
        ledger = read_table(con, "icp", "trigger_events", columns=["event_id"])
    known = pd.Index(ledger["event_id"], dtype="str") if ledger is not None else None
    events, skipped = detect_all(feeds, as_of, config.triggers, known)
    for note in skipped:
        context.log.warning(f"trigger {note}")
    events = events.assign(as_of=as_of)[[*EVENT_COLUMNS, "as_of"]]
    unmatched = {
        feed: int(frame["account_id"].isna().sum())
        for feed, frame in feeds.items()
        if frame is not None and len(frame)
    }
    net_new = pd.DataFrame()
    firmographics = feeds.get("firmographics")
    if firmographics is not None and len(firmographics) and len(profile_rows):
        model, cutoffs = model_from_profile_rows(profile_rows)
        net_new = net_new_accounts(firmographics, model, cutoffs, as_of, config.alerts.min_tier).assign(
            as_of=as_of
        )
    with connect(icp.warehouse_path()) as con:
        added = append_new_events(con, events)
        stored = int(con.execute("select count(*) from icp.trigger_events").fetchall()[0][0])
        if len(net_new):
            replace_slice(con, "icp", "net_new_accounts", net_new, {"as_of": as_of})
    by_type = events["trigger_type"].value_counts().to_dict()
    context.log.info(f"triggers as of {as_of}: {added:,} new events; {by_type}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stored,
            "new_events": added,
            **{f"events_{kind}": int(count) for kind, count in by_type.items()},
            "unmatched_feed_rows": dg.MetadataValue.json(unmatched),
            "net_new_accounts": len(net_new),
            "net_new_sample": dg.MetadataValue.md(
                net_new.head(10).to_markdown(index=False) if len(net_new) else "(none)"
            ),
            "skipped": json.dumps(skipped),
        }
    )
