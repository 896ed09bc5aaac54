"""Salesforce: `PATCH /services/data/vNN.N/composite/sobjects` (sObject Collections), at most 200 records.

With `allOrNone: false` each record succeeds or fails on its own; the answer is one SaveResult per
record in request order, `{"id", "success", "errors": [{"statusCode", "message", "fields"}]}`.
The daily API limit shows as HTTP 403 `REQUEST_LIMIT_EXCEEDED`: that stops the run for tonight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from icp_pipeline.errors import IcpConfigError
from icp_pipeline.writeback.client import (
    BatchOutcome,
    CrmClient,
    CrmResponse,
    CrmUnavailable,
    clip,
    error_detail,
)

BATCH_LIMIT = 200


class SalesforceWriter:
    """sObject Collections update of one object type by record id; null clears a field."""

    name = "salesforce"
    batch_limit = BATCH_LIMIT
    blank = None

    def __init__(
        self, client: CrmClient, instance_url: str, api_version: str = "v62.0", object_type: str = "Account"
    ) -> None:
        self._client, self._object_type = client, object_type
        self.url = f"{instance_url.rstrip('/')}/services/data/{api_version}/composite/sobjects"

    def send_batch(self, ids: Sequence[str], records: Sequence[Mapping[str, Any]]) -> BatchOutcome:
        if len(ids) > BATCH_LIMIT:
            raise ValueError(
                f"Salesforce sObject Collections take at most {BATCH_LIMIT} records, got {len(ids)}"
            )
        response = self._client.send("PATCH", self.url, collection_payload(ids, records, self._object_type))
        return read_save_results(response, ids)


def collection_payload(
    ids: Sequence[str], records: Sequence[Mapping[str, Any]], object_type: str = "Account"
) -> dict[str, Any]:
    return {
        "allOrNone": False,
        "records": [
            {"attributes": {"type": object_type}, "id": str(record_id), **record}
            for record_id, record in zip(ids, records, strict=True)
        ],
    }


def read_save_results(response: CrmResponse, ids: Sequence[str]) -> BatchOutcome:
    """SaveResults by position (a failed record's result may carry no id)."""
    status, body = response.status, response.body
    if status == 403:
        codes = {item.get("errorCode") for item in body or [] if isinstance(item, Mapping)}
        if "REQUEST_LIMIT_EXCEEDED" in codes:
            raise CrmUnavailable(f"salesforce API limit reached (HTTP 403{error_detail(body)})")
        raise IcpConfigError(
            f"salesforce refused the write (HTTP 403{error_detail(body)}); "
            "the user needs edit access to the object and its ICP fields"
        )
    if status != 200 or not isinstance(body, list):
        reason = f"HTTP {status}{error_detail(body)}"
        return BatchOutcome(failed={str(record_id): reason for record_id in ids}, rejected=reason)
    outcome = BatchOutcome()
    for position, record_id in enumerate(map(str, ids)):
        result = body[position] if position < len(body) else None
        if isinstance(result, Mapping) and result.get("success") is True:
            outcome.pushed.append(record_id)
        elif isinstance(result, Mapping):
            errors = [error for error in result.get("errors") or [] if isinstance(error, Mapping)]
            text = "; ".join(
                ": ".join(str(part) for part in (error.get("statusCode"), error.get("message")) if part)
                for error in errors
            )
            outcome.failed[record_id] = clip(text or "failed without a reason")
        else:
            outcome.failed[record_id] = "no SaveResult returned"
    return outcome
