"""Request shapes of the webhook formats and their signatures.

* ``json``: the queued :class:`~pipeline.contract.webhook.WebhookEventV1` bytes as they are, with
  ``X-Gridwatch-Event``, ``X-Gridwatch-Delivery``, ``X-Gridwatch-Timestamp`` (Unix seconds) and, when the
  target has a secret, ``X-Gridwatch-Signature: sha256=<hex>``, the HMAC-SHA256 of
  ``<timestamp>.<body>`` under the secret (the timestamp inside the MAC lets receivers refuse replays).
* ``wecom``: a WeCom (企业微信) group bot ``markdown`` message; the bot's key is in its URL, WeCom has no
  request signature.
* ``dingtalk``: a DingTalk (钉钉) group bot ``markdown`` message; with a secret, DingTalk's own
  signature (``timestamp`` in ms and ``sign`` = base64 HMAC-SHA256 of ``<timestamp>\\n<secret>``) is added
  to the URL query.

Both bots answer HTTP 200 with ``{"errcode": <n>, ...}``; only ``errcode`` 0 counts as delivered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import quote_plus

from pipeline.config_webhooks import WebhookTarget
from pipeline.contract.webhook import WebhookEventV1

SIGNATURE_HEADER = "X-Gridwatch-Signature"
TIMESTAMP_HEADER = "X-Gridwatch-Timestamp"
EVENT_HEADER = "X-Gridwatch-Event"
DELIVERY_HEADER = "X-Gridwatch-Delivery"
USER_AGENT = "gridwatch-webhooks/1"
_BOT_TEXT_MAX = 3500  # WeCom refuses markdown content over 4096 bytes; stay below with UTF-8 slack
_EVENT_WORDS = {"ticket_created": "New case", "ticket_overdue": "Case overdue", "ticket_escalated": "Case escalated",
                "ticket_closed": "Case closed"}


@dataclass(frozen=True)
class WebhookRequest:
    """One HTTP POST ready to send."""

    url: str
    headers: dict[str, str]
    body: bytes


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``b"<timestamp>." + body`` under ``secret`` (the json format)."""
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Receiver side of :func:`sign` (constant-time compare); the docs show the same in plain Python."""
    try:
        expected = sign(secret, int(timestamp), body)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's bot signature: base64 HMAC-SHA256 of ``<timestamp_ms>\\n<secret>`` under ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def _markdown(event: WebhookEventV1) -> tuple[str, str]:
    """Title and markdown text of a bot message."""
    t = event.ticket
    title = f"{_EVENT_WORDS[event.event]}: {t.title}"
    lines = [f"### {title}", f"> **Hazard** {t.hazard.value}, severity {t.severity}/5, status {t.status}",
             f"> **Where** {'/'.join(t.grid_path)}, camera {t.camera_name or t.camera_id}"
             + (f", zone {t.zone_id}" if t.zone_id else ""),
             f"> **When** {event.ts.strftime('%Y-%m-%d %H:%M:%S')} UTC, ticket #{t.id}"]
    if event.reason:
        lines.append(f"> **Why** {event.reason}")
    if t.url:
        lines.append(f"[Open the ticket]({t.url})")
    return title[:100], "\n".join(lines)[:_BOT_TEXT_MAX]


def build_request(target: WebhookTarget, body: bytes, now: float) -> WebhookRequest:
    """The request of one delivery attempt to ``target`` at Unix time ``now``.

    Args:
        target: where it goes and in which format.
        body: the queued ``WebhookEventV1`` JSON bytes (sent unchanged in the json format).
        now: Unix time of the attempt (signature timestamps).

    Raises:
        pydantic.ValidationError: the queued body is not a ``WebhookEventV1`` (bot formats only).
    """
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
    if target.format == "json":
        meta = json.loads(body)
        ts = int(now)
        headers |= {EVENT_HEADER: str(meta["event"]), DELIVERY_HEADER: str(meta["delivery_id"]),
                    TIMESTAMP_HEADER: str(ts)}
        if target.secret:
            headers[SIGNATURE_HEADER] = sign(target.secret, ts, body)
        return WebhookRequest(target.url, headers, body)
    event = WebhookEventV1.model_validate_json(body)
    title, text = _markdown(event)
    url = target.url
    if target.format == "wecom":
        message: dict[str, object] = {"msgtype": "markdown", "markdown": {"content": text}}
    else:
        message = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        if target.secret:
            ts_ms = int(now * 1000)
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}timestamp={ts_ms}&sign={quote_plus(dingtalk_sign(target.secret, ts_ms))}"
    return WebhookRequest(url, headers, json.dumps(message, ensure_ascii=False).encode("utf-8"))


def response_error(target: WebhookTarget, status: int, body: bytes) -> str | None:
    """Why a response does not count as delivered, or None when it does.

    Any 2xx delivers a json target; the bots must also answer ``errcode`` 0 (they report a bad key or a
    refused message with HTTP 200).
    """
    if not 200 <= status < 300:
        return f"HTTP {status}: {body[:200].decode('utf-8', errors='replace')}"
    if target.format == "json":
        return None
    try:
        answer = json.loads(body)
        code = answer.get("errcode") if isinstance(answer, dict) else None
    except ValueError:
        return f"HTTP {status} but not the bot's JSON answer: {body[:200].decode('utf-8', errors='replace')}"
    if code != 0:
        msg = answer.get("errmsg") if isinstance(answer, dict) else None
        return f"bot refused: errcode {code}, {str(msg)[:200]}"
    return None
