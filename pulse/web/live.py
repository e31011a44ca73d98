"""Live updates for WebSocket clients: one-time tickets, subscriptions, and the web process's one LISTEN connection.

A web process holds one `LiveHub`. It LISTENs on `pulse_telemetry` (ingest: the devices of each committed batch)
and `pulse_live` (alert events and device status transitions, sent by alerting in the same transaction as the
change) and fans each notification out to the sockets that follow it:

- telemetry: the devices named by a batch that some socket follows are read in one query (their latest metrics
  from device_state), and each frame is encoded once and queued on every following socket;
- alerts and device states: the notification carries everything, no query;
- fleet counts: tenants touched by a change are counted at most once per `fleet_interval_s`, in one query;
- the operators' `noc` topic: every tenant's alert events and device status transitions, as they arrive, for the
  NOC's live event feed. Only a socket opened with an operator ticket (POST /operator/live/ticket, audited) may
  follow it, and such a socket may follow nothing else.

Every tenant registry key carries the tenant, and a socket's tenant comes from its ticket, so a tenant's socket
only ever sees its own tenant's events. Tickets live in this process's memory (docs/api-live.md: sticky sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import prometheus_client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import LIVE_CHANNEL
from pulse.alerting.worker import parse_wakeup
from pulse.checks import parse_iso_time
from pulse.clock import Clock
from pulse.crypto import hash_token
from pulse.db import connect_raw, system_tx, tenant_tx
from pulse.fleet.service import DEVICE_ID_RE
from pulse.ingest.writer import TELEMETRY_CHANNEL
from pulse.runtime import TRANSIENT_DB_ERRORS
from pulse.web.auth import Principal

log = logging.getLogger("pulse.web.live")

TICKET_TTL_S = 30
MAX_TICKETS_PER_SUBJECT = 20
MAX_SUBSCRIPTIONS = 200
QUEUE_LIMIT = 1000
MAX_CLIENT_MESSAGE_CHARS = 4096
FLEET_INTERVAL_S = 1.0
FLEET_REFRESH_S = 30.0
LISTEN_CHECK_S = 15.0
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0
TOPICS = ("device", "alerts", "fleet", "noc")
OPERATOR_TOPIC = "noc"
OPERATOR_ROLES = ("operator", "operator-admin")
_MESSAGE_FIELDS = frozenset({"op", "topic", "device_id"})

SOCKETS = prometheus_client.Gauge("pulse_live_sockets", "Open live-update WebSockets")
FRAMES = prometheus_client.Counter("pulse_live_frames", "Frames queued to live-update sockets")
DROPPED = prometheus_client.Counter("pulse_live_dropped", "Frames dropped because a socket fell behind")
LISTEN_UP = prometheus_client.Gauge("pulse_live_listen_up", "1 while the live LISTEN connection is open")

_encode = msgspec.json.encode
_LATEST_TIME = "(SELECT max((e.value #>> '{}')::timestamptz) FROM jsonb_each(s.latest_metrics_at) e)"
# The followed devices a notification named, by primary key (a join from the list, so the plan does not depend on
# the fleet's size: filtering device_state by `= ANY(...)` was answered with a scan of the whole table).
_FETCH_LATEST = text(
    f"SELECT s.tenant_id, s.device_id, s.status, s.last_state_change_at, s.latest_metrics::text AS metrics, "
    f"  {_LATEST_TIME} AS time "
    f"FROM unnest(CAST(:t AS text[]), CAST(:d AS text[])) AS k(tenant_id, device_id) "
    f"JOIN device_state s ON s.tenant_id = k.tenant_id AND s.device_id = k.device_id")
_DEVICE_SNAPSHOT = text(
    f"SELECT d.device_id, coalesce(s.status, 'UNKNOWN') AS status, s.last_state_change_at, "
    f"  coalesce(s.latest_metrics, '{{}}')::text AS metrics, {_LATEST_TIME} AS time "
    f"FROM devices d LEFT JOIN device_state s USING (tenant_id, device_id) "
    f"WHERE d.tenant_id = :t AND d.device_id = :d")
_FLEET_DEVICES = text(
    "SELECT d.tenant_id, count(*) AS devices, "
    "  count(*) FILTER (WHERE s.status = 'ONLINE') AS online, count(*) FILTER (WHERE s.status = 'STALE') AS stale, "
    "  count(*) FILTER (WHERE s.status = 'OFFLINE') AS offline, "
    "  count(*) FILTER (WHERE s.status IS NULL OR s.status = 'UNKNOWN') AS unknown "
    "FROM devices d LEFT JOIN device_state s USING (tenant_id, device_id) "
    "WHERE d.tenant_id = ANY(:t) AND d.status = 'ACTIVE' GROUP BY d.tenant_id")
_FLEET_ALERTS = text(
    "SELECT tenant_id, count(*) FILTER (WHERE status = 'OPEN') AS open_alerts, "
    "  count(*) FILTER (WHERE status = 'ACKNOWLEDGED') AS acknowledged_alerts "
    "FROM alerts WHERE tenant_id = ANY(:t) AND status IN ('OPEN', 'ACKNOWLEDGED') GROUP BY tenant_id")
FLEET_COUNTS = ("devices", "online", "stale", "offline", "unknown", "open_alerts", "acknowledged_alerts")

DeviceKey = tuple[str, str]
Topic = tuple[str, str]  # ("device", device_id), ("alerts", ""), ("fleet", ""), ("noc", "")


def frame(message: dict[str, Any]) -> str:
    """One server message as a JSON text frame."""
    return _encode(message).decode()


def error_frame(code: str, message: str, field: str | None = None) -> str:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if field is not None:
        body["field"] = field
    return frame(body)


# --- tickets ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Ticket:
    principal: Principal
    expires_at: float


class TicketBook:
    """One-time tickets that open a live socket: random, bound to the principal that asked, `ttl_s` to live.

    Held in this process's memory by their hash; a redeemed, expired or unknown ticket gives None.
    """

    def __init__(self, clock: Clock, *, ttl_s: int = TICKET_TTL_S,
                 per_subject: int = MAX_TICKETS_PER_SUBJECT) -> None:
        self._clock = clock
        self.ttl_s = ttl_s
        self._per_subject = per_subject
        self._tickets: dict[str, _Ticket] = {}

    def __len__(self) -> int:
        return len(self._tickets)

    def issue(self, principal: Principal) -> str:
        """A new ticket; a subject holding `per_subject` unused tickets loses its oldest."""
        now = self._clock.monotonic()
        self._tickets = {k: t for k, t in self._tickets.items() if t.expires_at > now}
        mine = [k for k, t in self._tickets.items() if t.principal.subject == principal.subject
                and t.principal.tenant_id == principal.tenant_id]
        for key in mine[:max(0, len(mine) - self._per_subject + 1)]:
            del self._tickets[key]  # dicts keep insertion order: the oldest go first
        ticket = secrets.token_urlsafe(32)
        self._tickets[hash_token(ticket)] = _Ticket(principal, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: str) -> Principal | None:
        """The principal a ticket was issued to, once; None when unknown, used or expired."""
        if not ticket or len(ticket) > 256:
            return None
        found = self._tickets.pop(hash_token(ticket), None)
        if found is None or found.expires_at <= self._clock.monotonic():
            return None
        return found.principal


# --- sockets ---------------------------------------------------------------------------------------------------------

class LiveSocket:
    """One client connection: its tenant, its subscriptions and its outgoing queue.

    The queue is bounded: when the client reads too slowly the oldest frames are dropped and the next read
    starts with {"type": "lagged", "dropped": n}.
    """

    def __init__(self, principal: Principal, *, queue_limit: int = QUEUE_LIMIT) -> None:
        self.operator = not principal.tenant_id and principal.has_any_role(OPERATOR_ROLES)
        if not principal.tenant_id and not self.operator:
            raise ValueError("a live socket needs a tenant principal or an operator's")
        self.principal = principal
        self.tenant_id: str = principal.tenant_id or ""  # "" for an operator's socket: it follows no tenant topic
        self.topics: set[Topic] = set()
        self.dropped = 0
        self.closed = False
        self._queue: deque[str] = deque()
        self._limit = queue_limit
        self._ready = asyncio.Event()

    def push(self, data: str) -> None:
        if self.closed:
            return
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.dropped += 1
            DROPPED.inc()
        self._queue.append(data)
        FRAMES.inc()
        self._ready.set()

    def close(self) -> None:
        """Stop the socket's sender (the hub is shutting down)."""
        self.closed = True
        self._ready.set()

    async def next_frames(self, most: int = 100) -> list[str]:
        """Wait for frames to send (a lagged notice first when some were dropped); [] once closed."""
        while not self._queue and not self.dropped:
            if self.closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return []
        out: list[str] = []
        if self.dropped:
            out.append(frame({"type": "lagged", "dropped": self.dropped}))
            self.dropped = 0
        while self._queue and len(out) < most:
            out.append(self._queue.popleft())
        return out


