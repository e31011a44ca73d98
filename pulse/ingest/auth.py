"""Device auth cache: registry facts ingest checks per message, cached with a TTL and dropped on NOTIFY."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import Clock
from pulse.crypto import hash_token, tokens_equal
from pulse.db import connect_raw, ingest_tx

log = logging.getLogger("pulse.ingest.auth")

DEVICE_CHANGED_CHANNEL = "pulse_device_changed"
DEFAULT_TTL_S = 60.0
DEFAULT_MAX_ENTRIES = 100_000

K = TypeVar("K")
V = TypeVar("V")

_DEVICES_SQL = text("""
SELECT k.tenant_id, k.device_id, t.status AS tenant_status, d.device_id IS NOT NULL AS device_known,
       d.status AS device_status, d.site_id,
       d.subscription_id IS NOT NULL AS has_subscription, s.status AS subscription_status,
       ARRAY(SELECT c.secret_hash FROM device_credentials c
             WHERE c.tenant_id = d.tenant_id AND c.device_id = d.device_id
               AND c.kind = 'PROVISION_TOKEN' AND c.revoked_at IS NULL ORDER BY c.created_at) AS token_hashes,
       ARRAY(SELECT c.expires_at FROM device_credentials c
             WHERE c.tenant_id = d.tenant_id AND c.device_id = d.device_id
               AND c.kind = 'PROVISION_TOKEN' AND c.revoked_at IS NULL ORDER BY c.created_at) AS token_expiries
FROM unnest(CAST(:tenant_ids AS text[]), CAST(:device_ids AS text[])) AS k(tenant_id, device_id)
LEFT JOIN tenants t ON t.tenant_id = k.tenant_id
LEFT JOIN devices d ON d.tenant_id = t.tenant_id AND d.device_id = k.device_id
LEFT JOIN subscriptions s ON s.subscription_id = d.subscription_id
""")
LOAD_BATCH_MAX = 1000
"""Most registry records read by one query; the misses of one event-loop turn share it."""

_RECENT_DEVICES_SQL = text("""
SELECT s.tenant_id, s.device_id FROM device_state s JOIN devices d USING (tenant_id, device_id)
WHERE d.status = 'ACTIVE' ORDER BY s.last_seen_at DESC NULLS LAST LIMIT :n
""")

_TOKEN_OWNER_SQL = text("""
SELECT tenant_id, device_id FROM device_credentials
WHERE secret_hash = :h AND kind = 'PROVISION_TOKEN' AND revoked_at IS NULL
LIMIT 1
""")


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the registry says about one (tenant, device) pair; `tenant_status` None means no such tenant."""

    tenant_id: str
    device_id: str
    tenant_status: str | None
    device_status: str | None  # None: the tenant has no such device
    site_id: str | None
    has_subscription: bool
    subscription_status: str | None
    tokens: tuple[tuple[str, datetime | None], ...]  # (sha256 hash, expires_at) of live provision tokens

    @property
    def tenant_known(self) -> bool:
        return self.tenant_status is not None and self.tenant_status != "DELETED"

    @property
    def device_known(self) -> bool:
        return self.tenant_known and self.device_status is not None

    def token_matches(self, token: str, now: datetime) -> bool:
        """Constant-time check of a bearer token against every live provision token of the device."""
        candidate = hash_token(token)
        matched = False
        for secret_hash, expires_at in self.tokens:
            ok = tokens_equal(candidate, secret_hash) and (expires_at is None or expires_at > now)
            matched = matched or ok
        return matched


