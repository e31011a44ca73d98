"""Benchmark plumbing: a private Mosquitto, a throwaway database, process accounting, a commit clock and a raw
MQTT QoS 1 load generator."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

ADMIN_URL = os.environ.get("PULSE_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- ports and processes -------------------------------------------------------------------------------------------

def free_ports(count: int = 1) -> int:
    """A loopback port p such that p … p+count-1 are all free now (health ports of `--workers N` are consecutive)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        ok = True
        for port in range(base + 1, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free loopback ports")


def proc_status_kb(pid: int, field_name: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current RSS); None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (None when it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, summed over cores."""
    t = psutil.cpu_times()
    total = float(sum(t))
    idle = float(t.idle + getattr(t, "iowait", 0.0))
    return total - idle, total


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM one process we started and wait; SIGKILL its process group if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: the group is ours alone
        return proc.wait()


# --- broker --------------------------------------------------------------------------------------------------------

BROKER_CONF = """\
# Benchmark broker: private, loopback only, anonymous (the benchmark does not create 10,000 broker accounts;
# per-device authentication is measured by tests/broker, not here).
listener {port} 127.0.0.1
allow_anonymous true
{persistence}
# The queue must hold a whole run's messages (live: all of them if ingest stalled; backlog: the backlog), so that
# a message the broker acknowledged to a publisher is never dropped by the broker: every loss the benchmark
# reports is then ingest's. Mosquitto's defaults (1,000 queued messages per client) drop at these rates.
max_queued_messages {max_queued}
max_queued_bytes 0
# Announced to MQTT 5 publishers as Receive Maximum, and the in-flight limit towards MQTT 3.1.1 clients. Ingest
# (MQTT 5) announces its own Receive Maximum, which is what limits the broker's sends to it. Default 20.
max_inflight_messages 1000
max_packet_size 70000
user {user}
log_dest file {log}
log_type error
log_type warning
log_type notice
connection_messages false
"""


@dataclass
class Broker:
    """A private Mosquitto on a free loopback port, stopped by `stop()`."""

    tmp: Path
    persistence: bool = False
    max_queued: int = 5_000_000
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.port = free_ports()
        if self.persistence:
            (self.tmp / "mosquitto-data").mkdir(exist_ok=True)
            persistence = (f"persistence true\npersistence_location {self.tmp / 'mosquitto-data'}/\n"
                           "autosave_interval 60")
        else:
            persistence = "persistence false"
        conf = self.tmp / "mosquitto.conf"
        conf.write_text(BROKER_CONF.format(port=self.port, persistence=persistence, max_queued=self.max_queued,
                                           user=os.environ.get("USER") or "root", log=self.tmp / "mosquitto.log"))
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start; see {self.tmp / 'mosquitto.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)


# --- database ------------------------------------------------------------------------------------------------------

def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


async def create_database(prefix: str) -> str:
    """A fresh database built by the migrations (as tests/conftest.py does); returns its URL."""
    name = f"{prefix}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = _with_db(ADMIN_URL, name)
    from pulse.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
    return url


async def drop_database(url: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


def device_ids(count: int) -> list[str]:
    return [f"dev-{i:06d}" for i in range(count)]


async def seed_fleet(url: str, tenant_id: str, devices: list[str]) -> None:
    """One active tenant with a MAIN subscription and `devices` (with their device_state rows), in set-based
    statements (unnest), not one insert per device."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ($1, 'Benchmark')", tenant_id)
            sub = await conn.fetchval(
                "INSERT INTO subscriptions (tenant_id, kind, device_limit) VALUES ($1, 'MAIN', $2) "
                "RETURNING subscription_id", tenant_id, len(devices))
            await conn.execute("INSERT INTO devices (tenant_id, device_id, subscription_id) "
                               "SELECT $1, d, $2 FROM unnest($3::text[]) d", tenant_id, sub, devices)
            await conn.execute("INSERT INTO device_state (tenant_id, device_id) "
                               "SELECT $1, d FROM unnest($2::text[]) d", tenant_id, devices)
    finally:
        await conn.close()


# --- commit clock --------------------------------------------------------------------------------------------------

@dataclass
class CommitClock:
    """When did transaction X become visible? Polls `pg_current_snapshot()` every `interval_s`.

    A transaction id below a snapshot's xmax and not in its in-progress list is finished. With the rows' `xmin`
    (the id of the transaction that inserted them) this gives every row's commit-visible time to within one poll
    interval, without querying the rows during the run. The time recorded is when the poll's answer arrived, so
    a commit time is late by at most one interval plus a round trip (latency is overstated, never understated).
    Assumes each batch is one top-level transaction without savepoints, which is how the writer commits.
    """

    url: str
    interval_s: float = 0.02
    times: list[float] = field(default_factory=list)
    xmaxes: list[int] = field(default_factory=list)
    in_progress: list[frozenset[int]] = field(default_factory=list)
    max_gap_s: float = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.url, server_settings={"application_name": "bench-commit-clock"})
        try:
            while not stop.is_set():
                snap = await conn.fetchval("SELECT pg_current_snapshot()::text")
                now = time.time()
                _xmin, xmax, xip = snap.split(":")
                if self.times:
                    self.max_gap_s = max(self.max_gap_s, now - self.times[-1])
                self.times.append(now)
                self.xmaxes.append(int(xmax))
                self.in_progress.append(frozenset(int(x) for x in xip.split(",") if x))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            await conn.close()

    def full_xid(self, xid32: int) -> int:
        """The 64-bit id of a 32-bit `xmin` (same epoch as the first snapshot; a run is far shorter than 2^31 ids)."""
        ref = self.xmaxes[0]
        full = (ref & ~0xFFFFFFFF) | xid32
        if full < ref - 2**31:
            full += 2**32
        elif full > ref + 2**31:
            full -= 2**32
        return full

    def visible_at(self, xid32: int) -> float | None:
        """Wall time of the first poll that saw the transaction finished; None if no poll did."""
        xid = self.full_xid(xid32)
        i = bisect.bisect_right(self.xmaxes, xid)  # first snapshot whose xmax > xid
        while i < len(self.times) and xid in self.in_progress[i]:
            i += 1
        return self.times[i] if i < len(self.times) else None


