"""Pydantic models of the site YAML: grid, cameras, zones, hazard rules, detectors, MQTT, API.

Every option carries a description; ``gridwatch schema`` prints the JSON Schema built from them and
``gridwatch check-config`` reports every error with its path in the file.

Example:
    >>> cfg = SiteConfig.model_validate({
    ...     "grid": [{"code": "T1", "name": "Town", "children": [{"code": "D1", "name": "Dist",
    ...       "children": [{"code": "C1", "name": "Comm", "children": [{"code": "G1", "name": "Cell"}]}]}]}],
    ...     "cameras": [{"id": "cam1", "url": "clip.mp4", "grid": "G1"}],
    ... })
    >>> cfg.grid_path("G1")
    ['T1', 'D1', 'C1', 'G1']
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from pipeline.analyze.incident import Hazard
from pipeline.config_casework import CaseworkConfig

# Re-exported (their home is pipeline.config_checks, which must not import this module).
from pipeline.config_checks import GRID_LEVELS as GRID_LEVELS
from pipeline.config_checks import camera_grid_errors as camera_grid_errors
from pipeline.config_motion import MotionGateConfig
from pipeline.config_resident import ResidentConfig
from pipeline.config_webhooks import WebhooksConfig
from pipeline.contract.ids import CONFIG_ID_PATTERN
from pipeline.scenes.config import SceneConfig, scene_errors


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GridNode(_Model):
    """One node of the four-level grid tree: town -> district -> community -> micro-grid cell."""

    code: str = Field(description="Short unique code, used as an MQTT topic level (no '/', '+', '#').",
                      pattern=CONFIG_ID_PATTERN)
    name: str = Field(description="Human-readable name, e.g. 'Xinhua Community'.")
    patrol: str | None = Field(default=None, description="Patrol worker or team responsible (cells only).")
    children: list[GridNode] = Field(default_factory=list, description="Sub-nodes one level down.")


class DecodeMode(StrEnum):
    """Which frames a camera reader decodes (see ``CameraConfig.decode``)."""

    AUTO = "auto"
    KEYFRAMES = "keyframes"
    INTERVAL = "interval"


class ZoneKind(StrEnum):
    NO_PARKING = "no_parking"
    PARKING = "parking"
    FIRE_LANE = "fire_lane"
    CORRIDOR = "corridor"
    STAIRWELL = "stairwell"
    WALL = "wall"
    AREA = "area"


Point = Annotated[list[float], Field(min_length=2, max_length=2)]


class RuleOverride(_Model):
    """Per-zone override of a hazard rule; unset fields inherit the site-wide rule."""

    min_confidence: float | None = Field(default=None, ge=0, le=1, description="Override of min_confidence.")
    dwell_seconds: float | None = Field(default=None, ge=0, description="Override of dwell_seconds.")
    confirm_k: int | None = Field(default=None, ge=1, description="Override of confirm_k.")
    confirm_n: int | None = Field(default=None, ge=1, description="Override of confirm_n.")
    cooldown_seconds: float | None = Field(default=None, ge=0, description="Override of cooldown_seconds.")
    clear_seconds: float | None = Field(default=None, ge=0, description="Override of clear_seconds.")
    classes: list[str] | None = Field(default=None, description="Override of classes.")


class ZoneConfig(_Model):
    """A polygon on one camera's image where hazards are judged."""

    id: str = Field(description="Zone id, unique within its camera.", pattern=CONFIG_ID_PATTERN)
    name: str | None = Field(default=None, description="Human-readable name.")
    kind: ZoneKind = Field(description="What the area is; decides which hazards make sense there.")
    polygon: list[Point] = Field(description="Vertices [x, y] in normalised 0..1 image coordinates.")
    hazards: list[Hazard] = Field(default_factory=list,
                                  description="Hazards judged in this zone; empty = the kind's defaults.")
    crop: bool = Field(default=False, description="Run the detector on this zone's bounding region at full "
                       "resolution (for small, distant objects) instead of the whole frame.")
    overrides: dict[Hazard, RuleOverride] = Field(default_factory=dict,
                                                  description="Per-hazard rule overrides for this zone.")
    capacity: int | None = Field(default=None, ge=0, description="Parking spaces in a `parking` zone.")

    @field_validator("polygon")
    @classmethod
    def _check_polygon(cls, v: list[list[float]]) -> list[list[float]]:
        if len(v) < 3:
            raise ValueError("needs at least 3 points")
        for x, y in v:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"point [{x}, {y}] is outside 0..1 (coordinates are normalised)")
        return v

    def effective_hazards(self) -> list[Hazard]:
        if self.hazards:
            return list(self.hazards)
        return list(ZONE_DEFAULT_HAZARDS.get(self.kind, ()))


