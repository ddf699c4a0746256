"""Every MQTT topic between workers and the ticket service, built and parsed in one place.

``<prefix>`` is ``mqtt.topic_prefix`` (default ``gridwatch``, may have several levels, never a wildcard
or a leading ``$``). Grid codes, camera ids, zone ids and worker ids are single topic levels; every
builder raises ``ValueError`` for an empty level or one containing ``/``, ``+``, ``#`` or NUL.

:data:`TOPICS` lists each topic with its direction, QoS, retain flag and payload model (the table of
``docs/messages.md``); :func:`role_topic_filters` gives the filters each broker role may publish and
subscribe to (input of the broker ACL).

Example:
    >>> alert_topic("gridwatch", ["T1", "D1", "C1", "G1"], "cam1", "parking")
    'gridwatch/alerts/T1/D1/C1/G1/cam1/parking'
    >>> cell_subscription("gridwatch", ["T1", "D1", "C1", "G1"])
    'gridwatch/alerts/T1/D1/C1/G1/#'
    >>> parse_alert_topic("gridwatch/alerts/T1/D1/C1/G1/cam1/parking", "gridwatch")
    AlertTopic(grid_path=('T1', 'D1', 'C1', 'G1'), camera_id='cam1', hazard='parking')
    >>> debug_request_topic("gw", "cam1"), debug_reply_prefix("gw", "cam1")
    ('gw/debug/request/cam1', 'gw/debug/reply/cam1/')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

GRID_LEVELS = ("town", "district", "community", "cell")
"""The four grid levels, top down; an alert topic carries one code per level."""


# -- checks -------------------------------------------------------------------------------------


def check_level(value: str, what: str) -> str:
    """``value`` if it is a usable single topic level, else ValueError naming ``what``."""
    if not value or any(ch in value for ch in "/+#\x00"):
        raise ValueError(f"{what} {value!r} is not a valid MQTT topic level "
                         "(empty or contains '/', '+', '#')")
    return value


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a usable topic prefix (levels without wildcards, no leading ``$``)."""
    if not prefix or any(ch in prefix for ch in "+#\x00") or prefix.startswith("$"):
        raise ValueError(f"topic prefix {prefix!r} must be non-empty, without '+', '#' or a leading '$'")
    for level in prefix.split("/"):
        check_level(level, "topic prefix level")
    return prefix


def _grid_levels(grid_path: Sequence[str], min_levels: int) -> list[str]:
    if not min_levels <= len(grid_path) <= len(GRID_LEVELS):
        need = len(GRID_LEVELS) if min_levels == len(GRID_LEVELS) else f"{min_levels}..{len(GRID_LEVELS)}"
        raise ValueError(f"grid path needs {need} levels, got {list(grid_path)}")
    return [check_level(str(g), "grid code") for g in grid_path]


def _join(prefix: str, *levels: str) -> str:
    return "/".join([check_prefix(prefix), *levels])


# -- builders -------------------------------------------------------------------------------------


def alert_topic(prefix: str, grid_path: Sequence[str], camera_id: str, hazard: str) -> str:
    """``<prefix>/alerts/<l1>/<l2>/<l3>/<l4>/<camera>/<hazard>``.

    Raises:
        ValueError: ``grid_path`` is not four levels, or a level contains '/', '+' or '#'.
    """
    levels = _grid_levels(grid_path, len(GRID_LEVELS))
    return _join(prefix, "alerts", *levels, check_level(camera_id, "camera id"), check_level(str(hazard), "hazard"))


def cell_subscription(prefix: str, grid_path: Sequence[str]) -> str:
    """Subscription filter for every alert under a grid node (1..4 levels), e.g. ``.../T1/D1/#``."""
    return _join(prefix, "alerts", *_grid_levels(grid_path, 1), "#")


def status_topic(prefix: str, worker_id: str) -> str:
    """Retained worker status topic ``<prefix>/status/workers/<worker_id>``."""
    return _join(prefix, "status", "workers", check_level(worker_id, "worker id"))


def health_topic(prefix: str, camera_id: str) -> str:
    """Retained camera health topic ``<prefix>/health/<camera_id>``."""
    return _join(prefix, "health", check_level(camera_id, "camera id"))


