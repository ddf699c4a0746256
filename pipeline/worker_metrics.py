"""Prometheus metrics of a detection worker, refreshed from camera health and publisher stats."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

_CAMERA_COUNTERS = ("frames_decoded", "frames_analysed", "frames_dropped", "frames_skipped", "reconnects",
                    "decode_errors", "truncated_loops", "frames_gated", "frames_detected")
# Per-camera values of the decode plan (None in the health: not yet measured, exported as NaN).
_CAMERA_VALUES = {"analysis_fps": "Frames/s handed to analysis in the effective decode mode",
                  "keyframe_interval_s": "Measured key-frame interval (s)", "fps": "Measured stream frame rate"}


class WorkerMetrics:
    """Gauges on a private registry (several workers or tests in one process never collide).

    Example:
        >>> m = WorkerMetrics("w1")
        >>> m.update([{"camera_id": "c1", "state": "streaming", "frames_decoded": 5}], {"pending": 2})
        >>> m.registry.get_sample_value("gridwatch_outbox_pending", {"worker": "w1"})
        2.0
    """

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.registry = CollectorRegistry()
        self._cameras: set[str] = set()  # cameras with label sets now (a removed one's are taken out)
        self._camera = {name: Gauge(f"gridwatch_camera_{name}", f"Camera {name.replace('_', ' ')} (running total)",
                                    ["worker", "camera"], registry=self.registry) for name in _CAMERA_COUNTERS}
        self._up = Gauge("gridwatch_camera_streaming", "1 while the camera is streaming", ["worker", "camera"],
                         registry=self.registry)
        self._error = Gauge("gridwatch_camera_error", "1 while the camera is in `error` (see last_error: e.g. a "
                            "still image, a missing file)", ["worker", "camera"], registry=self.registry)
        self._short = Gauge("gridwatch_camera_rate_shortfall", "1 while the decode mode cannot give a hazard the "
                            "frames/s it needs (see rate_warning)", ["worker", "camera"], registry=self.registry)
        self._values = {name: Gauge(f"gridwatch_camera_{name}", text, ["worker", "camera"], registry=self.registry)
                        for name, text in _CAMERA_VALUES.items()}
        self._pending = Gauge("gridwatch_outbox_pending", "Alerts waiting in the durable outbox", ["worker"],
                              registry=self.registry)
        self._published = Gauge("gridwatch_alerts_published", "Alerts acknowledged by the broker", ["worker"],
                                 registry=self.registry)
        self._connected = Gauge("gridwatch_mqtt_connected", "1 while connected to the broker", ["worker"],
                                registry=self.registry)
        self._checks = Gauge("gridwatch_camera_checks", "Camera check results published, by outcome (running "
                             "total)", ["worker", "outcome"], registry=self.registry)
        self._checks_refused = Gauge("gridwatch_camera_checks_refused", "Camera check requests that could not be "
                                     "read or answered (running total)", ["worker"], registry=self.registry)
        self._checks_running = Gauge("gridwatch_camera_checks_running", "Camera checks running now", ["worker"],
                                     registry=self.registry)
        self._resend = Gauge("gridwatch_worker_resend", "Resend requests answered (requests, refused, duplicate, "
                             "throttled) and archived alerts queued again (resent) or no longer archived "
                             "(not_archived), running totals", ["worker", "what"], registry=self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` over HTTP in a background thread."""
        start_http_server(port, addr=host, registry=self.registry)

    def _camera_gauges(self) -> list[Gauge]:
        return [*self._camera.values(), self._up, self._error, self._short, *self._values.values()]

    def forget_camera(self, camera_id: str) -> None:
        """Take every label set of ``camera_id`` out (a camera removed at run time leaves no stale series)."""
        self._cameras.discard(camera_id)
        for gauge in self._camera_gauges():
            with contextlib.suppress(KeyError):  # never reported yet
                gauge.remove(self.worker_id, camera_id)

    def update(self, cameras: list[dict[str, Any]], publisher: dict[str, Any],
               checks: dict[str, Any] | None = None, resend: dict[str, int] | None = None) -> None:
        """Set the gauges from the health of the cameras running now; cameras missing from ``cameras`` (removed
        since the last update) lose their label sets."""
        running = {str(h["camera_id"]) for h in cameras}
        for gone in self._cameras - running:
            self.forget_camera(gone)
        self._cameras = running
        for h in cameras:
            cam = str(h["camera_id"])
            for name, gauge in self._camera.items():
                gauge.labels(self.worker_id, cam).set(float(h.get(name) or 0))
            self._up.labels(self.worker_id, cam).set(1.0 if h.get("state") == "streaming" else 0.0)
            self._error.labels(self.worker_id, cam).set(1.0 if h.get("state") == "error" else 0.0)
            self._short.labels(self.worker_id, cam).set(1.0 if h.get("rate_warning") else 0.0)
            for name, value_gauge in self._values.items():
                value = h.get(name)
                value_gauge.labels(self.worker_id, cam).set(float("nan") if value is None else float(value))
        self._pending.labels(self.worker_id).set(float(publisher.get("pending") or 0))
        self._published.labels(self.worker_id).set(float(publisher.get("published") or 0))
        self._connected.labels(self.worker_id).set(1.0 if publisher.get("connected") else 0.0)
        if checks is not None:  # CheckResponder.stats()
            for outcome, n in checks["outcomes"].items():
                self._checks.labels(self.worker_id, outcome).set(float(n))
            self._checks_refused.labels(self.worker_id).set(float(checks["refused"]))
            self._checks_running.labels(self.worker_id).set(float(checks["running"]))
        for what, n in (resend or {}).items():  # ResendResponder.stats()
            self._resend.labels(self.worker_id, what).set(float(n))
