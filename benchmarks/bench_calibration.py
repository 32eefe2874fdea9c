"""Which temperature makes Quick's confidences mean what they say? Measured on two real sets.

Quick fits its head on every image with the penalty chosen by k-fold cross-validation, and its
temperature on the fold models' out-of-fold logits. Those fold models learn from (k-1)/k of the
images, at a relatively stronger penalty, so their logits are smaller than the final model's.
This script compares, on the frozen built-in features of the sets of ``bench_engine.py`` (the
same training draws, the same test sets that no run sees):

  * app:        the final head, the temperature fitted on the fold models' out-of-fold logits;
  * none:       the final head, no temperature;
  * fold-mean:  the mean of the fold heads (a linear head too), the same temperature: the models
                the temperature was fitted on;
  * refit:      the final head, the temperature fitted on the out-of-fold logits of fold models
                refitted at the final model's penalty per image (C x n / n_fold);
  * reference:  scikit-learn's StandardScaler + LogisticRegression, C chosen by 5-fold
                cross-validation of the log-loss (LogisticRegressionCV), no temperature.

For each set, size and seed it prints one JSON line, then a table of means: test accuracy, mean
confidence and expected calibration error (15 bins), and a second table that reads the ECE against
what sampling alone gives: "floor" is the mean ECE that a perfectly calibrated model stating the
same confidences would show on the same number of test pictures (each answer drawn right with its
stated probability), and "pooled" is the ECE of every seed's test answers taken together (more
answers, so a smaller floor, which is given too).

Usage: python benchmarks/bench_calibration.py [--seeds 0 1 2] [--sizes 5 10 20]
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
from transfer_gui.engine.calibration import fit_temperature  # noqa: E402
from transfer_gui.engine.evaluation import calibrated_floor, calibration_error, expected_calibration_error  # noqa: E402
from transfer_gui.engine.probe import _solve, cross_validate, fit_head, n_folds, stratified_folds  # noqa: E402

ARMS = ("app", "none", "fold-mean", "refit", "reference")


def _scores(logits: np.ndarray, temperature: float, test_y: np.ndarray) -> dict:
    z = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return _score_probs(z.softmax(1).numpy(), test_y, temperature)


def _score_probs(probs: np.ndarray, test_y: np.ndarray, temperature: float) -> dict:
    top, right = probs.max(1), probs.argmax(1) == test_y
    # the answers themselves ("_top", "_right") are kept for the pooled figures, not printed
    return {"acc": float(right.mean()), "conf": float(top.mean()), "ece": expected_calibration_error(probs, test_y),
            "floor": calibrated_floor(top), "T": temperature, "_top": top, "_right": right}


def _arms(x: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int) -> dict:
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    n_classes = int(y.max()) + 1
    folds = stratified_folds(y, n_folds(y), seed)
    cv = cross_validate(xt, yt, n_classes, folds)
    weight, bias = fit_head(xt, yt, n_classes, cv.penalty)
    final = (torch.as_tensor(test_x, dtype=torch.float32) @ weight.T + bias).numpy()
    temperature = fit_temperature(cv.logits, y).temperature
    out = {"app": _scores(final, temperature, test_y), "none": _scores(final, 1.0, test_y)}
    k = int(folds.max()) + 1
    train = torch.stack([torch.from_numpy(folds != f) for f in range(k)])
    fold_w, fold_b, _ = _solve(xt, yt, n_classes, train, [cv.penalty])
    mean_logits = (torch.as_tensor(test_x, dtype=torch.float32) @ fold_w[0].mean(0).T + fold_b[0].mean(0)).numpy()
    out["fold-mean"] = _scores(mean_logits, temperature, test_y)
    # each fold at the final model's penalty per image: C x n / n_fold
    per_fold = train.sum(1).double().mean().item()
    _, _, refit_logits = _solve(xt, yt, n_classes, train, [cv.penalty * len(y) / per_fold])
    held = (~train).to(refit_logits.dtype)
    oof = (refit_logits[0] * held[:, :, None]).sum(0).numpy()
    out["refit"] = _scores(final, fit_temperature(oof, y).temperature, test_y)
    out["reference"] = _reference(x, y, test_x, test_y)
    out["penalty"] = cv.penalty
    return out


def _reference(x, y, test_x, test_y) -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # scored by log-loss: by default LogisticRegressionCV picks C by accuracy, which on these few images
    # often lands on a strong penalty and nearly flat probabilities (mean confidence 0.39 at accuracy 0.68)
    search = LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=5000)
    ref = make_pipeline(StandardScaler(), search).fit(x, y)
    return _score_probs(ref.predict_proba(test_x), test_y, 1.0)


def main(argv: list[str] | None = None) -> None:
    """Run every set, size and seed; print JSON lines, then a table of means."""
    from transfer_gui.engine.speed import tune_process

    tune_process()  # an entry point: threads and allocator as the app and the command line have them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20], help="training images per class")
    parser.add_argument("--model", default="tf_efficientnet_lite0.in1k")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        for name in args.sets:
            labels, pool, _, _, test_y, feats, test_x = load_set(name, Path(tmp), args.model)
            for size in args.sizes:
                for seed in args.seeds:
                    train_files = draw(pool, size, seed)
                    x = np.stack([feats[p] for label in labels for p in train_files[label]])
                    y = np.array([i for i, label in enumerate(labels) for _ in train_files[label]])
                    row = {"set": name, "per_class": size, "seed": seed, **_arms(x, y, test_x, test_y, seed)}
                    rows.append(row)
                    shown = {k: ({a: b for a, b in v.items() if not a.startswith("_")} if isinstance(v, dict)
                                 else v) for k, v in row.items()}
                    print(json.dumps(shown, default=lambda v: round(v, 4) if isinstance(v, float) else str(v)),
                          flush=True)
    print(table(rows))
    print()
    print(floor_table(rows))


def table(rows: list[dict]) -> str:
    """Means over seeds: accuracy / mean confidence (ECE) per arm."""
    lines = ["| set | per class | " + " | ".join(f"{arm}: acc / conf (ECE)" for arm in ARMS) + " |",
             "|---|---|" + "---|" * len(ARMS)]
    for name, size in sorted({(r["set"], r["per_class"]) for r in rows}):
        group = [r for r in rows if (r["set"], r["per_class"]) == (name, size)]
        cells = []
        for arm in ARMS:
            acc, conf, ece = (np.mean([r[arm][key] for r in group]) for key in ("acc", "conf", "ece"))
            cells.append(f"{acc:.3f} / {conf:.3f} ({ece:.3f})")
        lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



def floor_table(rows: list[dict]) -> str:
    """Per arm: mean ECE over seeds against its calibrated floor, and the pooled ECE against its own."""
    lines = ["| set | per class | test answers per seed | " + " | ".join(
        f"{arm}: ECE / floor, pooled / floor" for arm in ARMS) + " |", "|---|---|---|" + "---|" * len(ARMS)]
    for name, size in sorted({(r["set"], r["per_class"]) for r in rows}):
        group = [r for r in rows if (r["set"], r["per_class"]) == (name, size)]
        cells = []
        for arm in ARMS:
            top = np.concatenate([r[arm]["_top"] for r in group])
            right = np.concatenate([r[arm]["_right"] for r in group])
            cells.append(f"{np.mean([r[arm]['ece'] for r in group]):.3f} / {np.mean([r[arm]['floor'] for r in group]):.3f}, "
                         f"{calibration_error(top, right):.3f} / {calibrated_floor(top):.3f}")
        lines.append(f"| {name} | {size} | {len(group[0]['app']['_top'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
