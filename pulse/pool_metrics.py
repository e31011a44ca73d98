"""Database pool use on /metrics: each process's SQLAlchemy pool, read when Prometheus scrapes (nothing polls).

Series (label `pool`: the engine's application name, e.g. pulse-deliver): `pulse_db_pool_size` (connections the
pool keeps), `pulse_db_pool_checked_out` (in use by a transaction now), `pulse_db_pool_idle` (open, waiting in the
pool) and `pulse_db_pool_overflow` (opened beyond the pool size; negative while the pool is not yet full).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

_SERIES = (
    ("pulse_db_pool_size", "Connections the database pool keeps open", "size"),
    ("pulse_db_pool_checked_out", "Pool connections in use by a transaction now", "checkedout"),
    ("pulse_db_pool_idle", "Open pool connections waiting to be used", "checkedin"),
    ("pulse_db_pool_overflow", "Connections opened beyond the pool size (negative: pool not yet full)", "overflow"),
)


class PoolCollector(Collector):
    """The pools of the engines a process registered; an engine that was disposed of and collected drops out."""

    def __init__(self) -> None:
        self._engines: weakref.WeakKeyDictionary[AsyncEngine, str] = weakref.WeakKeyDictionary()

    def watch(self, engine: AsyncEngine, name: str) -> None:
        self._engines[engine] = name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [GaugeMetricFamily(metric, doc, labels=["pool"]) for metric, doc, _ in _SERIES]
        totals: dict[str, list[float]] = {}
        for engine, name in list(self._engines.items()):
            pool = engine.sync_engine.pool
            values = [getattr(pool, method, None) for _, _, method in _SERIES]
            if any(v is None for v in values):
                continue  # a pool without counts (NullPool)
            row = totals.setdefault(name, [0.0] * len(_SERIES))
            for i, method in enumerate(values):
                row[i] += float(method())  # type: ignore[misc]
        for name, row in sorted(totals.items()):
            for family, value in zip(families, row, strict=True):
                family.add_metric([name], value)
        yield from families


POOLS = PoolCollector()
prometheus_client.REGISTRY.register(POOLS)


def watch_pool(engine: AsyncEngine, name: str) -> None:
    """Report this engine's pool on /metrics under `name` (its application name)."""
    POOLS.watch(engine, name)
