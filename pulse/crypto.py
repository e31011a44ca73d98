"""Secrets at rest: AES-256-GCM with the key from PULSE_SECRET_KEY; token hashing and comparison."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


def encrypt_secret(key: bytes, plaintext: str, *, context: str = "") -> str:
    """Encrypt `plaintext`; `context` (e.g. a channel id) is bound as associated data."""
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode() or None)
    return f"{_VERSION}:{base64.urlsafe_b64encode(nonce + ct).decode()}"


def decrypt_secret(key: bytes, token: str, *, context: str = "") -> str:
    version, _, body = token.partition(":")
    if version != _VERSION:
        raise ValueError(f"unknown secret format {version!r}")
    raw = base64.urlsafe_b64decode(body)
    return AESGCM(key).decrypt(raw[:12], raw[12:], context.encode() or None).decode()


def new_token(prefix: str, nbytes: int = 32) -> str:
    """A high-entropy bearer token such as `pt_…` (device provision token)."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def hash_token(token: str) -> str:
    """SHA-256 of a high-entropy token (not for passwords: those use argon2)."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets or their hashes."""
    return hmac.compare_digest(a.encode(), b.encode())