class _TtlCache(Generic[K, V]):
    """A bounded LRU of values that expire `ttl_s` after loading; concurrent misses share one load."""

    def __init__(self, ttl_s: float, max_entries: int, monotonic: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._monotonic = monotonic
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._generation = 0

    def __contains__(self, key: K) -> bool:
        hit = self._items.get(key)
        return hit is not None and self._monotonic() - hit[0] < self._ttl

    def peek(self, key: K) -> V | None:
        """The cached value if it is still fresh, without waiting; None on a miss."""
        hit = self._items.get(key)
        if hit is not None and self._monotonic() - hit[0] < self._ttl:
            self._items.move_to_end(key)
            return hit[1]
        return None

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._items.get(key)
        if hit is not None and self._monotonic() - hit[0] < self._ttl:
            self._items.move_to_end(key)
            return hit[1]
        task = self._loading.get(key)
        if task is None:
            # A task of its own: a caller that gives up (a cancelled HTTP request) cancels no one else's wait.
            task = asyncio.ensure_future(self._load(key, load))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._loading[key] = task
        return await asyncio.shield(task)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        generation = self._generation
        try:
            value = await load()
        finally:
            self._loading.pop(key, None)
        if generation == self._generation:  # an invalidation during the load makes the value suspect
            self._store(key, value)
        return value

    def _store(self, key: K, value: V) -> None:
        self._items[key] = (self._monotonic(), value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    @property
    def generation(self) -> int:
        return self._generation

    def store_loaded(self, values: dict[K, V], generation: int) -> bool:
        """Store values loaded in bulk, unless an invalidation happened since `generation` was read."""
        if generation != self._generation:
            return False
        for key, value in values.items():
            if key not in self._loading:
                self._store(key, value)
        return True

    def keys_older_than(self, age_s: float) -> list[K]:
        """Cached keys loaded more than `age_s` ago (still fresh or not), most recently used last."""
        cutoff = self._monotonic() - age_s
        return [k for k, (at, _v) in self._items.items() if at < cutoff]

    def discard(self, key: K) -> None:
        self._items.pop(key, None)
        self._generation += 1

    def clear(self) -> None:
        self._items.clear()
        self._generation += 1


class _BatchLoader(Generic[K, V]):
    """Coalesces the loads requested during one event-loop turn into one `fetch` of up to `max_batch` keys."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], max_batch: int = LOAD_BATCH_MAX) -> None:
        self._fetch = fetch
        self._max = max_batch
        self._wanted: list[tuple[K, asyncio.Future[V]]] = []
        self._task: asyncio.Task[None] | None = None

    async def load(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._wanted.append((key, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingest-registry-load")
        return await future

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let the rest of this turn's misses join
            while self._wanted:
                batch, self._wanted = self._wanted[:self._max], self._wanted[self._max:]
                try:
                    values = await self._fetch(list(dict.fromkeys(k for k, _ in batch)))
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for key, future in batch:
                    if not future.done():
                        future.set_result(values[key])
        finally:
            self._task = None


class DeviceAuthCache:
    """Registry lookups for ingest without a database round trip per message.

    Entries live `ttl_s` seconds; a NOTIFY on `pulse_device_changed` with payload `{tenant_id}/{device_id}`
    drops one at once (fleet sends it on revoke, rotate and status changes). While the LISTEN connection is
    down the TTL alone bounds staleness, and everything is dropped when it comes back.
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, *, ttl_s: float = DEFAULT_TTL_S,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._engine = engine
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._devices: _TtlCache[tuple[str, str], DeviceRecord] = _TtlCache(ttl_s, max_entries, clock.monotonic)
        self._token_owners: _TtlCache[str, tuple[str, str] | None] = _TtlCache(ttl_s, 10_000, clock.monotonic)
        self._loader: _BatchLoader[tuple[str, str], DeviceRecord] = _BatchLoader(self._load_devices)
        self._in_use: set[tuple[str, str]] = set()
        self._warm_needed = asyncio.Event()
        self._listened_before = False
        self._listening = asyncio.Event()
        self.listening = False

    def is_cached(self, tenant_id: str, device_id: str) -> bool:
        return (tenant_id, device_id) in self._devices

    def cached_device(self, tenant_id: str, device_id: str) -> DeviceRecord | None:
        """The registry record if it is cached and fresh, else None (the caller then awaits get_device)."""
        key = (tenant_id, device_id)
        record = self._devices.peek(key)
        if record is not None:
            self._in_use.add(key)
        return record

    async def get_device(self, tenant_id: str, device_id: str) -> DeviceRecord:
        """The registry record (cached); raises the database's error when it is unreachable."""
        key = (tenant_id, device_id)
        return await self._devices.get(key, lambda: self._loader.load(key))

    async def token_owner(self, token: str) -> tuple[str, str] | None:
        """(tenant_id, device_id) holding this live provision token, for telling TENANT_MISMATCH from TOKEN_INVALID."""
        digest = hash_token(token)
        return await self._token_owners.get(digest, lambda: self._load_token_owner(digest))

    async def wait_listening(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the device-change LISTEN to be established; whether it is."""
        try:
            await asyncio.wait_for(self._listening.wait(), timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    async def warm(self, limit: int | None = None) -> int:
        """Load the registry records of the most recently active devices (at most the cache's size) in bulk,
        so a starting worker checks their messages without waiting; returns how many were loaded."""
        limit = min(limit or self._max_entries, self._max_entries)
        async with ingest_tx(self._engine) as conn:
            keys = [(r[0], r[1]) for r in (await conn.execute(_RECENT_DEVICES_SQL, {"n": limit})).all()]
        return await self._reload(keys)

    async def refresh(self, older_than_s: float) -> int:
        """Reload, in bulk, the entries used since the last refresh and loaded more than `older_than_s` ago, so
        busy devices never expire into the waiting path; returns how many were reloaded."""
        in_use, self._in_use = self._in_use, set()
        return await self._reload([k for k in self._devices.keys_older_than(older_than_s) if k in in_use])

    async def _reload(self, keys: list[tuple[str, str]]) -> int:
        loaded = 0
        for i in range(0, len(keys), LOAD_BATCH_MAX):
            generation = self._devices.generation
            values = await self._load_devices(keys[i:i + LOAD_BATCH_MAX])
            if self._devices.store_loaded(values, generation):
                loaded += len(values)
        return loaded

    async def keep_fresh(self, stop: asyncio.Event) -> None:
        """Refresh entries in use every third of the TTL, and warm the cache again whenever the LISTEN connection
        is re-established (that empties it), until `stop`; run it as a task. Failures are logged and retried:
        entries then expire after the TTL and messages wait for a load."""
        period = max(self._ttl_s / 3, 0.5)
        while not stop.is_set():
            stop_wait = asyncio.ensure_future(stop.wait())
            warm_wait = asyncio.ensure_future(self._warm_needed.wait())
            try:
                await asyncio.wait({stop_wait, warm_wait}, timeout=period, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                warm_wait.cancel()
            if stop.is_set():
                return
            try:
                if self._warm_needed.is_set():
                    self._warm_needed.clear()
                    count = await self.warm()
                    log.info("device registry cache warmed again", extra={"devices": count})
                else:
                    await self.refresh(period)
            except (OSError, TimeoutError, SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("device registry refresh failed: %s", str(exc)[:200])

    def invalidate(self, tenant_id: str, device_id: str) -> None:
        self._devices.discard((tenant_id, device_id))
        self._token_owners.clear()

    def invalidate_all(self) -> None:
        self._devices.clear()
        self._token_owners.clear()

    async def _load_devices(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], DeviceRecord]:
        """One query for many (tenant, device) pairs; every key gets a record (unknown ones say so)."""
        async with ingest_tx(self._engine) as conn:
            # A generic plan of this statement (PostgreSQL switches after five runs) hash-joins whole tables.
            await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            rows = (await conn.execute(_DEVICES_SQL, {"tenant_ids": [k[0] for k in keys],
                                                      "device_ids": [k[1] for k in keys]})).mappings().all()
        out: dict[tuple[str, str], DeviceRecord] = {}
        for row in rows:
            out[(row["tenant_id"], row["device_id"])] = DeviceRecord(
                row["tenant_id"], row["device_id"], row["tenant_status"],
                row["device_status"] if row["device_known"] else None,
                row["site_id"], bool(row["has_subscription"]), row["subscription_status"],
                tuple(zip(row["token_hashes"] or (), row["token_expiries"] or (), strict=True)),
            )
        return out

    async def _load_token_owner(self, digest: str) -> tuple[str, str] | None:
        async with ingest_tx(self._engine) as conn:
            row = (await conn.execute(_TOKEN_OWNER_SQL, {"h": digest})).first()
        return (row[0], row[1]) if row else None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        tenant_id, sep, device_id = payload.partition("/")
        if sep and tenant_id and device_id:
            self.invalidate(tenant_id, device_id)
        else:
            log.warning("ignoring malformed %s payload", DEVICE_CHANGED_CHANNEL, extra={"payload": payload[:200]})
            self.invalidate_all()

    async def listen(self, database_url: str, stop: asyncio.Event, *, retry_max_s: float = 10.0) -> None:
        """LISTEN for device changes until `stop`, reconnecting with backoff; run it as a task."""
        delay = 0.2
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect_raw(database_url, "pulse-ingest-auth-listen")
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(DEVICE_CHANGED_CHANNEL, self._on_notify)
                self.invalidate_all()  # anything may have changed while we were not listening
                if self._listened_before:
                    self._warm_needed.set()
                self._listened_before = True
                self.listening = True
                self._listening.set()
                delay = 0.2
                stop_wait = asyncio.ensure_future(stop.wait())
                lost_wait = asyncio.ensure_future(lost.wait())
                try:
                    await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop_wait.cancel()
                    lost_wait.cancel()
                if lost.is_set():
                    log.warning("device-change LISTEN connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("cannot LISTEN for device changes (cache entries still expire after the TTL): %s", exc)
            finally:
                self.listening = False
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    await conn.close(timeout=2)
            if not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, retry_max_s)