def occupancy_topic(prefix: str, camera_id: str, zone_id: str) -> str:
    """Retained parking occupancy topic ``<prefix>/occupancy/<camera_id>/<zone_id>``."""
    return _join(prefix, "occupancy", check_level(camera_id, "camera id"), check_level(zone_id, "zone id"))


def debug_request_topic(prefix: str, camera_id: str) -> str:
    """``<prefix>/debug/request/<camera_id>``: the API asks for a camera's debug picture."""
    return _join(prefix, "debug", "request", check_level(camera_id, "camera id"))


def debug_reply_prefix(prefix: str, camera_id: str) -> str:
    """``<prefix>/debug/reply/<camera_id>/``: every valid ``reply_to`` of a request starts with it."""
    return _join(prefix, "debug", "reply", check_level(camera_id, "camera id")) + "/"


def debug_reply_topic(prefix: str, camera_id: str, request_id: str) -> str:
    """``<prefix>/debug/reply/<camera_id>/<request_id>``: where one request's JPEG comes back."""
    return debug_reply_prefix(prefix, camera_id) + check_level(request_id, "request id")


def check_request_topic(prefix: str, camera_id: str) -> str:
    """``<prefix>/check/request/<camera_id>``: the service asks the camera's worker to re-judge a zone."""
    return _join(prefix, "check", "request", check_level(camera_id, "camera id"))


def check_result_topic(prefix: str, camera_id: str) -> str:
    """``<prefix>/check/result/<camera_id>``: the worker's verdict (:mod:`pipeline.camera_check`)."""
    return _join(prefix, "check", "result", check_level(camera_id, "camera id"))


def camera_config_topic(prefix: str, camera_id: str) -> str:
    """Retained ``<prefix>/config/cameras/<camera_id>``: one camera's run-time config (empty = deleted)."""
    return _join(prefix, "config", "cameras", check_level(camera_id, "camera id"))


def camera_index_topic(prefix: str) -> str:
    """Retained ``<prefix>/config/index``: every camera id of the run-time config."""
    return _join(prefix, "config", "index")


def resend_request_topic(prefix: str, worker_id: str) -> str:
    """``<prefix>/resend/request/<worker_id>``: the service asks a worker to publish archived alerts again
    (:mod:`pipeline.contract.resend`)."""
    return _join(prefix, "resend", "request", check_level(worker_id, "worker id"))


def notify_topic(prefix: str, grid_path: Sequence[str]) -> str:
    """``<prefix>/notify/<l1>[/<l2>[/<l3>[/<l4>]]]``: notifications of one grid node (planned, issue 9)."""
    return _join(prefix, "notify", *_grid_levels(grid_path, 1))


# -- subscription filters -------------------------------------------------------------------------


def alert_filter(prefix: str, shared_group: str | None = None) -> str:
    """Every alert: ``<prefix>/alerts/#``, or ``$share/<group>/<prefix>/alerts/#`` with a shared group."""
    plain = _join(prefix, "alerts", "#")
    return f"$share/{check_level(shared_group, 'shared group')}/{plain}" if shared_group else plain


def health_filter(prefix: str) -> str:
    """Every camera's health: ``<prefix>/health/+``."""
    return _join(prefix, "health", "+")


def debug_request_filter(prefix: str) -> str:
    """Every debug request: ``<prefix>/debug/request/+`` (each worker answers for its own cameras)."""
    return _join(prefix, "debug", "request", "+")


def debug_reply_filter(prefix: str) -> str:
    """Every debug reply: ``<prefix>/debug/reply/#``."""
    return _join(prefix, "debug", "reply", "#")


def check_request_filter(prefix: str) -> str:
    """Every camera check request: ``<prefix>/check/request/+`` (each worker answers for its own cameras)."""
    return _join(prefix, "check", "request", "+")


def camera_config_filter(prefix: str) -> str:
    """Every camera's run-time config: ``<prefix>/config/cameras/+`` (a worker keeps its shard's)."""
    return _join(prefix, "config", "cameras", "+")


# -- parsers --------------------------------------------------------------------------------------


def topic_levels(topic: str, prefix: str, kind: str) -> list[str] | None:
    """Levels after ``<prefix>/<kind>/`` of ``topic``, or None when it is not under that branch.

    Example:
        >>> topic_levels("gw/health/cam1", "gw", "health"), topic_levels("gw/alerts/x", "gw", "health")
        (['cam1'], None)
    """
    head = [*prefix.split("/"), kind]
    levels = topic.split("/")
    if levels[: len(head)] != head:
        return None
    return levels[len(head):]


