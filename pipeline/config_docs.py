"""Render the site-config reference (docs/config.md) from the pydantic models' field descriptions.

``python -m pipeline.config_docs > docs/config.md``; a test keeps the committed file current.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from pipeline.config import (
    ApiConfig,
    AuthConfig,
    CameraConfig,
    DetectorConfig,
    GridNode,
    HazardRule,
    MqttConfig,
    RuleOverride,
    SiteConfig,
    WorkerConfig,
    ZoneConfig,
)
from pipeline.config_casework import CaseworkConfig, HazardCasePolicy
from pipeline.config_hazards import ClutterRuleConfig, FireRuleConfig, ParkingRuleConfig, PosterRuleConfig
from pipeline.config_motion import MotionGateConfig
from pipeline.config_resident import ResidentConfig
from pipeline.config_webhooks import WebhooksConfig, WebhookTarget
from pipeline.scenes.config import SceneConfig

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("site (top level)", SiteConfig), ("grid[] (GridNode)", GridNode), ("cameras[]", CameraConfig),
    ("cameras[].zones[]", ZoneConfig), ("hazards.<hazard>", HazardRule),
    ("hazards.parking (its own knobs)", ParkingRuleConfig), ("hazards.fire (its own knobs)", FireRuleConfig),
    ("hazards.clutter (its own knobs)", ClutterRuleConfig), ("hazards.poster (its own knobs)", PosterRuleConfig),
    ("cameras[].zones[].overrides.<hazard>", RuleOverride), ("detectors.<name>", DetectorConfig),
    ("scenes[] (docs/scenes.md)", SceneConfig),
    ("mqtt", MqttConfig), ("api", ApiConfig), ("api.auth", AuthConfig), ("api.webhooks", WebhooksConfig),
    ("api.webhooks.targets[]", WebhookTarget), ("api.resident", ResidentConfig), ("worker", WorkerConfig),
    ("worker.motion_gate, cameras[].motion_gate", MotionGateConfig),
    ("casework", CaseworkConfig),
    ("casework.hazards.<hazard>", HazardCasePolicy),
]


# Hand-written guide sections appended after the generated reference (kept here so the committed
# docs/config.md stays exactly what `python -m pipeline.config_docs` prints).
GUIDE_SECTIONS: list[str] = [
    """## Configs and secrets

### How a config file is read (`pipeline/config_yaml.py`)

Every command that loads a site YAML (`run`, `api`, `worker`, `check-config`, scripts using
`load_config`) reads it the same way, and reports each problem as one line `path: message (line N)`:

- **File size**: at most 2 MiB (a 1,000-camera site is ~130 KiB): `the file is larger than 2 MiB`.
- **Encoding**: UTF-8 (a BOM is fine), no NUL bytes, no UTF-16: `binary file (NUL byte at offset N, line L),
  not YAML text`, `not UTF-8 text: byte 0xe9 at line L, column C`, `the file is UTF-16 text`.
- **Nesting**: 64 levels, counted with aliases expanded (libyaml itself stops at 1,000):
  `refused: nested deeper than 64 levels`.
- **Aliases**: at most 10,000 alias references (`*name`), no recursive ones:
  `refused: more than 10000 aliases (*name)`, `refused: an alias refers to a node that contains it`.
- **Expanded size**: 1,000,000 nodes with every alias expanded, counted once per distinct node before
  anything walks the document, so a "billion laughs" file is refused in milliseconds:
  `refused: more than 1,000,000 nodes with aliases expanded`.
- **Duplicate keys** are errors (YAML would keep the last value silently):
  `mqtt.topic_prefix: duplicate key 'topic_prefix', first written at line 3 (line 9)`.
- **Grid codes**: cell codes unique site-wide (cameras name their cell by code), town / district /
  community codes unique among siblings: `grid[0]....code: duplicate grid cell code 'G1' (first at ...)`.
