"""HubSpot: `POST /crm/v3/objects/companies/batch/update`, at most 100 records per call.

HubSpot answers 200 when every record was updated and 207 Multi-Status when some were not; the ids
a 207 does not confirm are failures. A 400 refuses the whole call (e.g. a property that does not
exist or an invalid dropdown value), a 403 means the private app lacks `crm.objects.companies.write`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from icp_pipeline.errors import IcpConfigError
from icp_pipeline.writeback.client import BatchOutcome, CrmClient, CrmResponse, clip, error_detail

BATCH_LIMIT = 100


class HubSpotWriter:
    """Batch updates of HubSpot CRM objects by record id; an empty string clears a property."""

    name = "hubspot"
    batch_limit = BATCH_LIMIT
    blank = ""

    def __init__(self, client: CrmClient, base_url: str, object_type: str = "companies") -> None:
        self._client = client
        self.url = f"{base_url.rstrip('/')}/crm/v3/objects/{object_type}/batch/update"

    def send_batch(self, ids: Sequence[str], records: Sequence[Mapping[str, Any]]) -> BatchOutcome:
        if len(ids) > BATCH_LIMIT:
            raise ValueError(f"HubSpot batch update takes at most {BATCH_LIMIT} records, got {len(ids)}")
        response = self._client.send("POST", self.url, batch_update_payload(ids, records))
        return read_batch_response(response, ids)


def batch_update_payload(ids: Sequence[str], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"id": str(record_id), "properties": dict(record)}
            for record_id, record in zip(ids, records, strict=True)
        ]
    }


def read_batch_response(response: CrmResponse, ids: Sequence[str]) -> BatchOutcome:
    """Which ids HubSpot confirmed; every id it did not confirm is failed with HubSpot's reason."""
    status, body = response.status, response.body
    if status in (200, 204):
        return BatchOutcome(pushed=[str(record_id) for record_id in ids])
    if status == 403:
        raise IcpConfigError(
            f"hubspot refused the write (HTTP 403{error_detail(body)}); "
            "the private app needs the scope crm.objects.companies.write"
        )
    if status != 207 or not isinstance(body, Mapping):
        reason = f"HTTP {status}{error_detail(body)}"
        return BatchOutcome(failed={str(record_id): reason for record_id in ids}, rejected=reason)
    confirmed = {str(result.get("id")) for result in body.get("results") or [] if isinstance(result, Mapping)}
    reasons: dict[str, str] = {}
    for error in body.get("errors") or []:
        if not isinstance(error, Mapping):
            continue
        reason = clip(": ".join(str(part) for part in (error.get("category"), error.get("message")) if part))
        context = error.get("context") or {}
        for record_id in context.get("ids") or [] if isinstance(context, Mapping) else []:
            reasons.setdefault(str(record_id), reason)
    outcome = BatchOutcome()
    for record_id in map(str, ids):
        if record_id in confirmed and record_id not in reasons:
            outcome.pushed.append(record_id)
        else:
            outcome.failed[record_id] = reasons.get(record_id, "not confirmed by HubSpot (HTTP 207)")
    return outcome
