"""Accuracy, calibration and time of the engine on real image sets it never saw, against a reference.

Two real image sets, neither of them the app's example data:
  * openclipart-8: 8 kinds of public-domain drawings from Debian's `openclipart-png` (buildings,
    clothing, desserts, geography, music, office, sports, tools: none of the example's classes),
    N training images per class, up to 40 other images per class as the test set;
  * fashion-mnist: Debian's `dataset-fashion-mnist`, N training images per class from the training
    file, a fixed test set of 100 images per class from the test file.

For each set, training size and seed it prints one JSON line and, at the end, a Markdown table
of means over the seeds:
  * reference: scikit-learn's StandardScaler + LogisticRegression (C=1) on the built-in model's
    frozen features, trained on ALL N training images per class;
  * ours quick / ours finetune: the engine as a user runs it (``workflow.train_model``: whatever
    protocol it chooses, its own calibration), given the same training images;
  * for each: accuracy and expected calibration error (15 bins) on the test set, which no run
    ever sees, and wall seconds (ours: the whole run, model load and image reading included).

Usage: python benchmarks/bench_engine.py [--seeds 0 1 2] [--sets openclipart-8 fashion-mnist]
           [--sizes 5 10 20] [--finetune-sizes 10] [--model tf_efficientnet_lite0.in1k]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm.data
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer_gui.engine.evaluation import expected_calibration_error  # noqa: E402
from transfer_gui.engine.config import TrainConfig  # noqa: E402
from transfer_gui.engine.transforms import eval_transform  # noqa: E402
from transfer_gui.engine.images import PictureShapeError, check_pixels, load_image  # noqa: E402
from transfer_gui.engine.data import scan_files  # noqa: E402
from transfer_gui.engine.weights import create_model  # noqa: E402

OPENCLIPART = Path("/usr/share/openclipart/png")
OPENCLIPART_8 = {"building": "buildings", "clothing": "people/clothing", "dessert": "food/desserts",
                 "map": "geography", "music": "recreation/music", "office": "office",
                 "sport": "recreation/sports", "tool": "tools"}
OPENCLIPART_TEST_PER_CLASS = 40
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]
FASHION_TEST_PER_CLASS = 100
FASHION_POOL_PER_CLASS = 60  # training images are drawn from the first 60 of each class


def _openclipart(tmp: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(pool to draw training images from, test images) per class; each distinct drawing once.
    The test images are a fixed random draw; the pool is everything else."""
    seen: set[str] = set()
    pool, test = {}, {}
    rng = random.Random(1234)
    for label, folder in OPENCLIPART_8.items():
        files = []
        for f in sorted((OPENCLIPART / folder).rglob("*.png")):
            digest = hashlib.sha1(f.read_bytes()).hexdigest()
            with Image.open(f) as im:  # a few drawings are refused to a user too (pixels, shape)
                try:
                    check_pixels(im)
                    refused = im.width * im.height > Image.MAX_IMAGE_PIXELS
                except (PictureShapeError, Image.DecompressionBombError):
                    refused = True
            if digest not in seen and not refused:
                seen.add(digest)
                files.append(f)
        rng.shuffle(files)
        n_test = min(OPENCLIPART_TEST_PER_CLASS, len(files) - 20)
        test[label], pool[label] = files[:n_test], files[n_test:]
    return pool, test


