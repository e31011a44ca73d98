"""What the operator listings and changes share: page bounds, status names given in any case, and times."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pulse.checks import check_aware
from pulse.errors import ValidationError
from pulse.sql import check_page

MAX_PAGE = 500
MAX_OFFSET = 1_000_000_000
_AWARE_TIME = "must be an ISO-8601 time with a UTC offset, e.g. 2027-01-01T00:00:00Z"


def check_operator_page(limit: int, offset: int) -> None:
    """1 ≤ limit ≤ MAX_PAGE and 0 ≤ offset ≤ MAX_OFFSET, else a 400 naming the parameter."""
    check_page(limit, offset, max_limit=MAX_PAGE, max_offset=MAX_OFFSET)


def member(value: Any, allowed: tuple[str, ...], field: str) -> str:
    """`value` (any case) as one of `allowed`, or a 400 naming the field and the choices."""
    if not isinstance(value, str) or value.upper() not in allowed:
        raise ValidationError(f"must be one of {', '.join(allowed)}", field=field)
    return value.upper()


def parse_statuses(value: str | None, allowed: tuple[str, ...], field: str = "status") -> list[str]:
    """A comma-separated filter of status names (any case), each checked; empty means no filter."""
    out = [part.strip().upper() for part in (value or "").split(",") if part.strip()]
    return [member(status, allowed, field) for status in out]


def aware(value: datetime | None, field: str) -> datetime | None:
    """A time with its UTC offset, or None; a naive time is a 400 naming the field."""
    return None if value is None else check_aware(value, field, _AWARE_TIME)


def parse_time(value: str | None, field: str) -> datetime | None:
    """An ISO-8601 time with a UTC offset (a query parameter), or a 400 naming the field."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError("must be an ISO-8601 time such as 2027-01-01T00:00:00Z", field=field) from None
    return aware(parsed, field)