ZONE_DEFAULT_HAZARDS: dict[ZoneKind, tuple[Hazard, ...]] = {
    ZoneKind.NO_PARKING: (Hazard.PARKING,),
    ZoneKind.FIRE_LANE: (Hazard.PARKING, Hazard.CLUTTER),
    ZoneKind.CORRIDOR: (Hazard.CLUTTER,),
    ZoneKind.STAIRWELL: (Hazard.CLUTTER,),
    ZoneKind.WALL: (Hazard.POSTER,),
    ZoneKind.PARKING: (),
    ZoneKind.AREA: (),
}


class CameraConfig(_Model):
    """One camera (or a video file looped as a camera)."""

    id: str = Field(description="Camera id, unique in the site; used as an MQTT topic level.",
                    pattern=CONFIG_ID_PATTERN)
    name: str | None = Field(default=None, description="Human-readable name.")
    url: str = Field(description="rtsp://, rtmp://, http(s):// stream URL, or a local video file path "
                     "(looped and paced at real time). Relative paths resolve against the config file.")
    grid: str = Field(description="Code of the micro-grid cell (level 4) the camera watches.")
    enabled: bool = Field(default=True, description="Set false to keep the camera configured but idle.")
    decode: DecodeMode = Field(default=DecodeMode.AUTO,
                               description="`auto`: key frames only while they come often enough for the "
                               "camera's hazards (`hazards.<h>.min_analysis_fps`, fire 2/s), otherwise decode "
                               "all and analyse max(`max_fps`, that need) frames/s; the key-frame interval is "
                               "measured from the stream. `keyframes`: decode only key frames (cheapest; one "
                               "frame per GOP). `interval`: decode all and analyse at most `max_fps` frames/s.")
    max_fps: float = Field(default=2.0, gt=0, le=60,
                           description="Max analysed frames/s in `interval` and `auto` modes (in `auto` the "
                           "hazards' `min_analysis_fps` may raise it); `keyframes` analyses every key frame.")
    analysis_interval: float = Field(default=0.0, ge=0,
                                     description="Minimum seconds between analysed frames (0 = every "
                                     "decoded frame the mode yields).")
    zones: list[ZoneConfig] = Field(default_factory=list, description="Zones drawn on this camera.")
    hazards: list[Hazard] = Field(default_factory=list,
                                  description="Hazards judged on the whole frame (e.g. `fire`), besides zones.")
    motion_gate: MotionGateConfig | None = Field(
        default=None, description="This camera's motion gate (replaces `worker.motion_gate` whole); unset = the "
        "worker's. See docs/detectors.md.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        from pipeline.config_checks import check_camera_url

        return check_camera_url(v)

    def used_hazards(self) -> set[Hazard]:
        """Every hazard this camera needs judged, whole-frame and per zone."""
        used = set(self.hazards)
        for z in self.zones:
            used.update(z.effective_hazards())
        return used

    @model_validator(mode="after")
    def _unique_zones(self) -> CameraConfig:
        seen: set[str] = set()
        for z in self.zones:
            if z.id in seen:
                raise ValueError(f"duplicate zone id {z.id!r}")
            seen.add(z.id)
        return self


class HazardRule(_Model):
    """Site-wide rule of one hazard (zones may override fields)."""

    enabled: bool = Field(default=True, description="Turn the hazard off site-wide.")
    detector: str = Field(default="coco", description="Name of the detector (in `detectors`) it uses.")
    classes: list[str] = Field(default_factory=list, description="Detector classes that count for this hazard.")
    min_confidence: float = Field(default=0.35, ge=0, le=1, description="Detections below are ignored.")
    dwell_seconds: float = Field(default=60.0, ge=0,
                                 description="How long the hazard must persist before an alert opens.")
    confirm_k: int = Field(default=1, ge=1, description="Seen in at least k ...")
    confirm_n: int = Field(default=1, ge=1, description="... of the last n analysed frames to count as present.")
    cooldown_seconds: float = Field(default=300.0, ge=0,
                                    description="After an incident clears, no new one opens in the same "
                                    "zone for this long.")
    clear_seconds: float = Field(default=30.0, ge=0,
                                 description="The incident clears after the hazard has been absent this long.")
    update_interval_seconds: float = Field(default=60.0, ge=0,
                                           description="Minimum seconds between `updated` events.")
    match_iou: float = Field(default=0.3, gt=0, le=1,
                             description="IoU above which a detection continues an existing track.")
    severity: int = Field(default=3, ge=1, le=5, description="1 (low) .. 5 (critical).")
    analysis_interval_seconds: float = Field(
        default=0.0, ge=0,
        description="Judge this hazard at most once per this many seconds of video (0: every analysed frame). "
        "A detector runs on a frame only when a rule that is due needs it, so slow hazards (flyers, clutter) "
        "cost little while fire is checked on every analysed frame.")
    min_analysis_fps: float = Field(
        default=0.0, ge=0, le=60,
        description="Frames per second this hazard needs analysed (0: key frames suffice). A camera judging "
        "it in `decode: auto` decodes at this rate when its key frames come less often; `check-config` and "
        "the worker warn when a camera's decode mode cannot give it.")

    @model_validator(mode="after")
    def _k_le_n(self) -> HazardRule:
        if self.confirm_k > self.confirm_n:
            raise ValueError(f"confirm_k ({self.confirm_k}) must be <= confirm_n ({self.confirm_n})")
        return self

    def merged(self, override: RuleOverride | None) -> HazardRule:
        """This rule with a zone's override applied."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


def _default_hazards() -> dict[Hazard, HazardRule]:
    return {
        Hazard.PARKING: HazardRule(classes=["car", "truck", "bus", "motorcycle"], dwell_seconds=120,
                                   min_confidence=0.35, clear_seconds=30, severity=2),
        Hazard.FIRE: HazardRule(detector="fire", classes=["fire", "smoke"], dwell_seconds=0, confirm_k=3,
                                confirm_n=5, min_confidence=0.4, clear_seconds=30, severity=5,
                                update_interval_seconds=15, min_analysis_fps=2.0),
        # garbage/overflowing_bin come from the `clutter` model when the site defines it; plain `bin` is normal.
        Hazard.CLUTTER: HazardRule(classes=["bicycle", "motorcycle", "suitcase", "chair", "couch", "bench",
                                            "garbage", "overflowing_bin"],
                                   dwell_seconds=300, clear_seconds=60, severity=3),
        Hazard.POSTER: HazardRule(detector="ocr", dwell_seconds=0, confirm_k=2, confirm_n=3, clear_seconds=3600,
                                  severity=1, analysis_interval_seconds=5.0),
    }


class DetectorConfig(_Model):
    """One ONNX detector model."""

    model: str = Field(description="Path to the ONNX file (relative paths resolve against the config file), "
                       "or a name from models/manifest.yaml.")
    input_size: int = Field(default=640, ge=32, le=4096, description="Square letterbox input size (multiple of 32).")
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"],
                                 description="onnxruntime execution providers in order of preference.")
    threads: int = Field(default=0, ge=0, description="intra-op threads (0 = onnxruntime default).")
    batch_size: int = Field(default=8, ge=1, le=64, description="Max frames per inference batch.")
    nms_iou: float = Field(default=0.45, gt=0, le=1, description="IoU threshold of class-aware NMS.")
    min_confidence: float = Field(default=0.25, ge=0, le=1, description="Score floor before rules apply theirs.")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError("must be a multiple of 32")
        return v


class MqttConfig(_Model):
    """MQTT broker and topics. Leave `url` unset to run an embedded broker (demo only)."""

    url: str | None = Field(default=None, description="mqtt://host:1883 or mqtts://host:8883; unset = embedded.")
    embedded_port: int = Field(default=1883, ge=0, le=65535,
                               description="Port of the embedded broker when `url` is unset (0 = any free).")
    username: str | None = Field(default=None, description="Broker user name.")
    password: str | None = Field(default=None, description="Broker password.")
    service_username: str | None = Field(
        default=None, description="The ticket service's own broker user (alert consumer, debug requests), so "
        "the broker ACL (`gridwatch mqtt-acl`) can tell it from the workers; unset = `username` / the URL's.")
    service_password: str | None = Field(default=None,
                                         description="Password of `service_username`; unset = `password`.")
    tls_ca: str | None = Field(default=None, description="CA bundle for mqtts://.")
    tls_insecure: bool = Field(default=False, description="Skip broker certificate host check (testing only).")
    topic_prefix: str = Field(default="gridwatch", description="First topic level of everything published.")
    client_id: str | None = Field(default=None, description="Client id base; default derives from host/pid.")
    qos: int = Field(default=1, ge=0, le=2, description="QoS of alerts.")
    shared_group: str | None = Field(default="gridwatch-api",
                                     description="Shared-subscription group of the ticket consumer "
                                     "($share/<group>/...); null for brokers without shared subscriptions.")
    keepalive: int = Field(default=30, ge=5, description="Keepalive seconds.")
    consumer_reconnect_max_seconds: float = Field(
        default=5.0, ge=0.1, le=300,
        description="Cap of the ticket consumer's reconnect back-off (it starts at 1 s and doubles, with "
        "jitter): short, so the consumer is subscribed again soon after a broker restart.")
    resend_retry_seconds: float = Field(
        default=5.0, ge=0.1, le=3600,
        description="The ticket service asks a worker again for alerts still missing after this long "
        "(resend requests, docs/reliability.md).")
    resend_max_requests: int = Field(
        default=5, ge=0, le=100,
        description="Resend requests per gap before it is given up as unrecoverable (0: never ask).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        from pipeline.mqtt_url import parse_mqtt_url

        if v is not None:
            parse_mqtt_url(v)  # the same parser the publisher and the consumer use
        return v

    @model_validator(mode="after")
    def _password_needs_user(self) -> MqttConfig:
        from pipeline.mqtt_url import broker_address

        addr = broker_address(self)
        if addr.password is not None and addr.username is None:
            raise ValueError("a broker password needs a user name (mqtt.username or user:password@ in mqtt.url)")
        if self.service_password is not None and broker_address(self, "service").username is None:
            raise ValueError("mqtt.service_password needs a user name (mqtt.service_username or mqtt.username)")
        return self


ALLOWED_HOST_PATTERN = r"^(\*|(\*\.)?[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?)$"
"""``*``, a host name or IPv4 address, or ``*.`` plus a domain (what Starlette's TrustedHostMiddleware matches)."""


class AuthConfig(_Model):
    """Logins of the ticket API: sessions, lockout and an optional trusted reverse proxy (docs/operations.md)."""

    session_hours: float = Field(default=12.0, gt=0, le=24 * 90,
                                 description="Lifetime of a login (browser cookie and bearer token), hours.")
    cookie_secure: bool | None = Field(default=None,
                                       description="Mark the session cookie Secure; unset = when the request "
                                       "came over https (or the trusted proxy says so).")
    lockout_failures: int = Field(default=5, ge=1, le=1000,
                                  description="Failed logins (per user name and per client address) before "
                                  "each further attempt has to wait.")
    lockout_base_seconds: float = Field(default=2.0, gt=0, le=3600,
                                        description="First wait after `lockout_failures` failures; it doubles "
                                        "with each further failure.")
    lockout_max_seconds: float = Field(default=900.0, gt=0, le=86400,
                                       description="Longest wait between attempts.")
    lockout_reset_seconds: float = Field(default=3600.0, gt=0,
                                         description="A failure count with no new failure for this long "
                                         "starts again from zero.")
    trusted_user_header: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9\-]+$",
        description="Header (e.g. X-Remote-User) naming the logged-in user, set by a single-sign-on reverse "
        "proxy (OIDC) in front; honoured only from `trusted_proxies`. The user must exist (gridwatch user add).")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR networks of the reverse proxies whose `trusted_user_header` is believed "
        "(e.g. [127.0.0.1, 10.0.0.0/24]); requests from anywhere else are logged in the usual way.")

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad entry
        return v


