"""The contract between workers and the ticket service: versioned message models and MQTT topics.

A leaf package: it imports pydantic and the standard library, nothing else of ``pipeline``, so the
worker, the ticket service, scripts and the broker ACL generator can all depend on it.

* :mod:`~pipeline.contract.enums`: ``Hazard``, ``IncidentEvent``.
* :mod:`~pipeline.contract.ids`: the config-id and safe-id patterns (written once).
* :mod:`~pipeline.contract.messages`: ``AlertV1``, ``CameraHealthV1``, ``OccupancyV1``, ``WorkerStatusV1``,
  ``DebugRequestV1``.
* :mod:`~pipeline.contract.casework`: planned (issue 9, not sent yet) ``CameraCheckRequestV1``,
  ``CameraCheckResultV1``, ``NotificationV1``.
* :mod:`~pipeline.contract.camera_config`: ``CameraConfigV1``, ``CameraIndexV1`` (retained run-time camera config).
* :mod:`~pipeline.contract.webhook`: ``WebhookEventV1``, the body of a ``json`` webhook delivery (HTTP, not MQTT).
* :mod:`~pipeline.contract.topics`: topic builders, parsers, subscription filters, :data:`TOPICS` and
  :func:`role_topic_filters` (per broker role, for ACLs).
* :mod:`~pipeline.contract.schemas`: JSON Schema of every message (``docs/messages/``).

Example:
    >>> from pipeline.contract import AlertV1, alert_topic
    >>> alert_topic("gw", ["T1", "D1", "C1", "G1"], "cam1", "fire")
    'gw/alerts/T1/D1/C1/G1/cam1/fire'
"""

from __future__ import annotations

from pipeline.contract.camera_config import CameraConfigV1, CameraIndexV1
from pipeline.contract.casework import CameraCheckRequestV1, CameraCheckResultV1, NotificationV1
from pipeline.contract.enums import Hazard, IncidentEvent
from pipeline.contract.ids import CONFIG_ID_PATTERN, SAFE_ID_MAX_LENGTH, SAFE_ID_PATTERN, SAFE_ID_RE, is_safe_id
from pipeline.contract.messages import (
    AlertBox,
    AlertV1,
    CameraHealthV1,
    CameraRef,
    DebugRequestV1,
    Evidence,
    GridRef,
    OccupancyV1,
    WorkerStatusV1,
    ZoneRef,
)
from pipeline.contract.topics import (
    GRID_LEVELS,
    TOPICS,
    AlertTopic,
    BrokerRole,
    TopicGrants,
    TopicSpec,
    alert_filter,
    alert_topic,
    camera_config_filter,
    camera_config_topic,
    camera_index_topic,
    cell_subscription,
    check_request_topic,
    check_result_topic,
    debug_reply_filter,
    debug_reply_prefix,
    debug_reply_topic,
    debug_request_filter,
    debug_request_topic,
    health_filter,
    health_topic,
    notify_topic,
    occupancy_topic,
    parse_alert_topic,
    parse_camera_config_topic,
    parse_debug_request_topic,
    parse_health_topic,
    role_topic_filters,
    status_topic,
    topic_levels,
    valid_debug_reply_to,
)

__all__ = [
    "CONFIG_ID_PATTERN", "GRID_LEVELS", "SAFE_ID_MAX_LENGTH", "SAFE_ID_PATTERN", "SAFE_ID_RE", "TOPICS",
    "AlertBox", "AlertTopic", "AlertV1", "BrokerRole", "CameraCheckRequestV1", "CameraCheckResultV1",
    "CameraConfigV1", "CameraHealthV1", "CameraIndexV1", "CameraRef", "DebugRequestV1", "Evidence", "GridRef",
    "Hazard", "IncidentEvent",
    "NotificationV1", "OccupancyV1", "TopicGrants", "TopicSpec", "WorkerStatusV1", "ZoneRef",
    "alert_filter", "alert_topic", "camera_config_filter", "camera_config_topic", "camera_index_topic",
    "cell_subscription", "check_request_topic", "check_result_topic",
    "debug_reply_filter", "debug_reply_prefix", "debug_reply_topic", "debug_request_filter",
    "debug_request_topic", "health_filter", "health_topic", "is_safe_id", "notify_topic", "occupancy_topic",
    "parse_alert_topic", "parse_camera_config_topic", "parse_debug_request_topic", "parse_health_topic",
    "role_topic_filters",
    "status_topic", "topic_levels", "valid_debug_reply_to",
]
