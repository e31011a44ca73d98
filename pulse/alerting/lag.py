"""Evaluator lag on /metrics: how long devices woken up by ingest wait until an evaluation pass has handled them."""

from __future__ import annotations

import time

import prometheus_client

LAG = prometheus_client.Histogram(
    "pulse_evaluate_lag_seconds", "From an ingest wake-up to the end of the evaluation pass that handled its devices "
    "(the oldest waiting wake-up of each pass)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
PENDING = prometheus_client.Gauge("pulse_evaluate_pending_devices",
                                  "Devices woken up and not yet evaluated (after the last pass)")


class WakeupLag:
    """The monotonic time of the oldest wake-up not yet taken into a pass."""

    def __init__(self) -> None:
        self.since: float | None = None

    def woke(self) -> None:
        """A wake-up arrived (called from the LISTEN callback)."""
        if self.since is None:
            self.since = time.monotonic()

    def take(self) -> float | None:
        """A pass takes the waiting devices: returns when the oldest of them woke, and starts afresh."""
        since, self.since = self.since, None
        return since

    def done(self, taken: float | None, pending_left: int) -> None:
        """The pass that took at `taken` ended; devices it left for the next pass keep their wait."""
        if taken is not None:
            LAG.observe(time.monotonic() - taken)
            if pending_left and (self.since is None or taken < self.since):
                self.since = taken
        PENDING.set(pending_left)
