"""People of the ticket service: users, their roles and grid scopes, login tokens and the audit trail.

Tables (migration ``0003_users``): ``users``, ``auth_tokens`` (browser sessions, bearer tokens of a login,
API and metrics tokens; only a SHA-256 of each secret is stored), ``login_throttle`` (failure counts per
user name and per client address) and ``audit_events`` (append-only: triggers refuse UPDATE and DELETE).

A scope is a grid path such as ``T1/D1/C1``; it covers that node and its subtree. ``admin`` sees the
whole site whatever its scopes. Other modules (``gridwatch mqtt-acl``) read users through
:func:`list_users`.

Example:
    >>> with sessions() as s:  # doctest: +SKIP
    ...     [(u.username, u.role, u.scopes) for u in list_users(s)]
    [('admin', 'admin', []), ('li', 'patrol', ['T1/D1/C1/G1'])]
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from pipeline.config import GridNode, SiteConfig
from pipeline.tickets.models import Base, UTCDateTime, utcnow

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$"
_USERNAME = re.compile(USERNAME_PATTERN)


class Role(StrEnum):
    """What a user may do (the table in docs/operations.md)."""

    ADMIN = "admin"
    ENGINEER = "engineer"
    DISPATCHER = "dispatcher"
    PATROL = "patrol"
    VIEWER = "viewer"


class TokenKind(StrEnum):
    """Kinds of ``auth_tokens`` rows."""

    SESSION = "session"
    """A login (browser cookie and/or bearer token from ``POST /auth/login``); expires."""
    API = "api"
    """A machine token created by an admin: acts as its user, expires only when asked to."""
    METRICS = "metrics"
    """A token that may read ``/metrics`` and nothing else."""


class User(Base):
    """A person or machine account."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuthToken(Base):
    """A bearer secret of a user; ``token_hash`` is the SHA-256 hex of the secret."""

    __tablename__ = "auth_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoginThrottle(Base):
    """Consecutive failed logins of one key (``user:<name>`` or ``ip:<address>``)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEvent(Base):
    """One change, who made it and from where; never updated or deleted."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(300), nullable=True)
    client: Mapped[str | None] = mapped_column(String(100), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class UserError(ValueError):
    """A user name, role or scope that cannot be used; the message says why."""


def audit(session: Session, actor: str | None, action: str, target: str | None = None,
          client: str | None = None, now: datetime | None = None, **detail: Any) -> None:
    """Append an audit event (the caller commits, so it lands with the change it describes)."""
    session.add(AuditEvent(ts=now or utcnow(), actor=actor, action=action, target=target, client=client,
                           detail=detail))


def list_users(session: Session, include_disabled: bool = False) -> list[User]:
    """Users by name (disabled ones only when asked): role in ``.role``, grid paths in ``.scopes``."""
    q = select(User).order_by(User.username)
    if not include_disabled:
        q = q.where(User.disabled.is_(False))
    return list(session.scalars(q))


def get_user(session: Session, username: str) -> User | None:
    """The user called ``username`` (disabled or not), or None."""
    return session.scalars(select(User).where(User.username == username)).first()


def _paths(nodes: list[GridNode], parent: list[str], out: dict[str, list[str]]) -> None:
    for n in nodes:
        path = [*parent, n.code]
        out["/".join(path)] = path
        _paths(n.children, path, out)


def grid_paths(site: SiteConfig) -> set[str]:
    """Every node of the site grid as a path string, e.g. ``{'T1', 'T1/D1', ...}``."""
    out: dict[str, list[str]] = {}
    _paths(site.grid, [], out)
    return set(out)


def resolve_scope(site: SiteConfig, scope: str) -> str:
    """A grid path (``T1/D1/C1``) or a node code that is unique in the grid, as the node's path.

    Raises:
        UserError: no such node, or a code used at several places (give the path then).
    """
    wanted = scope.strip().strip("/")
    paths = grid_paths(site)
    if wanted in paths:
        return wanted
    matches = sorted(p for p in paths if p.rsplit("/", 1)[-1] == wanted)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"grid code {wanted!r} is used at {', '.join(matches)}: give the path")
    raise UserError(f"no grid node {wanted!r} in the site grid")


def check_new_user(username: str, role: str, scopes: list[str]) -> Role:
    """Validate a user name, role and scope list; returns the role.

    Raises:
        UserError: bad name, unknown role, or a non-admin without any scope.
    """
    if not _USERNAME.match(username):
        raise UserError(f"user name {username!r} must match {USERNAME_PATTERN}")
    try:
        r = Role(role)
    except ValueError:
        raise UserError(f"unknown role {role!r}; one of {', '.join(x.value for x in Role)}") from None
    if r is not Role.ADMIN and not scopes:
        raise UserError(f"a {r.value} needs at least one grid scope (e.g. --scope T1/D1/C1)")
    return r


def add_user(session: Session, username: str, role: str, scopes: list[str], password_hash: str | None,
             display_name: str | None = None, actor: str | None = None, now: datetime | None = None,
             client: str | None = None) -> User:
    """Create a user (scopes already resolved to grid paths) and audit it; the caller commits.

    Raises:
        UserError: invalid input or the name is taken.
    """
    r = check_new_user(username, role, scopes)
    if get_user(session, username) is not None:
        raise UserError(f"user {username!r} exists")
    t = now or utcnow()
    user = User(username=username, display_name=display_name, role=r.value, scopes=sorted(set(scopes)),
                password_hash=password_hash, disabled=False, created_at=t, updated_at=t)
    session.add(user)
    session.flush()
    audit(session, actor, "user.add", username, client, now=t, role=r.value, scopes=user.scopes)
    return user
