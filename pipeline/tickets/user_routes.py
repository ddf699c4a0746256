"""Users over REST (admin only): ``GET/POST /users``, ``PATCH /users/{username}``,
``POST /users/{username}/disable`` and ``/enable``, ``POST /users/{username}/password``.

The same rules as ``gridwatch user`` (:mod:`pipeline.user_cli`): a name matching
:data:`~pipeline.tickets.users.USERNAME_PATTERN`, a role, grid scopes that are nodes of the site grid (a
path or a unique code, stored as the path; every non-admin needs one), passwords of at least
:data:`MIN_PASSWORD` characters stored as argon2id hashes. Every change is an audit event (``user.add``,
``user.update``, ``user.disable``, ``user.enable``, ``user.reset_password``) with the admin as actor; a
password is never written to the audit trail or the log, and a generated one is in the answer only.

The OpenAPI document is exact: the scope items are an ``enum`` of the site's grid nodes (filled in per
app by :func:`_fill_scope_enums`), and the create body is a ``oneOf`` on ``role`` (an admin needs no scope,
everyone else at least one), so a request the document calls valid is never refused with 422.
An admin cannot disable or demote itself, nor the last enabled admin (409), so the site always keeps one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pipeline.config import SiteConfig
from pipeline.tickets.api_contract import error_responses
from pipeline.tickets.auth import AdminUser, Principal, authenticator, hash_password
from pipeline.tickets.auth_routes import AUTH_ERRORS, Responses
from pipeline.tickets.models import utcnow
from pipeline.tickets.schemas import NO_NUL_PATTERN, ErrorOut
from pipeline.tickets.users import (
    USERNAME_PATTERN,
    AuthToken,
    Role,
    TokenKind,
    User,
    UserError,
    add_user,
    audit,
    get_user,
    grid_paths,
    list_users,
    resolve_scope,
)

MIN_PASSWORD = 10
"""Shortest password accepted (as ``gridwatch user``)."""
_SCOPE_MARK = "x-gridwatch-grid-scope"
"""Marks the scope item schemas whose ``enum`` :func:`_fill_scope_enums` fills with the site's grid nodes."""

ScopeName = Annotated[str, Field(min_length=1, max_length=300, json_schema_extra={_SCOPE_MARK: True},
                                 description="A grid node: its path (`T1/D1/C1`) or its code when unique "
                                 "(`C1`); covers the node's subtree.")]
Password = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=1000, pattern=NO_NUL_PATTERN,
                                description=f"At least {MIN_PASSWORD} characters.")]
DisplayName = Annotated[str, Field(max_length=200, pattern=NO_NUL_PATTERN, description="Full name.")]
UsernamePath = Annotated[str, PathParam(max_length=64, pattern=USERNAME_PATTERN, description="User name.")]
ScopedRole = Literal["engineer", "dispatcher", "patrol", "viewer"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _NewUser(_In):
    username: str = Field(max_length=64, pattern=USERNAME_PATTERN, description="Letters, digits, `_ . @ -`.")
    display_name: DisplayName | None = None
    password: Password | None = Field(default=None, description=f"At least {MIN_PASSWORD} characters; "
                                      "null or left out: a one-time password is generated and returned once.")


class AdminIn(_NewUser):
    """A new admin (sees the whole site; scopes are optional and change nothing)."""

    role: Literal["admin"]
    scopes: list[ScopeName] = Field(default_factory=list, max_length=50)


class ScopedUserIn(_NewUser):
    """A new engineer, dispatcher, patrol or viewer: at least one grid scope."""

    role: ScopedRole
    scopes: list[ScopeName] = Field(min_length=1, max_length=50)


UserIn = Annotated[AdminIn | ScopedUserIn, Field(discriminator="role")]


class UserPatch(_In):
    """What to change; fields left out stay as they are."""

    role: Role | None = Field(default=None, description="New role (a non-admin needs scopes: given here or "
                              "already held).")
    scopes: list[ScopeName] | None = Field(default=None, min_length=1, max_length=50,
                                           description="Replaces the user's grid scopes.")
    display_name: DisplayName | None = None


class PasswordIn(_In):
    """A new password, or none to get a generated one."""

    password: Password | None = Field(default=None, description="The new password; null or left out: a "
                                      "one-time password is generated and returned once.")


class UserOut(BaseModel):
    """A user account."""

    username: str
    display_name: str | None
    role: str
    scopes: list[str]
    disabled: bool
    password_login: bool = Field(description="Whether the user has a password (else SSO proxy or tokens only).")
    created_at: datetime

    @classmethod
    def of(cls, u: User) -> UserOut:
        """Build from an ORM row."""
        return cls(username=u.username, display_name=u.display_name, role=u.role, scopes=u.scopes,
                   disabled=u.disabled, password_login=u.password_hash is not None, created_at=u.created_at)


class UserCreatedOut(UserOut):
    """A new user; ``one_time_password`` is set (shown only now) when the password was generated."""

    one_time_password: str | None = Field(description="The generated password (null when one was given).")


class PasswordOut(BaseModel):
    """A password reset."""

    username: str
    one_time_password: str | None = Field(description="The generated password, shown only now (null when one "
                                          "was given).")
    logins_ended: int = Field(description="Browser logins of the user that were ended (API tokens stay; the "
                              "admin's own current login is kept).")


NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "No such user."}}
REFUSED_SELF: Responses = {409: {"model": ErrorOut, "description": "It would leave the site without an enabled "
                                 "admin (yourself or the last one)."}}


