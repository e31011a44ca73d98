"""Route handlers by area; `route_handlers()` is everything the app mounts."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler


def route_handlers() -> list[ControllerRouterHandler]:
    from pulse.web.routes import (
        admin,
        alerts,
        customer_alerts,
        customer_devices,
        devices,
        fleet,
        health,
        identity,
        ingest,
        live,
        oncall,
        operator,
        people,
        rules,
    )

    return [*health.ROUTES, *identity.ROUTES, alerts.router, admin.router, devices.router, ingest.router,
            operator.router, rules.router, people.router, oncall.router, live.router,
            *customer_alerts.ROUTERS, customer_devices.router, fleet.router]
