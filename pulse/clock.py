"""Injectable time: domain code takes a Clock (or `now`), never calls datetime.now() itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """Wall-clock UTC time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FrozenClock:
    """A clock tests move by hand."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._at = at
        self._mono = 0.0

    def now(self) -> datetime:
        return self._at

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._at += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, at: datetime) -> None:
        self._mono += (at - self._at).total_seconds()
        self._at = at


def utcnow() -> datetime:
    """For edges only (CLI, web request entry): the current UTC time."""
    return datetime.now(UTC)
