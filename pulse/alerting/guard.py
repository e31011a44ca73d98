"""The liveness guard: device silence counts only while the ingest path can hear devices.

If the broker or every ingest worker is down, every device falls silent at once; marking them all OFFLINE
would page for the whole fleet about a fault of our own. Ingest workers beat every few seconds
(pulse.ingest.heartbeat). Before each liveness pass the evaluator looks at those beats:

- no ingest instance seen in the last 10 minutes: nothing to judge by (HTTP-only fleets, a fresh install):
  liveness runs as usual;
- instances seen, none ready now (no beat for 15 s, or not connected and subscribed, or its writer failing):
  the pass is skipped and no device changes state; `pulse_liveness_paused` is 1;
- ready again: silence is counted from when ingest became ready (the earliest `ready_since` of the ready
  instances) for devices not heard since, so each device gets its full interval to be heard again.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta

import prometheus_client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.evaluator import LivenessResult, liveness_pass
from pulse.ingest.heartbeat import BEAT_EVERY_S

GONE_AFTER = timedelta(seconds=3 * BEAT_EVERY_S)
KNOWN_WITHIN = timedelta(minutes=10)

PAUSED = prometheus_client.Gauge("pulse_liveness_paused", "1 while no ingest instance is ready, so device "
                                                          "liveness is not evaluated")


@dataclass(frozen=True)
class IngestState:
    known: bool  # an ingest instance beat within KNOWN_WITHIN
    ready: bool  # one is ready now
    ready_since: datetime | None  # the earliest ready_since of the ready ones
    detail: str

    @property
    def paused(self) -> bool:
        return self.known and not self.ready


async def ingest_state(conn: AsyncConnection, now: datetime) -> IngestState:
    row = (await conn.execute(text(
        "SELECT count(*) FILTER (WHERE beat_at > :known) AS known, "
        "  count(*) FILTER (WHERE ready AND beat_at > :gone) AS ready, "
        "  min(ready_since) FILTER (WHERE ready AND beat_at > :gone) AS since, "
        "  string_agg(instance || ': ' || CASE WHEN beat_at > :gone THEN detail ELSE 'no heartbeat' END, '; ') "
        "    FILTER (WHERE beat_at > :known AND NOT (ready AND beat_at > :gone)) AS detail "
        "FROM service_heartbeats WHERE process_type = 'ingest'"),
        {"known": now - KNOWN_WITHIN, "gone": now - GONE_AFTER})).one()
    return IngestState(known=row.known > 0, ready=row.ready > 0, ready_since=row.since, detail=row.detail or "")


async def guarded_liveness(conn: AsyncConnection, now: datetime, *, base_url: str = "",
                           partitions: AbstractSet[int] | None = None
                           ) -> tuple[IngestState, LivenessResult | None]:
    """Run the liveness pass (over `partitions`, None: all) unless ingest is down; returns the ingest state and the
    pass's result (None: paused)."""
    state = await ingest_state(conn, now)
    PAUSED.set(1 if state.paused else 0)
    if state.paused:
        return state, None
    return state, await liveness_pass(conn, now, base_url=base_url,
                                      grace_from=state.ready_since if state.known else None, partitions=partitions)
