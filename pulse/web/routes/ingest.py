"""/ingest/v1: HTTP telemetry and heartbeats from gateways and backends, same validation as MQTT."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, post
from litestar.params import PathParameter

from pulse.ingest.service import MAX_BATCH_BYTES, BatchRejected, IngestPipeline, ingest_http, ingest_http_batch
from pulse.web.deps import NowDep
from pulse.web.errors import Unavailable, error_response, error_specs
from pulse.web.openapi import BATCH_BODY, ENVELOPE_BODY
from pulse.web.query_params import ANY_QUERY_PARAMS

MAX_REQUEST_BYTES = 1_048_576  # bodies above this are cut off unread; 64 KiB+ is quarantined PAYLOAD_TOO_LARGE


class Accepted(msgspec.Struct, kw_only=True):
    accepted: bool
    tenant_id: str
    device_id: str
    msg_type: str


def _token(request: Request[Any, Any, Any]) -> str | None:
    token = request.headers.get("x-provision-token")
    if token:
        return token.strip()
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def pipeline_of(request: Request[Any, Any, Any]) -> IngestPipeline:
    pipeline = request.app.state.get("ingest")
    if pipeline is None:
        raise Unavailable("HTTP ingest is not started")
    return pipeline  # type: ignore[no-any-return]


@post("/tenant/{tenant_id:str}/device/{device_id:str}/{msg_type:str}", status_code=202,
      summary="Send one telemetry or heartbeat message",
      description="Body: the JSON envelope (docs/wire-format.md). Auth: the device's provision token in "
                  "X-Provision-Token (or `Authorization: Bearer`). 202 means committed. Rejections carry the "
                  "quarantine reason as the error code.",
      request_max_body_size=MAX_REQUEST_BYTES, responses=error_specs(400, 401, 403, 413, 429, 503),
      operation_class=ENVELOPE_BODY)
async def ingest_one(request: Request[Any, Any, Any], now: NowDep,
                     tenant_id: Annotated[str, PathParameter(description="the tenant")],
                     device_id: Annotated[str, PathParameter(description="the device")],
                     msg_type: Annotated[str, PathParameter(description="telemetry or heartbeat")]
                     ) -> Response[Accepted]:
    body = await request.body()
    result = await ingest_http(pipeline_of(request), tenant_id, device_id, msg_type, body, _token(request), now)
    if result.accepted:
        return Response(Accepted(accepted=True, tenant_id=tenant_id, device_id=device_id, msg_type=msg_type),
                        status_code=202)
    headers = {"Retry-After": "1"} if result.status == 429 else None
    return error_response(request, result.status, result.reason or "rejected", result.detail,
                          {"reason": result.reason}, headers)


class ItemResult(msgspec.Struct, kw_only=True):
    index: int
    status: int
    accepted: bool
    reason: str | None = None
    detail: str | None = None


class BatchAnswer(msgspec.Struct, kw_only=True):
    accepted: int
    rejected: int
    results: list[ItemResult]


@post("/batch", status_code=200, summary="Send up to 500 messages of any devices, each with its own token",
      description='Body: `{"messages": [{"tenant_id", "device_id", "msg_type", "token", "message": <envelope>}]}`. '
                  "Answers 200 with one result per message (its HTTP status and quarantine reason); accepted "
                  "messages are committed. A body that is not a batch is refused as a whole.",
      request_max_body_size=MAX_BATCH_BYTES + 1024, responses=error_specs(400, 413, 503), operation_class=BATCH_BODY)
async def ingest_batch(request: Request[Any, Any, Any], now: NowDep) -> Response[BatchAnswer]:
    try:
        result = await ingest_http_batch(pipeline_of(request), await request.body(), now)
    except BatchRejected as exc:
        r = exc.result
        return error_response(request, r.status, r.reason or "rejected", r.detail, {"reason": r.reason})
    items = [ItemResult(index=i, status=r.status, accepted=r.accepted, reason=r.reason,
                        detail=None if r.accepted else r.detail) for i, r in enumerate(result.results)]
    return Response(BatchAnswer(accepted=result.accepted, rejected=len(items) - result.accepted, results=items),
                    status_code=200)


# Ingest takes no query parameters, so a stray one cannot change what is stored; refusing it would turn away
# devices whose firmware adds one, with a rejection that bypasses the quarantine every other rejection goes to.
router = Router(path="/ingest/v1", route_handlers=[ingest_batch, ingest_one], tags=["ingest"],
                opt={ANY_QUERY_PARAMS: True})