- **Camera URLs** (`cameras[].url`): not empty, no surrounding or inner white space or control
  characters; a scheme of rtsp, rtsps, rtmp, rtmps, http, https, srt, udp, tcp with a host (srt, udp,
  tcp may name only a port), `file://<path>`, or a file path:
  `cameras[0].url: 'ftp://cam/x': unknown scheme 'ftp' (...) (line 14)`.
- **`mqtt.url`**: see below; a password needs a user name.
- **`api.database_url`**: sqlite or postgresql: `backend 'mysql' is not supported (sqlite or postgresql)`.

Anchors, aliases and merge keys (`<<: *camera_defaults`) keep working within these limits. Measured on
the 2-core development machine: the 9-level billion-laughs file is refused in 3 ms (`check-config`
exits after 0.6 s, 38 MB resident, where it used to run past 60 s and 4.7 GB); a 1,000-camera config
(132 KiB) validates in 0.8 s (3.5 s before, when it was parsed twice in pure Python).

### Broker URL (`mqtt.url`, `pipeline/mqtt_url.py`)

One parser serves the worker's publisher and the ticket service's consumer:

- `mqtt://`, `tcp://`: MQTT over TCP, port 1883.
- `mqtts://`, `ssl://`, `tls://`: over TLS (`mqtt.tls_ca`, `mqtt.tls_insecure`), port 8883.
- `ws://`: over a WebSocket, port 80; the URL path is the WebSocket path (default `/mqtt`).
- `wss://`: WebSocket over TLS, port 443.

`user:password@` in the URL are the broker credentials, percent-encoded (`p%40ss` is `p@ss`);
`mqtt.username` / `mqtt.password` override them. Both the worker and the ticket service log in with
them, unless `mqtt.service_username` / `mqtt.service_password` give the ticket service a broker user of its
own (what the broker ACL of `gridwatch mqtt-acl` needs to tell them apart: docs/operations.md).
An unknown scheme, a missing host, port 0 or a path on a TCP URL fail `check-config`.

### Database URL (`api.database_url`)

`sqlite:///relative/path` resolves against the config file's folder. `postgresql://` (and
`postgres://`) run on psycopg 3, the `postgres` extra (`pip install 'gridwatch[postgres]'`; the Docker
image and `.[dev]` include it): the driver is pinned to `postgresql+psycopg://` whatever SQLAlchemy's
default is. A URL naming another driver (`postgresql+psycopg2://`) is used as written. A missing driver
stops the API at start with the `pip install` line to run.

### Credentials never leave the process (`pipeline/redact.py`)

* `redact_url()` / `redact_text()` replace `user:password@` of any URL, and the values of query
  parameters named like `password`, `pwd`, `token`, `key`, `secret`, `auth`, `sig`, with `***`; the
  passwords of the loaded config are also masked wherever they appear in text.
* The worker and every CLI command install a log-record filter on the whole process: each log line
  of every logger (PyAV, paho and uvicorn too), its arguments and its traceback pass `redact_text`
  before any handler sees them. PyAV puts the camera URL into its exceptions
  (`ConnectionRefusedError: ... 'rtsp://admin:pass@...'`); those reach the logs masked.
* The camera reader masks its error texts; the worker's retained health message masks its `url` and
  every text field; `GET /cameras` masks `last_error` again (health from older workers).
* `check-config` and load errors show URLs masked.

Not covered: the config file itself (protect it with file permissions or inject secrets at deploy
time), and health rows already stored by older workers (masked on output, stored as received).
""",
    """## Decoding: how many frames each hazard gets (`cameras[].decode`)

Cameras send a key frame every GOP (typically 1–4 s; "smart" codecs stretch it when the scene is
still) and predicted frames in between. Decoding key frames only is the cheapest, but gives one
analysed frame per GOP: a house fire filmed with a key frame every 3 s was judged once per 3 s and never
met the fire rule's 3-of-5 confirmation. So each hazard says what it needs, `hazards.<h>.min_analysis_fps`:
fire 2 frames/s by default; parking, clutter and posters 0 (key frames are enough).

