"""The JWT signing keys of Pulse's built-in identity: ES256 keys made on first use, stored encrypted."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.crypto import decrypt_secret, encrypt_secret

ALGORITHM = "ES256"
CURVE = "P-256"


class SigningKeyError(RuntimeError):
    """A stored signing key cannot be used (most often: PULSE_SECRET_KEY changed since it was made)."""


def _load_private(secret_key: bytes, kid: str, encrypted: str) -> ECKey:
    try:
        private_jwk = json.loads(decrypt_secret(secret_key, encrypted, context=kid))
    except (InvalidTag, ValueError) as exc:
        raise SigningKeyError(
            f"signing key {kid} cannot be decrypted with PULSE_SECRET_KEY (was the secret key changed? "
            "retire the key in signing_keys to have a new one made)") from exc
    return ECKey.import_key(private_jwk, {"kid": kid, "alg": ALGORITHM, "use": "sig"})


async def create_signing_key(conn: AsyncConnection, secret_key: bytes, *,
                             now: datetime | None = None) -> tuple[str, ECKey]:
    """Generate a new active P-256 key; its private JWK is stored encrypted, bound to its kid."""
    kid = f"pulse-{secrets.token_hex(8)}"
    key = ECKey.generate_key(CURVE, {"kid": kid, "alg": ALGORITHM, "use": "sig"}, private=True)
    public = key.as_dict(private=False)
    encrypted = encrypt_secret(secret_key, json.dumps(key.as_dict(private=True)), context=kid)
    await conn.execute(text(
        "INSERT INTO signing_keys (kid, algorithm, private_jwk_encrypted, public_jwk, created_at) "
        "VALUES (:kid, :alg, :priv, CAST(:pub AS jsonb), coalesce(:now, now()))"),
        {"kid": kid, "alg": ALGORITHM, "priv": encrypted, "pub": json.dumps(public), "now": now})
    return kid, key


async def _newest(conn: AsyncConnection) -> Any:
    return (await conn.execute(text(
        "SELECT kid, private_jwk_encrypted FROM signing_keys WHERE retired_at IS NULL AND algorithm = :alg "
        "ORDER BY created_at DESC, kid DESC LIMIT 1"), {"alg": ALGORITHM})).first()


async def get_active_signing_key(conn: AsyncConnection, secret_key: bytes, *,
                                 now: datetime | None = None) -> tuple[str, ECKey]:
    """The newest non-retired key as (kid, private key), made on first use.

    Creation is serialised with an advisory lock so that processes starting together agree on one key.
    """
    row = await _newest(conn)
    if row is None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('pulse-signing-key'))"))
        row = await _newest(conn)
        if row is None:
            return await create_signing_key(conn, secret_key, now=now)
    return row.kid, _load_private(secret_key, row.kid, row.private_jwk_encrypted)


async def retire_signing_key(conn: AsyncConnection, kid: str, *, now: datetime) -> bool:
    """Stop signing with and trusting `kid` (tokens it signed stop validating); False if unknown."""
    result = await conn.execute(text("UPDATE signing_keys SET retired_at = :now WHERE kid = :kid "
                                     "AND retired_at IS NULL"), {"now": now, "kid": kid})
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def public_jwks(conn: AsyncConnection) -> dict[str, Any]:
    """The JWKS document of every non-retired key (what /.well-known/jwks.json serves)."""
    rows = (await conn.execute(text(
        "SELECT public_jwk FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC"))).all()
    return {"keys": [dict(r.public_jwk) for r in rows]}


def sign_jwt(private_key: ECKey, kid: str, claims: dict[str, Any]) -> str:
    """A compact ES256 JWS of `claims` with `kid` in its header."""
    return jwt.encode({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}, claims, private_key, algorithms=[ALGORITHM])
