"""Keep credentials inside the process: redact URLs and known secrets in text, logs and tracebacks.

Camera URLs carry passwords (``rtsp://admin:pass@10.0.0.7/ch1``) and so do broker URLs. They reach the
outside world through log lines, through exception messages that libraries build from the URL (PyAV's
``HTTPError: ... ('rtsp://admin:pass@...')``), through the retained health message and the ticket API.
Everything that leaves the process goes through :func:`redact_url` or :func:`redact_text`, and
:func:`install_log_redaction` makes every log record (message, arguments and traceback) pass
:func:`redact_text` before any handler sees it.

Example:
    >>> redact_url("rtsp://admin:s3cret@10.0.0.7:554/ch1")
    'rtsp://***@10.0.0.7:554/ch1'
    >>> redact_text("open failed: rtsp://admin:s3cret@cam/ch1 (timeout)")
    'open failed: rtsp://***@cam/ch1 (timeout)'
    >>> redact_url("http://cam.local/video.cgi?user=admin&pwd=s3cret")
    'http://cam.local/video.cgi?user=admin&pwd=***'
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
# scheme://userinfo@ -- greedy up to the last '@' of the authority, so an unencoded '@' in the
# password ("admin:p@ss@host") is masked whole.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#'\"<>]*)@")
# Query parameters that carry secrets in camera and broker URLs (?pwd=, &password=, &token=, ...).
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_\-]*(?:pass|pwd|secret|token|key|auth|sig|credential)[A-Za-z0-9_\-]*))"
    r"=(?P<value>[^&;#\s'\"<>]+)", re.IGNORECASE)
# Secrets shorter than this are not replaced in free text: masking "1" or "ab" everywhere would
# garble messages without protecting anything.
MIN_SECRET_LENGTH = 6

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_installed = False
_install_lock = threading.Lock()


def redact_url(url: str) -> str:
    """The URL with its user name, password and secret query values replaced by ``***``.

    Args:
        url: any URL or file path (paths come back unchanged).

    Returns:
        The redacted URL, safe to log, publish and serve.

    Example:
        >>> redact_url("mqtts://user:pw@broker:8883")
        'mqtts://***@broker:8883'
        >>> redact_url("clips/gate.mp4")
        'clips/gate.mp4'
    """
    return redact_text(url)


def redact_text(text: str) -> str:
    """Mask URL credentials, secret query values and every registered secret in free text.

    Args:
        text: a log message, exception message, traceback or error string.

    Returns:
        The text with credentials replaced by ``***``.
    """
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    out = _SECRET_PARAM.sub(lambda m: f"{m['key']}={MASK}", out)
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def register_secret(secret: str | None) -> None:
    """Remember a secret (a password from the config) so :func:`redact_text` masks it anywhere.

    Catches secrets that appear without their URL around them, e.g. a library that logs the
    password it was given, or an URL-decoded copy of it. Secrets shorter than
    :data:`MIN_SECRET_LENGTH` are ignored.
    """
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets.add(secret)


def register_url_secrets(urls: Iterable[str | None]) -> None:
    """Register the password (raw and percent-decoded) of every URL that carries one."""
    for url in urls:
        if not url or "@" not in url:
            continue
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            register_secret(password)
            register_secret(unquote(password))


def _redact_record(record: logging.LogRecord) -> None:
    """Rewrite a log record in place when its text (or traceback) carries a credential."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to the handler to report
        return
    clean = redact_text(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        # Format the traceback now, redacted; formatters print exc_text and skip exc_info.
        # Only when it carries a credential, so clean records keep exc_info for rich handlers.
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        clean_text = redact_text(text)
        if clean_text != text:
            record.exc_text, record.exc_info = clean_text, None
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


def install_log_redaction() -> None:
    """Make every log record of the process pass :func:`redact_text` (idempotent).

    Wraps the log record factory rather than adding a handler filter, so it covers every logger and
    every handler (console, files, pytest's caplog) including records of third-party libraries
    (paho, PyAV, uvicorn). The factory runs only for records that pass the level check.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