@dataclass(frozen=True)
class AlertTopic:
    """The levels of an alert topic."""

    grid_path: tuple[str, ...]
    camera_id: str
    hazard: str


def parse_alert_topic(topic: str, prefix: str) -> AlertTopic | None:
    """The grid path, camera and hazard of an alert topic; None when ``topic`` is not one."""
    levels = topic_levels(topic, prefix, "alerts")
    if levels is None or len(levels) != len(GRID_LEVELS) + 2 or not all(levels):
        return None
    return AlertTopic(tuple(levels[:4]), levels[4], levels[5])


def parse_single_level(topic: str, prefix: str, kind: str) -> str | None:
    """The one level after ``<prefix>/<kind>/`` (``kind`` may be ``"debug/request"``); None otherwise.

    Example:
        >>> parse_single_level("gw/health/cam1", "gw", "health"), parse_single_level("gw/health/a/b", "gw", "health")
        ('cam1', None)
    """
    head = [*prefix.split("/"), *kind.split("/")]
    levels = topic.split("/")
    if len(levels) != len(head) + 1 or levels[: len(head)] != head or not levels[-1]:
        return None
    return levels[-1]


def parse_health_topic(topic: str, prefix: str) -> str | None:
    """The camera id of ``<prefix>/health/<camera_id>``; None when ``topic`` is not one."""
    return parse_single_level(topic, prefix, "health")


def parse_debug_request_topic(topic: str, prefix: str) -> str | None:
    """The camera id of ``<prefix>/debug/request/<camera_id>``; None when ``topic`` is not one."""
    return parse_single_level(topic, prefix, "debug/request")


def parse_resend_request_topic(topic: str, prefix: str) -> str | None:
    """The worker id of ``<prefix>/resend/request/<worker_id>``; None when ``topic`` is not one."""
    return parse_single_level(topic, prefix, "resend/request")


def status_filter(prefix: str) -> str:
    """Every worker's retained status: ``<prefix>/status/workers/+``."""
    return _join(prefix, "status", "workers", "+")


def parse_status_topic(topic: str, prefix: str) -> str | None:
    """The worker id of ``<prefix>/status/workers/<worker_id>``; None when ``topic`` is not one."""
    return parse_single_level(topic, prefix, "status/workers")


def parse_check_request_topic(topic: str, prefix: str) -> str | None:
    """The camera id of ``<prefix>/check/request/<camera_id>``; None when ``topic`` is not one."""
    return parse_single_level(topic, prefix, "check/request")


def parse_camera_config_topic(topic: str, prefix: str) -> str | None:
    """The camera id of ``<prefix>/config/cameras/<camera_id>``; None when ``topic`` is not one."""
    return parse_single_level(topic, prefix, "config/cameras")


def valid_debug_reply_to(reply_to: str, prefix: str, camera_id: str) -> bool:
    """Whether ``reply_to`` is ``<prefix>/debug/reply/<camera_id>/<one level>`` (a worker answers nowhere else)."""
    head = debug_reply_prefix(prefix, camera_id)
    rest = reply_to.removeprefix(head)
    return rest != reply_to and bool(rest) and not any(ch in rest for ch in "/+#\x00")


