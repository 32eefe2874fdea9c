"""Check my labels, and "none of these": measured on two real image sets the app never saw.

On the frozen built-in features of the sets of ``bench_engine.py`` (the same training draws, the
same test sets), with Quick's own functions (cross-validation, temperature, head, label check,
"none of these" check):

**Label errors.** 10 % of the training labels are flipped at random to another class. From the
out-of-fold probabilities (cross-fitted calibration, as the app shows them) each method picks
k = number flipped pictures:
  * ours:     ``label_check.label_issue_order`` (the app's order);
  * cleanlab: ``cleanlab.filter.find_label_issues`` on the same probabilities, ranked by
              self-confidence (its default filter; fewer than k when it flags fewer);
  * random:   k pictures drawn at random.
Precision = share of the picked that were flipped; recall = share of the flipped that were picked.
Test accuracy of Quick's head: with the noisy labels; after moving our k picks to the class the
check suggests without looking ("moved"); after a person looked at our k picks and gave each
wrong one its right class, as the page's one click per picture does ("reviewed"); and with the
clean labels.

**None of these.** Two classes are held out as unknown (a different pair per seed); the model
learns the others. On the test set: AUROC of the score for known vs unknown pictures, the share
of unknown pictures refused ("not one of your classes") at the line drawn on the training
pictures, and the share of known pictures wrongly refused. Compared with the plain maximum
probability (refused when 1 - max probability is above the same 98th percentile of its
out-of-fold values). "Other set": the share of the other set's test pictures refused (pictures
from elsewhere entirely: photos of clothes for the drawings' model, drawings for the clothes').

Usage: python benchmarks/bench_labels.py [--seeds 0 1 2] [--sizes 10 20]
Needs scikit-learn and cleanlab (``pip install -e ".[bench]"``).
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
from transfer_gui.engine.calibration import cross_fitted_probabilities, fit_temperature  # noqa: E402
from transfer_gui.engine.label_check import flag_labels, label_issue_order  # noqa: E402
from transfer_gui.engine.novelty import KNOWN_KEPT, fit_novelty  # noqa: E402
from transfer_gui.engine.probe import cross_validate, fit_head, n_folds, stratified_folds  # noqa: E402

NOISE = 0.10


def _quick(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    """Quick's head on (x, y): (out-of-fold probabilities, out-of-fold logits, head weight, bias, temperature)."""
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    folds = stratified_folds(y, n_folds(y), seed)
    cv = cross_validate(xt, yt, n_classes, folds)
    weight, bias = fit_head(xt, yt, n_classes, cv.penalty)
    temperature = fit_temperature(cv.logits, y).temperature
    return cross_fitted_probabilities(cv.logits, y, folds), cv.logits, weight, bias, temperature


def _accuracy(x, y, n_classes, seed, test_x, test_y) -> float:
    _, _, weight, bias, _ = _quick(x, y, n_classes, seed)
    return float(((torch.as_tensor(test_x) @ weight.T + bias).argmax(1).numpy() == test_y).mean())


def label_errors(x, y, test_x, test_y, n_classes: int, seed: int) -> dict:
    """One draw: flip 10 % of the labels, then pick k with each method; precision, recall, accuracy."""
    from cleanlab.filter import find_label_issues

    rng = np.random.default_rng(seed)
    k = max(1, int(round(NOISE * len(y))))
    flipped = rng.choice(len(y), k, replace=False)
    noisy = y.copy()
    for i in flipped:
        noisy[i] = rng.choice([c for c in range(n_classes) if c != y[i]])
    probs, *_ = _quick(x, noisy, n_classes, seed)
    truth = set(flipped.tolist())
    picks = {"ours": label_issue_order(probs, noisy, torch.as_tensor(x))[:k],
             "cleanlab": find_label_issues(noisy, probs, return_indices_ranked_by="self_confidence")[:k],
             "random": rng.choice(len(y), k, replace=False)}
    out = {"k": k}
    for name, chosen in picks.items():
        hits = len(truth & set(np.asarray(chosen).tolist()))
        out[name] = {"precision": hits / max(1, len(chosen)), "recall": hits / k, "picked": len(chosen)}
    _, suggested = flag_labels(probs, noisy)
    fixed = noisy.copy()
    fixed[picks["ours"]] = suggested[picks["ours"]]  # every pick moved to the suggested class, unseen
    reviewed = noisy.copy()
    reviewed[picks["ours"]] = y[picks["ours"]]  # a person looks at each pick: a wrong label gets the right one
    out["accuracy"] = {"noisy": _accuracy(x, noisy, n_classes, seed, test_x, test_y),
                       "fixed": _accuracy(x, fixed, n_classes, seed, test_x, test_y),
                       "reviewed": _accuracy(x, reviewed, n_classes, seed, test_x, test_y),
                       "clean": _accuracy(x, y, n_classes, seed, test_x, test_y)}
    return out