- `decode: auto` (default): the reader measures the key-frame interval and frame rate from the stream's
  packets (from the first two key frames on, re-checked at every key frame, the longest of the last 4
  GOPs deciding) and decodes key frames only while they come at least as often as the camera's most
  demanding hazard needs; otherwise it decodes every frame. Either way at most max(`max_fps`, that need)
  frames/s go to analysis (an intra-only stream such as MJPEG has nothing but key frames). Before the
  first GOP is measured, a camera that needs a rate decodes every frame.
- `decode: keyframes`: every key frame and nothing else, whatever the hazards need.
- `decode: interval`: every frame decoded, `max_fps` frames/s analysed.

The rate is kept on a stream-time schedule (on average exactly the rate; one gap may be a frame shorter
after a longer one), and `analysis_interval` stays a hard minimum gap. Each key frame is decoded on its
own (the decoder is drained after it), so B-frame streams never hold a key frame back.

What a camera gets is in its health (`/cameras`, the retained `<prefix>/health/<camera>` message and
the worker's metrics): `decode_mode_effective`, `fps`, `keyframe_interval_s`, `analysis_fps`,
`required_fps`, `rate_warning` (`gridwatch_camera_rate_shortfall` is 1 while it is set). When a mode
cannot give a hazard its rate, three places say so:

- `gridwatch check-config` prints ``warning: camera house-kf: `decode: keyframes` analyses 0.33 frames/s
  (a key frame every 3.00 s), but fire needs 2 frames/s. Use `decode: auto` (or `interval`)`` for a
  camera whose source is a readable file (its first packets are read), and for a stream the same
  warning from the config alone (`... i.e. a key frame every 0.50 s or less`). It also warns when
  `max_fps` (in `interval`), `analysis_interval`, the stream's own frame rate, or a rule's
  `analysis_interval_seconds` is below the need.
- the worker logs, once per camera after the first GOP, `camera X: 25.0 frames/s, a key frame every
  3.00 s; decoding interval (2.0 analysed frames/s, hazards need {'fire': 2.0})` and each warning.
- the health field `rate_warning`.

Sources that are no video: a still image (a `.jpg`, a snapshot URL) is `state: error` with
`last_error: not a video: the source gave a single picture ...` and is retried only every
`worker.source_error_retry_seconds` (300 s); `gridwatch_camera_error` is 1. A file that ends before its
declared duration (truncated) keeps looping its readable part, stays `streaming`, and counts each short
pass in `truncated_loops` (metric `gridwatch_camera_truncated_loops`) with `last_error: file ends early:
5.2 s of its declared 12.0 s are readable`; packets the decoder rejects count in `decode_errors`.
""",
]


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pipeline.config.", "")
    text = text.replace("pipeline.analyze.incident.", "").replace("pipeline.contract.enums.", "")
    text = text.replace("pipeline.config_webhooks.", "").replace("pipeline.config_casework.", "")
    text = re.sub(r"Annotated\[([\w.]+), SerializeAsAny\(\)\]", r"\1", text)
    return text.replace("<class '", "").replace("'>", "").replace("<enum '", "").replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(see section)"
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
            return "(see section)"
        return f"`{json.dumps(value, default=str)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(field.default, default=str)}`"


def render() -> str:
    """The whole reference as Markdown."""
    out = ["# Site config reference", "",
           "Generated from `pipeline/config.py` by `python -m pipeline.config_docs > docs/config.md`.",
           "Validate a file with `gridwatch check-config FILE`; the JSON Schema is `gridwatch schema`.", ""]
    for title, model in SECTIONS:
        out += [f"## {title}", "", (model.__doc__ or "").strip().splitlines()[0], "",
                "| option | type | default | description |", "|---|---|---|---|"]
        # A hazard's config class lists only what it adds to the shared `hazards.<hazard>` fields.
        inherited = set(HazardRule.model_fields) if model is not HazardRule and issubclass(model, HazardRule) else set()
        for name, field in model.model_fields.items():
            if field.exclude or name in inherited:
                continue
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        out.append("")
    out += GUIDE_SECTIONS
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render())
