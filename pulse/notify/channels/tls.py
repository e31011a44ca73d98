"""TLS settings the channels that open their own connections share (email, MQTT): a private CA and the
choice to verify, checked when the channel is saved and turned into a client context at send time."""

from __future__ import annotations

import ssl
from typing import Any

from pulse.errors import ValidationError

MAX_CA_PEM_CHARS = 64_000


def check_tls_settings(config: dict[str, Any], *, peer: str) -> dict[str, Any]:
    """`verify` (bool, default true) and optional `ca_pem`, checked; errors name the field. `peer` names what
    presents the certificate (server, broker) in the error text."""
    verify = config.get("verify", True)
    if not isinstance(verify, bool):
        raise ValidationError("must be true or false", field="config.verify")
    clean: dict[str, Any] = {"verify": verify}
    ca_pem = config.get("ca_pem")
    if ca_pem is not None:
        if not isinstance(ca_pem, str) or len(ca_pem) > MAX_CA_PEM_CHARS:
            raise ValidationError(f"must be PEM text of at most {MAX_CA_PEM_CHARS} characters", field="config.ca_pem")
        try:
            ssl.create_default_context(cadata=ca_pem)
        except (ssl.SSLError, ValueError):
            raise ValidationError(f"must be PEM certificates of the CA that signed the {peer}'s certificate",
                                  field="config.ca_pem") from None
        clean["ca_pem"] = ca_pem
    return clean


def client_context(config: dict[str, Any]) -> ssl.SSLContext:
    """The system's trust store, or only `ca_pem` when set; no verification when `verify` is false."""
    ca_pem = config.get("ca_pem")
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    if not config.get("verify", True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