def none_of_these(x, y, test_x, test_y, other_x, n_classes: int, seed: int) -> dict:
    """One draw: two classes unknown; the score's AUROC and refusals, and the max-probability rule's."""
    from sklearn.metrics import roc_auc_score

    unknown = np.random.default_rng(100 + seed).choice(n_classes, 2, replace=False)
    known = np.setdiff1d(np.arange(n_classes), unknown)
    remap = {int(c): i for i, c in enumerate(known)}
    keep = np.isin(y, known)
    xk, yk = x[keep], np.array([remap[int(c)] for c in y[keep]])
    _, oof_logits, weight, bias, temperature = _quick(xk, yk, len(known), seed)
    check = fit_novelty(torch.as_tensor(xk), yk, seed)
    is_unknown = np.isin(test_y, unknown)
    score = check.scores(torch.as_tensor(test_x))
    probs = (torch.as_tensor(test_x) @ weight.T + bias).div(temperature).softmax(1).numpy()
    oof_probs = torch.as_tensor(oof_logits / temperature).softmax(1).numpy()
    plain = 1 - probs.max(1)
    plain_line = float(np.quantile(1 - oof_probs.max(1), KNOWN_KEPT))
    return {"ours": {"auroc": float(roc_auc_score(is_unknown, score)),
                     "unknown_refused": float((score[is_unknown] > 1).mean()),
                     "known_refused": float((score[~is_unknown] > 1).mean()),
                     "other_set_refused": float((check.scores(torch.as_tensor(other_x)) > 1).mean())},
            "max_prob": {"auroc": float(roc_auc_score(is_unknown, plain)),
                         "unknown_refused": float((plain[is_unknown] > plain_line).mean()),
                         "known_refused": float((plain[~is_unknown] > plain_line).mean()),
                         "other_set_refused": float(((1 - (torch.as_tensor(other_x) @ weight.T + bias).div(
                             temperature).softmax(1).numpy().max(1)) > plain_line).mean())}}


def main(argv: list[str] | None = None) -> None:
    """Every set, size and seed: one JSON line each, then the two tables of means."""
    from transfer_gui.engine.speed import tune_process

    tune_process()  # an entry point: threads and allocator as the app and the command line have them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20], help="training images per class")
    parser.add_argument("--model", default="tf_efficientnet_lite0.in1k")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        sets = {name: load_set(name, Path(tmp), args.model) for name in SETS}
        for name, (labels, pool, _, _, test_y, feats, test_x) in sets.items():
            other_x = next(s[6] for other, s in sets.items() if other != name)
            for size in args.sizes:
                for seed in args.seeds:
                    files = draw(pool, size, seed)
                    x = np.stack([feats[p] for label in labels for p in files[label]]).astype(np.float32)
                    y = np.array([i for i, label in enumerate(labels) for _ in files[label]])
                    row = {"set": name, "per_class": size, "seed": seed,
                           "labels": label_errors(x, y, test_x, test_y, len(labels), seed),
                           "none_of_these": none_of_these(x, y, test_x, test_y, other_x, len(labels), seed)}
                    rows.append(row)
                    print(json.dumps(row, default=lambda v: round(v, 4) if isinstance(v, float) else str(v)),
                          flush=True)
    print(tables(rows))


def tables(rows: list[dict]) -> str:
    """Means over seeds: the label-error table and the none-of-these table (Markdown)."""
    groups = sorted({(r["set"], r["per_class"]) for r in rows})

    def mean(group, *keys):
        values = []
        for r in group:
            v = r
            for key in keys:
                v = v[key]
            values.append(v)
        return float(np.mean(values))

    lines = ["| set | per class | flipped (k) | ours: precision / recall | cleanlab | random "
             "| test accuracy: noisy / moved / reviewed / clean | share of the loss recovered: moved / reviewed |",
             "|---|---|---|---|---|---|---|---|"]
    for name, size in groups:
        g = [r for r in rows if (r["set"], r["per_class"]) == (name, size)]
        cells = [f"{mean(g, 'labels', m, 'precision'):.2f} / {mean(g, 'labels', m, 'recall'):.2f}"
                 for m in ("ours", "cleanlab", "random")]
        noisy, moved, reviewed, clean = (mean(g, "labels", "accuracy", a) for a in ("noisy", "fixed", "reviewed", "clean"))
        lost = clean - noisy
        share = (f"{(moved - noisy) / lost:.0%} / {(reviewed - noisy) / lost:.0%}" if lost > 0 else "no loss")
        lines.append(f"| {name} | {size} | {mean(g, 'labels', 'k'):.0f} | " + " | ".join(cells)
                     + f" | {noisy:.3f} / {moved:.3f} / {reviewed:.3f} / {clean:.3f} | {share} |")
    lines += ["", "| set | per class | AUROC: ours / max prob | unknown refused: ours / max prob "
              "| known refused: ours / max prob | other set refused: ours / max prob |", "|---|---|---|---|---|---|"]
    for name, size in groups:
        g = [r for r in rows if (r["set"], r["per_class"]) == (name, size)]
        cells = [" / ".join(f"{mean(g, 'none_of_these', m, key):.3f}" for m in ("ours", "max_prob"))
                 for key in ("auroc", "unknown_refused", "known_refused", "other_set_refused")]
        lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
