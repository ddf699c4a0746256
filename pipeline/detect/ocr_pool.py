"""Pools of OCR engines shared by a site's cameras (their poster rules), one pool per site config.

One RapidOCR engine holds ~70-200 MB once loaded; one per camera made memory grow by that much per camera
with posters on. A site's pool keeps ``size`` engines (the worker's ``analysis_threads``: no more OCR can
run at once) and hands camera ``c`` the engine ``crc32(c) % size``, so a camera always uses the same engine
and two analysis threads rarely wait on the same one (each engine serialises its calls with its own lock).
The pool belongs to the site object (held weakly): a worker shares engines across its cameras, and two sites in
one process (tests) never share.

Example:
    >>> class Site: ...
    >>> site = Site()
    >>> a, b = shared_text_detector(site, "cam-1", 2), shared_text_detector(site, "cam-1", 2)
    >>> a is b, a.loaded, shared_text_detector(Site(), "cam-1", 2) is a
    (True, False, False)
"""

from __future__ import annotations

import threading
import weakref
import zlib

from pipeline.detect.ocr import TextDetector

_POOLS: dict[int, tuple[weakref.ref[object], dict[int, TextDetector]]] = {}
"""id(site) -> (weak reference to the site, its engines by slot); the entry goes when the site does."""
_LOCK = threading.Lock()


def shared_text_detector(site: object, camera_id: str, size: int) -> TextDetector:
    """``site``'s engine for ``camera_id`` in a pool of ``size`` (created unloaded on first call; 1 thread)."""
    slot = zlib.crc32(camera_id.encode()) % max(1, size)
    with _LOCK:
        key = id(site)
        entry = _POOLS.get(key)
        if entry is None or entry[0]() is not site:
            entry = _POOLS[key] = (weakref.ref(site, lambda _ref: _POOLS.pop(key, None)), {})
        pool = entry[1]
        engine = pool.get(slot)
        if engine is None:
            engine = pool[slot] = TextDetector(threads=1)
        return engine