class LiveError(Exception):
    """A client message that cannot be served; answered with an error frame, the socket stays open."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass
class _DeviceView:
    """What followers of a device were last sent, so a repeat (e.g. a heartbeat-only batch) is not sent again."""

    time: datetime | None = None
    status: str | None = None
    changed_at: datetime | None = None


@dataclass
class _Registry:
    devices: dict[DeviceKey, set[LiveSocket]] = field(default_factory=dict)
    alerts: dict[str, set[LiveSocket]] = field(default_factory=dict)
    fleet: dict[str, set[LiveSocket]] = field(default_factory=dict)
    noc: dict[str, set[LiveSocket]] = field(default_factory=dict)  # one key, "": operators' sockets

    def followers(self, topic: Topic) -> dict[Any, set[LiveSocket]]:
        if topic[0] == "device":
            return self.devices
        return {"alerts": self.alerts, "fleet": self.fleet, OPERATOR_TOPIC: self.noc}[topic[0]]

    @staticmethod
    def key(topic: Topic, tenant_id: str) -> Any:
        if topic[0] == OPERATOR_TOPIC:
            return ""
        return (tenant_id, topic[1]) if topic[0] == "device" else tenant_id


def _telemetry_frame(device_id: str, metrics_json: str, time: datetime) -> str:
    return ('{"type":"telemetry","device_id":' + _encode(device_id).decode() + ',"metrics":' + metrics_json
            + ',"time":' + _encode(time).decode() + "}")


def _state_frame(device_id: str, status: str, changed_at: datetime | str | None) -> str:
    return frame({"type": "device_state", "device_id": device_id, "status": status, "changed_at": changed_at})


def _not_older(when: datetime | None, than: datetime | None) -> bool:
    """Whether a status stamped `when` may replace one stamped `than` (an unknown stamp never blocks)."""
    return when is None or than is None or when >= than


def _has_metrics(metrics_json: str | None) -> bool:
    return bool(metrics_json) and metrics_json not in ("{}", "null")


# --- the hub ---------------------------------------------------------------------------------------------------------

class LiveHub:
    """The live-update fan-out of one web process: tickets, sockets, and the LISTEN connection feeding them."""

    def __init__(self, engine: AsyncEngine, database_url: str, clock: Clock, *,
                 max_subscriptions: int = MAX_SUBSCRIPTIONS, queue_limit: int = QUEUE_LIMIT,
                 fleet_interval_s: float = FLEET_INTERVAL_S) -> None:
        self._engine = engine
        self._database_url = database_url
        self.tickets = TicketBook(clock)
        self.max_subscriptions = max_subscriptions
        self.queue_limit = queue_limit
        self.fleet_interval_s = fleet_interval_s
        self._sockets: set[LiveSocket] = set()
        self._reg = _Registry()
        self._views: dict[DeviceKey, _DeviceView] = {}
        self._telemetry_due: set[DeviceKey] = set()
        self._telemetry_wake = asyncio.Event()
        self._fleet_dirty: set[str] = set()
        self._fleet_wake = asyncio.Event()
        self._fleet_sent: dict[str, dict[str, int]] = {}
        self._listen: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is open (tests and readiness wait on it)."""

    # lifecycle

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen_loop(), name="live-listen"),
                       asyncio.create_task(self._telemetry_loop(), name="live-telemetry"),
                       asyncio.create_task(self._fleet_loop(), name="live-fleet")]

    async def close(self) -> None:
        for sock in list(self._sockets):
            sock.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._drop_listen()

    # sockets

    def connect(self, principal: Principal) -> LiveSocket:
        sock = LiveSocket(principal, queue_limit=self.queue_limit)
        self._sockets.add(sock)
        SOCKETS.set(len(self._sockets))
        return sock

    def disconnect(self, sock: LiveSocket) -> None:
        for topic in list(sock.topics):
            self._unfollow(sock, topic)
        sock.close()
        self._sockets.discard(sock)
        SOCKETS.set(len(self._sockets))

    def _follow(self, sock: LiveSocket, topic: Topic) -> bool:
        """Add a subscription; False when the socket already had it."""
        if topic in sock.topics:
            return False
        if len(sock.topics) >= self.max_subscriptions:
            raise LiveError("too_many_subscriptions",
                            f"a socket may hold at most {self.max_subscriptions} subscriptions; unsubscribe first")
        sock.topics.add(topic)
        self._reg.followers(topic).setdefault(self._reg.key(topic, sock.tenant_id), set()).add(sock)
        return True

    def _unfollow(self, sock: LiveSocket, topic: Topic) -> None:
        sock.topics.discard(topic)
        registry = self._reg.followers(topic)
        key = self._reg.key(topic, sock.tenant_id)
        followers = registry.get(key)
        if followers is None:
            return
        followers.discard(sock)
        if not followers:
            del registry[key]
            if topic[0] == "device":
                self._views.pop(key, None)
            elif topic[0] == "fleet":
                self._fleet_sent.pop(key, None)

    # client messages

    async def handle_message(self, sock: LiveSocket, raw: str | None) -> None:
        """Serve one client frame; answers (acks, snapshots, errors) are queued on the socket."""
        try:
            await self._handle(sock, raw)
        except LiveError as exc:
            sock.push(error_frame(exc.code, exc.message, exc.field))

    async def _handle(self, sock: LiveSocket, raw: str | None) -> None:
        if raw is None:
            raise LiveError("invalid_message", "send JSON text frames, not binary ones")
        if len(raw) > MAX_CLIENT_MESSAGE_CHARS:
            raise LiveError("invalid_message", f"a message may be at most {MAX_CLIENT_MESSAGE_CHARS} characters")
        try:
            message = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise LiveError("invalid_message", "the message is not valid JSON") from None
        if not isinstance(message, dict):
            raise LiveError("invalid_message", "the message must be a JSON object with an \"op\"")
        unknown = sorted(set(message) - _MESSAGE_FIELDS)
        if unknown:
            raise LiveError("invalid_field", f"unknown field {unknown[0]!r}; messages have op, topic, device_id",
                            unknown[0])
        op = message.get("op")
        if op == "ping":
            sock.push(frame({"type": "pong"}))
            return
        if op not in ("subscribe", "unsubscribe"):
            raise LiveError("invalid_field", "op must be subscribe, unsubscribe or ping", "op")
        topic = self._topic(message)
        if sock.operator != (topic[0] == OPERATOR_TOPIC):
            raise LiveError("forbidden", "an operator's socket follows the noc topic only" if sock.operator
                            else "the noc topic is for operators (POST /operator/live/ticket)", "topic")
        if op == "unsubscribe":
            self._unfollow(sock, topic)
            sock.push(frame({"type": "unsubscribed", **_topic_fields(topic)}))
            return
        if topic[0] == "device":
            await self._subscribe_device(sock, topic)
        elif topic[0] == "fleet":
            await self._subscribe_fleet(sock, topic)
        else:
            self._follow(sock, topic)
            sock.push(frame({"type": "subscribed", **_topic_fields(topic)}))

    @staticmethod
    def _topic(message: dict[str, Any]) -> Topic:
        topic = message.get("topic")
        if topic not in TOPICS:
            raise LiveError("invalid_field", "topic must be device, alerts, fleet or noc", "topic")
        device_id = message.get("device_id")
        if topic != "device":
            if device_id is not None:
                raise LiveError("invalid_field", f"the {topic} topic takes no device_id", "device_id")
            return (topic, "")
        if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
            raise LiveError("invalid_field", "device_id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
                            "device_id")
        return ("device", device_id)

    async def _subscribe_device(self, sock: LiveSocket, topic: Topic) -> None:
        device_id = topic[1]
        key = (sock.tenant_id, device_id)
        added = self._follow(sock, topic)  # before reading, so no change committed meanwhile is missed
        try:
            async with tenant_tx(self._engine, sock.tenant_id) as conn:
                row = (await conn.execute(_DEVICE_SNAPSHOT, {"t": sock.tenant_id, "d": device_id})).first()
        except TRANSIENT_DB_ERRORS as exc:
            if added:
                self._unfollow(sock, topic)
            log.warning("live subscribe could not read the device: %s", exc)
            raise LiveError("unavailable", "the device could not be read; try again", "device_id") from None
        if row is None:
            if added:
                self._unfollow(sock, topic)
            raise LiveError("not_found", f"device {device_id} not found", "device_id")
        sock.push(frame({"type": "subscribed", **_topic_fields(topic)}))
        view = self._views.setdefault(key, _DeviceView())
        if view.status is None or _not_older(row.last_state_change_at, view.changed_at):
            view.status, view.changed_at = row.status, row.last_state_change_at
        sock.push(_state_frame(device_id, view.status, view.changed_at))
        if row.time is not None and _has_metrics(row.metrics):
            if view.time is None or row.time >= view.time:
                view.time = row.time
                sock.push(_telemetry_frame(device_id, row.metrics, row.time))

    async def _subscribe_fleet(self, sock: LiveSocket, topic: Topic) -> None:
        self._follow(sock, topic)
        sock.push(frame({"type": "subscribed", **_topic_fields(topic)}))
        try:
            counts = await self._fleet_counts([sock.tenant_id])
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("live fleet counts could not be read: %s", exc)
            self._mark_fleet(sock.tenant_id)  # the next pass sends them
            return
        sock.push(frame({"type": "fleet", "counts": counts[sock.tenant_id]}))

    # notifications

    def _on_telemetry(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        followed = [p for p in parse_wakeup(payload) if p in self._reg.devices]
        if followed:
            self._telemetry_due.update(followed)
            self._telemetry_wake.set()

    def _on_live(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            log.warning("ignoring malformed live notification", extra={"payload": payload[:200]})
            return
        if not isinstance(event, dict):
            return
        if event.get("kind") == "alert":
            self._dispatch_alert(event)
        elif event.get("kind") == "device_state":
            self._dispatch_states(event)

    def _dispatch_alert(self, event: dict[str, Any]) -> None:
        tenant_id = event.get("tenant_id")
        if not isinstance(tenant_id, str):
            return
        self._mark_fleet(tenant_id)
        body = {"type": "alert", "alert_id": event.get("alert_id"), "event_kind": event.get("event_kind"),
                "severity": event.get("severity"), "status": event.get("status"), "title": event.get("title"),
                "device_id": event.get("device_id")}
        followers = self._reg.alerts.get(tenant_id)
        if followers:
            data = frame(body)
            for sock in followers:
                sock.push(data)
        operators = self._reg.noc.get("")
        if operators:
            data = frame({**body, "tenant_id": tenant_id})
            for sock in operators:
                sock.push(data)

    def _dispatch_states(self, event: dict[str, Any]) -> None:
        changed_at = event.get("changed_at")
        devices = event.get("devices")
        valid = [item for item in (devices if isinstance(devices, list) else [])
                 if isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)]
        operators = self._reg.noc.get("")
        if operators and valid:  # one frame per notification, whatever the number of devices in it
            data = frame({"type": "device_states", "changed_at": changed_at, "devices": valid})
            for sock in operators:
                sock.push(data)
        for item in valid:
            tenant_id, device_id, status = item
            self._mark_fleet(tenant_id)
            key = (tenant_id, device_id)
            followers = self._reg.devices.get(key)
            if not followers:
                continue
            when = parse_iso_time(changed_at)
            view = self._views.setdefault(key, _DeviceView())
            if view.status == status and view.changed_at == when:
                continue  # already sent (read with the device's telemetry)
            if not _not_older(when, view.changed_at):
                continue  # a newer status was sent already
            view.status, view.changed_at = status, when
            data = _state_frame(device_id, status, when)
            for sock in followers:
                sock.push(data)

    def _mark_fleet(self, tenant_id: str) -> None:
        if tenant_id in self._reg.fleet:
            self._fleet_dirty.add(tenant_id)
            self._fleet_wake.set()

    # telemetry: one query per wake-up for the followed devices it named

    async def _telemetry_loop(self) -> None:
        while True:
            await self._telemetry_wake.wait()
            self._telemetry_wake.clear()
            due = {k for k in self._telemetry_due if k in self._reg.devices}
            self._telemetry_due = set()
            if not due:
                continue
            try:
                await self.push_latest(due)
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("live telemetry could not be read for %d device(s): %s", len(due), exc)
            except Exception:  # keep serving the other notifications; the failure is logged with its trace
                log.exception("live telemetry fan-out failed")

    async def push_latest(self, keys: set[DeviceKey]) -> None:
        """Read the latest metrics (and status) of `keys` in one query; queue what changed on their followers."""
        tenants = [k[0] for k in keys]
        devices = [k[1] for k in keys]
        async with system_tx(self._engine) as conn:
            rows = (await conn.execute(_FETCH_LATEST, {"t": tenants, "d": devices})).all()
        for r in rows:
            key = (r.tenant_id, r.device_id)
            followers = self._reg.devices.get(key)
            if not followers:
                continue
            view = self._views.setdefault(key, _DeviceView())
            out: list[str] = []
            if r.status != view.status and _not_older(r.last_state_change_at, view.changed_at):
                view.status, view.changed_at = r.status, r.last_state_change_at
                out.append(_state_frame(r.device_id, r.status, r.last_state_change_at))
            if r.time is not None and _has_metrics(r.metrics) and (view.time is None or r.time > view.time):
                view.time = r.time
                out.append(_telemetry_frame(r.device_id, r.metrics, r.time))
            for data in out:
                for sock in followers:
                    sock.push(data)

    # fleet: counts of the tenants that changed, at most once per interval

    async def _fleet_loop(self) -> None:
        loop = asyncio.get_running_loop()
        refreshed = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fleet_wake.wait(), timeout=FLEET_REFRESH_S)
            self._fleet_wake.clear()
            if loop.time() - refreshed >= FLEET_REFRESH_S:  # catches what sends no notification (new devices)
                self._fleet_dirty.update(self._reg.fleet)
                refreshed = loop.time()
            tenants = [t for t in self._fleet_dirty if t in self._reg.fleet]
            self._fleet_dirty = set()
            if tenants:
                try:
                    counts = await self._fleet_counts(tenants)
                except TRANSIENT_DB_ERRORS as exc:
                    log.warning("live fleet counts could not be read: %s", exc)
                    self._fleet_dirty.update(tenants)
                except Exception:  # keep counting on the next pass; the failure is logged with its trace
                    log.exception("live fleet counts failed")
                else:
                    self._push_fleet(counts)
            await asyncio.sleep(self.fleet_interval_s)

    def _push_fleet(self, counts: dict[str, dict[str, int]]) -> None:
        for tenant_id, tenant_counts in counts.items():
            followers = self._reg.fleet.get(tenant_id)
            if not followers or self._fleet_sent.get(tenant_id) == tenant_counts:
                continue
            self._fleet_sent[tenant_id] = tenant_counts
            data = frame({"type": "fleet", "counts": tenant_counts})
            for sock in followers:
                sock.push(data)

    async def _fleet_counts(self, tenants: list[str]) -> dict[str, dict[str, int]]:
        out = {t: dict.fromkeys(FLEET_COUNTS, 0) for t in tenants}
        async with system_tx(self._engine) as conn:
            for query in (_FLEET_DEVICES, _FLEET_ALERTS):
                for row in (await conn.execute(query, {"t": tenants})).mappings():
                    out[row["tenant_id"]].update({k: int(v) for k, v in row.items() if k != "tenant_id"})
        return out

    # the LISTEN connection

    async def _listen_loop(self) -> None:
        delay = RECONNECT_FIRST_S
        first = True
        while True:
            try:
                await self._open_listen()
            except (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("live LISTEN connection failed; retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay * (0.5 + secrets.randbelow(1000) / 1000))
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_FIRST_S
            if not first:
                log.info("live LISTEN connection is back; refreshing followed devices")
                await self._catch_up()
            first = False
            await self._watch_listen()
            await self._drop_listen()

    async def _open_listen(self) -> None:
        conn = await connect_raw(self._database_url, "pulse-web-live")
        try:
            self._lost.clear()
            conn.add_termination_listener(lambda _c: self._lost.set())
            await conn.add_listener(TELEMETRY_CHANNEL, self._on_telemetry)
            await conn.add_listener(LIVE_CHANNEL, self._on_live)
        except BaseException:
            conn.terminate()
            raise
        self._listen = conn
        self.listening.set()
        LISTEN_UP.set(1)

    async def _watch_listen(self) -> None:
        """Return once the LISTEN connection is gone (closed, or not answering a periodic check)."""
        while self._listen is not None and not self._listen.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=LISTEN_CHECK_S)
                return
            try:
                await asyncio.wait_for(self._listen.execute("SELECT 1"), timeout=LISTEN_CHECK_S)
            except (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("live LISTEN connection lost: %s", exc)
                return

    async def _drop_listen(self) -> None:
        self.listening.clear()
        LISTEN_UP.set(0)
        conn, self._listen = self._listen, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _catch_up(self) -> None:
        """After a reconnect notifications may have been missed: resend what changed for followed devices and
        recount every followed fleet."""
        for tenant_id in self._reg.fleet:
            self._mark_fleet(tenant_id)
        keys = set(self._reg.devices)
        if not keys:
            return
        try:
            await self.push_latest(keys)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("live catch-up could not read followed devices: %s", exc)


def _topic_fields(topic: Topic) -> dict[str, str]:
    return {"topic": topic[0], "device_id": topic[1]} if topic[0] == "device" else {"topic": topic[0]}
