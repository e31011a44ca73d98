"""What the route modules share: Bearer security, tenant roles, the admin guard, sent fields, query choices."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar.params import QueryParameter
from msgspec import UNSET

from pulse.errors import ValidationError
from pulse.fleet.operator.common import MAX_OFFSET
from pulse.web.auth import require_roles

OffsetQuery = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET, description="rows to skip")]
"""A page's `offset`: bounded, so a huge value is a 400 naming it rather than a database error."""

BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]
MEMBER_ROLES = ("customer", "tenant-admin")
"""Any member of the tenant: what reading a tenant's data takes."""
ADMIN = [require_roles("tenant-admin")]
"""The guard of a route that changes a tenant's setup."""


def sent_fields(data: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body carried; those left UNSET were not sent and do not change."""
    return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}


def parse_choices(values: list[str] | None, allowed: tuple[str, ...], field: str) -> list[str]:
    """`?x=A&x=B` or `?x=A,B` (any case), each one of `allowed`."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            choice = part.strip().upper()
            if not choice:
                continue
            if choice not in allowed:
                raise ValidationError(f"unknown {field} {part.strip()!r}; use {', '.join(allowed)}", field=field)
            if choice not in out:
                out.append(choice)
    return out
