"""Camera source URLs: resolving file paths and explaining sources that cannot be opened."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import SiteConfig


def is_stream_url(url: str) -> bool:
    """True for network streams (rtsp://, http://, ...), False for local files."""
    return "://" in url and not url.startswith("file://")


def resolve_source(site: SiteConfig, url: str) -> str:
    """A network URL unchanged, or a local file path resolved against the config file's folder.

    Example:
        >>> from pipeline.config import SiteConfig
        >>> site = SiteConfig(grid=[], base_dir="/srv/site")
        >>> resolve_source(site, "rtsp://cam/1"), resolve_source(site, "clips/a.mp4")
        ('rtsp://cam/1', '/srv/site/clips/a.mp4')
    """
    if is_stream_url(url):
        return url
    return str(site.resolve_path(url.removeprefix("file://")))


def source_problems(site: SiteConfig) -> dict[str, str]:
    """Cameras whose source can be seen not to work before starting, with advice for the user."""
    problems: dict[str, str] = {}
    for i, cam in enumerate(site.cameras):
        if not cam.enabled or is_stream_url(cam.url):
            continue
        path = Path(resolve_source(site, cam.url))
        if not path.is_file():
            problems[cam.id] = (
                f"video file {path} not found. Point cameras[{i}].url in the config at your camera's "
                "stream (e.g. rtsp://user:pass@192.0.2.10:554/stream1) or at a local video file; "
                "the other cameras keep running."
            )
    return problems
