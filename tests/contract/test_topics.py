"""Topic builders, parsers, the topic table and the per-role filters of the broker ACL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub

from pipeline.contract import topics as t
from pipeline.contract.enums import Hazard

REPO = Path(__file__).resolve().parents[2]
CELL = ["T1", "D1", "C1", "G1"]


def test_builders_keep_the_wire_topics() -> None:
    assert t.alert_topic("gridwatch", CELL, "cam1", "parking") == "gridwatch/alerts/T1/D1/C1/G1/cam1/parking"
    assert t.health_topic("city/gw", "cam1") == "city/gw/health/cam1"
    assert t.status_topic("gw", "w1") == "gw/status/workers/w1"
    assert t.occupancy_topic("gridwatch", "lot", "bays") == "gridwatch/occupancy/lot/bays"
    assert t.debug_request_topic("gw", "cam1") == "gw/debug/request/cam1"
    assert t.debug_reply_topic("gw", "cam1", "abc") == "gw/debug/reply/cam1/abc"
    assert t.check_request_topic("gw", "cam1") == "gw/check/request/cam1"
    assert t.check_result_topic("gw", "cam1") == "gw/check/result/cam1"
    assert t.notify_topic("gw", ["T1", "D1"]) == "gw/notify/T1/D1"
    assert t.alert_filter("gw") == "gw/alerts/#"
    assert t.alert_filter("gw", "gridwatch-api") == "$share/gridwatch-api/gw/alerts/#"
    assert t.health_filter("gw") == "gw/health/+"


@pytest.mark.parametrize("build", [
    lambda: t.occupancy_topic("gw", "cam1", "z/1"),
    lambda: t.debug_request_topic("gw", "cam+"),
    lambda: t.debug_reply_topic("gw", "cam1", "a#"),
    lambda: t.check_request_topic("$SYS", "cam1"),
    lambda: t.notify_topic("gw", []),
    lambda: t.notify_topic("gw", [*CELL, "X"]),
    lambda: t.alert_filter("gw", "a/b"),
    lambda: t.health_topic("gw", ""),
])
def test_builders_refuse_bad_levels(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("prefix", ["gw", "city/gw"])
def test_parsers_invert_the_builders(prefix: str) -> None:
    for hazard in Hazard:
        topic = t.alert_topic(prefix, CELL, "cam-9", hazard.value)
        assert t.parse_alert_topic(topic, prefix) == t.AlertTopic(tuple(CELL), "cam-9", hazard.value)
        assert topic_matches_sub(t.alert_filter(prefix), topic)
    assert t.parse_health_topic(t.health_topic(prefix, "cam1"), prefix) == "cam1"
    assert t.parse_debug_request_topic(t.debug_request_topic(prefix, "cam1"), prefix) == "cam1"
    assert t.valid_debug_reply_to(t.debug_reply_topic(prefix, "cam1", "r1"), prefix, "cam1")


@pytest.mark.parametrize("topic", [
    "gw/alerts/T1/D1/C1/cam1/fire",            # three grid levels
    "gw/alerts/T1/D1/C1/G1/cam1/fire/extra",
    "gw/alerts/T1/D1/C1/G1//fire",
    "other/alerts/T1/D1/C1/G1/cam1/fire",
    "gw/health/cam1",
])
def test_parse_alert_topic_refuses(topic: str) -> None:
    assert t.parse_alert_topic(topic, "gw") is None


def test_single_level_parsers_refuse_other_shapes() -> None:
    assert t.parse_health_topic("gw/health/a/b", "gw") is None
    assert t.parse_health_topic("gw/health/", "gw") is None
    assert t.parse_health_topic("gw/healthy/a", "gw") is None
    assert t.parse_debug_request_topic("gw/debug/reply/cam1", "gw") is None


@pytest.mark.parametrize(("reply_to", "ok"), [
    ("gw/debug/reply/cam1/abc", True),
    ("gw/debug/reply/cam1/", False),
    ("gw/debug/reply/cam2/abc", False),            # another camera's reply
    ("gw/debug/reply/cam1/a/b", False),
    ("gw/debug/reply/cam1/#", False),
    ("gw/alerts/T1/D1/C1/G1/cam1/fire", False),    # a worker must never publish an answer there
])
def test_debug_reply_to_is_checked(reply_to: str, ok: bool) -> None:
    assert t.valid_debug_reply_to(reply_to, "gw", "cam1") is ok


def _matches_any(filters: tuple[str, ...], topic: str) -> bool:
    return any(topic_matches_sub(f, topic) for f in filters)


def test_camera_config_topics_and_grants() -> None:
    assert t.camera_config_topic("gw", "cam1") == "gw/config/cameras/cam1"
    assert t.camera_index_topic("city/gw") == "city/gw/config/index"
    assert t.parse_camera_config_topic("gw/config/cameras/cam1", "gw") == "cam1"
    assert t.parse_camera_config_topic("gw/config/index", "gw") is None
    assert topic_matches_sub(t.camera_config_filter("gw"), t.camera_config_topic("gw", "cam-9"))
    worker, service = t.role_topic_filters("worker", "gw"), t.role_topic_filters("service", "gw")
    for topic in (t.camera_config_topic("gw", "cam1"), t.camera_index_topic("gw")):
        assert _matches_any(worker.subscribe, topic) and _matches_any(service.publish, topic)
        assert not _matches_any(worker.publish, topic)  # a worker cannot rewrite another camera's config
    patrol = t.role_topic_filters("patrol", "gw", [CELL])
    assert not _matches_any(patrol.subscribe, t.camera_config_topic("gw", "cam1"))  # URLs carry credentials
    with pytest.raises(ValueError):
        t.camera_config_topic("gw", "a/b")


def test_worker_grants_cover_what_a_worker_sends_and_nothing_of_the_service() -> None:
    g = t.role_topic_filters("worker", "gw")
    for topic in (t.alert_topic("gw", CELL, "cam1", "fire"), t.health_topic("gw", "cam1"),
                  t.occupancy_topic("gw", "lot", "bays"), t.status_topic("gw", "w1"),
                  t.debug_reply_topic("gw", "cam1", "r"), t.check_result_topic("gw", "cam1")):
        assert _matches_any(g.publish, topic), topic
    assert _matches_any(g.subscribe, t.debug_request_topic("gw", "cam1"))
    assert _matches_any(g.subscribe, t.check_request_topic("gw", "cam1"))
    for topic in (t.debug_request_topic("gw", "cam1"), t.notify_topic("gw", CELL), t.check_request_topic("gw", "c")):
        assert not _matches_any(g.publish, topic), topic
    assert not _matches_any(g.subscribe, t.alert_topic("gw", CELL, "cam1", "fire"))


def test_service_grants() -> None:
    g = t.role_topic_filters(t.BrokerRole.SERVICE, "gw")
    for topic in (t.alert_topic("gw", CELL, "cam1", "fire"), t.health_topic("gw", "cam1"),
                  t.status_topic("gw", "w1"), t.debug_reply_topic("gw", "cam1", "r"),
                  t.check_result_topic("gw", "cam1")):
        assert _matches_any(g.subscribe, topic), topic
    for topic in (t.debug_request_topic("gw", "cam1"), t.check_request_topic("gw", "cam1"),
                  t.notify_topic("gw", ["T1"]), t.notify_topic("gw", CELL)):
        assert _matches_any(g.publish, topic), topic
    assert not _matches_any(g.publish, t.alert_topic("gw", CELL, "cam1", "fire"))  # no fake alerts


def test_patrol_grants_are_their_cells_only() -> None:
    g = t.role_topic_filters("patrol", "gw", [CELL, ["T1", "D2"]])
    assert g.publish == ()
    assert _matches_any(g.subscribe, t.alert_topic("gw", CELL, "cam1", "fire"))
    assert _matches_any(g.subscribe, t.alert_topic("gw", ["T1", "D2", "C7", "G9"], "cam7", "parking"))
    assert not _matches_any(g.subscribe, t.alert_topic("gw", ["T1", "D1", "C1", "G2"], "cam2", "fire"))
    assert not _matches_any(g.subscribe, t.alert_topic("gw", ["T1", "D1", "C1", "G10"], "cam2", "fire"))
    assert _matches_any(g.subscribe, t.notify_topic("gw", CELL))
    assert not _matches_any(g.subscribe, t.notify_topic("gw", ["T1", "D1", "C1"]))  # the community's own
    assert not _matches_any(g.subscribe, t.health_topic("gw", "cam1"))
    with pytest.raises(ValueError):
        t.role_topic_filters("patrol", "gw")
    with pytest.raises(ValueError):
        t.role_topic_filters("admin", "gw")


def test_docs_table_lists_every_topic() -> None:
    doc = (REPO / "docs" / "messages.md").read_text(encoding="utf-8")
    for spec in t.TOPICS:
        assert f"`<prefix>/{spec.pattern}`" in doc, spec.pattern
        assert spec.payload.split(" ")[0] in doc


def test_topic_table_patterns_match_the_builders() -> None:
    built = {
        "alerts": t.alert_topic("gw", CELL, "c", "fire"), "health": t.health_topic("gw", "c"),
        "occupancy": t.occupancy_topic("gw", "c", "z"), "status": t.status_topic("gw", "w"),
        "debug/request": t.debug_request_topic("gw", "c"), "debug/reply": t.debug_reply_topic("gw", "c", "r"),
        "check/request": t.check_request_topic("gw", "c"), "check/result": t.check_result_topic("gw", "c"),
        "resend/request": t.resend_request_topic("gw", "w"),
        "notify": t.notify_topic("gw", CELL), "config/cameras": t.camera_config_topic("gw", "c"),
        "config/index": t.camera_index_topic("gw"),
    }
    for spec in t.TOPICS:
        kind = next(k for k in sorted(built, key=len, reverse=True) if spec.pattern.startswith(k))
        pattern = re.sub(r"<[^>]*>", "+", spec.pattern.replace("<grid path, 1..4 levels>", "#"))
        assert topic_matches_sub(f"gw/{pattern}", built[kind]), spec
