"""Soak: many Quick trainings in a row in one process, each in a fresh session, as users in a row
would; prints resident memory along the way and the growth after warm-up.

    python benchmarks/soak.py            # 50 trainings on the example data
    python benchmarks/soak.py --runs 10
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transfer_gui.engine.data import open_dataset  # noqa: E402
from transfer_gui.app.assets import EXAMPLE_DATASET  # noqa: E402
from transfer_gui.app.server import Server  # noqa: E402


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    """Run the trainings and print one line per checkpoint, then the growth."""
    from transfer_gui.engine.speed import tune_process

    tune_process()  # an entry point: threads and allocator as the app and the command line have them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    h = Server(training_slots=1)
    dataset = open_dataset(EXAMPLE_DATASET)
    threads_before = threading.active_count()
    rss = {}
    t0 = time.perf_counter()
    for i in range(1, args.runs + 1):
        session = h.new_session()
        session.dataset = dataset
        last = None
        for last in h.train.train(session, "tf_efficientnet_lite0.in1k", "", None, "quick", 0, 0, 0.25, i):
            pass
        if "**Done.**" not in last[0]:
            raise SystemExit(f"run {i} did not finish: {last[0][:200]}")
        session.close()
        rss[i] = _rss_mb()
        if i in (1, 5, 10, 25, 50) or i == args.runs:
            sys.stdout.write(f"after run {i:3d}: RSS {rss[i]:6.0f} MB  ({time.perf_counter() - t0:5.0f} s)\n")
            sys.stdout.flush()
    warm = rss[min(5, args.runs)]
    sys.stdout.write(f"growth from run {min(5, args.runs)} to run {args.runs}: {rss[args.runs] - warm:+.0f} MB; "
                     f"threads before {threads_before}, after {threading.active_count()}; "
                     f"session folders left: {len(list(h.root.glob('tls-session-*')))}\n")
    h.close()


if __name__ == "__main__":
    main()
