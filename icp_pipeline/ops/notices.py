"""Operations notices: a failed nightly run and a nightly run that has not succeeded by its deadline.

They travel through the same channels as rep alerts (outbox, Slack, webhook) but are addressed to
the team. Plain functions, so the rules are tested without a Dagster daemon.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from icp_pipeline.alerts.channels import AlertMessage, DeliveryResult
from icp_pipeline.config import IcpConfig
from icp_pipeline.secrets import register_environment, scrub, secret_env_names

ICP_ERRORS = frozenset({"IcpError", "IcpInputError", "IcpConfigError", "IcpContractError"})
FRESHNESS_WINDOW = dt.timedelta(hours=24)


def ops_notice(key: str, title: str, text: str, day: str, flagged: bool = True) -> AlertMessage:
    """An ops message with a stable id derived from `key`, so a resend is recognisable downstream."""
    notice_id = hashlib.sha1(key.encode()).hexdigest()[:16]
    return AlertMessage(
        alert_id=notice_id,
        event_id=notice_id,
        account_id="-",
        account_name=title,
        owner_id=None,
        owner_name=None,
        owner_email=None,
        slack_user_id=None,
        tier="-",
        fit_score=0,
        top_reasons="",
        trigger_type="ops_notice",
        occurred_at=day,
        strength=1.0 if flagged else 0.0,
        priority=1.0,
        evidence={"message": text},
        crm_url=None,
    )


class StepFailure(NamedTuple):
    """Why a run failed, in one line; `expected` when the pipeline raised it for people to read."""

    step: str | None
    reason: str
    expected: bool


def failure_reason(step_failures: Iterable[Any]) -> StepFailure:
    """The first failed step and its one-line reason from Dagster step-failure events: the innermost
    IcpError's message when there is one (written for people), else the innermost error's first line."""
    for event in step_failures:
        error = event.step_failure_data.error
        innermost = ""
        while error is not None:
            message = error.message.strip().splitlines()[0] if error.message.strip() else ""
            if error.cls_name in ICP_ERRORS:
                prefix = f"{error.cls_name}: "
                return StepFailure(event.step_key, scrub(message.split(prefix, 1)[-1]), True)
            innermost = message or innermost
            error = error.cause
        return StepFailure(event.step_key, scrub(innermost), False)
    return StepFailure(None, "the run failed before any step (see the Dagster run log)", False)


def run_failure_notice(
    job: str, run_id: str, step: str | None, reason: str, url_template: str | None, when: dt.datetime
) -> AlertMessage:
    """One message per failed run: job, failed step, the reason, and where to look."""
    link = url_template.format(run_id=run_id) if url_template else None
    where = f"step `{step}`" if step else "before any step"
    text = f"Run {run_id[:8]} of `{job}` failed at {where}: {scrub(reason)}"
    if link:
        text += f"\n{link}"
    return ops_notice(f"run_failed|{run_id}", f"Nightly run failed: {job}", text, when.date().isoformat())


def latest_deadline(now: dt.datetime, fresh_by: str, timezone: str) -> dt.datetime:
    """The most recent `fresh_by` (HH:MM in the schedule's timezone) at or before `now`."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    hour, minute = (int(part) for part in fresh_by.split(":"))
    deadline = dt.datetime.combine(local.date(), dt.time(hour, minute), tzinfo=zone)
    return deadline if deadline <= local else deadline - dt.timedelta(days=1)


def is_late(last_success: dt.datetime | None, deadline: dt.datetime) -> bool:
    """The night before a deadline must have produced scores: a success in the 24 h before it."""
    return last_success is None or last_success < deadline - FRESHNESS_WINDOW


def late_notice(deadline: dt.datetime, last_success: dt.datetime | None, job: str) -> AlertMessage:
    """One message per missed deadline."""
    last = last_success.astimezone(deadline.tzinfo).strftime("%Y-%m-%d %H:%M") if last_success else "never"
    text = (
        f"No successful `{job}` run by {deadline:%Y-%m-%d %H:%M %Z}: scores are stale "
        f"(last success: {last}). Check the schedule, the daemon and the latest run."
    )
    return ops_notice(
        f"late|{deadline.isoformat()}", f"Nightly scores are late: {job}", text, deadline.date().isoformat()
    )


def send_ops(
    config: IcpConfig, outbox_dir: Path, message: AlertMessage, log: Any
) -> Mapping[str, DeliveryResult]:
    """Send through every configured alert channel; a channel without its secret is skipped.

    The last net against leaks: the text is scrubbed of every secret the environment and config
    name, since this may run in a process (the sensor) where no client has read them yet.
    """
    from icp_pipeline.alerts.assets import build_channels

    register_environment(os.environ, secret_env_names(config))
    channels = build_channels(config, outbox_dir, log)
    evidence = {
        key: scrub(value) if isinstance(value, str) else value for key, value in message.evidence.items()
    }
    message = dataclasses.replace(message, account_name=scrub(message.account_name), evidence=evidence)
    return {name: channel.send(message) for name, channel in channels.items()}
