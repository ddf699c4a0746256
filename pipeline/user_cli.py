"""``gridwatch user ...``: add, list, disable, enable, reset-password and token, straight on the ticket store.

Every command writes an audit event whose actor is ``cli:<login name of the operator>``.
"""

from __future__ import annotations

import getpass
import json
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import SiteConfig

user_app = typer.Typer(help="Users of the ticket service (roles, grid scopes, passwords, tokens).",
                       no_args_is_help=True)
console = Console(stderr=True)
MIN_PASSWORD = 10

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Site YAML file.")]
DEFAULT_CONFIG = Path("configs/demo.yaml")
StdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of "
                                        "stdin (scripts) instead of prompting.")]
GenerateOpt = Annotated[bool, typer.Option("--generate", help="Generate a password and print it once.")]


def _sessions(config: Path) -> tuple[SiteConfig, sessionmaker[Session]]:
    from pipeline.cli import _load
    from pipeline.tickets.db import init_db, session_factory

    site = _load(config)
    return site, session_factory(init_db(site.database_url()))


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except OSError:
        return "cli"


def _password(stdin: bool, generate: bool) -> str:
    if generate:
        password = secrets.token_urlsafe(12)
        print(f"password: {password}")
        return password
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        console.print(f"[red]the password needs at least {MIN_PASSWORD} characters[/]")
        raise typer.Exit(2)
    return password


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{message}[/]", highlight=False)
    return typer.Exit(1)


@user_app.command("add")
def add(username: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ -).")],
        role: Annotated[str, typer.Option(help="admin, engineer, dispatcher, patrol or viewer.")],
        scope: Annotated[list[str] | None, typer.Option(help="Grid node the user works in, as a path "
                                                        "(T1/D1/C1) or a unique code (C1); repeatable; "
                                                        "covers the node's subtree.")] = None,
        display_name: Annotated[str | None, typer.Option(help="Full name.")] = None,
        no_password: Annotated[bool, typer.Option("--no-password", help="No password: SSO proxy or tokens "
                                                  "only.")] = False,
        password_stdin: StdinOpt = False, generate: GenerateOpt = False,
        config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Add a user with a role and grid scopes."""
    from pipeline.tickets.auth import hash_password
    from pipeline.tickets.users import UserError, add_user, check_new_user, resolve_scope

    site, sessions = _sessions(config)
    try:
        scopes = [resolve_scope(site, s) for s in scope or []]
        check_new_user(username, role, scopes)
    except UserError as exc:
        raise _fail(str(exc)) from None
    hashed = None if no_password else hash_password(_password(password_stdin, generate))
    try:
        with sessions() as session, session.begin():
            add_user(session, username, role, scopes, hashed, display_name, actor=_actor())
    except UserError as exc:
        raise _fail(str(exc)) from None
    console.print(f"added {username} ({role}{': ' + ', '.join(scopes) if scopes else ', whole site'})")


@user_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
          config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """List users (disabled ones too)."""
    from pipeline.tickets.users import list_users

    _, sessions = _sessions(config)
    with sessions() as session:
        users = list_users(session, include_disabled=True)
    if as_json:
        print(json.dumps([{"username": u.username, "role": u.role, "scopes": u.scopes, "disabled": u.disabled,
                           "display_name": u.display_name, "password": u.password_hash is not None}
                          for u in users], ensure_ascii=False))
        return
    table = Table(title="users")
    for col in ("user", "role", "scopes", "state", "password", "name"):
        table.add_column(col)
    for u in users:
        table.add_row(u.username, u.role, ", ".join(u.scopes) or "(whole site)",
                      "disabled" if u.disabled else "active", "yes" if u.password_hash else "no",
                      u.display_name or "")
    Console().print(table)


def _set_disabled(username: str, disabled: bool, config: Path) -> None:
    from pipeline.tickets.models import utcnow
    from pipeline.tickets.users import AuthToken, audit, get_user

    _, sessions = _sessions(config)
    with sessions() as session, session.begin():
        user = get_user(session, username)
        if user is None:
            raise _fail(f"no user {username!r}")
        user.disabled, user.updated_at = disabled, utcnow()
        if disabled:  # every login and token of the user ends now
            session.execute(update(AuthToken).where(AuthToken.user_id == user.id, AuthToken.revoked_at.is_(None))
                            .values(revoked_at=utcnow()))
        audit(session, _actor(), "user.disable" if disabled else "user.enable", username)
    console.print(f"{username} {'disabled (its logins and tokens are revoked)' if disabled else 'enabled'}")


@user_app.command("disable")
def disable(username: Annotated[str, typer.Argument(help="User name.")], config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Disable a user: no more logins, and every session and token of it is revoked."""
    _set_disabled(username, True, config)


@user_app.command("enable")
def enable(username: Annotated[str, typer.Argument(help="User name.")], config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Enable a disabled user again (old tokens stay revoked)."""
    _set_disabled(username, False, config)


@user_app.command("reset-password")
def reset_password(username: Annotated[str, typer.Argument(help="User name.")],
                   password_stdin: StdinOpt = False, generate: GenerateOpt = False,
                   config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Set a new password; the user's browser logins end (API tokens stay)."""
    from pipeline.tickets.auth import hash_password
    from pipeline.tickets.models import utcnow
    from pipeline.tickets.users import AuthToken, TokenKind, audit, get_user

    _, sessions = _sessions(config)
    with sessions() as session:
        if get_user(session, username) is None:
            raise _fail(f"no user {username!r}")
    hashed = hash_password(_password(password_stdin, generate))
    with sessions() as session, session.begin():
        user = get_user(session, username)
        assert user is not None
        user.password_hash, user.updated_at = hashed, utcnow()
        session.execute(update(AuthToken).where(AuthToken.user_id == user.id, AuthToken.revoked_at.is_(None),
                                                AuthToken.kind == TokenKind.SESSION.value)
                        .values(revoked_at=utcnow()))
        audit(session, _actor(), "user.reset_password", username)
    console.print(f"password of {username} changed; its logins were ended")


@user_app.command("token")
def token(username: Annotated[str, typer.Argument(help="Owner of the token.")],
          name: Annotated[str, typer.Option(help="What uses it, e.g. 'prometheus'.")],
          kind: Annotated[str, typer.Option(help="api (acts as the user) or metrics (/metrics only).")] = "api",
          days: Annotated[float | None, typer.Option(help="Lifetime in days (default: until revoked).")] = None,
          config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Create an API or metrics token and print it once (only its hash is stored)."""
    from pipeline.tickets.auth import Authenticator, AuthMetrics
    from pipeline.tickets.metrics import TicketMetrics
    from pipeline.tickets.users import TokenKind, get_user

    if kind not in ("api", "metrics"):
        raise _fail("--kind is api or metrics")
    site, sessions = _sessions(config)
    auth = Authenticator(site.api.auth, sessions, AuthMetrics(TicketMetrics().registry))
    with sessions() as session, session.begin():
        user = get_user(session, username)
        if user is None or user.disabled:
            raise _fail(f"no enabled user {username!r}")
        secret, row = auth.create_token(session, user, TokenKind(kind), name, days, _actor(), None)
        token_id = row.id
    print(secret)
    console.print(f"token {token_id} for {username} ({kind}); shown only now")
