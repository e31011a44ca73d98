"""The evaluation benchmark's fleet and load: tenants, devices and rules in a fresh database, and MQTT publisher
processes that send steady telemetry, scheduled breaches and fall silent on schedule (bench/evaluate.py)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench.ingest import c_publisher

BREACH_VALUE = 150
THRESHOLD_RULES = 16  # rule k < 16 is a threshold on metric m{k} (breaches hit these); the rest never fire
BREACH_SEQ_BASE = 10**12  # breach messages carry seq BREACH_SEQ_BASE + their index (never a steady message's seq)
BREACH_HOLD_S = 5.0
"""After a breach its device leaves the breached metric out of steady messages this long, so that a steady value
committed in the same ingest batch cannot replace the breach before the evaluator sees it (rules judge the latest
values)."""

Device = tuple[str, str]


@dataclass(frozen=True)
class Breach:
    at_s: float  # seconds after publishing starts
    tenant_id: str
    device_id: str
    metric: int  # k: breaches rule k (metric m{k})
    seq: int


@dataclass
class LoadPlan:
    devices: list[Device]
    breaches: list[Breach]
    silent: list[Device]
    silence_at_s: float
    rule_metric: dict[str, int] = field(default_factory=dict)  # rule_id -> k


def rule_definitions(rules: int) -> list[tuple[str, dict[str, Any]]]:
    """`rules` rules per tenant: thresholds on m0..m15 (GT/GTE, some with hysteresis), then MULTI (all / any), RATE
    and ANOMALY rules whose conditions steady telemetry (values 40-59) never meets."""
    out: list[tuple[str, dict[str, Any]]] = []
    for k in range(rules):
        if k < THRESHOLD_RULES:
            d: dict[str, Any] = {"metric": f"m{k}", "op": "GT" if k % 2 else "GTE", "value": 100}
            if k % 4 == 0:
                d["clear_value"] = 90
            out.append(("THRESHOLD", d))
        elif k % 4 == 0:
            out.append(("MULTI", {"match": "all", "conditions": [{"metric": "m16", "op": "GT", "value": 100},
                                                                 {"metric": "m17", "op": "GT", "value": 100}]}))
        elif k % 4 == 1:
            out.append(("MULTI", {"match": "any", "conditions": [{"metric": "m16", "op": "LT", "value": 0},
                                                                 {"metric": "m17", "op": "LT", "value": 0}]}))
        elif k % 4 == 2:
            out.append(("RATE", {"metric": "m18", "op": "GT", "value": 1000, "window_seconds": 60}))
        else:
            out.append(("ANOMALY", {"metric": "m19", "window_seconds": 300, "z_threshold": 6, "min_samples": 10}))
    return out


async def prepare_fleet(url: str, tenants: int, per_tenant: int, rules: int, silent_interval_s: int,
                        plan: LoadPlan) -> None:
    """Tenants bench-0… with `per_tenant` devices d0… each, `rules` rules each; silent devices get their own
    (short) heartbeat interval. Fills plan.rule_metric."""
    conn = await asyncpg.connect(url)
    try:
        for t in range(tenants):
            tenant = f"bench-{t}"
            await conn.execute("INSERT INTO tenants (tenant_id, name, no_heartbeat_alert_on) "
                               "VALUES ($1, $1, 'STALE')", tenant)
            sub = await conn.fetchval("INSERT INTO subscriptions (tenant_id, kind, device_limit) "
                                      "VALUES ($1, 'MAIN', $2) RETURNING subscription_id", tenant, per_tenant)
            await conn.execute("INSERT INTO devices (tenant_id, device_id, subscription_id) "
                               "SELECT $1, 'd' || i, $2 FROM generate_series(0, $3 - 1) i", tenant, sub, per_tenant)
            await conn.execute("INSERT INTO device_state (tenant_id, device_id) SELECT $1, 'd' || i "
                               "FROM generate_series(0, $2 - 1) i", tenant, per_tenant)
            for k, (rule_type, definition) in enumerate(rule_definitions(rules)):
                rule_id = await conn.fetchval(
                    "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition) "
                    "VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING rule_id::text",
                    tenant, f"rule {k}", rule_type, 1 + k % 5, json.dumps(definition))
                plan.rule_metric[rule_id] = k
        for tenant, device in plan.silent:
            await conn.execute("UPDATE devices SET heartbeat_interval_s = $3 WHERE tenant_id = $1 AND device_id = $2",
                               tenant, device, silent_interval_s)
    finally:
        await conn.close()


def make_plan(tenants: int, per_tenant: int, duration_s: float, breach_rate: float, silent: int,
              warmup_s: float, seed: int = 1, rounds_per_s: float | None = None) -> LoadPlan:
    """Who breaches when (each device at most once, after the warm-up) and who falls silent (halfway).

    With `rounds_per_s` (steady telemetry from publishers that cannot hold a breached metric back, bench/pub.c),
    a breach's metric is one that the steady rotation does not send from a round before the breach to
    ROTATION_CLEAR rounds after it, so that no steady value can replace the breach before it is judged."""
    rng = random.Random(seed)
    devices = [(f"bench-{t}", f"d{i}") for t in range(tenants) for i in range(per_tenant)]
    shuffled = rng.sample(devices, len(devices))
    quiet, loud = shuffled[:silent], shuffled[silent:]
    count = min(len(loud), int(max(0.0, duration_s - warmup_s - 2) * breach_rate))
    breaches = []
    for i, (t, d) in enumerate(loud[:count]):
        at_s = warmup_s + i / breach_rate
        metrics = list(range(THRESHOLD_RULES))
        if rounds_per_s:
            now = int(at_s * rounds_per_s)
            near = {(now + j) % 20 for j in range(-2, ROTATION_CLEAR + 1)}  # each round sends m{r} and m{r+1}
            metrics = [k for k in metrics if k not in near]
        breaches.append(Breach(at_s, t, d, rng.choice(metrics), BREACH_SEQ_BASE + i))
    return LoadPlan(devices=devices, breaches=breaches, silent=quiet, silence_at_s=max(warmup_s, duration_s / 2))


ROTATION_CLEAR = 6
"""Rounds after a breach (about seconds) in which bench/pub.c's steady rotation does not send the breached metric."""


