"""The demo tenant and login that `pulse migrate --seed-demo` creates and `pulse dev` prints (dev only)."""

from __future__ import annotations

DEMO_TENANT_ID = "demo"
DEMO_EMAIL = "demo@pulse.local"
DEMO_PASSWORD = "pulse-demo"  # noqa: S105 - a published demo login, seeded only by --seed-demo / `pulse dev`