def _bad(loc: tuple[str | int, ...], msg: str, value: Any) -> RequestValidationError:
    # The shape of every other 422 (FastAPI's validation error), as declared in the OpenAPI document.
    return RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": f"Value error, {msg}",
                                    "input": value}])


def _scopes(site: SiteConfig, scopes: list[str], field: str = "scopes") -> list[str]:
    out = []
    for i, s in enumerate(scopes):
        try:
            out.append(resolve_scope(site, s))
        except UserError as exc:
            raise _bad((field, i), str(exc), s) from None
    return sorted(set(out))


def scope_names(site: SiteConfig) -> list[str]:
    """Every value a scope may take: each grid path and each node code used once in the grid."""
    paths = grid_paths(site)
    codes: dict[str, int] = {}
    for p in paths:
        code = p.rsplit("/", 1)[-1]
        codes[code] = codes.get(code, 0) + 1
    return sorted(paths | {c for c, n in codes.items() if n == 1 and c not in paths})


def _fill_scope_enums(app: FastAPI, names: list[str]) -> None:
    """Put the site's grid nodes into the document as the ``enum`` of every scope item."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.pop(_SCOPE_MARK, None):
                node["enum"] = names
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()
        if fresh:
            walk(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _load(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise HTTPException(404, f"no user {username!r}")
    return user


def _other_enabled_admins(session: Session, user: User) -> int:
    return session.scalar(select(func.count()).select_from(User).where(
        User.role == Role.ADMIN.value, User.disabled.is_(False), User.id != user.id)) or 0


def _keep_an_admin(session: Session, user: User, admin: Principal, what: str) -> None:
    """Refuse (409) to take ``user`` out of the enabled admins when it is the caller or the last one."""
    if user.role != Role.ADMIN.value or user.disabled:
        return
    if user.username == admin.username:
        raise HTTPException(409, f"you cannot {what} yourself; another admin can")
    if _other_enabled_admins(session, user) == 0:
        raise HTTPException(409, f"cannot {what} {user.username!r}: it is the last enabled admin")


def _new_password(given: str | None) -> tuple[str, str | None]:
    """(hash, the generated password or None when one was given)."""
    if given is not None:
        return hash_password(given), None
    generated = secrets.token_urlsafe(12)
    return hash_password(generated), generated


def install_user_routes(app: FastAPI) -> None:
    """Add the routes of the module docstring to ``app`` (``app.state.tickets`` must be set)."""
    site: SiteConfig = app.state.tickets.site
    _fill_scope_enums(app, scope_names(site))

    @app.get("/users", response_model=list[UserOut], tags=["users"], responses=AUTH_ERRORS)
    def users(request: Request, admin: AdminUser) -> list[UserOut]:
        """Every user, disabled ones too, by name (admin)."""
        with authenticator(request).sessions() as session:
            return [UserOut.of(u) for u in list_users(session, include_disabled=True)]

    @app.post("/users", response_model=UserCreatedOut, status_code=201, tags=["users"],
              responses={**error_responses(400), **AUTH_ERRORS,
                         409: {"model": ErrorOut, "description": "The name is taken."}})
    def create_user(request: Request, admin: AdminUser, body: Annotated[UserIn, Body()]) -> UserCreatedOut:
        """Create a user (admin); without a password one is generated and shown in this answer only."""
        auth = authenticator(request)
        scopes = _scopes(site, list(body.scopes))
        with auth.sessions() as session:
            if get_user(session, body.username) is not None:  # before hashing: a taken name costs nothing
                raise HTTPException(409, f"user {body.username!r} exists")
        hashed, generated = _new_password(body.password)
        try:
            with auth.sessions() as session, session.begin():
                user = add_user(session, body.username, body.role, scopes, hashed, body.display_name,
                                actor=admin.username, client=auth.client_address(request))
                out = UserCreatedOut(**UserOut.of(user).model_dump(), one_time_password=generated)
        except UserError as exc:  # a concurrent create of the same name
            raise HTTPException(409, str(exc)) from None
        return out

    @app.patch("/users/{username}", response_model=UserOut, tags=["users"],
               responses={**error_responses(400), **AUTH_ERRORS, **NOT_FOUND,
                          409: {"model": ErrorOut, "description": "A non-admin "
                          "role for a user without scopes (give `scopes`), or it would leave the site without "
                          "an enabled admin."}})
    def update_user(request: Request, admin: AdminUser, username: UsernamePath,
                    body: Annotated[UserPatch, Body()]) -> UserOut:
        """Change a user's role, grid scopes or display name (admin)."""
        auth = authenticator(request)
        scopes = _scopes(site, body.scopes) if body.scopes is not None else None
        with auth.sessions() as session, session.begin():
            user = _load(session, username)
            changes: dict[str, Any] = {}
            role = body.role.value if body.role is not None else user.role
            if role != user.role:
                if role != Role.ADMIN.value:
                    _keep_an_admin(session, user, admin, "demote")
                changes["role"] = [user.role, role]
            if scopes is not None and scopes != user.scopes:
                changes["scopes"] = [user.scopes, scopes]
            if "display_name" in body.model_fields_set and body.display_name != user.display_name:
                changes["display_name"] = [user.display_name, body.display_name]
            if role != Role.ADMIN.value and not (scopes if scopes is not None else user.scopes):
                raise HTTPException(409, f"a {role} needs at least one grid scope: give `scopes`")
            if changes:
                user.role = role
                user.scopes = scopes if scopes is not None else user.scopes
                user.display_name = body.display_name if "display_name" in changes else user.display_name
                now = utcnow()
                user.updated_at = now
                detail: dict[str, Any] = {k: {"from": v[0], "to": v[1]} for k, v in changes.items()}
                audit(session, admin.username, "user.update", username, auth.client_address(request), now,
                      **detail)
            return UserOut.of(user)

    def set_disabled(request: Request, admin: Principal, username: str, disabled: bool) -> UserOut:
        auth = authenticator(request)
        with auth.sessions() as session, session.begin():
            user = _load(session, username)
            if disabled:
                _keep_an_admin(session, user, admin, "disable")
            if user.disabled != disabled:
                now = utcnow()
                user.disabled, user.updated_at = disabled, now
                revoked = 0
                if disabled:  # every login and token of the user ends now
                    revoked = session.execute(
                        update(AuthToken).where(AuthToken.user_id == user.id, AuthToken.revoked_at.is_(None))
                        .values(revoked_at=now)).rowcount  # type: ignore[attr-defined]
                extra: dict[str, Any] = {"tokens_revoked": revoked} if disabled else {}
                audit(session, admin.username, "user.disable" if disabled else "user.enable", username,
                      auth.client_address(request), now, **extra)
            return UserOut.of(user)

    @app.post("/users/{username}/disable", response_model=UserOut, tags=["users"],
              responses={**AUTH_ERRORS, **NOT_FOUND, **REFUSED_SELF})
    def disable_user(request: Request, admin: AdminUser, username: UsernamePath) -> UserOut:
        """Disable a user (admin): no more logins, every session and token of it is revoked at once."""
        return set_disabled(request, admin, username, True)

    @app.post("/users/{username}/enable", response_model=UserOut, tags=["users"],
              responses={**AUTH_ERRORS, **NOT_FOUND})
    def enable_user(request: Request, admin: AdminUser, username: UsernamePath) -> UserOut:
        """Enable a disabled user again (admin); its old tokens stay revoked."""
        return set_disabled(request, admin, username, False)

    @app.post("/users/{username}/password", response_model=PasswordOut, tags=["users"],
              responses={**error_responses(400), **AUTH_ERRORS, **NOT_FOUND})
    def reset_password(request: Request, admin: AdminUser, username: UsernamePath,
                       body: Annotated[PasswordIn | None, Body()] = None) -> PasswordOut:
        """Set a user's password (admin), or generate a one-time one returned in this answer only; the user's
        browser logins end (API tokens stay)."""
        auth = authenticator(request)
        with auth.sessions() as session:
            _load(session, username)  # 404 before the hashing work
        hashed, generated = _new_password(body.password if body is not None else None)
        with auth.sessions() as session, session.begin():
            user = _load(session, username)
            now = utcnow()
            user.password_hash, user.updated_at = hashed, now
            keep = admin.token_id if admin.username == username else None  # the admin's own login stays
            ended = session.execute(
                update(AuthToken).where(AuthToken.user_id == user.id, AuthToken.revoked_at.is_(None),
                                        AuthToken.kind == TokenKind.SESSION.value,
                                        AuthToken.id != (keep if keep is not None else -1))
                .values(revoked_at=now)).rowcount  # type: ignore[attr-defined]
            audit(session, admin.username, "user.reset_password", username, auth.client_address(request),
                  generated=generated is not None, logins_ended=ended)
        return PasswordOut(username=username, one_time_password=generated, logins_ended=ended)
