"""Generic HTTP webhook: a versioned JSON body signed with HMAC-SHA256 over timestamp and body."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from typing import Any

import httpx
import msgspec

import pulse
from pulse.errors import ValidationError
from pulse.notify.pinned_http import send_pinned
from pulse.notify.schemas import SEVERITY_NAMES, AlertEventMessage, SendResult
from pulse.notify.ssrf import check_url

PAYLOAD_VERSION = "1"
SIGNATURE_SCHEME = "v1"
_FORBIDDEN_HEADERS = {"host", "content-length", "content-type", "x-pulse-signature", "x-pulse-timestamp",
                      "x-pulse-event", "x-pulse-delivery", "transfer-encoding", "connection"}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256(secret, "{timestamp}.{body}")."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_SCHEME}={mac}"


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, *, now: datetime,
                     tolerance_s: int = 300) -> bool:
    """What a receiver does: recompute the signature (constant time) and refuse stale timestamps (replays)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now.timestamp() - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def validate_config(config: dict[str, Any], secrets: dict[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    """Check a webhook channel's settings; errors name the field."""
    url = config.get("url")
    check_url(url, allow, field="config.url")  # type: ignore[arg-type]
    method = str(config.get("method", "POST")).upper()
    if method not in ("POST", "PUT"):
        raise ValidationError("must be POST or PUT", field="config.method")
    headers = config.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValidationError("must be an object of string header names and values", field="config.headers")
    bad = [k for k in headers if k.lower() in _FORBIDDEN_HEADERS or not k.replace("-", "").isalnum()]
    if bad:
        raise ValidationError(f"header {bad[0]!r} cannot be set", field="config.headers")
    secret = secrets.get("secret")
    if not isinstance(secret, str) or len(secret) < 16:
        raise ValidationError("a signing secret of at least 16 characters is required", field="secrets.secret")
    return {"url": url, "method": method, "headers": headers}


def render_body(msg: AlertEventMessage) -> bytes:
    """The documented, versioned webhook body (docs/notifications.md)."""
    return msgspec.json.encode({
        "version": PAYLOAD_VERSION,
        "event": msg.event_kind,
        "event_id": msg.event_id,
        "occurred_at": msg.occurred_at,
        "tenant_id": msg.tenant_id,
        "alert": {
            "alert_id": msg.alert_id, "fingerprint": msg.fingerprint, "type": msg.alert_type,
            "severity": msg.severity, "severity_name": SEVERITY_NAMES.get(msg.severity, str(msg.severity)),
            "status": msg.status, "title": msg.title, "summary": msg.summary, "device_id": msg.device_id,
            "site_id": msg.site_id, "rule_id": msg.rule_id, "metric": msg.metric, "value": msg.value,
            "opened_at": msg.opened_at, "tags": msg.tags, "links": msg.links,
        },
    })


async def send(msg: AlertEventMessage, config: dict[str, Any], secrets: dict[str, str], *, delivery_id: str,
               http: httpx.AsyncClient, allow: tuple[str, ...]) -> SendResult:
    body = render_body(msg)
    timestamp = str(int(time.time()))
    headers = {**config.get("headers", {}), "Content-Type": "application/json",
               "User-Agent": f"Pulse/{pulse.__version__}", "X-Pulse-Event": msg.event_kind,
               "X-Pulse-Delivery": delivery_id, "X-Pulse-Timestamp": timestamp,
               "X-Pulse-Signature": sign(secrets["secret"], timestamp, body)}
    # checked again (DNS may have changed since the channel was saved) and sent to the address checked
    response = await send_pinned(http, config.get("method", "POST"), config["url"], allow, field="config.url",
                                 content=body, headers=headers)
    return result_from_response(response)


def result_from_response(response: httpx.Response) -> SendResult:
    """Map an HTTP answer to delivered / retry (5xx, 408, 429, honouring Retry-After) / give up (other 4xx)."""
    code = response.status_code
    if 200 <= code < 300:
        return SendResult(delivered=True, status_code=code)
    retry_after: float | None = None
    header = response.headers.get("retry-after")
    if header:
        try:
            retry_after = max(0.0, float(header))
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                retry_after = max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
            except (TypeError, ValueError):
                retry_after = None
    retryable = code >= 500 or code in (408, 429)
    return SendResult(delivered=False, status_code=code, retryable=retryable, retry_after_s=retry_after,
                      error=f"HTTP {code}: {response.text[:200]}")
