"""SQL pieces the services share: filters, counted limit/offset pages, LIKE patterns, unique violations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import Conflict, ValidationError


def add_filters(where: list[str], params: dict[str, Any], *, equal: Mapping[str, Any] | None = None,
                time_column: str = "at", since: datetime | None = None, until: datetime | None = None) -> None:
    """Narrow a query: each column of `equal` whose value is not None must equal it, and `since` ≤ `time_column`
    < `until` (a missing bound is open). Conditions go to `where`, values to `params` (named as the column, and
    `since`, `until`)."""
    for column, value in (equal or {}).items():
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    if since is not None:
        where.append(f"{time_column} >= :since")
        params["since"] = since
    if until is not None:
        where.append(f"{time_column} < :until")
        params["until"] = until


def check_page(limit: int, offset: int = 0, *, max_limit: int, max_offset: int | None = None) -> None:
    """A ValidationError naming `limit` or `offset` unless 1 ≤ limit ≤ max_limit and 0 ≤ offset (≤ max_offset)."""
    if not 1 <= limit <= max_limit:
        raise ValidationError(f"must be 1-{max_limit}", field="limit")
    if max_offset is None:
        if offset < 0:
            raise ValidationError("must be 0 or more", field="offset")
    elif not 0 <= offset <= max_offset:
        raise ValidationError(f"must be 0-{max_offset}", field="offset")


async def fetch_page(conn: AsyncConnection, *, columns: str, source: str, where: Sequence[str], order_by: str,
                     params: Mapping[str, Any], limit: int, offset: int,
                     count_source: str | None = None) -> tuple[int, Sequence[Row[Any]]]:
    """How many rows of `source` match every condition of `where`, and `limit` of them from `offset` in
    `order_by` order. `count_source` counts from a cheaper source that matches the same rows (e.g. without a
    join the conditions do not need)."""
    condition = " AND ".join(where) or "true"
    bound = {**params, "limit": limit, "offset": offset}
    total = (await conn.execute(text(f"SELECT count(*) FROM {count_source or source} WHERE {condition}"),
                                bound)).scalar_one()
    rows = (await conn.execute(text(
        f"SELECT {columns} FROM {source} WHERE {condition} ORDER BY {order_by} LIMIT :limit OFFSET :offset"),
        bound)).all()
    return int(total), rows


def like_pattern(query: str) -> str:
    """A substring pattern for `LIKE … ESCAPE '\\'` with the caller's `%`, `_` and `\\` taken literally."""
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def is_unique_violation(exc: IntegrityError) -> bool:
    """Whether the statement broke a unique constraint (SQLSTATE 23505), e.g. a name taken meanwhile."""
    return getattr(exc.orig, "sqlstate", None) == "23505" or "23505" in str(getattr(exc.orig, "pgcode", ""))


async def execute_unique(conn: AsyncConnection, sql: str, params: Mapping[str, Any], conflict: Conflict) -> Any:
    """Run one statement in a savepoint; a unique violation (e.g. a name taken meanwhile) raises `conflict`, a 409
    rather than a 500, and leaves the caller's transaction usable."""
    try:
        async with conn.begin_nested():
            return await conn.execute(text(sql), params)
    except IntegrityError as exc:
        if is_unique_violation(exc):
            raise conflict from None
        raise
