"""Debug drawing of one analysed frame (boxes, zones, rule state) and an MP4 writer for replays.

Used by ``gridwatch replay --annotate`` and by the worker's on-demand debug view, so both show the same
picture. Rule states are the dicts of :meth:`CameraAnalyzer.rule_states`; :func:`state_summary` turns one
into a short line (k-of-n hits, presence, dwell, open incident, rejection reasons).

Example:
    >>> state_summary({"hazard": "fire", "zone": None, "rule": "FireRule", "state": {
    ...     "confirm": {"k": 3, "n": 5, "hits": 2}, "presence": {"since": 1.8e9 + 4},
    ...     "lifecycle": {"incident_id": None}}}, now=1.8e9 + 10, start_ts=1.8e9)
    'fire@frame: hits 2/5 (k=3) present 6.0s'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.detect.detections import Detections

_DETECTOR_COLOURS = [(0, 200, 255), (255, 160, 0), (80, 220, 80), (220, 80, 220), (0, 120, 255)]
_OPEN = (0, 0, 255)
_ZONE = (0, 230, 230)


def _rel(v: Any, start_ts: float | None) -> str:
    """A Unix time as ``+12.3s`` from the clip start (as-is when there is no start)."""
    if start_ts is None:
        return f"{float(v):.1f}"
    return f"+{float(v) - start_ts:.1f}s"


def state_summary(rule: Mapping[str, Any], now: float | None = None, start_ts: float | None = None) -> str:
    """One line for a rule state: ``hazard@zone: hits h/n (k=k) present Ns OPEN id ...``.

    Reads the keys the rules share (``confirm``, ``presence``, ``lifecycle``, ``tracks``, ``rejected``,
    ``last_observation``) and skips what a rule does not have, so new rules print without changes here.
    """
    st = rule.get("state") or {}
    parts: list[str] = []
    confirm = st.get("confirm") or (st.get("lifecycle") or {}).get("confirm")
    if isinstance(confirm, Mapping) and "hits" in confirm:
        parts.append(f"hits {confirm['hits']}/{confirm.get('n', '?')} (k={confirm.get('k', '?')})")
    presence = st.get("presence")
    if isinstance(presence, Mapping):
        since = presence.get("since")
        if since is not None and now is not None:
            parts.append(f"present {max(0.0, now - float(since)):.1f}s")
    tracks = st.get("tracks")
    if isinstance(tracks, list) and tracks:
        # Dwell of the objects seen in this frame (tracks kept through an occlusion would overstate it).
        dwell = [float(t["dwell_seconds"]) for t in tracks if isinstance(t, Mapping) and t.get("dwell_seconds")
                 and t.get("verdict") != "not seen this frame"]
        parts.append(f"tracks {len(tracks)}" + (f" max dwell {max(dwell):.0f}s" if dwell else ""))
        verdicts = sorted({str(t["verdict"]) for t in tracks if isinstance(t, Mapping) and t.get("verdict")})
        if verdicts:
            parts.append("; ".join(verdicts)[:80])
    elif isinstance(tracks, int) and tracks:
        parts.append(f"tracks {tracks}")
    obs = st.get("last_observation")
    if isinstance(obs, Mapping):
        for key in ("blocked_share", "dwell_seconds"):
            if isinstance(obs.get(key), int | float):
                parts.append(f"{key.split('_')[0]} {float(obs[key]):.2f}")
    boxes = st.get("boxes")
    if isinstance(boxes, list) and boxes:
        why = [str(b.get("rejected") or b.get("reason") or "") for b in boxes if isinstance(b, Mapping)]
        kept = sum(1 for w in why if not w or w in ("None", "counted"))
        parts.append(f"boxes {kept}/{len(boxes)} kept")
        reasons = sorted({w for w in why if w and w not in ("None", "counted")})
        if reasons:
            parts.append("rejected: " + ", ".join(reasons)[:80])
    rejected = st.get("rejected")
    if isinstance(rejected, Mapping) and rejected:
        parts.append("rejected: " + ", ".join(f"{k} {v}" for k, v in rejected.items())[:80])
    ref = st.get("reference")
    if isinstance(ref, Mapping) and not ref.get("ready", True):
        parts.append(f"learning {ref.get('learned_frames', '?')}/{ref.get('learn_frames', '?')}")
    life = st.get("lifecycle") or {}
    if isinstance(life, Mapping):
        if life.get("incident_id"):
            parts.append(f"OPEN {life['incident_id']}")
        cool = life.get("cooldown_until")
        if cool is not None and now is not None and float(cool) > now:
            parts.append(f"cooldown until {_rel(cool, start_ts)}")
    if rule.get("errors"):
        parts.append(f"ERRORS {rule['errors']}")
    where = rule.get("zone") or "frame"
    return f"{rule.get('hazard')}@{where}: " + (" ".join(parts) if parts else "-")


def draw_debug(image: np.ndarray, zones_px: Mapping[str, np.ndarray], detections: Mapping[str, Detections],
               rules: Sequence[Mapping[str, Any]], header: str, now: float | None = None,
               start_ts: float | None = None) -> np.ndarray:
    """A copy of ``image`` with zones (red while a rule there has an open incident), every detection box
    (colour per detector, ``class score``) and a panel with ``header`` and one line per rule."""
    img = np.ascontiguousarray(image.copy())
    h, w = img.shape[:2]
    thick = max(1, round(min(w, h) / 360))
    scale = max(0.35, min(w, h) / 1100)
    open_zones = {str(r.get("zone")) for r in rules
                  if ((r.get("state") or {}).get("lifecycle") or {}).get("incident_id")}
    for zone_id, poly in zones_px.items():
        pts = np.asarray(poly, dtype=np.int32).reshape(-1, 1, 2)
        colour = _OPEN if zone_id in open_zones else _ZONE
        cv2.polylines(img, [pts], isClosed=True, color=colour, thickness=thick, lineType=cv2.LINE_AA)
        x, y = pts[:, 0, 0].min(), pts[:, 0, 1].max()
        cv2.putText(img, zone_id, (int(x) + 3, int(y) - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick,
                    cv2.LINE_AA)
    for i, (_, det) in enumerate(sorted(detections.items())):
        colour = _DETECTOR_COLOURS[i % len(_DETECTOR_COLOURS)]
        for box, conf, cid in zip(det.xyxy.tolist(), det.confidence.tolist(), det.class_id.tolist(), strict=True):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick)
            label = f"{det.class_names.get(int(cid), cid)} {conf:.2f}"
            cv2.putText(img, label, (x1 + 2, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick,
                        cv2.LINE_AA)
    lines = [header, *(state_summary(r, now, start_ts) for r in rules)]
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    step = th + base + 3
    panel_h = min(h, step * len(lines) + 4)
    img[:panel_h] = (img[:panel_h].astype(np.float32) * 0.35).astype(np.uint8)
    for j, line in enumerate(lines):
        colour = _OPEN if " OPEN " in f" {line} " else (255, 255, 255)
        cv2.putText(img, line[:160], (4, step * (j + 1) - base), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick,
                    cv2.LINE_AA)
    return img


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """``image`` (BGR) as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