def _steady(round_no: int, device_index: int, skip: int = -1) -> str:
    """A steady message's metrics: two of m0..m19 per message, in turn, values 40-59 (nothing breaches)."""
    a, b = round_no % 20, (round_no + 1) % 20
    pairs = [(a, 40 + (round_no * 7 + device_index) % 20), (b, 40 + (round_no * 3 + device_index) % 20)]
    return "{" + ",".join(f'"m{k}":{v}' for k, v in pairs if k != skip) + "}"


class _Schedule:
    """What one publisher sends when: its breaches at their time, steady telemetry round robin over its devices at
    `rate` msg/s, nothing from its silent devices from `silence_at` on. Records when each breach was sent."""

    def __init__(self, devices: list[Device], rate: float, breaches: list[Breach], silent: list[Device],
                 silence_at: float) -> None:
        self.devices, self.rate, self.breaches = devices, rate, breaches
        self.quiet, self.silence_at = set(silent), silence_at
        self.held: dict[Device, tuple[int, float]] = {}  # device -> (breached metric, left out until)
        self.sent = self.turn = self.done = 0
        self.published: list[tuple[int, float]] = []

    @property
    def total(self) -> int:
        return self.sent + self.done

    def due(self, elapsed: float, room: int) -> list[tuple[str, str]]:
        """(topic, payload) of the messages due now: the breaches whose time has come, then steady messages up to
        the rate, at most `room` of them and 500 per call."""
        ts = datetime.now(UTC).isoformat()
        out: list[tuple[str, str]] = []
        while self.done < len(self.breaches) and self.breaches[self.done].at_s <= elapsed:
            b = self.breaches[self.done]
            out.append((f"tenant/{b.tenant_id}/device/{b.device_id}/telemetry",
                        f'{{"ts":"{ts}","seq":{b.seq},"metrics":{{"m{b.metric}":{BREACH_VALUE}}}}}'))
            self.published.append((b.seq, time.time()))
            self.held[(b.tenant_id, b.device_id)] = (b.metric, elapsed + BREACH_HOLD_S)
            self.done += 1
        n = len(self.devices)
        for _ in range(max(0, min(int(elapsed * self.rate) - self.sent, room, 500))):
            tenant, device = self.devices[self.turn % n]
            round_no, self.turn = self.turn // n, self.turn + 1
            if elapsed >= self.silence_at and (tenant, device) in self.quiet:
                continue
            skip, until = self.held.get((tenant, device), (-1, 0.0))
            metrics = _steady(round_no, self.turn % n, skip if elapsed < until else -1)
            out.append((f"tenant/{tenant}/device/{device}/telemetry",
                        f'{{"ts":"{ts}","seq":{round_no},"metrics":{metrics}}}'))
            self.sent += 1
        return out


