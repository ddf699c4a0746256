"""Cameras spread over N workers by rendezvous (highest-random-weight) hashing.

Every worker ``i`` of ``N`` computes, for each camera id, a weight per shard from a stable hash of
``"<shard>:<camera_id>"`` and runs the cameras whose highest weight is its own. No coordination is needed:
every worker (and ``scripts/shard_sim.py``, and an operator's shell) computes the same owner from the id alone,
and changing ``N`` to ``N + 1`` moves only the cameras the new shard wins (about ``1/(N + 1)`` of them); going
to ``N - 1`` moves only the removed shard's cameras. The hash is BLAKE2b, not Python's ``hash()``, which is
salted per process (``PYTHONHASHSEED``) and would give every worker a different answer.

A sharded worker keeps its own state: :func:`shard_site` gives the outbox and the incident journal a per-shard
file name (``var/outbox.db`` -> ``var/outbox.shard-3.db``), so two shards on one host never share a file.

Example:
    >>> shard_of("cam-042", 3) == shard_of("cam-042", 3)
    True
    >>> parse_shard("2/5")
    ShardSpec(index=2, count=5)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pipeline.config import SiteConfig

__all__ = ["ShardError", "ShardSpec", "assign", "cameras_for", "parse_shard", "resolve_shard", "shard_from_hostname",
           "shard_of", "shard_path", "shard_site", "shard_weight", "shard_worker_id"]

# The most shards one site may be cut into: far above any town's need, low enough that a typo
# (`--shard 3/3000`) is an error rather than 2,997 idle workers' worth of hashing.
MAX_SHARDS = 1024
_ORDINAL_RE = re.compile(r"-(\d+)$")


class ShardError(ValueError):
    """A shard given wrongly: not ``i/N``, ``i`` outside ``0..N-1``, or no ordinal in the host name."""


@dataclass(frozen=True)
class ShardSpec:
    """This worker's place among the shards.

    Attributes:
        index: the shard ordinal, ``0 <= index < count`` (a StatefulSet pod's ordinal).
        count: how many shards the site is cut into (the StatefulSet's replicas).
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ShardError(f"shard count must be 1..{MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ShardError(f"shard index must be 0..{self.count - 1} for {self.count} shards, got {self.index}"
                             " (more pods than the shard count says? keep GRIDWATCH_SHARD_COUNT = replicas)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> ShardSpec:
    """Parse ``"i/N"`` (e.g. ``"0/3"``).

    Raises:
        ShardError: not two integers separated by ``/``, or out of range.
    """
    index, sep, count = text.strip().partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ShardError(f"--shard must look like i/N (e.g. 0/3), got {text!r}")
    return ShardSpec(int(index), int(count))


def shard_from_hostname(hostname: str, count: int) -> ShardSpec:
    """The shard of a StatefulSet pod: its name ends in ``-<ordinal>`` (``gridwatch-worker-3`` -> 3).

    Raises:
        ShardError: the name has no trailing ``-<digits>``, or the ordinal is not below ``count``.
    """
    match = _ORDINAL_RE.search(hostname.strip())
    if match is None:
        raise ShardError(f"host name {hostname!r} has no StatefulSet ordinal (expected e.g. gridwatch-worker-3)")
    return ShardSpec(int(match.group(1)), count)


def shard_weight(shard: int, camera_id: str) -> int:
    """The rendezvous weight of ``camera_id`` on ``shard``: 64 bits of BLAKE2b, the same in every process."""
    digest = hashlib.blake2b(f"{shard}:{camera_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(camera_id: str, count: int) -> int:
    """The shard (``0..count-1``) that owns ``camera_id``: the one with the highest weight.

    Ties (a 2**-64 chance) go to the lower ordinal, so the answer is still the same everywhere.
    """
    if count < 1:
        raise ShardError(f"shard count must be at least 1, got {count}")
    return max(range(count), key=lambda shard: (shard_weight(shard, camera_id), -shard))


def assign(camera_ids: Iterable[str], count: int) -> dict[str, int]:
    """Every camera id's owning shard (what :func:`shard_of` says for each)."""
    return {camera_id: shard_of(camera_id, count) for camera_id in camera_ids}


def cameras_for(site: SiteConfig, index: int, count: int) -> list[str]:
    """The ids of the site's cameras (enabled or not) that shard ``index`` of ``count`` owns, in config order.

    Disabled cameras are assigned too, so enabling one never moves any other camera.
    """
    spec = ShardSpec(index, count)
    return [cam.id for cam in site.cameras if shard_of(cam.id, spec.count) == spec.index]


def shard_path(path: str, index: int) -> str:
    """``path`` with ``.shard-<index>`` before its suffix: ``var/outbox.db`` -> ``var/outbox.shard-3.db``."""
    pure = PurePath(path)
    name = f"{pure.stem}.shard-{index}{pure.suffix}" if pure.suffix else f"{pure.name}.shard-{index}"
    return str(pure.with_name(name))


def shard_site(site: SiteConfig, spec: ShardSpec) -> SiteConfig:
    """A copy of ``site`` whose worker state files are this shard's own.

    ``worker.outbox_path`` and, when set, ``worker.incident_journal_path`` get :func:`shard_path`; an unset
    journal follows the outbox (``<outbox>.incidents``) and so is per shard as well. The shard's file names
    depend on its index only, not on the count: a resize keeps each worker's outbox (its unsent alerts and
    its alert sequence) and journal.
    """
    worker = site.worker
    journal = worker.incident_journal_path
    update = {"outbox_path": shard_path(worker.outbox_path, spec.index),
              "incident_journal_path": shard_path(journal, spec.index) if journal else None}
    return site.model_copy(update={"worker": worker.model_copy(update=update)})


def resolve_shard(shard: str | None, from_hostname: bool, count: int | None, hostname: str) -> ShardSpec | None:
    """The shard the ``gridwatch worker`` options name, or None for an unsharded worker.

    Args:
        shard: ``--shard i/N`` (env ``GRIDWATCH_SHARD``).
        from_hostname: ``--shard-from-hostname``: the ordinal is the host name's trailing ``-<n>``.
        count: ``--shard-count`` (env ``GRIDWATCH_SHARD_COUNT``), ``N`` for ``from_hostname``.
        hostname: the pod name (``POD_NAME``) or the host name.

    Raises:
        ShardError: both ways given, a count without a way, a way without a count, or a bad value.
    """
    if shard and from_hostname:
        raise ShardError("give either --shard i/N or --shard-from-hostname, not both")
    if shard:
        return parse_shard(shard)
    if from_hostname:
        if count is None:
            raise ShardError("--shard-from-hostname needs --shard-count N (env GRIDWATCH_SHARD_COUNT = replicas)")
        return shard_from_hostname(hostname, count)
    return None


def shard_worker_id(spec: ShardSpec, from_hostname: bool, hostname: str) -> str:
    """A worker id that stays the same across restarts and resizes: the pod name, or ``shard-<i>``.

    The ticket service tracks alert sequence numbers per worker id and the outbox is per shard index, so the
    id must follow the index, not the process (the unsharded default ``<host>-<pid>`` changes every start).
    """
    return hostname.strip() if from_hostname else f"shard-{spec.index}"
