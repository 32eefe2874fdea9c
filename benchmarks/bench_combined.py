"""Would combining the built-in backbones beat the best single one? Measured on two real sets.

For each set of ``bench_engine.py`` (the same training draws, the same test sets), Quick's head
(cross-validated penalty, fitted on all training images, temperature on the out-of-fold logits)
on the frozen features of EfficientNet-Lite0, Lite1 and Lite2 alone, and on the three
concatenated (1280 x 3 features). Prints one JSON line per set, size and seed, then the means:
test accuracy and expected calibration error (15 bins).

The app would offer the combination only if it beat the best single backbone by 2 points or
more on both sets.

Usage: python benchmarks/bench_combined.py [--seeds 0 1 2] [--sizes 5 10 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import SETS, draw, load_set  # noqa: E402
from bench_labels import _quick  # noqa: E402
from transfer_gui.engine.evaluation import expected_calibration_error  # noqa: E402

MODELS = {"lite0": "tf_efficientnet_lite0.in1k", "lite1": "tf_efficientnet_lite1.in1k",
          "lite2": "tf_efficientnet_lite2.in1k"}
ARMS = (*MODELS, "combined")


def _scores(x: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int) -> dict:
    """Quick's head on (x, y) (bench_labels._quick), scored on the test set."""
    _, _, weight, bias, temperature = _quick(x, y, int(y.max()) + 1, seed)
    probs = (torch.as_tensor(test_x) @ weight.T + bias).div(temperature).softmax(1).numpy()
    return {"acc": float((probs.argmax(1) == test_y).mean()), "ece": expected_calibration_error(probs, test_y)}


def main(argv: list[str] | None = None) -> None:
    """Every set, size and seed: one JSON line each, then the table of means."""
    from transfer_gui.engine.speed import tune_process

    tune_process()  # an entry point: threads and allocator as the app and the command line have them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20], help="training images per class")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        for name in SETS:
            loaded = {arm: load_set(name, Path(tmp) / arm, model) for arm, model in MODELS.items()}
            labels, pool, *_ = loaded["lite0"]
            test_y = loaded["lite0"][4]
            for size in args.sizes:
                for seed in args.seeds:
                    files = draw(pool, size, seed)
                    y = np.array([i for i, label in enumerate(labels) for _ in files[label]])
                    feats = {arm: np.stack([loaded[arm][5][_same(p, loaded["lite0"][1], loaded[arm][1])]
                                            for label in labels for p in files[label]]).astype(np.float32)
                             for arm in MODELS}
                    tests = {arm: loaded[arm][6].astype(np.float32) for arm in MODELS}
                    feats["combined"] = np.concatenate([feats[a] for a in MODELS], axis=1)
                    tests["combined"] = np.concatenate([tests[a] for a in MODELS], axis=1)
                    row = {"set": name, "per_class": size, "seed": seed,
                           **{arm: _scores(feats[arm], y, tests[arm], test_y, seed) for arm in ARMS}}
                    rows.append(row)
                    print(json.dumps(row, default=lambda v: round(v, 4) if isinstance(v, float) else str(v)),
                          flush=True)
    print(table(rows))


def _same(path: Path, pool0: dict, pool: dict) -> Path:
    """The same picture in another model's copy of the set (each load writes its own files)."""
    for label, files in pool0.items():
        if path in files:
            return pool[label][files.index(path)]
    raise KeyError(path)


def table(rows: list[dict]) -> str:
    """Means over seeds: accuracy (ECE) per arm."""
    lines = ["| set | per class | " + " | ".join(f"{arm}: acc (ECE)" for arm in ARMS) + " |",
             "|---|---|" + "---|" * len(ARMS)]
    for name, size in sorted({(r["set"], r["per_class"]) for r in rows}):
        group = [r for r in rows if (r["set"], r["per_class"]) == (name, size)]
        cells = [f"{np.mean([r[arm]['acc'] for r in group]):.3f} ({np.mean([r[arm]['ece'] for r in group]):.3f})"
                 for arm in ARMS]
        lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