# -- the topic table and the broker roles ---------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the contract (a row of the table in ``docs/messages.md``).

    Attributes:
        pattern: the topic with placeholders, under ``<prefix>/``.
        sender: who publishes it (``worker``, ``service``, ``broker``).
        receivers: who subscribes.
        qos: QoS of the messages (alerts: ``mqtt.qos``, default 1).
        retained: whether messages are retained.
        payload: the message model's name (or the raw payload's kind).
        planned: True while nobody publishes it yet.
    """

    pattern: str
    sender: str
    receivers: str
    qos: int
    retained: bool
    payload: str
    planned: bool = False


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("alerts/<town>/<district>/<community>/<cell>/<camera_id>/<hazard>", "worker",
              "service, patrol", 1, False, "AlertV1"),
    TopicSpec("health/<camera_id>", "worker", "service", 1, True, "CameraHealthV1"),
    TopicSpec("occupancy/<camera_id>/<zone_id>", "worker", "dashboards", 1, True, "OccupancyV1"),
    TopicSpec("status/workers/<worker_id>", "worker (broker: last will)", "service", 1, True, "WorkerStatusV1"),
    TopicSpec("debug/request/<camera_id>", "service", "worker", 0, False, "DebugRequestV1"),
    TopicSpec("debug/reply/<camera_id>/<request_id>", "worker", "service", 0, False, "JPEG bytes (empty: none)"),
    TopicSpec("check/request/<camera_id>", "service", "worker", 1, False, "CameraCheckRequestV1"),
    TopicSpec("check/result/<camera_id>", "worker", "service", 1, False, "CameraCheckResultV1"),
    TopicSpec("config/cameras/<camera_id>", "service", "worker", 1, True, "CameraConfigV1 (empty: deleted)"),
    TopicSpec("config/index", "service", "worker", 1, True, "CameraIndexV1"),
    TopicSpec("resend/request/<worker_id>", "service", "worker", 1, False, "ResendRequestV1"),
    TopicSpec("notify/<grid path, 1..4 levels>", "service", "patrol, dispatchers", 1, False, "NotificationV1",
              planned=True),
)
"""Every topic between workers, the ticket service and patrol users."""


class BrokerRole(StrEnum):
    """Who connects to the broker."""

    WORKER = "worker"
    SERVICE = "service"
    PATROL = "patrol"


@dataclass(frozen=True)
class TopicGrants:
    """Topic filters a role may publish to and subscribe to (MQTT wildcards allowed)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def role_topic_filters(role: BrokerRole | str, prefix: str,
                       grid_paths: Sequence[Sequence[str]] = ()) -> TopicGrants:
    """The topic filters a broker role needs, for an ACL (e.g. Mosquitto ``topic read|write <filter>``).

    * ``worker``: publishes alerts, health, occupancy, its status (also its last will) and debug replies
      and camera check results; subscribes to debug and check requests and the run-time camera config.
    * ``service``: subscribes to alerts, health, worker status, debug replies and check results;
      publishes debug requests, check requests, the run-time camera config (and, planned, notifications).
    * ``patrol``: subscribes to the alerts and notifications under each of its ``grid_paths`` (1..4
      levels each: a cell, or a community for a supervisor); publishes nothing.

    A shared subscription (``$share/<group>/<filter>``) is granted by the plain filter on Mosquitto 2
    (checked with 2.0.11: ``topic read gw/alerts/#`` delivers to ``$share/g/gw/alerts/#``); check other
    brokers.

    Args:
        role: which role.
        prefix: the topic prefix.
        grid_paths: the patrol user's grid nodes (required for ``patrol``, ignored otherwise).

    Raises:
        ValueError: unknown role, a patrol role without grid paths, or a bad prefix/grid code.

    Example:
        >>> role_topic_filters("patrol", "gw", [["T1", "D1", "C1", "G1"]])
        TopicGrants(publish=(), subscribe=('gw/alerts/T1/D1/C1/G1/#', 'gw/notify/T1/D1/C1/G1/#'))
    """
    role = BrokerRole(role)
    p = check_prefix(prefix)
    if role is BrokerRole.WORKER:
        return TopicGrants(
            publish=(f"{p}/alerts/#", f"{p}/health/+", f"{p}/occupancy/#", f"{p}/status/workers/+",
                     f"{p}/debug/reply/#", f"{p}/check/result/+"),
            subscribe=(f"{p}/debug/request/+", f"{p}/check/request/+", f"{p}/config/cameras/+",
                       f"{p}/config/index", f"{p}/resend/request/+"))
    if role is BrokerRole.SERVICE:
        return TopicGrants(
            publish=(f"{p}/debug/request/+", f"{p}/check/request/+", f"{p}/notify/#", f"{p}/config/cameras/+",
                     f"{p}/config/index", f"{p}/resend/request/+"),
            subscribe=(f"{p}/alerts/#", f"{p}/health/+", f"{p}/status/workers/+", f"{p}/debug/reply/#",
                       f"{p}/check/result/+"))
    if not grid_paths:
        raise ValueError("a patrol role needs at least one grid path")
    subscribe: list[str] = []
    for path in grid_paths:
        subscribe += [cell_subscription(p, path), _join(p, "notify", *_grid_levels(path, 1), "#")]
    return TopicGrants(publish=(), subscribe=tuple(subscribe))