class AnnotatedVideo:
    """An H.264 MP4 of annotated frames, each shown at its own stream time (variable frame rate).

    Written to ``<path>.part.mp4`` and renamed on :meth:`close`, so a crash never leaves a half file
    under the final name.

    Args:
        path: output file (``.mp4``).
        max_side: frames larger than this (px, longest side) are scaled down.
    """

    def __init__(self, path: str | Path, max_side: int = 1280) -> None:
        self.path = Path(path)
        self.max_side = max_side
        self.frames = 0
        self._tmp = self.path.with_name(f"{self.path.stem}.{os.getpid()}.part.mp4")
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._last_pts = -1

    def _open(self, width: int, height: int) -> None:
        import av

        s = min(1.0, self.max_side / max(width, height))
        w, h = (max(2, int(width * s)) // 2 * 2, max(2, int(height * s)) // 2 * 2)  # yuv420p: even sides
        self._size = (w, h)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._tmp), "w")
        self._stream = self._container.add_stream("libx264", rate=1000)
        self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
        self._stream.time_base = Fraction(1, 1000)
        self._stream.codec_context.time_base = Fraction(1, 1000)
        self._stream.options = {"preset": "veryfast", "crf": "26", "bf": "0"}

    def write(self, image: np.ndarray, t: float) -> None:
        """Append ``image`` (BGR) shown from ``t`` seconds on (later than the previous frame's)."""
        import av

        if self._container is None:
            self._open(image.shape[1], image.shape[0])
        assert self._size is not None
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        pts = max(self._last_pts + 1, int(round(t * 1000)))
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        for pkt in self._stream.encode(frame):
            self._container.mux(pkt)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush and move the file into place; None when no frame was written."""
        if self._container is None:
            return None
        for pkt in self._stream.encode():
            self._container.mux(pkt)
        self._container.close()
        self._container = None
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._container is not None:
            self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)