class ApiConfig(_Model):
    """Ticket API, database and evidence store."""

    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8080, ge=0, le=65535, description="Listen port (0 = any free).")
    database_url: str = Field(default="sqlite:///var/gridwatch.db",
                              description="SQLAlchemy URL: sqlite:///path (relative to the config file) "
                              "or postgresql://user:password@host/db (driver: psycopg 3, the `postgres` extra).")
    evidence_dir: str = Field(default="var/evidence", description="Where snapshots and clips are stored.")
    public_url: str | None = Field(default=None,
                                   description="Base URL put into alert evidence links; default http://host:port.")
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["*"], min_length=1,
        description="Host header names the API answers (others get 400): e.g. [tickets.example.org, "
        "localhost, 127.0.0.1]; `*.example.org` matches subdomains; ['*'] (default, for the zero-config "
        "demo) checks nothing. No ports, no IPv6 literals.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Logins, sessions, lockout, SSO proxy.")
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig,
                                     description="Outbound webhooks: ticket events to case systems and group bots.")
    resident: ResidentConfig = Field(default_factory=ResidentConfig,
                                     description="Resident QR report page (一楼一码): public URL, abuse limits.")

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        bad = [h for h in hosts if not re.match(ALLOWED_HOST_PATTERN, h)]
        if bad:
            raise ValueError(f"not a host name, IPv4 address, '*' or '*.domain' (no scheme, port or path): {bad}")
        # Host names are case-insensitive; Starlette compares them as written.
        return [h.lower() for h in hosts]

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str) -> str:
        from pipeline.config_checks import check_database_url

        return check_database_url(v)