def _publisher(index: int, port: int, schedule: _Schedule, duration: float, result: Any) -> None:
    """One publisher process with the gmqtt client: its own MQTT connection, QoS 1, `schedule` for `duration`."""
    import gmqtt

    async def main() -> None:
        client = gmqtt.Client(f"bench-eval-pub-{index}-{secrets.token_hex(3)}")
        await client.connect("127.0.0.1", port)
        storage = client._persistent_storage
        cpu0 = time.process_time()
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < duration:
            room = 900 - len(storage._messages)  # stay under the broker's Receive Maximum (1,000 in flight)
            messages = schedule.due(elapsed, room)
            for topic, payload in messages:
                client.publish(topic, payload, qos=1)
            await asyncio.sleep(0.002 if not messages or room <= 0 else 0)
        for _ in range(600):
            if storage.is_empty:
                break
            await asyncio.sleep(0.05)
        result.put({"sent": schedule.total, "published": schedule.published, "unacked": len(storage._messages),
                    "cpu_s": time.process_time() - cpu0})
        await client.disconnect()

    asyncio.run(main())


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_publish(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 1."""
    body = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + _remaining_length(len(body)) + body


def _raw_publisher(index: int, port: int, schedule: _Schedule, duration: float, result: Any) -> None:
    """Like `_publisher`, speaking MQTT 3.1.1 over a plain socket (CONNECT, QoS 1 PUBLISH, counting PUBACKs), the
    packets of a pacing step in one write: less CPU per message than gmqtt, so the load generator takes less of
    the two cores from the system under test. Same schedule and in-flight cap."""

    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client_id = f"bench-eval-raw-{index}-{secrets.token_hex(3)}".encode()
        connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
        writer.write(b"\x10" + _remaining_length(len(connect)) + connect)
        if (await reader.readexactly(4))[3] != 0:
            raise RuntimeError("the broker refused the benchmark publisher")
        acked = 0

        async def read_acks() -> None:
            nonlocal acked
            buf = b""
            while chunk := await reader.read(65536):
                buf += chunk
                pos = 0
                while len(buf) - pos >= 4 and buf[pos] >> 4 == 4:  # all the broker sends here: 4-byte PUBACKs
                    acked += 1
                    pos += 4
                buf = buf[pos:]

        acks = asyncio.create_task(read_acks())
        packet_id = 0
        cpu0 = time.process_time()
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < duration:
            room = 900 - (schedule.total - acked)  # stay under the broker's Receive Maximum (1,000 in flight)
            messages = schedule.due(elapsed, room)
            out = bytearray()
            for topic, payload in messages:
                packet_id = packet_id % 65535 + 1
                out += _mqtt_publish(topic.encode(), payload.encode(), packet_id)
            if out:
                writer.write(out)
                await writer.drain()
            await asyncio.sleep(0.002 if not messages or room <= 0 else 0)
        for _ in range(600):
            if acked >= schedule.total:
                break
            await asyncio.sleep(0.05)
        result.put({"sent": schedule.total, "published": schedule.published, "unacked": schedule.total - acked,
                    "cpu_s": time.process_time() - cpu0})
        writer.write(b"\xe0\x00")  # DISCONNECT
        await writer.drain()
        acks.cancel()
        writer.close()

    asyncio.run(main())


def publish_c(port: int, plan: LoadPlan, rate: float, duration: float) -> dict[str, Any]:
    """Steady telemetry from bench/pub.c, one process per tenant (its devices d0.. round robin, two of m0..m19 per
    message, silent devices quiet from plan.silence_at_s), and the breaches from one `_raw_publisher` process."""
    binary = c_publisher()
    tenants: dict[str, list[int]] = {}
    for tenant, device in plan.devices:
        tenants.setdefault(tenant, []).append(int(device[1:]))
    if any(numbers != list(range(len(numbers))) for numbers in tenants.values()):
        raise ValueError("bench/pub.c publishes devices d0..dN-1 of each tenant")
    silent = {t: [int(d[1:]) for tt, d in plan.silent if tt == t] for t in tenants}
    procs = [subprocess.Popen(
        [str(binary), "127.0.0.1", str(port), f"bench-eval-c-{t}-{secrets.token_hex(3)}", t, "0", "1",
         str(len(numbers)), str(rate / len(tenants)), str(duration), "0", "900", "20", str(plan.silence_at_s),
         ",".join(map(str, silent[t])) or "-1"], stdout=subprocess.PIPE, text=True)
        for t, numbers in tenants.items()]
    ctx = mp.get_context("spawn")
    result: Any = ctx.Queue()
    breaches = ctx.Process(target=_raw_publisher, args=(
        0, port, _Schedule([], 0, plan.breaches, [], plan.silence_at_s), duration, result))
    breaches.start()
    reports = [json.loads(p.communicate(timeout=duration + 120)[0]) for p in procs]
    breach_report = result.get(timeout=duration + 120)
    breaches.join(30)
    return {"sent": sum(r["sent"] for r in reports) + breach_report["sent"],
            "unacked": sum(r["unacked"] for r in reports) + breach_report["unacked"],
            "published": dict(breach_report["published"]),
            "cpu_s": sum(r["cpu_s"] for r in reports) + breach_report["cpu_s"]}


def publish(port: int, plan: LoadPlan, rate: float, duration: float, processes: int, publisher: str = "raw"
            ) -> dict[str, Any]:
    """Run the publisher processes to the end; devices (and their breaches) are split between them. `publisher`:
    "raw" (`_raw_publisher`), "gmqtt" (`_publisher`) or "c" (`publish_c`)."""
    if publisher == "c":
        return publish_c(port, plan, rate, duration)
    ctx = mp.get_context("spawn")
    result: Any = ctx.Queue()
    shares = [plan.devices[i::processes] for i in range(processes)]
    owner = {d: i for i, share in enumerate(shares) for d in share}
    target = _raw_publisher if publisher == "raw" else _publisher
    procs = [ctx.Process(target=target, args=(i, port, _Schedule(
        shares[i], rate / processes, [b for b in plan.breaches if owner[(b.tenant_id, b.device_id)] == i],
        [d for d in plan.silent if owner[d] == i], plan.silence_at_s), duration, result))
        for i in range(processes)]
    for p in procs:
        p.start()
    reports = [result.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join(30)
    return {"sent": sum(r["sent"] for r in reports), "unacked": sum(r["unacked"] for r in reports),
            "published": dict(x for r in reports for x in r["published"]),
            "cpu_s": sum(r["cpu_s"] for r in reports)}
