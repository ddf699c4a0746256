"""Routes of logins and accounts: ``/auth/login``, ``/auth/logout``, ``/auth/me``, ``/auth/tokens``,
``/users`` (:mod:`.user_routes`) and the audit trail ``/audit`` (see docs/api.md and docs/operations.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from pipeline.tickets.api_contract import OffsetQuery, error_responses
from pipeline.tickets.auth import (
    SESSION_COOKIE,
    AdminUser,
    AnyPrincipal,
    CurrentUser,
    LoginBlockedError,
    LoginFailedError,
    authenticator,
)
from pipeline.tickets.schemas import DB_INT_MAX, NO_NUL_PATTERN, ErrorOut
from pipeline.tickets.users import AuditEvent, AuthToken, Role, TokenKind, User, get_user

Responses = dict[int | str, dict[str, Any]]
AUTH_ERRORS: Responses = {
    401: {"model": ErrorOut, "description": "Not logged in: no, an unknown, an expired or a revoked token."},
    403: {"model": ErrorOut, "description": "Logged in, but the role or the grid scope does not allow it."},
}
"""Declared on every route that needs a login."""


class LoginIn(BaseModel):
    """User name and password."""

    username: str = Field(min_length=1, max_length=64, pattern=NO_NUL_PATTERN, description="User name.")
    password: str = Field(min_length=1, max_length=1000, pattern=NO_NUL_PATTERN, description="Password.")


class MeOut(BaseModel):
    """The logged-in user."""

    username: str = Field(description="User name; the actor recorded for every change.")
    role: Role = Field(description="Role.")
    scopes: list[str] = Field(description="Grid paths the user sees (admin: the whole site).")


class LoginOut(BaseModel):
    """A new login. The same token is also set as the HttpOnly session cookie."""

    token: str = Field(description="Bearer token for `Authorization: Bearer <token>`; shown only now.")
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime | None = Field(description="When the login ends (UTC).")
    user: MeOut


class TokenIn(BaseModel):
    """An API token (acts as its user) or a metrics token (reads `/metrics` only)."""

    username: str = Field(min_length=1, max_length=64, pattern=NO_NUL_PATTERN, description="Owner.")
    kind: Literal["api", "metrics"] = Field(default="api", description="What the token is for.")
    name: str | None = Field(default=None, max_length=200, pattern=NO_NUL_PATTERN,
                             description="What or who uses it, e.g. `12345 bridge`.")
    days: float | None = Field(default=None, gt=0, le=3650, description="Lifetime in days; unset = until revoked.")


class TokenOut(BaseModel):
    """A token without its secret."""

    id: int
    username: str
    kind: str
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    """A new token; ``token`` is shown only in this answer."""

    token: str = Field(description="The secret, for `Authorization: Bearer <token>`.")


class AuditOut(BaseModel):
    """One audit event."""

    id: int
    ts: datetime
    actor: str | None = Field(description="Authenticated user who made the change (none: the system).")
    action: str = Field(description="E.g. `ticket.transition`, `auth.login`, `token.create`, `user.add`.")
    target: str | None
    client: str | None = Field(description="Client address.")
    detail: dict[str, Any]


def _token_out(t: AuthToken, username: str) -> dict[str, Any]:
    return {"id": t.id, "username": username, "kind": t.kind, "name": t.name, "created_at": t.created_at,
            "expires_at": t.expires_at, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}


def _cookie_secure(request: Request) -> bool:
    configured = authenticator(request).config.cookie_secure
    if configured is not None:
        return configured
    return request.url.scheme == "https" or (authenticator(request).from_trusted_proxy(request)
                                             and request.headers.get("x-forwarded-proto") == "https")


router = APIRouter()


@router.post("/auth/login", response_model=LoginOut, tags=["auth"],
             responses={**error_responses(400),
                        401: {"model": ErrorOut, "description": "Wrong user name or password, or disabled."},
                        429: {"model": ErrorOut, "description": "Too many failures: wait `Retry-After` seconds."}})
def login(request: Request, response: Response, body: LoginIn) -> LoginOut | JSONResponse:
    """Log in: a bearer token in the body and the same secret as an HttpOnly, SameSite=Lax cookie."""
    auth = authenticator(request)
    try:
        secret, expires, user = auth.login(body.username, body.password, auth.client_address(request))
    except LoginBlockedError as exc:
        wait = max(1, int(exc.retry_after + 0.999))
        return JSONResponse({"detail": f"too many failed logins; retry in {wait} s"}, status_code=429,
                            headers={"Retry-After": str(wait)})
    except LoginFailedError:
        raise HTTPException(401, "wrong user name or password", headers={"WWW-Authenticate": "Bearer"}) from None
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(auth.config.session_hours * 3600), httponly=True,
                        samesite="lax", secure=_cookie_secure(request), path="/")
    return LoginOut(token=secret, expires_at=expires,
                    user=MeOut(username=user.username, role=Role(user.role), scopes=user.scopes))


@router.post("/auth/logout", status_code=204, response_class=Response, tags=["auth"], responses=AUTH_ERRORS)
def logout(request: Request, principal: AnyPrincipal) -> Response:
    """End this login: its token (bearer or cookie) is revoked and the cookie removed."""
    auth = authenticator(request)
    if principal.token_id is not None:
        with auth.sessions() as session, session.begin():
            token = session.get(AuthToken, principal.token_id)
            if token is not None:
                auth.revoke(session, token, principal.username, auth.client_address(request))
    out = Response(status_code=204)
    out.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return out


@router.get("/auth/me", response_model=MeOut, tags=["auth"], responses=AUTH_ERRORS)
def me(principal: CurrentUser) -> MeOut:
    """Who is logged in."""
    return MeOut(username=principal.username, role=principal.role, scopes=list(principal.scopes))


@router.get("/auth/tokens", response_model=list[TokenOut], tags=["auth"], responses=AUTH_ERRORS)
def tokens(request: Request, admin: AdminUser,
           limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
           offset: OffsetQuery = 0) -> list[dict[str, Any]]:
    """API and metrics tokens (admin), newest first; secrets are never shown again."""
    with authenticator(request).sessions() as session:
        rows = session.execute(select(AuthToken, User.username).join(User, AuthToken.user_id == User.id)
                               .where(AuthToken.kind != TokenKind.SESSION.value)
                               .order_by(AuthToken.id.desc()).limit(limit).offset(offset)).all()
        return [_token_out(t, name) for t, name in rows]


@router.post("/auth/tokens", response_model=TokenCreatedOut, status_code=201, tags=["auth"],
             responses={**error_responses(400), **AUTH_ERRORS,
                        404: {"model": ErrorOut, "description": "No such (enabled) user."}})
def create_token(request: Request, admin: AdminUser, body: Annotated[TokenIn, Body()]) -> dict[str, Any]:
    """Create an API or metrics token (admin); the secret is in this answer only."""
    auth = authenticator(request)
    with auth.sessions() as session, session.begin():
        user = get_user(session, body.username)
        if user is None or user.disabled:
            raise HTTPException(404, f"no enabled user {body.username!r}")
        secret, row = auth.create_token(session, user, TokenKind(body.kind), body.name, body.days,
                                        admin.username, auth.client_address(request))
        return {**_token_out(row, user.username), "token": secret}


@router.delete("/auth/tokens/{token_id}", status_code=204, response_class=Response, tags=["auth"],
               responses={**AUTH_ERRORS, 404: {"model": ErrorOut, "description": "No such API or metrics token."}})
def revoke_token(request: Request, admin: AdminUser,
                 token_id: Annotated[int, PathParam(ge=1, le=DB_INT_MAX, description="Token id.")]) -> Response:
    """Revoke an API or metrics token (admin). Logins end by logout, expiry or disabling the user."""
    auth = authenticator(request)
    with auth.sessions() as session, session.begin():
        token = session.get(AuthToken, token_id)
        if token is None or token.kind == TokenKind.SESSION.value:
            raise HTTPException(404, f"no API or metrics token {token_id}")
        auth.revoke(session, token, admin.username, auth.client_address(request))
    return Response(status_code=204)


@router.get("/audit", response_model=list[AuditOut], tags=["auth"], responses=AUTH_ERRORS)
def audit_trail(request: Request, admin: AdminUser,
                action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL_PATTERN,
                                                    description="Only this action, e.g. `ticket.transition`.")]
                = None,
                actor: Annotated[str | None, Query(max_length=64, pattern=NO_NUL_PATTERN,
                                                   description="Only changes by this user.")] = None,
                limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
                offset: OffsetQuery = 0) -> list[AuditOut]:
    """The append-only audit trail (admin), newest first."""
    q = select(AuditEvent)
    if action:
        q = q.where(AuditEvent.action == action)
    if actor:
        q = q.where(AuditEvent.actor == actor)
    with authenticator(request).sessions() as session:
        rows = session.scalars(q.order_by(AuditEvent.id.desc()).limit(limit).offset(offset)).all()
        return [AuditOut(id=e.id, ts=e.ts, actor=e.actor, action=e.action, target=e.target, client=e.client,
                         detail=e.detail) for e in rows]


def install_auth_routes(app: FastAPI) -> None:
    """Add the login, token, user and audit routes to ``app``."""
    from pipeline.tickets.user_routes import install_user_routes  # it builds on this module

    app.include_router(router)
    install_user_routes(app)
