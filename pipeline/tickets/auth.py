"""Who is calling: passwords, login tokens, lockout, the trusted SSO proxy and the route dependencies.

A request is authenticated, in this order, by the ``api.auth.trusted_user_header`` of a trusted proxy, an
``Authorization: Bearer <token>`` header or the ``gridwatch_session`` cookie. Tokens are random secrets
(``gw_`` + 43 URL-safe characters) of which only a SHA-256 is stored, so a leaked database holds no usable
token. Passwords are argon2id hashes (``pwdlib``). Failed logins are counted per user name and per client
address; from ``lockout_failures`` on, each further attempt waits ``lockout_base_seconds`` doubled per
failure (answer 429 with ``Retry-After``).

Routes declare what they need with :data:`CurrentUser` (any logged-in user) or :func:`require_roles`;
grid scope checks use :meth:`Principal.covers`.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import AuthConfig
from pipeline.tickets.models import utcnow
from pipeline.tickets.users import (
    AuthToken,
    LoginThrottle,
    Role,
    TokenKind,
    User,
    add_user,
    audit,
    get_user,
)

log = logging.getLogger(__name__)

SESSION_COOKIE = "gridwatch_session"
ADMIN_PASSWORD_ENV = "GRIDWATCH_ADMIN_PASSWORD"
BOOTSTRAP_ADMIN = "admin"
_TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per token
PASSWORDS = PasswordHash((Argon2Hasher(),))

bearer_scheme = HTTPBearer(auto_error=False, description="`POST /auth/login` token or an API token.")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Browser session.")


def hash_password(password: str) -> str:
    """argon2id hash of ``password``."""
    return PASSWORDS.hash(password)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown users, so they cost the same time as known ones."""
    return PASSWORDS.hash(secrets.token_urlsafe(16))


def new_secret() -> str:
    """A fresh token secret."""
    return "gw_" + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What the database keeps of a token secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller.

    Attributes:
        username: the user's name; the actor of every change made with this principal.
        role: the user's role.
        scopes: grid paths the user may see (``admin`` sees everything regardless).
        token_id: the ``auth_tokens`` row used (None through the trusted proxy).
        token_kind: its kind.
    """

    username: str
    role: Role
    scopes: tuple[str, ...]
    token_id: int | None = None
    token_kind: TokenKind | None = None

    @property
    def site_wide(self) -> bool:
        """True for an admin: no grid restriction."""
        return self.role is Role.ADMIN

    def covers(self, grid_path: str | list[str] | None) -> bool:
        """Whether ``grid_path`` (``T1/D1/C1/G1`` or its list) lies inside one of the user's scopes."""
        if self.site_wide:
            return True
        if grid_path is None:
            return False
        path = "/".join(grid_path) if isinstance(grid_path, list) else grid_path.strip("/")
        return any(path == s or path.startswith(s + "/") for s in self.scopes)

    def overlaps(self, grid_path: str) -> bool:
        """Whether ``grid_path`` is inside a scope or above one (a filter that can show something)."""
        g = grid_path.strip("/")
        return self.covers(g) or any(s.startswith(g + "/") for s in self.scopes)


class LoginBlockedError(Exception):
    """Too many failures: ``retry_after`` seconds to wait."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class LoginFailedError(Exception):
    """Wrong name or password, or a disabled user (the caller is not told which)."""


@dataclass
class AuthMetrics:
    """``gridwatch_auth_*`` counters on the ticket service's registry."""

    registry: CollectorRegistry
    failures: Counter = field(init=False)
    blocked: Counter = field(init=False)
    lockouts: Counter = field(init=False)
    logins: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.failures = Counter("gridwatch_auth_login_failures", "Failed logins by reason.", ["reason"],
                                registry=self.registry)
        self.blocked = Counter("gridwatch_auth_login_blocked", "Login attempts refused (429) while a user "
                               "name or client address had to wait.", ["by"], registry=self.registry)
        self.lockouts = Counter("gridwatch_auth_lockouts", "Failures that started or lengthened a wait.",
                                ["by"], registry=self.registry)
        self.logins = Counter("gridwatch_auth_logins", "Successful logins by method.", ["method"],
                              registry=self.registry)


