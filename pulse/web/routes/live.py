"""/api/v2/ws: live updates over WebSocket, opened with a one-time ticket from POST /api/v2/ws/ticket.

The access token never travels in the WebSocket URL (URLs end up in proxy logs): a customer or tenant-admin
exchanges it for a ticket valid 30 s, once, on this web process. The protocol is in docs/api-live.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

import msgspec
from litestar import Request, Response, Router, WebSocket, post, websocket
from litestar.exceptions import WebSocketDisconnect

from pulse.web.auth import require_roles
from pulse.web.deps import PrincipalDep, require_tenant
from pulse.web.errors import Unavailable, error_specs
from pulse.web.live import OPERATOR_ROLES, LiveHub, LiveSocket
from pulse.web.routes.common import BEARER, MEMBER_ROLES
from pulse.web.routes.identity import NO_STORE

log = logging.getLogger("pulse.web.live")

CLOSE_BAD_TICKET = 4401
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013


class LiveTicket(msgspec.Struct, kw_only=True):
    ticket: str
    expires_in: int


def hub_of(connection: Any) -> LiveHub | None:
    return connection.app.state.get("live")  # type: ignore[no-any-return]


@post("/ws/ticket", status_code=200, summary="Get a one-time ticket that opens the live-updates WebSocket",
      guards=[require_roles(*MEMBER_ROLES)], security=BEARER, responses=error_specs(401, 403, 503))
async def create_live_ticket(request: Request[Any, Any, Any], principal: PrincipalDep) -> Response[LiveTicket]:
    """Open `WS /api/v2/ws?ticket=...` with it within `expires_in` seconds, on this same web process (it is held
    in the process's memory). It can be used once and carries the caller's tenant and roles."""
    require_tenant(principal)
    hub = hub_of(request)
    if hub is None:
        raise Unavailable("live updates are not started")
    return Response(LiveTicket(ticket=hub.tickets.issue(principal), expires_in=hub.tickets.ttl_s), headers=NO_STORE)


@post("/live/ticket", status_code=200, summary="Get a one-time ticket for the operators' live event stream",
      responses=error_specs(401, 403, 503))
async def create_operator_live_ticket(request: Request[Any, Any, Any], principal: PrincipalDep
                                      ) -> Response[LiveTicket]:
    """Open `WS /api/v2/ws?ticket=...` with it and subscribe to the `noc` topic: every tenant's alert events and
    device status transitions (docs/api-live.md). Mounted under /operator (operators only, audited)."""
    hub = hub_of(request)
    if hub is None:
        raise Unavailable("live updates are not started")
    ticket = hub.tickets.issue(replace(principal, tenant_id=None))  # an operator's socket, whatever the token says
    return Response(LiveTicket(ticket=ticket, expires_in=hub.tickets.ttl_s), headers=NO_STORE)


@websocket("/ws")
async def live_updates(socket: WebSocket[Any, Any, Any]) -> None:
    """Live updates; a missing, used or expired ticket closes the socket at once with code 4401."""
    hub = hub_of(socket)
    if hub is None:
        await socket.accept()
        await socket.close(CLOSE_TRY_AGAIN, "live updates are not started")
        return
    principal = hub.tickets.redeem(socket.query_params.get("ticket") or "")
    await socket.accept()
    if principal is None or not (principal.tenant_id or principal.has_any_role(OPERATOR_ROLES)):
        await socket.close(CLOSE_BAD_TICKET, "ticket missing, already used or expired")
        return
    sock = hub.connect(principal)
    receiving = asyncio.create_task(_receive(socket, hub, sock), name="live-receive")
    sending = asyncio.create_task(_send(socket, sock), name="live-send")
    try:
        done, _ = await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.disconnect(sock)
        for task in (receiving, sending):
            task.cancel()
        for task in (receiving, sending):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
                await task
    if sending in done and not receiving.done() and socket.connection_state != "disconnect":
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await socket.close(CLOSE_GOING_AWAY, "server shutting down")


async def _receive(socket: WebSocket[Any, Any, Any], hub: LiveHub, sock: LiveSocket) -> None:
    """Serve client frames one at a time until the client goes."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] == "websocket.receive":
            await hub.handle_message(sock, message.get("text"))


async def _send(socket: WebSocket[Any, Any, Any], sock: LiveSocket) -> None:
    """Write queued frames until the hub closes the socket or the client is gone."""
    try:
        while frames := await sock.next_frames():
            for data in frames:
                await socket.send_text(data)
    except (WebSocketDisconnect, OSError) as exc:
        log.debug("live socket gone while sending: %s", exc)


router = Router(path="/api/v2", route_handlers=[create_live_ticket, live_updates], tags=["live"])
