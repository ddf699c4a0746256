"""Alerts: versioned payload, durable MQTT publisher, evidence files, embedded broker.

Names are imported lazily so that ``import pipeline.alerts.schema`` (used by the ticket consumer)
does not pull in OpenCV or paho.

Example:
    >>> from pipeline.alerts import alert_topic
    >>> alert_topic("gw", ["T1", "D1", "C1", "G1"], "cam1", "fire")
    'gw/alerts/T1/D1/C1/G1/cam1/fire'
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AlertV1": "schema", "Evidence": "schema", "alert_topic": "schema", "build_alert": "schema",
    "cell_subscription": "schema", "health_topic": "schema", "status_topic": "schema",
    "Outbox": "outbox", "OutboxItem": "outbox",
    "MqttPublisher": "publisher", "parse_mqtt_url": "publisher",
    "EvidenceWriter": "evidence",
    "EmbeddedBroker": "broker",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'pipeline.alerts' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pipeline.alerts.{mod}"), name)