@dataclass
class Authenticator:
    """Logins, tokens and throttling against the ticket store; lives on ``app.state.tickets.auth``."""

    config: AuthConfig
    sessions: sessionmaker[Session]
    metrics: AuthMetrics
    clock: Callable[[], datetime] = utcnow
    _proxies: list[Any] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._proxies = [ipaddress.ip_network(n, strict=False) for n in self.config.trusted_proxies]

    # --- login and throttling ---------------------------------------------------------------------------

    def _wait(self, session: Session, keys: list[str], now: datetime) -> tuple[float, str] | None:
        rows = session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys))).all()
        waits = [((r.blocked_until - now).total_seconds(), r.key.split(":", 1)[0]) for r in rows
                 if r.blocked_until is not None and r.blocked_until > now]
        return max(waits) if waits else None

    def _fail(self, session: Session, key: str, now: datetime) -> None:
        c = self.config
        row = session.get(LoginThrottle, key)
        if row is None:
            row = LoginThrottle(key=key, failures=0, last_failure_at=now)
            session.add(row)
        elif (now - row.last_failure_at).total_seconds() > c.lockout_reset_seconds:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        if row.failures >= c.lockout_failures:
            delay = min(c.lockout_max_seconds, c.lockout_base_seconds * 2 ** (row.failures - c.lockout_failures))
            row.blocked_until = now + timedelta(seconds=delay)
            self.metrics.lockouts.labels(key.split(":", 1)[0]).inc()
        # Rows of names nobody tried for a while go, so guessed names cannot fill the table.
        stale = now - timedelta(seconds=c.lockout_reset_seconds + c.lockout_max_seconds)
        session.execute(delete(LoginThrottle).where(LoginThrottle.last_failure_at < stale,
                                                    LoginThrottle.key != key))

    def login(self, username: str, password: str, client: str | None) -> tuple[str, datetime | None, User]:
        """Check a password and open a session.

        Returns:
            The token secret, its expiry and the user.

        Raises:
            LoginBlockedError: the name or the address has to wait.
            LoginFailedError: wrong name or password, or the user is disabled.
        """
        try:
            return self._login(username, password, client)
        except IntegrityError:  # two replicas counted the first failure of one key at once: count again
            return self._login(username, password, client)

    def _login(self, username: str, password: str, client: str | None) -> tuple[str, datetime | None, User]:
        now = self.clock()
        keys = [f"user:{username}", *([f"ip:{client}"] if client else [])]
        with self.sessions() as session, session.begin():
            if (wait := self._wait(session, keys, now)) is not None:
                self.metrics.blocked.labels(wait[1]).inc()
                raise LoginBlockedError(wait[0])
            user = get_user(session, username)
            ok = PASSWORDS.verify(password, user.password_hash if user and user.password_hash else _dummy_hash())
            reason = ("unknown_user" if user is None else "no_password" if not user.password_hash
                      else "bad_password" if not ok else "disabled" if user.disabled else None)
            if reason is not None or user is None:
                self.metrics.failures.labels(reason or "unknown_user").inc()
                for key in keys:
                    self._fail(session, key, now)
                audit(session, None, "auth.login_failed", username, client, now=now, reason=reason)
            else:
                session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys[0]))
                secret, expires = self._issue(session, user, TokenKind.SESSION, "login", now,
                                              timedelta(hours=self.config.session_hours))
                audit(session, user.username, "auth.login", user.username, client, now=now)
                self.metrics.logins.labels("password").inc()
                return secret, expires, user
        raise LoginFailedError(username)

    # --- tokens -----------------------------------------------------------------------------------------

    @staticmethod
    def _issue(session: Session, user: User, kind: TokenKind, name: str | None, now: datetime,
               lifetime: timedelta | None) -> tuple[str, datetime | None]:
        secret = new_secret()
        expires = now + lifetime if lifetime is not None else None
        session.add(AuthToken(user_id=user.id, kind=kind.value, token_hash=secret_hash(secret), name=name,
                              created_at=now, expires_at=expires))
        session.flush()
        return secret, expires

    def create_token(self, session: Session, user: User, kind: TokenKind, name: str | None,
                     days: float | None, actor: str, client: str | None) -> tuple[str, AuthToken]:
        """An API or metrics token for ``user`` (caller commits); the secret is returned once, never stored."""
        now = self.clock()
        secret, _ = self._issue(session, user, kind, name, now, timedelta(days=days) if days else None)
        row = session.scalars(select(AuthToken).where(AuthToken.token_hash == secret_hash(secret))).one()
        audit(session, actor, "token.create", f"token:{row.id}", client, now=now, user=user.username,
              kind=kind.value, name=name)
        return secret, row

    def revoke(self, session: Session, token: AuthToken, actor: str, client: str | None) -> None:
        """Revoke ``token`` (caller commits); already revoked stays as it was."""
        if token.revoked_at is None:
            token.revoked_at = self.clock()
            audit(session, actor, "token.revoke", f"token:{token.id}", client, now=token.revoked_at,
                  kind=token.kind)

    def principal_of_token(self, secret: str) -> Principal | None:
        """The user a token secret stands for, or None (unknown, expired, revoked, user disabled)."""
        now = self.clock()
        with self.sessions() as session:
            row = session.execute(select(AuthToken, User).join(User, AuthToken.user_id == User.id)
                                  .where(AuthToken.token_hash == secret_hash(secret))).first()
            if row is None:
                return None
            token, user = row.tuple()
            if (token.revoked_at is not None or user.disabled
                    or (token.expires_at is not None and token.expires_at <= now)):
                return None
            if token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY:
                token.last_used_at = now
                session.commit()
            return Principal(user.username, Role(user.role), tuple(user.scopes), token.id, TokenKind(token.kind))

    def principal_of_user(self, username: str) -> Principal | None:
        """The enabled user called ``username`` (trusted proxy logins), or None."""
        with self.sessions() as session:
            user = get_user(session, username)
        if user is None or user.disabled:
            return None
        return Principal(user.username, Role(user.role), tuple(user.scopes))

    # --- where the request comes from -------------------------------------------------------------------

    def from_trusted_proxy(self, request: Request) -> bool:
        """Whether the direct peer is one of ``trusted_proxies``."""
        host = request.client.host if request.client else None
        if not host or not self._proxies:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self._proxies)

    def client_address(self, request: Request) -> str | None:
        """The caller's address: the peer, or the last ``X-Forwarded-For`` hop added by a trusted proxy."""
        host = request.client.host if request.client else None
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded and self.from_trusted_proxy(request):
            return forwarded.split(",")[-1].strip()[:100] or host
        return host

    def ensure_admin(self) -> str | None:
        """Create the first admin when there are no users at all.

        Returns:
            The generated one-time password (None when ``GRIDWATCH_ADMIN_PASSWORD`` gave it, or users exist).
        """
        with self.sessions() as session:
            if session.scalar(select(func.count()).select_from(User)):
                return None
        given = os.environ.get(ADMIN_PASSWORD_ENV) or None
        password = given or secrets.token_urlsafe(12)
        try:
            with self.sessions() as session, session.begin():
                add_user(session, BOOTSTRAP_ADMIN, Role.ADMIN.value, [], hash_password(password),
                         display_name="first administrator", actor=None, now=self.clock())
        except IntegrityError:  # another replica created it at the same moment
            return None
        if given:
            log.info("no users yet: created user %r with the password from %s", BOOTSTRAP_ADMIN,
                     ADMIN_PASSWORD_ENV)
            return None
        log.warning("no users yet: created user %r with the one-time password %s (shown only now; change it "
                    "with `gridwatch user reset-password %s`)", BOOTSTRAP_ADMIN, password, BOOTSTRAP_ADMIN)
        return password


