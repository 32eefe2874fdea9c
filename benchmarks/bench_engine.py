"""Accuracy and speed of the engine on a 6-class openclipart set, 10 training images per class.

Prints (figures, not asserts):
  * held-out accuracy of: a reference (scikit-learn logistic regression on the same frozen
    features), our "quick" policy and our "finetune" policy, all trained on the same 60 images;
  * wall seconds of each;
  * speed: quick training of 80 images vs one bare forward pass of the same 80 images.

Data: Debian's public-domain openclipart-png (`apt-get install openclipart-png`). Every image not
used for training is held out. Our runs get ``select_best=False`` and no early stopping, so the
held-out images are only measured, never used to choose an epoch.

Usage: python benchmarks/bench_engine.py [--seeds 0 1 2] [--skip-finetune]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import timm.data
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer_gui.config import TrainConfig  # noqa: E402
from transfer_gui.data import Split, eval_transform, load_image, scan_files  # noqa: E402
from transfer_gui.inference import Predictor  # noqa: E402
from transfer_gui.training import train  # noqa: E402
from transfer_gui.weights import create_model  # noqa: E402

SRC = Path("/usr/share/openclipart/png")
CLASSES = {"bird": "animals/birds", "bug": "animals/bugs", "fish": "animals/fish",
           "flower": "plants/flowers", "fruit": "food/fruit", "vehicle": "transportation/vehicles"}
TRAIN_PER_CLASS = 10


def _files() -> dict[str, list[Path]]:
    """Every class's images, each distinct file once (openclipart files a few drawings twice)."""
    seen: set[str] = set()
    out: dict[str, list[Path]] = {}
    for label, folder in CLASSES.items():
        out[label] = []
        for f in sorted((SRC / folder).glob("*.png")):
            digest = hashlib.sha1(f.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                out[label].append(f)
    return out


def _split(dataset, seed: int) -> Split:
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, item in enumerate(dataset.items):
        by_label.setdefault(item.label, []).append(i)
    train_idx, val_idx = [], []
    for idx in by_label.values():
        rng.shuffle(idx)
        train_idx += idx[:TRAIN_PER_CLASS]
        val_idx += idx[TRAIN_PER_CLASS:]
    return Split(sorted(train_idx), sorted(val_idx), [])


def _features(model, paths, transform, batch=32):
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            x = torch.stack([transform(load_image(p)) for p in paths[i:i + batch]])
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(out).numpy()


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-finetune", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from sklearn.linear_model import LogisticRegression

    if not SRC.is_dir():
        sys.exit("openclipart-png is not installed: apt-get install -y openclipart-png")
    torch.set_num_threads(torch.get_num_threads())
    files = _files()
    dataset = scan_files(files, root=SRC)
    n_classes = len(dataset.labels)
    print(f"data: {len(dataset.items)} images, {n_classes} classes "
          f"({', '.join(f'{k} {v}' for k, v in dataset.report.counts.items())}), "
          f"{TRAIN_PER_CLASS} per class for training, the rest held out; {torch.get_num_threads()} threads")

    backbone = create_model("tf_efficientnet_lite0.in1k", n_classes).model.eval()
    backbone = backbone.to(memory_format=torch.channels_last)
    transform = eval_transform(timm.data.resolve_model_data_config(backbone))
    paths = [item.path for item in dataset.items]
    feats = _features(backbone, paths, transform)
    y = np.array(dataset.targets)

    rows = []
    for seed in args.seeds:
        split = _split(dataset, seed)
        tr, te = np.array(split.train), np.array(split.val)
        t = time.perf_counter()
        ref = LogisticRegression(max_iter=5000).fit(feats[tr], y[tr])
        ref_acc = ref.score(feats[te], y[te])
        ref_s = time.perf_counter() - t
        row = {"seed": seed, "n_train": len(tr), "n_heldout": len(te),
               "reference_logreg_acc": round(ref_acc, 4), "reference_fit_s_after_features": round(ref_s, 2)}
        for mode in ("quick",) + (() if args.skip_finetune else ("finetune",)):
            config = TrainConfig(mode=mode, seed=seed, select_best=False, patience=10_000)
            t = time.perf_counter()
            result = train(dataset, config, split=split)
            wall = time.perf_counter() - t
            acc = Predictor(result.model, result.labels, result.data_config).evaluate(dataset, split.val).accuracy
            row[f"{mode}_acc"] = round(acc, 4)
            row[f"{mode}_wall_s"] = round(wall, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)

    # Speed: quick training of 80 images vs one bare forward pass of the same 80 images, on the
    # openclipart originals (large PNGs: decoding dominates) and on the example dataset (192 px).
    subset = {label: [p for p in files[label]][:14] for label in dataset.labels}
    speed_test(backbone, transform, subset, "openclipart originals")
    example = Path(__file__).resolve().parents[1] / "assets" / "example_dataset"
    speed_test(backbone, transform, {d.name: sorted(d.iterdir()) for d in sorted(example.iterdir())},
               "example dataset (192 px)")
    if rows:
        keys = [k for k in rows[0] if k.endswith("_acc")]
        print("mean over seeds: " + ", ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in keys))


def speed_test(backbone, transform, by_label: dict[str, list[Path]], name: str) -> None:
    """Print quick training time of 80 images beside a bare forward pass of the same images."""
    eighty = [p for label in sorted(by_label) for p in by_label[label][:14]][:80]
    keep = set(eighty)
    small = scan_files({k: [p for p in v if p in keep] for k, v in by_label.items()}, root="/")
    decoded = [transform(load_image(p)) for p in eighty]
    with torch.inference_mode():
        backbone(torch.stack(decoded[:8]).contiguous(memory_format=torch.channels_last))  # warm-up
        t = time.perf_counter()
        for i in range(0, 80, 32):
            backbone(torch.stack(decoded[i:i + 32]).contiguous(memory_format=torch.channels_last))
        bare_forward_s = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(0, 80, 32):
            backbone(torch.stack([transform(load_image(p)) for p in eighty[i:i + 32]])
                     .contiguous(memory_format=torch.channels_last))
        bare_decode_forward_s = time.perf_counter() - t
    t = time.perf_counter()
    train(small, TrainConfig(mode="quick"))
    quick80_s = time.perf_counter() - t
    speed = {"data": name, "images": len(small.items), "bare_forward_s": round(bare_forward_s, 2),
             "bare_decode_and_forward_s": round(bare_decode_forward_s, 2),
             "quick_train_s (model load + decode + features + head)": round(quick80_s, 2),
             "ratio_vs_bare_forward": round(quick80_s / bare_forward_s, 2),
             "ratio_vs_decode_and_forward": round(quick80_s / bare_decode_forward_s, 2)}
    print(json.dumps(speed), flush=True)


if __name__ == "__main__":
    main()
