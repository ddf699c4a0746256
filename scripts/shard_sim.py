"""Simulate sharding a town's cameras over workers (no video): balance, and the moves on a resize.

Every shard picks its cameras on its own, as a worker does (``pipeline.sharding.cameras_for`` logic: the
cameras whose rendezvous winner it is), so the check that every camera runs exactly once is real and not a
property of one dict. Then the shard count changes and the script counts the cameras whose owner changed,
against the ideal share (``1/new`` when a shard is added, ``1/old`` when one is removed), and the cameras
that moved between two shards that exist before and after (rendezvous hashing: none).

    python scripts/shard_sim.py                        # 2,000 cameras, 25 shards, resizes 25->26 and 25->24
    python scripts/shard_sim.py --cameras 1145 --shards 12 --resize 13 --resize 11 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.sharding import shard_of, shard_weight  # noqa: E402

# Weights of every camera on every shard, hashed once: a shard's decision ("is my weight the highest?") is
# then a comparison, so the 25 shards deciding alone cost 50,000 hashes, not 1.25 million.
Weights = dict[str, list[int]]


@dataclass
class Balance:
    """Cameras per shard for one shard count."""

    shards: int
    cameras: int
    min: int
    max: int
    mean: float
    stddev: float
    run_once: bool  # every camera picked by exactly one shard
    duplicates: int  # cameras picked by two or more shards
    missing: int  # cameras picked by no shard


@dataclass
class Resize:
    """What a change of the shard count moves."""

    before: int
    after: int
    moved: int
    moved_share: float
    ideal_share: float
    moved_between_kept_shards: int  # moved from one surviving shard to another surviving shard


def camera_ids(count: int) -> list[str]:
    """Town-like camera ids: ``d<district>-<street>-cam<n>``."""
    return [f"d{i % 17:02d}-{(i * 7) % 311:03d}-cam{i:04d}" for i in range(count)]


def hash_weights(ids: list[str], shards: int) -> Weights:
    """``shard_weight`` of every camera on shards ``0..shards-1``."""
    return {cam: [shard_weight(s, cam) for s in range(shards)] for cam in ids}


def owner(weights: Weights, cam: str, shards: int) -> int:
    """The winning shard of ``cam`` among ``0..shards-1`` (``shard_of``'s rule, ties to the lower ordinal)."""
    row = weights[cam]
    return max(range(shards), key=lambda s: (row[s], -s))


def pick_per_shard(weights: Weights, shards: int) -> list[set[str]]:
    """What each shard runs, each shard deciding alone (as ``cameras_for`` does in every worker).

    A shard takes a camera when its own (weight, -ordinal) is the best of the row: the comparison a worker
    makes, with the row's best computed once per camera rather than once per shard.
    """
    best = {cam: max((row[s], -s) for s in range(shards)) for cam, row in weights.items()}
    return [{cam for cam, row in weights.items() if (row[shard], -shard) == best[cam]} for shard in range(shards)]


def balance(ids: list[str], picks: list[set[str]]) -> Balance:
    """Spread and exactly-once check of one assignment."""
    sizes = [len(p) for p in picks]
    seen: dict[str, int] = {}
    for p in picks:
        for cam in p:
            seen[cam] = seen.get(cam, 0) + 1
    duplicates = sum(1 for n in seen.values() if n > 1)
    missing = sum(1 for cam in ids if cam not in seen)
    return Balance(len(picks), len(ids), min(sizes), max(sizes), statistics.fmean(sizes),
                   statistics.pstdev(sizes), duplicates == 0 and missing == 0, duplicates, missing)


def resize(weights: Weights, ids: list[str], before: int, after: int) -> Resize:
    """Cameras whose owner changes when the shard count goes from ``before`` to ``after``."""
    old = {cam: owner(weights, cam, before) for cam in ids}
    new = {cam: owner(weights, cam, after) for cam in ids}
    moved = [cam for cam in ids if old[cam] != new[cam]]
    kept = min(before, after)
    between_kept = sum(1 for cam in moved if old[cam] < kept and new[cam] < kept)
    ideal = 1 / after if after > before else (before - after) / before
    return Resize(before, after, len(moved), len(moved) / len(ids), ideal, between_kept)


def main(argv: list[str] | None = None) -> int:
    """Run the simulation and print (or dump as JSON) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=25)
    parser.add_argument("--resize", type=int, action="append", help="New shard count (repeatable; default N+1, N-1).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ids = camera_ids(args.cameras)
    targets = args.resize or [args.shards + 1, args.shards - 1]
    weights = hash_weights(ids, max(args.shards, *targets))
    # The shortcut must decide as the workers do: checked on every 50th camera against pipeline.sharding.
    wrong = [cam for cam in ids[::50] if owner(weights, cam, args.shards) != shard_of(cam, args.shards)]
    if wrong:
        raise SystemExit(f"simulation disagrees with pipeline.sharding.shard_of on {wrong[:3]}")
    balances = [balance(ids, pick_per_shard(weights, n)) for n in [args.shards, *targets]]
    resizes = [resize(weights, ids, args.shards, n) for n in targets]
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({"balance": [asdict(b) for b in balances], "resize": [asdict(r) for r in resizes],
                          "seconds": round(seconds, 3)}))
        return 0
    print(f"{args.cameras} cameras; each shard picks its own (rendezvous hashing, BLAKE2b)\n")
    print("| shards | min | max | mean | stddev | max/mean | every camera exactly once |")
    print("|---|---|---|---|---|---|---|")
    for b in balances:
        print(f"| {b.shards} | {b.min} | {b.max} | {b.mean:.1f} | {b.stddev:.1f} | {b.max / b.mean:.2f} | "
              f"{'yes' if b.run_once else f'NO ({b.duplicates} twice, {b.missing} never)'} |")
    print("\n| resize | cameras moved | share moved | ideal | moved / ideal | moved between kept shards |")
    print("|---|---|---|---|---|---|")
    for r in resizes:
        print(f"| {r.before} -> {r.after} | {r.moved} | {r.moved_share:.2%} | {r.ideal_share:.2%} | "
              f"{r.moved_share / r.ideal_share:.2f} | {r.moved_between_kept_shards} |")
    print(f"\n{seconds:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
