"""Ingest: camera readers, the latest-frame mailbox, packet ring for clips, camera health."""

from pipeline.ingest.frame import Frame
from pipeline.ingest.health import CameraHealth, CameraState
from pipeline.ingest.mailbox import LatestFrameMailbox
from pipeline.ingest.reader import CameraReader, backoff_delay, is_network_url
from pipeline.ingest.ring import PacketRing, RingPacket

__all__ = [
    "CameraHealth",
    "CameraReader",
    "CameraState",
    "Frame",
    "LatestFrameMailbox",
    "PacketRing",
    "RingPacket",
    "backoff_delay",
    "is_network_url",
]