class WorkerConfig(_Model):
    """Detection worker settings."""

    outbox_path: str = Field(default="var/outbox.db", description="SQLite file of the durable MQTT outbox.")
    clip_pre_seconds: float = Field(default=5.0, ge=0, le=60, description="Clip seconds before the alert.")
    clip_post_seconds: float = Field(default=5.0, ge=0, le=60, description="Clip seconds after the alert.")
    buffer_seconds: float = Field(default=15.0, ge=2, le=120, description="Compressed packets kept per camera.")
    reconnect_min_seconds: float = Field(default=1.0, gt=0, description="First reconnect delay.")
    reconnect_max_seconds: float = Field(default=30.0, gt=0, description="Reconnect delay cap (exp. backoff).")
    open_timeout_seconds: float = Field(default=10.0, gt=0, description="Socket timeout opening/reading streams.")
    health_interval_seconds: float = Field(default=10.0, gt=0, description="How often camera health is published.")
    analysis_threads: int = Field(default=2, ge=1, le=64,
                                  description="Threads running detectors and rules (onnxruntime releases the "
                                  "GIL, so about one per core).")
    start_spread_seconds: float = Field(default=2.0, ge=0, le=60,
                                        description="Spread camera connections over this many seconds at start "
                                        "(no thundering herd on the NVR/switch; de-phases key frames).")
    metrics_port: int | None = Field(default=None, ge=0, le=65535,
                                     description="Serve the worker's Prometheus metrics on this port "
                                     "(per-camera frames, drops, reconnects, outbox backlog); unset = off.")
    batch_wait_ms: float = Field(default=5.0, ge=0, le=1000,
                                 description="How long a detection thread waits to fill a batch.")
    source_error_retry_seconds: float = Field(
        default=300.0, gt=0,
        description="Retry delay for a source that opens but is no video (a still image): the camera shows "
        "`error` with the reason instead of reconnecting in a loop.")
    incident_journal_path: str | None = Field(
        default=None,
        description="SQLite file of the incidents this worker has open, so a restart takes them back (same "
        "incident ids: no second ticket for the same parked car) instead of reopening or orphaning them; "
        "unset = beside the outbox (`<outbox_path>.incidents`).")
    camera_down_clear_seconds: float = Field(
        default=600.0, gt=0,
        description="A camera that delivers no frame for this long clears its open incidents (`cleared`, "
        "details.clear_reason `camera_down`): nobody can see whether the hazard is still there.")
    alert_archive_max: int = Field(
        default=10_000, ge=0, le=10_000_000,
        description="Published alerts kept in the outbox's archive, so the ticket service can ask for lost "
        "ones again by `seq` (resend requests); 0 = no archive.")
    alert_archive_hours: float = Field(
        default=24.0, gt=0, le=24 * 90,
        description="Archived alerts older than this are pruned (whichever of this and `alert_archive_max` "
        "is reached first).")
    model_poll_seconds: float = Field(
        default=5.0, ge=0, le=3600,
        description="How often the worker checks models/manifest.yaml for a promoted, canary or rolled-back "
        "model version and swaps it in without a restart (docs/retraining.md); 0 = never.")
    motion_gate: MotionGateConfig = Field(
        default_factory=MotionGateConfig,
        description="Skip a camera's detectors on frames where nothing changed in their zones and carry the last "
        "detections forward (fire is never gated); per camera: `cameras[].motion_gate`. See docs/detectors.md.")