def authenticator(request: Request) -> Authenticator:
    """The app's :class:`Authenticator`."""
    auth: Authenticator = request.app.state.tickets.auth
    return auth


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (if any) is this site: its Host header or ``api.public_url``."""
    origin = request.headers.get("origin")
    if not origin:
        return True
    netloc = urlsplit(origin).netloc.lower()
    public = request.app.state.tickets.site.api.public_url
    return netloc in {request.headers.get("host", "").lower(), urlsplit(public or "").netloc.lower()} - {""}


def _principal(request: Request, bearer: HTTPAuthorizationCredentials | None, cookie: str | None) -> Principal:
    auth = authenticator(request)
    header = auth.config.trusted_user_header
    if header and (name := request.headers.get(header)) and auth.from_trusted_proxy(request):
        if (p := auth.principal_of_user(name)) is None:
            raise HTTPException(401, f"user {name[:64]!r} from the single-sign-on proxy is unknown or disabled",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = p
        return p
    secret = bearer.credentials if bearer is not None else cookie
    p = auth.principal_of_token(secret) if secret else None
    if p is None:
        raise HTTPException(401, "not logged in (or the token expired or was revoked)",
                            headers={"WWW-Authenticate": "Bearer"})
    if bearer is None and request.method not in _SAFE_METHODS and not _same_origin(request):
        # The cookie goes along with requests other sites make the browser send; SameSite=Lax stops most,
        # this stops the rest (a browser always sends Origin on a POST).
        raise HTTPException(403, "cross-site request refused (Origin is not this site)")
    request.state.principal = p
    return p


def any_principal(request: Request,
                  bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
                  cookie: Annotated[str | None, Depends(cookie_scheme)]) -> Principal:
    """Any authenticated caller, metrics tokens included (for ``/metrics`` and ``/auth/logout``)."""
    return _principal(request, bearer, cookie)


def current_user(principal: Annotated[Principal, Depends(any_principal)]) -> Principal:
    """An authenticated user; a metrics token is refused (403)."""
    if principal.token_kind is TokenKind.METRICS:
        raise HTTPException(403, "a metrics token reads /metrics only")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
AnyPrincipal = Annotated[Principal, Depends(any_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    """Dependency: an authenticated user with one of ``roles`` (403 otherwise)."""
    names = ", ".join(r.value for r in roles)

    def dependency(principal: CurrentUser) -> Principal:
        if principal.role not in roles:
            raise HTTPException(403, f"needs role {names}")
        return principal

    return dependency


AdminUser = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
