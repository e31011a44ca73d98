"""Strict query strings: a query parameter that the matched route does not declare is a 400 naming it.

A typo such as `?stauts=OFFLINE` would otherwise be ignored and the caller would get every device. What a route
accepts is read from Litestar's kwargs model of the route, i.e. the query parameters of the handler's signature,
of the dependencies it uses and of its layers, under their wire names (`from`, not `from_`).

Exempt: OPTIONS requests (they carry the query string of the request they ask about) and handlers whose layers
set `opt={ANY_QUERY_PARAMS: True}`: the pages served to browsers (the web app, the API docs), whose query string
belongs to the page's own script, and what devices call (ingest, activation), which takes no query parameters and
must not turn away firmware that adds one. WebSocket handlers get no `before_request` hook; the live WebSocket
reads only its `ticket`.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute

from pulse.errors import ValidationError

ANY_QUERY_PARAMS = "any_query_params"
"""Handler/router `opt` key: this route's query string is free-form and never checked."""


def declared_query_params(app: Litestar) -> dict[BaseRouteHandler, frozenset[str]]:
    """The query parameter names each HTTP route handler of `app` accepts, from the kwargs models Litestar built.

    A handler mounted on several paths accepts the union of what it takes on each."""
    declared: dict[BaseRouteHandler, frozenset[str]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, kwargs_model in route.route_handler_map.values():
            names = frozenset(p.field_alias for p in kwargs_model.expected_query_params)
            declared[handler] = declared.get(handler, frozenset()) | names
    return declared


def _label(name: str) -> str:
    return name if name else "(no name)"


class QueryParamCheck:
    """Refuses query parameters the route does not declare; one instance per app, filled on first use."""

    def __init__(self) -> None:
        self._declared: dict[BaseRouteHandler, frozenset[str]] | None = None

    def accepted(self, app: Litestar, handler: BaseRouteHandler) -> frozenset[str] | None:
        """What `handler` accepts; None when `app` does not route to it (nothing is then refused)."""
        if self._declared is None or handler not in self._declared:
            self._declared = declared_query_params(app)  # also picks up routes registered after the first request
        return self._declared.get(handler)

    def __call__(self, request: Request[Any, Any, Any]) -> None:
        """Raise a ValidationError naming the first undeclared query parameter (all of them in `errors`)."""
        if not request.scope.get("query_string") or request.method == "OPTIONS":
            return
        handler = request.route_handler
        if handler.opt.get(ANY_QUERY_PARAMS):
            return
        accepted = self.accepted(request.app, handler)
        if accepted is None:
            return
        unknown = list(dict.fromkeys(name for name in request.query_params if name not in accepted))
        if not unknown:
            return
        reason = ("unknown query parameter; accepted: " + ", ".join(sorted(accepted)) if accepted
                  else "unknown query parameter; this route takes no query parameters")
        raise ValidationError(
            f"query parameter {_label(unknown[0])}: {reason}",
            details={"field": unknown[0], "accepted": sorted(accepted),
                     "errors": [{"field": name, "source": "query", "message": reason} for name in unknown]})
