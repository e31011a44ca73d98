"""Checks of outside values (ids, text, numbers, times, time zones) that every layer shares.

A failure is a ValidationError naming the field, never an error from the database.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, time
from functools import lru_cache
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, available_timezones

from pulse.errors import ValidationError

AWARE_TIME = "must be an ISO-8601 time with a UTC offset"
_TIMEZONE = "must be an IANA time zone name such as Europe/Berlin or UTC"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


# --- ids ---------------------------------------------------------------------------------------------------------

def canonical_uuid(value: Any) -> str | None:
    """`value` as a canonical (lower-case, hyphenated) UUID string; None when it is not a UUID."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def parse_uuid(value: Any, field: str) -> str:
    """`value` as a canonical UUID string, or a ValidationError naming `field` (so a bad id never reaches the
    database as a cast error)."""
    canonical = canonical_uuid(value)
    if canonical is None:
        raise ValidationError("must be a UUID", field=field)
    return canonical


# --- text --------------------------------------------------------------------------------------------------------

def check_line(value: Any, field: str, max_len: int) -> str:
    """One line of printable text, trimmed, 1-`max_len` characters (a name, an address, a description)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"must be 1-{max_len} characters", field=field)
    value = value.strip()
    if len(value) > max_len or not value.isprintable():
        raise ValidationError(f"must be 1-{max_len} printable characters on one line", field=field)
    return value


def check_optional_line(value: Any, field: str, max_len: int) -> str | None:
    """Like `check_line`, with None meaning "none"."""
    return None if value is None else check_line(value, field, max_len)


def check_name(value: Any, field: str, max_len: int) -> str:
    """A name as given: 1-`max_len` characters, not only spaces."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ValidationError(f"must be 1-{max_len} characters, not only spaces", field=field)
    return value


def check_no_nul(value: str | None, field: str) -> str | None:
    """Free text as given; NUL cannot be stored in PostgreSQL text, so it is a 400 rather than a database error."""
    if value is not None and "\x00" in value:
        raise ValidationError("must not contain NUL characters", field=field)
    return value


def replace_nul(value: Any) -> Any:
    """`value` with every NUL in its strings (dict keys and nested lists included) shown as U+FFFD: for text that
    must be stored whatever it holds (PostgreSQL text and jsonb cannot hold NUL)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {replace_nul(k): replace_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [replace_nul(v) for v in value]
    return value


# --- numbers -----------------------------------------------------------------------------------------------------

def is_whole_number(value: Any, low: int, high: int) -> TypeGuard[int]:
    """Whether `value` is an int (a bool is not) from `low` to `high`."""
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


# --- times -------------------------------------------------------------------------------------------------------

def check_aware(value: Any, field: str, message: str = AWARE_TIME) -> datetime:
    """`value` if it is a datetime with a UTC offset; a naive time would mean a different instant depending on
    where it is read, so it is refused like anything else."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(message, field=field)
    return value


def check_range(start: datetime | None, end: datetime | None, *, start_field: str = "from",
                end_field: str = "to") -> None:
    """A ValidationError naming `end_field` unless `end` is after `start` (a missing bound is open)."""
    if start is not None and end is not None and end <= start:
        raise ValidationError(f"must be after {start_field}", field=end_field)


def parse_iso_time(value: object) -> datetime | None:
    """A stored ISO-8601 time string as a datetime; None for anything else (a missing or malformed stamp)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_clock(value: Any) -> time | None:
    """A 24-hour wall-clock time "HH:MM" (00:00-23:59) as a time; None for anything else."""
    match = _HHMM.match(value) if isinstance(value, str) else None
    return None if match is None else time(int(match.group(1)), int(match.group(2)))


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def check_timezone(value: Any, field: str = "timezone") -> ZoneInfo:
    """The IANA time zone named `value` (e.g. Europe/Berlin, UTC); anything else is a ValidationError."""
    if not isinstance(value, str) or value not in _zone_names():
        raise ValidationError(_TIMEZONE, field=field)
    try:
        return ZoneInfo(value)
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValidationError(_TIMEZONE, field=field) from exc