# --- load generator ------------------------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


class _MqttConnection(asyncio.Protocol):
    """One MQTT 3.1.1 connection that only publishes at QoS 1 and counts PUBACKs."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.acked = 0
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 2:
            kind = buf[pos] >> 4
            length, shift, i, complete = 0, 0, pos + 1, False
            while i < len(buf) and i - pos <= 4:
                b = buf[i]
                length |= (b & 0x7F) << shift
                shift += 7
                i += 1
                if not b & 0x80:
                    complete = True
                    break
            if not complete or i + length > len(buf):
                break
            if kind == 4:  # PUBACK
                self.acked += 1
            elif kind == 2 and not self.connack.done():  # CONNACK: flags, return code
                self.connack.set_result(buf[i + 1])
            pos = i + length
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(f"connection lost before CONNACK: {exc}"))


async def _connect(port: int, client_id: str) -> _MqttConnection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_MqttConnection, "127.0.0.1", port)
    cid = client_id.encode()
    # CONNECT, MQTT 3.1.1, clean session, keep-alive 0 (no PINGREQ needed).
    variable = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack("!H", len(cid)) + cid
    assert conn.transport is not None
    conn.transport.write(b"\x10" + _varint(len(variable)) + variable)
    code = await asyncio.wait_for(conn.connack, 10)
    if code != 0:
        raise ConnectionError(f"CONNACK return code {code}")
    return conn


@dataclass(frozen=True)
class PublisherSpec:
    """What one publisher process sends: `devices` round-robin (seq = round number), over `connections`
    connections (device i on connection i % connections), `rate` msg/s (0: as fast as acknowledgements allow)
    until `duration_s` or `count` messages, at most `window` unacknowledged per connection."""

    index: int
    port: int
    tenant_id: str
    devices: tuple[str, ...]
    rate: float
    duration_s: float
    count: int
    connections: int
    window: int
    run_id: str


def _payload(ts: str, seq: int, i: int) -> bytes:
    # A small, realistic reading: three metrics of the three value kinds (number, integer, string).
    return (f'{{"ts":"{ts}","seq":{seq},"metrics":{{"temp_c":{18 + (seq + i) % 9}.{seq % 10},'
            f'"rssi":-{40 + (seq + i) % 50},"door":"{"open" if (seq + i) % 7 == 0 else "closed"}"}}}}').encode()


async def _publish(spec: PublisherSpec, ready: Any, go: Any, halt: Any) -> dict[str, Any]:
    cpu0 = time.process_time()
    conns = [await _connect(spec.port, f"bench-pub-{spec.run_id}-{spec.index}-{c}") for c in range(spec.connections)]
    ready.put(spec.index)
    topics = [struct.pack("!H", len(t)) + t for t in
              (f"tenant/{spec.tenant_id}/device/{d}/telemetry".encode() for d in spec.devices)]
    n = len(topics)
    nconn = len(conns)
    sent_on = [0] * nconn
    packet_ids = [0] * nconn
    sent = 0
    behind_max = 0
    tick_cap = 2000
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, go.wait, 120)
    start = time.monotonic()
    first_wall = time.time()
    while not halt.is_set():
        elapsed = time.monotonic() - start
        if (spec.duration_s and elapsed >= spec.duration_s) or (spec.count and sent >= spec.count):
            break
        due = (int(elapsed * spec.rate) if spec.rate else sent + tick_cap) - sent
        if spec.count:
            due = min(due, spec.count - sent)
        acked = sum(c.acked for c in conns)
        room = spec.window * nconn - (sent - acked)
        k = min(due, room, tick_cap)
        if k <= 0:
            await asyncio.sleep(0.002 if due <= 0 else 0.0005)
            continue
        ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        chunks: list[list[bytes]] = [[] for _ in range(nconn)]
        for _ in range(k):
            i = sent % n
            c = i % nconn
            payload = _payload(ts, sent // n, i)
            packet_ids[c] = packet_ids[c] % 65535 + 1
            topic = topics[i]
            chunks[c].append(b"\x32" + _varint(len(topic) + 2 + len(payload)) + topic
                             + struct.pack("!H", packet_ids[c]) + payload)
            sent_on[c] += 1
            sent += 1
        for c, parts in enumerate(chunks):
            if parts:
                transport = conns[c].transport
                assert transport is not None
                transport.write(b"".join(parts))
        if spec.rate:
            behind_max = max(behind_max, int((time.monotonic() - start) * spec.rate) - sent)
        await asyncio.sleep(0)
    last_wall = time.time()
    wall_s = time.monotonic() - start
    deadline = time.monotonic() + 60
    while sum(c.acked for c in conns) < sent and time.monotonic() < deadline and not any(c.lost for c in conns):
        await asyncio.sleep(0.01)
    acked = sum(c.acked for c in conns)
    for c in conns:
        if c.transport is not None:
            c.transport.write(b"\xe0\x00")  # DISCONNECT
            c.transport.close()
    return {"index": spec.index, "sent": sent, "acked": acked, "connections": nconn,
            "cpu_s": time.process_time() - cpu0, "wall_s": wall_s, "first_wall": first_wall,
            "last_wall": last_wall, "behind_max": behind_max, "lost_connection": any(c.lost for c in conns)}


def publisher_main(spec: PublisherSpec, ready: Any, go: Any, halt: Any, results: Any) -> None:
    """Entry point of one publisher process (multiprocessing, spawn): connect, report ready, wait for `go`, send."""

    try:
        results.put(asyncio.run(_publish(spec, ready, go, halt)))
    except BaseException as exc:  # report instead of leaving the parent waiting
        results.put({"index": spec.index, "error": f"{type(exc).__name__}: {exc}"})
        raise


def split_round_robin(items: list[str], parts: int) -> list[tuple[str, ...]]:
    return [tuple(items[i::parts]) for i in range(parts)]


def sum_of(rows: Iterable[dict[str, Any]], key: str) -> float:
    return float(sum(r.get(key, 0) for r in rows))
