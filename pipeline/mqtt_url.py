"""The one parser of ``mqtt.url``, shared by the worker's publisher and the ticket service's consumer.

Schemes (default port in brackets):

* ``mqtt://`` / ``tcp://`` (1883): plain MQTT over TCP.
* ``mqtts://`` / ``ssl://`` / ``tls://`` (8883): MQTT over TLS.
* ``ws://`` (80) / ``wss://`` (443, TLS): MQTT over WebSockets; the URL path is the WebSocket path
  (default ``/mqtt``, as EMQX, HiveMQ and paho expect).

``user:password@`` in the URL are the broker credentials (percent-encoded, so ``p%40ss`` is ``p@ss``);
``mqtt.username`` / ``mqtt.password`` override them. Errors never echo the password.

Example:
    >>> a = parse_mqtt_url("mqtts://u:p%40ss@broker.local")
    >>> a.host, a.port, a.tls, a.transport, a.username, a.password
    ('broker.local', 8883, True, 'tcp', 'u', 'p@ss')
    >>> a
    BrokerAddress(host='broker.local', port=8883, tls=True, username='u', password='***', transport='tcp', path=None)
    >>> parse_mqtt_url("ws://broker:9001").path
    '/mqtt'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from pipeline.redact import redact_url

if TYPE_CHECKING:  # paho is not imported by the config loader
    import paho.mqtt.client as paho

    from pipeline.config import MqttConfig

Transport = Literal["tcp", "websockets"]

# scheme -> (default port, TLS, transport)
SCHEMES: dict[str, tuple[int, bool, Transport]] = {
    "mqtt": (1883, False, "tcp"), "tcp": (1883, False, "tcp"),
    "mqtts": (8883, True, "tcp"), "ssl": (8883, True, "tcp"), "tls": (8883, True, "tcp"),
    "ws": (80, False, "websockets"), "wss": (443, True, "websockets"),
}
DEFAULT_WS_PATH = "/mqtt"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to connect to the broker (the password is hidden from ``repr``)."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    transport: Transport = "tcp"
    path: str | None = None  # WebSocket path; None for TCP

    def __repr__(self) -> str:
        shown = None if self.password is None else "***"
        return (f"BrokerAddress(host={self.host!r}, port={self.port}, tls={self.tls}, "
                f"username={self.username!r}, password={shown!r}, transport={self.transport!r}, "
                f"path={self.path!r})")

    def describe(self) -> str:
        """``host:port`` with the transport, for log lines (no credentials)."""
        scheme = ("wss" if self.tls else "ws") if self.transport == "websockets" else (
            "mqtts" if self.tls else "mqtt")
        return f"{scheme}://{self.host}:{self.port}{self.path or ''}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """Parse a broker URL; raise ``ValueError`` (without the password in it) when it is unusable.

    Args:
        url: ``scheme://[user[:password]@]host[:port][/path]`` with a scheme of :data:`SCHEMES`.

    Returns:
        The broker address with default port and TLS of the scheme filled in.
    """
    shown = redact_url(url)
    if "://" not in url:
        raise ValueError(f"MQTT URL {shown!r} needs a scheme, e.g. mqtt://{shown}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"MQTT URL {shown!r}: {redact_url(str(exc))}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"MQTT URL {shown!r}: unknown scheme {scheme!r} "
                         f"(use one of {', '.join(SCHEMES)})")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {shown!r} has no host")
    if port == 0:
        raise ValueError(f"MQTT URL {shown!r}: port 0 is not a broker port")
    default_port, tls, transport = SCHEMES[scheme]
    path: str | None = None
    if transport == "websockets":
        path = parts.path or DEFAULT_WS_PATH
        if parts.query:
            path += f"?{parts.query}"
    elif parts.path not in ("", "/") or parts.query:
        raise ValueError(f"MQTT URL {shown!r}: a {scheme}:// URL has no path or query "
                         "(only ws:// and wss:// do)")
    return BrokerAddress(host=parts.hostname, port=port or default_port, tls=tls,
                         username=unquote(parts.username) if parts.username else None,
                         password=unquote(parts.password) if parts.password is not None else None,
                         transport=transport, path=path)


def broker_address(cfg: MqttConfig, client: Literal["worker", "service"] = "worker") -> BrokerAddress:
    """The broker of a config: ``mqtt.url`` with ``username``/``password`` fields overriding the URL's.

    With ``url`` unset it is the embedded broker on ``127.0.0.1:<embedded_port>``.

    Args:
        cfg: the MQTT settings.
        client: ``"service"`` (the ticket service) logs in as ``service_username`` /
            ``service_password`` where they are set, so the broker ACL can tell it from the workers.

    Example:
        >>> from pipeline.config import MqttConfig
        >>> broker_address(MqttConfig(url="mqtt://a:b@h", password="c")).password
        'c'
        >>> broker_address(MqttConfig()).port
        1883
    """
    addr = parse_mqtt_url(cfg.url) if cfg.url else BrokerAddress("127.0.0.1", cfg.embedded_port, False)
    username = cfg.username if cfg.username is not None else addr.username
    password = cfg.password if cfg.password is not None else addr.password
    if client == "service" and cfg.service_username is not None:
        username, password = cfg.service_username, cfg.service_password
    elif client == "service" and cfg.service_password is not None:
        password = cfg.service_password
    return BrokerAddress(addr.host, addr.port, addr.tls, username, password, addr.transport, addr.path)


def configure_client(client: paho.Client, addr: BrokerAddress, cfg: MqttConfig) -> None:
    """Apply credentials, TLS and the WebSocket path of ``addr`` to a paho client.

    The client must have been built with ``transport=addr.transport``.
    """
    if addr.username is not None:
        client.username_pw_set(addr.username, addr.password)
    elif addr.password is not None:
        raise ValueError("MQTT password given without a user name")
    if addr.tls:
        client.tls_set(ca_certs=cfg.tls_ca)
        if cfg.tls_insecure:
            client.tls_insecure_set(True)
    if addr.transport == "websockets":
        client.ws_set_options(path=addr.path or DEFAULT_WS_PATH)
