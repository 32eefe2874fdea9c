"""Labelling assistant: does asking about the least certain pictures first save labels?

A simulated person sorts a pile of real labelled pictures whose labels the model never sees until
the person "gives" them. Sets as in bench_engine.py: openclipart-8 (its pool per class) and
fashion-mnist (60 pool images per class), each with its own separate test set.

For each set and seed: start from 2 labelled pictures per class (random), then label 10 more per
round for ``--rounds`` rounds, choosing them least-certain-first (the engine's
``labelling.review_order``: smallest margin between the two likeliest calibrated classes) or in a
random order. After each round the head is trained as Quick trains it (the penalty chosen by
cross-validation, fitted on every labelled picture, temperature from the out-of-fold answers) on
the built-in model's features, computed once. Printed per round: accuracy on the test set against
labels spent, and how many of the round's 10 suggestions the person had to correct (the model's
top class was not the true one). Three orders: the app's (least certain first, the suggested
classes taken in turn), the plain margin order, and random. A Markdown table of means over the seeds follows.

Usage: python benchmarks/bench_label.py [--seeds 0 1 2] [--rounds 6] [--sets openclipart-8 fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import timm.data
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import SETS, _features  # noqa: E402
from transfer_gui.engine.calibration import fit_temperature  # noqa: E402
from transfer_gui.engine.labelling import review_order  # noqa: E402
from transfer_gui.engine.probe import cross_validate, fit_head, n_folds, stratified_folds  # noqa: E402
from transfer_gui.engine.transforms import eval_transform  # noqa: E402
from transfer_gui.engine.weights import create_model  # noqa: E402

START_PER_CLASS = 2
PER_ROUND = 10
# least certain first: the classes suggested taken in turn (the app's order), or the plain margin
# order; and the baseline, a random order
ORDERS = ("balanced", "uncertain", "random")


def quick_head(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    """Quick's head on these features: (weight, bias, temperature)."""
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    folds = stratified_folds(y, n_folds(y), seed)
    choice = cross_validate(xt, yt, n_classes, folds)
    weight, bias = fit_head(xt, yt, n_classes, choice.penalty)
    temperature = fit_temperature(choice.logits, y).temperature
    return weight.numpy(), bias.numpy(), temperature


def probabilities(x: np.ndarray, head) -> np.ndarray:
    weight, bias, temperature = head
    logits = (x @ weight.T + bias) / temperature
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def simulate(pool_x, pool_y, test_x, test_y, n_classes: int, order: str, rounds: int, seed: int) -> list[dict]:
    """One person labelling the pool in ``order`` ("uncertain" or "random")."""
    rng = random.Random(seed)
    labelled = []
    for c in range(n_classes):
        labelled += rng.sample([i for i in range(len(pool_y)) if pool_y[i] == c], START_PER_CLASS)
    rows = []
    corrected = None
    for r in range(rounds + 1):
        head = quick_head(pool_x[labelled], pool_y[labelled], n_classes, seed)
        accuracy = float((probabilities(test_x, head).argmax(1) == test_y).mean())
        rows.append({"round": r, "labels": len(labelled), "accuracy": round(accuracy, 4), "corrected": corrected})
        if r == rounds:
            break
        rest = [i for i in range(len(pool_y)) if i not in set(labelled)]
        probs = probabilities(pool_x[rest], head)
        if order in ORDERS[:2]:
            picked = [rest[i] for i in review_order(probs, balanced=order == "balanced")[:PER_ROUND]]
        else:
            picked = rng.sample(rest, min(PER_ROUND, len(rest)))
        suggested = probabilities(pool_x[picked], head).argmax(1)
        corrected = int((suggested != pool_y[picked]).sum())
        labelled += picked
    return rows


def main(argv: list[str] | None = None) -> None:
    """Every set, seed and order; JSON lines, then a table of means."""
    from transfer_gui.engine.speed import tune_process

    tune_process()  # an entry point: threads and allocator as the app and the command line have them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    args = parser.parse_args(argv)
    model = create_model("tf_efficientnet_lite0.in1k", 2).model.eval()
    transform = eval_transform(timm.data.resolve_model_data_config(model))
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            pool, test = SETS[name](Path(tmp))
            labels = sorted(pool)
            pool_paths = [p for label in labels for p in pool[label]]
            pool_y = np.array([labels.index(label) for label in labels for _ in pool[label]])
            test_paths = [p for label in labels for p in test[label]]
            test_y = np.array([labels.index(label) for label in labels for _ in test[label]])
            pool_x, test_x = _features(model, pool_paths, transform), _features(model, test_paths, transform)
            runs = {}
            for order in ORDERS:
                for seed in args.seeds:
                    rows = simulate(pool_x, pool_y, test_x, test_y, len(labels), order, args.rounds, seed)
                    runs.setdefault(order, []).append(rows)
                    sys.stdout.write(json.dumps({"set": name, "order": order, "seed": seed, "rows": rows}) + "\n")
                    sys.stdout.flush()
            table.append((name, len(pool_y), len(test_y), runs))
    lines = []
    for name, n_pool, n_test, runs in table:
        lines += [f"\n{name}: pool {n_pool}, test {n_test}; mean test accuracy (corrections of 10) over seeds "
                  f"{' '.join(map(str, args.seeds))}",
                  "| labels | least certain first, classes in turn (the app) | least certain first | random order |",
                  "|---|---|---|---|"]
        for r in range(args.rounds + 1):
            cells = []
            for order in ORDERS:
                acc = np.mean([rows[r]["accuracy"] for rows in runs[order]])
                corr = [rows[r]["corrected"] for rows in runs[order] if rows[r]["corrected"] is not None]
                cells.append(f"{acc:.3f}" + (f" ({np.mean(corr):.1f})" if corr else ""))
            lines.append(f"| {runs['random'][0][r]['labels']} | " + " | ".join(cells) + " |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
