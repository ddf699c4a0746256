"""Webhook request shapes and answers: signature round trip, bot answers, redirects not followed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pipeline.config_webhooks import WebhooksConfig, WebhookTarget
from pipeline.tickets.webhook_formats import build_request, response_error, sign, verify
from pipeline.tickets.webhook_sender import post
from tests.fixtures.webhook_receiver import WebhookReceiver

SECRET = "hook-secret-0123456789abcdef"


def _target(fmt: str = "json", url: str = "http://127.0.0.1:9/hook") -> WebhookTarget:
    return WebhooksConfig.model_validate({"targets": [{"name": "t", "url": url, "secret": SECRET,
                                                       "format": fmt}]}).targets[0]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    yield r
    r.stop()


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"schema_version":1}'
    now = int(time.time())
    signature = sign(SECRET, now, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(SECRET, str(now), body, signature)
    assert not verify(SECRET, str(now + 1), body, signature)  # the timestamp is inside the MAC
    assert not verify(SECRET, str(now), body + b"\n", signature)
    assert not verify("other-secret-0123456789", str(now), body, signature)
    assert not verify(SECRET, "not-a-number", body, signature)


def test_json_request_sends_the_queued_bytes_unchanged() -> None:
    body = ('{"schema_version":1,"delivery_id":"' + "a" * 32 + '","event":"ticket_closed","x":"é"}').encode()
    request = build_request(_target(), body, 1_800_000_000.5)
    assert request.body == body
    assert request.headers["X-Gridwatch-Timestamp"] == "1800000000"
    assert request.headers["X-Gridwatch-Delivery"] == "a" * 32
    assert request.headers["X-Gridwatch-Signature"] == sign(SECRET, 1_800_000_000, body)


@pytest.mark.parametrize(("fmt", "status", "answer", "ok"), [
    ("json", 200, b"", True), ("json", 204, b"", True), ("json", 302, b"", False), ("json", 500, b"oops", False),
    ("wecom", 200, b'{"errcode":0,"errmsg":"ok"}', True),
    ("wecom", 200, b'{"errcode":93000,"errmsg":"invalid webhook url"}', False),
    ("dingtalk", 200, b"<html>proxy page</html>", False), ("dingtalk", 200, b"[]", False),
])
def test_answers(fmt: str, status: int, answer: bytes, ok: bool) -> None:
    assert (response_error(_target(fmt), status, answer) is None) is ok


def test_redirects_are_not_followed(receiver: WebhookReceiver) -> None:
    receiver.status = 302
    receiver.extra_headers = {"Location": receiver.url + "/elsewhere"}
    status, _, error = post(receiver.url, {"Content-Type": "application/json"}, b"{}", 5)
    assert (status, error) == (302, None)
    assert receiver.count() == 1  # one request, the redirect was not followed


def test_connection_refused_is_a_transport_error() -> None:
    from tests.fixtures.webhook_receiver import closed_port

    status, answer, error = post(f"http://127.0.0.1:{closed_port()}/x", {}, b"{}", 5)
    assert status is None and answer == b"" and error is not None and "Connection" in error