def _fashion(tmp: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Fashion-MNIST as PNG files: (training pool, test images) per class."""
    def read(prefix: str, per_class: int, folder: Path) -> dict[str, list[Path]]:
        with gzip.open(FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz") as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz") as f:
            labels = np.frombuffer(f.read(), np.uint8, offset=8)
        out: dict[str, list[Path]] = {name: [] for name in FASHION_CLASSES}
        for i, (pixels, label) in enumerate(zip(images, labels)):
            name = FASHION_CLASSES[label]
            if len(out[name]) < per_class:
                path = folder / name / f"{i:05d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, "L").save(path)
                out[name].append(path)
        return out

    return read("train", FASHION_POOL_PER_CLASS, tmp / "fm-train"), read("t10k", FASHION_TEST_PER_CLASS, tmp / "fm-test")


SETS = {"openclipart-8": _openclipart, "fashion-mnist": _fashion}


def _features(model, paths: list[Path], transform, batch: int = 32) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            x = torch.stack([transform(load_image(p)) for p in paths[i:i + batch]])
            out.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(out).numpy()


def load_set(name: str, tmp: Path, model: str):
    """One set with the built-in features of every pool and test image: (labels, pool, test,
    test paths, test classes, {pool path: features}, test features)."""
    pool, test = SETS[name](tmp)
    labels = sorted(pool)
    test_paths = [p for label in labels for p in test[label]]
    test_y = np.array([i for i, label in enumerate(labels) for _ in test[label]])
    backbone = create_model(model, len(labels)).model.eval()
    transform = eval_transform(timm.data.resolve_model_data_config(backbone))
    pool_paths = [p for label in labels for p in pool[label]]
    feats = dict(zip(pool_paths, _features(backbone, pool_paths, transform)))
    return labels, pool, test, test_paths, test_y, feats, _features(backbone, test_paths, transform)


def draw(pool: dict[str, list[Path]], size: int, seed: int) -> dict[str, list[Path]]:
    """The ``size`` training images per class of one seed (the same draw in every benchmark)."""
    rng = random.Random(seed * 7919 + size)
    return {label: rng.sample(pool[label], size) for label in sorted(pool)}


def _reference(train_x, train_y, test_x, test_y) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(train_x, train_y)
    probs = ref.predict_proba(test_x)
    return {"acc": float((probs.argmax(1) == test_y).mean()),
            "ece": expected_calibration_error(probs, test_y), "s": time.perf_counter() - start}


def _ours(train_files: dict[str, list[Path]], test_paths: list[Path], test_y: np.ndarray, mode: str, seed: int,
          model: str) -> dict:
    """The engine as the CLI and the app run it, then its calibrated predictions on the test set."""
    from transfer_gui.engine.workflow import train_model

    start = time.perf_counter()
    dataset = scan_files(train_files, root="/")
    trained = train_model(dataset, TrainConfig(model=model, mode=mode, seed=seed))
    wall = time.perf_counter() - start
    predictor = trained.predictor
    assert predictor.labels == sorted(train_files)
    probs = predictor.probabilities(test_paths)
    out = {"acc": float((probs.argmax(1) == test_y).mean()), "ece": expected_calibration_error(probs, test_y),
           "s": wall, "T": predictor.temperature}
    summary = trained.summary()
    out["estimate"] = summary["val_accuracy"]
    out["kept"] = summary["kept"]
    return out


def main() -> None:
    """Run the benchmark and print the figures."""
    from transfer_gui.engine.speed import tune_process

    tune_process()  # an entry point: threads and allocator as the app and the command line have them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20], help="training images per class")
    parser.add_argument("--finetune-sizes", type=int, nargs="*", default=[10],
                        help="sizes that also run fine-tune (minutes each on a CPU)")
    parser.add_argument("--model", default="tf_efficientnet_lite0.in1k")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        for name in args.sets:
            labels, pool, test, test_paths, test_y, feats, test_x = load_set(name, Path(tmp), args.model)
            print(f"# {name}: {len(labels)} classes, training pool {len(feats)}, test {len(test_paths)} images "
                  f"(per class: {', '.join(f'{k} {len(v)}' for k, v in test.items())})", flush=True)
            for size in args.sizes:
                for seed in args.seeds:
                    train_files = draw(pool, size, seed)
                    train_paths = [p for label in labels for p in train_files[label]]
                    train_y = np.array([i for i, label in enumerate(labels) for _ in train_files[label]])
                    row = {"set": name, "per_class": size, "seed": seed,
                           "reference": _reference(np.stack([feats[p] for p in train_paths]), train_y, test_x, test_y)}
                    for mode in ("quick", "finetune") if size in args.finetune_sizes else ("quick",):
                        row[mode] = _ours(train_files, test_paths, test_y, mode, seed, args.model)
                    rows.append(row)
                    print(json.dumps(row, default=lambda v: round(v, 4) if isinstance(v, float) else str(v)),
                          flush=True)
    print(table(rows))


def table(rows: list[dict]) -> str:
    """Means over seeds, one line per (set, size): each arm's test accuracy, the accuracy our
    engine told the user to expect (its estimate), calibration error, seconds, and how often
    fine-tuning was kept."""
    lines = ["| set | per class | seeds | reference acc | quick acc | quick said | finetune acc | finetune said "
             "| FT kept | reference ECE | quick ECE | finetune ECE | quick s | finetune s |", "|" + "---|" * 14]
    keys = sorted({(r["set"], r["per_class"]) for r in rows}, key=lambda k: (k[0], k[1]))

    def mean(group, arm, key, fmt):
        values = [r[arm][key] for r in group if arm in r and r[arm].get(key) is not None]
        return fmt.format(np.mean(values)) if values else ""

    for name, size in keys:
        group = [r for r in rows if (r["set"], r["per_class"]) == (name, size)]
        kept = [r["finetune"]["kept"] for r in group if "finetune" in r]
        lines.append(f"| {name} | {size} | {len(group)} | " + " | ".join([
            mean(group, "reference", "acc", "{:.3f}"), mean(group, "quick", "acc", "{:.3f}"),
            mean(group, "quick", "estimate", "{:.3f}"), mean(group, "finetune", "acc", "{:.3f}"),
            mean(group, "finetune", "estimate", "{:.3f}"),
            f"{sum(k != 'head' for k in kept)}/{len(kept)}" if kept else "",
            mean(group, "reference", "ece", "{:.3f}"), mean(group, "quick", "ece", "{:.3f}"),
            mean(group, "finetune", "ece", "{:.3f}"), mean(group, "quick", "s", "{:.1f}"),
            mean(group, "finetune", "s", "{:.0f}")]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
