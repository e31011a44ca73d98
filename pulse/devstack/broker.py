"""The embedded MQTT broker for `pulse dev`: amqtt in this process, loopback only."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amqtt.broker import Broker
from pulse.devstack.common import _url_host, free_port, port_is_free

log = logging.getLogger("pulse.dev")


MQTT_PORT = 1883


@dataclass
class EmbeddedBroker:
    """An amqtt broker in this process's event loop: MQTT 3.1.1, anonymous, loopback only."""

    broker: Broker
    host: str
    port: int

    @property
    def url(self) -> str:
        # amqtt speaks MQTT 3.1.1 only: say so, so clients do not first try MQTT 5 and wait for a timeout.
        return f"mqtt://{_url_host(self.host)}:{self.port}?protocol=3.1.1"

    async def stop(self) -> None:
        """Disconnect every client and close the listener."""
        await self.broker.shutdown()


async def start_embedded_broker(host: str = "127.0.0.1", port: int = MQTT_PORT) -> EmbeddedBroker:
    """Start the broker on host:port, or on a free port when that one is taken (or `port` is 0).

    Refuses any address but loopback: the broker lets anonymous clients publish and subscribe to anything.
    """
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the embedded broker lets anonymous clients in: bind it to loopback, not {host}")
    from amqtt.broker import Broker
    from amqtt.errors import BrokerError

    logging.getLogger("amqtt").setLevel(logging.WARNING)  # it logs every connection at INFO
    candidate = port if port and port_is_free(host, port) else free_port(host)
    if port and candidate != port:
        log.info("MQTT port %s is taken; the embedded broker uses %s", port, candidate)
    for attempt in (1, 2):
        broker = Broker(_broker_config(host, candidate))
        try:
            await broker.start()
        except BrokerError:
            if attempt == 2:
                raise
            candidate = free_port(host)
            continue
        return EmbeddedBroker(broker, host, candidate)
    raise AssertionError("unreachable")


def _broker_config(host: str, port: int) -> Any:
    from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType

    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return BrokerConfig(
        listeners={"default": ListenerConfig(type=ListenerType.TCP, bind=bind)},
        # No $SYS publisher and no per-packet logger: only the anonymous-access plugin.
        plugins={"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    )
