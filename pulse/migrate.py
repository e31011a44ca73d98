"""Schema migrations: `pulse migrate` runs alembic to head (idempotent)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from pulse.db import database_target, sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    # Migrations run on PostgreSQL itself, never through PgBouncer (see pulse.db: `direct=`).
    direct = database_target(database_url).direct_url
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(direct).replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`. Safe to run again: applied revisions are skipped."""
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    # alembic's env.py runs its own event loop, so run it in a thread from async callers.
    await asyncio.to_thread(upgrade, database_url, revision)
