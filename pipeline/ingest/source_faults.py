"""Sources that open but are not a usable video: still images, truncated files.

A still image (a snapshot URL, a ``.jpg`` given as a camera) decodes one frame and ends; looping or
reconnecting it forever only hides the mistake, so it is an error with its reason. A truncated file
demuxes its first seconds and ends early; it keeps looping what is decodable, but every short pass is
counted and explained in the camera health.

Example:
    >>> truncation_message(span_s=5.2, declared_s=12.0)
    'file ends early: 5.2 s of its declared 12.0 s are readable (truncated?); looping the readable part'
    >>> truncation_message(span_s=11.96, declared_s=12.0) is None
    True
"""

from __future__ import annotations

from av.container import InputContainer
from av.video.stream import VideoStream

# Demuxers that read single pictures (FFmpeg's image2 and the *_pipe family), and picture codecs.
IMAGE_FORMATS = frozenset({"image2", "image2pipe"})
IMAGE_CODECS = frozenset({"mjpeg", "png", "bmp", "webp", "tiff", "gif", "jpeg2000", "jpegls", "ppm", "pgm",
                          "pam", "qoi", "jpegxl"})
# A pass may end this much before the declared duration without counting as truncated.
TRUNCATION_SLACK_S = 1.0
TRUNCATION_SLACK_SHARE = 0.02


class SourceError(RuntimeError):
    """The source opened but cannot be used (no video stream, nothing decodable)."""


class StillImageError(SourceError):
    """The source is a single picture, not a video stream."""


def looks_like_image(container: InputContainer, stream: VideoStream) -> bool:
    """Whether the container was opened by a picture demuxer or holds a picture codec."""
    names = set((container.format.name or "").split(","))
    if names & IMAGE_FORMATS or any(n.endswith("_pipe") for n in names):
        return True
    return stream.codec_context.name in IMAGE_CODECS and (stream.frames or 0) <= 1


def still_image_message(url: str, container: InputContainer, stream: VideoStream) -> str:
    """The error shown for a source that delivered only one picture."""
    return (f"not a video: the source gave a single picture ({container.format.name}, "
            f"{stream.codec_context.name}) and ended — a still image or snapshot URL ({url}). "
            "Point the camera's url at its video stream (e.g. rtsp://...)")


def declared_seconds(container: InputContainer, stream: VideoStream) -> float | None:
    """Duration the file's header declares for the video stream, or None."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def truncation_message(span_s: float, declared_s: float | None) -> str | None:
    """Why a file pass that covered ``span_s`` seconds counts as truncated, or None when it does not."""
    if declared_s is None or declared_s <= 0:
        return None
    slack = max(TRUNCATION_SLACK_S, declared_s * TRUNCATION_SLACK_SHARE)
    if span_s >= declared_s - slack:
        return None
    return (f"file ends early: {span_s:.1f} s of its declared {declared_s:.1f} s are readable (truncated?); "
            "looping the readable part")