def _hazards_json_schema(schema: dict[str, Any]) -> None:
    from pipeline.config_hazards import hazards_json_schema

    hazards_json_schema(schema)


class SiteConfig(_Model):
    """A whole site: grid tree, cameras, rules, detectors, MQTT, API, worker."""

    site: str = Field(default="gridwatch", description="Site name.")
    grid: list[GridNode] = Field(description="Town-level nodes of the grid tree (4 levels deep).")
    cameras: list[CameraConfig] = Field(default_factory=list, description="Cameras.")
    hazards: dict[Hazard, SerializeAsAny[HazardRule]] = Field(
        default_factory=_default_hazards, validate_default=True, json_schema_extra=_hazards_json_schema,
        description="Site-wide hazard rules; each hazard also takes its rule's own knobs (see the "
        "`hazards.<hazard>` sections).")
    detectors: dict[str, DetectorConfig] = Field(
        default_factory=lambda: {"coco": DetectorConfig(model="coco")},
        description="ONNX detectors by name.")
    scenes: list[SceneConfig] = Field(
        default_factory=list, description="State-classification scenes: a camera crop + a small trained "
        "classifier (hazard `scene`; docs/scenes.md).")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="Ticket API.")
    worker: WorkerConfig = Field(default_factory=WorkerConfig, description="Detection worker.")
    casework: CaseworkConfig = Field(default_factory=CaseworkConfig,
                                     description="Case life cycle: deadlines, escalation, auto-dispatch, "
                                     "camera re-checks (docs/operations.md).")
    base_dir: str | None = Field(default=None, exclude=True,
                                 description="Set by the loader: folder of the YAML file.")

    @field_validator("hazards", mode="before")
    @classmethod
    def _fill_hazard_defaults(cls, v: Any) -> Any:
        # A YAML that tunes one hazard keeps the defaults of the others; each hazard validates into its own
        # config class (pipeline.config_hazards: the shared fields plus that rule's knobs).
        from pipeline.config_hazards import as_hazard_config

        if not isinstance(v, dict):
            return v
        merged: dict[Any, Any] = {h.value: r.model_dump() for h, r in _default_hazards().items()}
        for k, rule in v.items():
            base = merged.get(str(k), {})
            merged[str(k)] = {**base, **rule} if isinstance(rule, dict) else rule
        out: dict[Any, Any] = {}
        errors: list[Any] = []
        for k, rule in merged.items():
            if k not in {h.value for h in Hazard} or not isinstance(rule, dict | HazardRule):
                out[k] = rule  # an unknown hazard or a bad value: the field's own validation reports it
                continue
            try:
                out[k] = as_hazard_config(Hazard(k), rule)
            except ValidationError as e:
                errors += [{**d, "loc": (k, *d["loc"])} for d in e.errors()]
        if errors:
            raise ValidationError.from_exception_data("hazards", errors)
        return out

    @model_validator(mode="after")
    def _cross_checks(self) -> SiteConfig:
        errors = camera_grid_errors(self.model_dump(mode="json"))
        used = set().union(*(c.used_hazards() for c in self.cameras)) if self.cameras else set()
        errors += scene_errors(self.scenes, {*used, *self.hazards})
        for h, rule in self.hazards.items():
            if h in used and rule.enabled and h is not Hazard.POSTER and rule.detector not in self.detectors:
                errors.append(f"hazards.{h.value}.detector: {rule.detector!r} is not in detectors "
                              f"({', '.join(self.detectors)})")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _cells(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}

        def walk(node: GridNode, path: list[str]) -> None:
            p = [*path, node.code]
            if len(p) == len(GRID_LEVELS):
                out[node.code] = p
            for c in node.children:
                walk(c, p)

        for n in self.grid:
            walk(n, [])
        return out

    def grid_path(self, cell: str) -> list[str]:
        """Codes from town to the cell, e.g. ``['T1', 'D1', 'C1', 'G1']``."""
        return self._cells()[cell]

    def resolve_path(self, p: str) -> Path:
        """Resolve a config-relative file path."""
        path = Path(p).expanduser()
        if not path.is_absolute() and self.base_dir:
            path = Path(self.base_dir) / path
        return path

    def database_url(self) -> str:
        """``api.database_url`` ready for SQLAlchemy: the one normalisation the API, CLI and scripts use.

        A relative SQLite path resolves against the config file's folder (which is created);
        ``postgresql://`` gets its driver pinned to psycopg 3. Raises ``RuntimeError`` with the
        install command when the PostgreSQL driver is missing.
        """
        from pipeline.config_checks import normalise_database_url, require_database_driver

        url = normalise_database_url(self.api.database_url)
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            path = self.resolve_path(url[len(prefix):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return prefix + str(path)
        require_database_driver(url)
        return url

    def camera(self, camera_id: str) -> CameraConfig:
        for c in self.cameras:
            if c.id == camera_id:
                return c
        raise KeyError(camera_id)


def load_config(path: str | Path) -> SiteConfig:
    """Read and validate a site YAML; raises :class:`ConfigError` with every problem found."""
    from urllib.parse import parse_qsl, urlsplit

    from pipeline.config_errors import ConfigError, validate_file
    from pipeline.redact import register_secret, register_url_secrets

    cfg, errors = validate_file(path)  # size-capped, binary-safe, alias-limited
    if errors or cfg is None:
        raise ConfigError(errors)
    cfg.base_dir = str(Path(path).resolve().parent)
    # Passwords of this site are masked wherever they turn up in logs, even outside an URL.
    register_url_secrets([*(c.url for c in cfg.cameras), cfg.mqtt.url, cfg.api.database_url])
    register_secret(cfg.mqtt.password)
    register_secret(cfg.mqtt.service_password)
    for target in cfg.api.webhooks.targets:  # bot URLs carry their key in the query
        register_secret(target.secret)
        for _, value in parse_qsl(urlsplit(target.url).query):
            register_secret(value)
        register_url_secrets([target.url])
    return cfg
