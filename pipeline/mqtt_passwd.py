"""Mosquitto password-file hashes, written without the ``mosquitto_passwd`` binary.

Mosquitto 2 reads ``user:$7$<iterations>$<salt>$<hash>`` lines: PBKDF2-HMAC-SHA512 over the password
with a 12-byte random salt, 101 iterations (what ``mosquitto_passwd`` 2.0 writes), a 64-byte digest,
salt and digest in standard base64. ``$6$<salt>$<hash>`` (one SHA-512 round, Mosquitto 1.x) is read by
Mosquitto 2 too; this module verifies both but only writes ``$7$``.

Example:
    >>> h = mosquitto_hash("s3cret")
    >>> h.startswith("$7$101$"), verify_mosquitto_hash(h, "s3cret"), verify_mosquitto_hash(h, "guess")
    (True, True, False)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

PBKDF2_ITERATIONS = 101
"""What ``mosquitto_passwd`` 2.0 uses (its ``-I`` option changes it; Mosquitto reads any count)."""
SALT_BYTES = 12
HASH_PATTERN = re.compile(r"^\$(6|7)\$(?:(\d{1,7})\$)?([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")
"""A ``$6$`` or ``$7$`` Mosquitto hash (the group of the iteration count only in ``$7$``)."""


def is_mosquitto_hash(value: str) -> bool:
    """Whether ``value`` is a hash Mosquitto 2 reads from a password file (``$6$`` or ``$7$``)."""
    m = HASH_PATTERN.match(value)
    return m is not None and (m.group(1) == "7") == (m.group(2) is not None)


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The ``$7$`` (PBKDF2-SHA512) hash of ``password``, as ``mosquitto_passwd`` writes it.

    Args:
        password: the clear-text password (UTF-8 encoded before hashing).
        salt: 12 random bytes when None (pass one only to reproduce a hash).
        iterations: PBKDF2 rounds.
    """
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(stored: str, password: str) -> bool:
    """Whether ``password`` matches a ``$6$`` or ``$7$`` hash (constant-time comparison)."""
    m = HASH_PATTERN.match(stored)
    if m is None or not is_mosquitto_hash(stored):
        return False
    kind, iterations, salt_b64, digest_b64 = m.groups()
    try:
        salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except (binascii.Error, ValueError):
        return False
    if kind == "7":
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations), len(digest) or 64)
    else:
        got = hashlib.sha512(password.encode() + salt).digest()
    return hmac.compare_digest(got, digest)


def parse_passwd(text: str) -> dict[str, str]:
    """``{user: hash}`` of a Mosquitto password file (comments, blank and malformed lines skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        user, _, stored = line.partition(":")
        if user and is_mosquitto_hash(stored.strip()):
            out[user] = stored.strip()
    return out


def new_password() -> str:
    """A random broker password (24 URL-safe characters, ~144 bits)."""
    return secrets.token_urlsafe(18)
