"""Pretrained vs from scratch, and the map of what the model sees, on real image sets.

For each set (openclipart-8 and fashion-mnist, as in bench_engine.py; N images per class drawn
from each set's pool by seed) and seed it runs ``compare_with_scratch`` as the app does and prints
one JSON line: each run's checks (count, first and last seconds, final accuracy), what guessing
gets, and for the map: the share of each image's 5 nearest neighbours on the map that are of its
class, from pretrained and from random-weight features, and the seconds the pretrained map took
(t-SNE on cached features). A Markdown table of means follows.

Usage: python benchmarks/bench_compare.py [--seeds 0 1 2] [--per-class 10] [--sets openclipart-8 fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import SETS  # noqa: E402
from transfer_gui.engine.comparison import compare_with_scratch  # noqa: E402
from transfer_gui.engine.config import TrainConfig  # noqa: E402
from transfer_gui.engine.data import scan_files  # noqa: E402
from transfer_gui.engine.feature_map import trained_maps  # noqa: E402
from transfer_gui.engine.features import FeatureCache  # noqa: E402
from transfer_gui.engine.workflow import train_model  # noqa: E402

_logger = logging.getLogger("bench_compare")


def run(name: str, pool: dict[str, list[Path]], per_class: int, seed: int) -> dict:
    """One comparison and both maps on ``per_class`` images of each class, drawn by ``seed``."""
    rng = random.Random(seed)
    files = {label: rng.sample(paths, per_class) for label, paths in pool.items()}
    dataset = scan_files(files)
    config = TrainConfig(seed=seed)
    start = time.perf_counter()
    for comparison in compare_with_scratch(dataset, config):
        pass
    wall = time.perf_counter() - start
    cache = FeatureCache()
    trained = train_model(dataset, config, cache=cache)
    start = time.perf_counter()
    maps = trained_maps(trained, dataset, cache, comparison.random_features)
    map_s = time.perf_counter() - start
    row = {"set": name, "per_class": per_class, "seed": seed, "n_checked": comparison.n_checked,
           "chance": round(comparison.chance, 3), "wall_s": round(wall, 1), "map_s": round(map_s, 2),
           "map_neighbours_pretrained": round(maps[0].neighbours, 3),
           "map_neighbours_random": round(maps[1].neighbours, 3) if len(maps) > 1 else None}
    for run_name, points in comparison.points.items():
        row[run_name] = {"checks": len(points), "first_s": points[0].seconds, "last_s": points[-1].seconds,
                         "steps": points[-1].steps, "accuracy": round(points[-1].accuracy, 3),
                         "accuracy_at_0": round(points[0].accuracy, 3)}
    return row


def main(argv: list[str] | None = None) -> None:
    """Run every set and seed; print JSON lines, then a table of means."""
    from transfer_gui.engine.speed import tune_process

    tune_process()  # an entry point: threads and allocator as the app and the command line have them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            pool, _ = SETS[name](Path(tmp))
            for seed in args.seeds:
                rows.append(run(name, pool, args.per_class, seed))
                sys.stdout.write(json.dumps(rows[-1]) + "\n")
                sys.stdout.flush()
    lines = ["| set | pretrained: accuracy after s (checks) | from scratch: accuracy after s (checks) | guessing "
             "| map: same-class neighbours, pretrained / random | map s |", "|---|---|---|---|---|---|"]
    for name in args.sets:
        mine = [r for r in rows if r["set"] == name]

        def mean(get) -> float:
            return float(np.mean([get(r) for r in mine]))

        lines.append(
            f"| {name}, {args.per_class}/class, seeds {' '.join(str(r['seed']) for r in mine)} "
            f"| {mean(lambda r: r['pretrained']['accuracy']):.3f} after {mean(lambda r: r['pretrained']['last_s']):.1f} s "
            f"({min(r['pretrained']['checks'] for r in mine)}+) "
            f"| {mean(lambda r: r['scratch']['accuracy']):.3f} after {mean(lambda r: r['scratch']['last_s']):.1f} s "
            f"({min(r['scratch']['checks'] for r in mine)}+) | {mean(lambda r: r['chance']):.3f} "
            f"| {mean(lambda r: r['map_neighbours_pretrained']):.2f} / {mean(lambda r: r['map_neighbours_random']):.2f} "
            f"| {mean(lambda r: r['map_s']):.2f} |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
