"""How models are measured and what is kept: cross-validation on small sets, every image in the
final model, calibration only on enough evidence, fine-tuning kept only when it wins. Real weights,
real images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transfer_gui.engine.calibration import MIN_CALIBRATION_IMAGES, TEMPERATURE_RANGE, fit_temperature
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.transforms import eval_transform
from transfer_gui.engine.evaluation import (calibrated_floor, calibration_error, check_calibration,
                                            expected_calibration_error, wilson_interval)
from transfer_gui.engine.probe import fit_head, n_folds, stratified_folds
from transfer_gui.engine.training import train
from transfer_gui.engine.workflow import finish, save


@pytest.fixture(scope="module")
def example_features(quick_result, example_dataset):
    """Features of every example image through the trained model's (frozen) backbone, on the fast
    paths Quick itself used: in bf16 (a CPU with AMX) features differ from fp32 ones by enough to
    move the fitted heads' probabilities by 4e-2."""
    from transfer_gui.engine.features import extract_features, make_loader
    from transfer_gui.engine.speed import fast_paths

    model = quick_result.model.eval()
    paths = fast_paths(torch.device("cpu"), quick_result.config.precision)
    loader = make_loader(example_dataset, list(range(len(example_dataset.items))),
                         eval_transform(quick_result.data_config), paths.batch, False, 0)
    *_, (_, features) = extract_features(model, loader, torch.device("cpu"), paths)
    return features


def test_folds_are_stratified_and_copies_share_a_fold():
    targets = np.array([0] * 10 + [1] * 7 + [2] * 5)
    folds = stratified_folds(targets, n_folds(targets), seed=0)
    assert n_folds(targets) == 5 and n_folds([0, 0, 1, 1, 1]) == 2 and n_folds([0, 1]) == 2
    for c in range(3):
        per_fold = np.bincount(folds[targets == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1  # each class spread evenly
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    groups = [f"img{i // 2}" for i in range(len(targets))]  # pairs of byte-identical copies
    grouped = stratified_folds(targets, 3, seed=1, groups=groups)
    assert all(grouped[i] == grouped[i + 1] for i in range(0, len(targets) - 1, 2) if targets[i] == targets[i + 1])
    assert (stratified_folds(targets, 5, seed=0) == folds).all()  # seeded


def test_every_image_gets_exactly_one_out_of_fold_prediction(quick_result, example_dataset, example_features):
    """Quick on the example data: 5-fold cross-validation over all 96 images, and each stored
    prediction really comes from a head that never saw that image."""
    v = quick_result.validation
    n = len(example_dataset.items)
    assert v.method == "cross-validation" and v.k == 5 and v.trained_on_all
    assert v.indices == tuple(range(n)) and v.logits.shape == (n, len(example_dataset.labels))
    targets = torch.tensor(example_dataset.targets)
    for label in range(len(example_dataset.labels)):  # stratified: every class in every fold
        assert set(v.folds[(targets == label).numpy()]) == set(range(5))
    penalty = quick_result.best.penalty
    fold = 2
    inside = torch.from_numpy(v.folds != fold)
    w, b = fit_head(example_features[inside], targets[inside], len(example_dataset.labels), penalty)
    held = (example_features[~inside] @ w.T + b).softmax(1).numpy()
    stored = torch.as_tensor(v.logits[~inside.numpy()]).softmax(1).numpy()
    # the same answers as a head fitted without that fold (the solver stops at a gradient
    # tolerance, and cross-validation warm-starts along its path: probabilities agree to 1e-2)...
    assert (held.argmax(1) == stored.argmax(1)).all() and np.abs(held - stored).max() < 1e-2
    # ...and not those of the final head, which saw these images
    head = quick_result.model.get_classifier()
    seen = (example_features[~inside] @ head.weight.T + head.bias).softmax(1).detach().numpy()
    assert np.abs(seen - stored).max() > 5 * np.abs(held - stored).max()


def test_the_kept_model_learned_from_every_image(quick_result, example_dataset, example_features, tmp_path):
    targets = torch.tensor(example_dataset.targets)
    w, b = fit_head(example_features, targets, len(example_dataset.labels), quick_result.best.penalty)
    head = quick_result.model.get_classifier()
    assert torch.allclose(head.weight, w, atol=1e-4) and torch.allclose(head.bias, b, atol=1e-4)
    # ...and the bundle says so, with the protocol that measured it
    trained = finish(quick_result, example_dataset)
    folder = save(trained, example_dataset, tmp_path / "b")
    meta = json.loads((folder / "transfer_gui.json").read_text())
    assert meta["validation"] == {"method": "cross-validation", "folds": 5, "n_images": 96,
                                  "trained_on_all_images": True, "note": quick_result.validation.note}
    est = meta["estimate"]
    assert est["accuracy"] == pytest.approx(trained.evaluation.accuracy) and est["n_images"] == 96
    low, high = est["interval"]
    assert (low, high) == pytest.approx(wilson_interval(round(est["accuracy"] * 96), 96))
    assert low < est["accuracy"] < high and est["interval_kind"] == "95 % Wilson score interval"
    assert 0 <= est["ece"] <= 1
    card = (folder / "README.md").read_text()
    assert "5-fold cross-validation on all 96 images" in card and "all of them used to train the final model" in card


def test_results_cover_all_images_and_calibration_is_measured_honestly(quick_result, example_dataset):
    trained = finish(quick_result, example_dataset)
    ev = trained.evaluation
    assert ev.n_images == 96 and sum(v["support"] for v in ev.per_class.values()) == 96
    assert sum(map(sum, ev.confusion)) == 96
    assert trained.calibration.n_images == 96 and trained.calibration.fitted
    assert TEMPERATURE_RANGE[0] <= trained.calibration.temperature <= TEMPERATURE_RANGE[1]
    # the ECE is measured on cross-fitted probabilities: each fold's temperature from the others
    assert trained.estimate.ece == pytest.approx(expected_calibration_error(trained.checked_probs,
                                                                           trained.checked_targets))
    assert sum(b.count for b in trained.reliability()) == 96
    meaning = trained.threshold(0.6)
    assert meaning.below + meaning.above == 96
    right = (trained.checked_probs.argmax(1) == trained.checked_targets)
    low = trained.checked_probs.max(1) < 0.6
    assert (meaning.right_below, meaning.right_above) == (int((right & low).sum()), int((right & ~low).sum()))
    assert meaning.sentence().startswith("On your images")


def test_calibration_is_refused_on_too_little_evidence_and_bounded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4))
    logits[np.arange(400), y] += 1.0
    few = fit_temperature(logits[:MIN_CALIBRATION_IMAGES - 1] * 20, y[:MIN_CALIBRATION_IMAGES - 1])
    assert not few.fitted and few.temperature == 1.0 and "not calibrated" in few.sentence()
    wild = fit_temperature(logits * 50, y)  # absurdly over-confident: the fit stops at the bound
    assert wild.fitted and wild.temperature == pytest.approx(TEMPERATURE_RANGE[1], rel=1e-3)
    assert fit_temperature(logits * 0.01, y).temperature == pytest.approx(TEMPERATURE_RANGE[0], rel=1e-3)


def test_a_calibration_error_is_read_against_what_sampling_alone_gives():
    rng = np.random.default_rng(0)
    probs = torch.randn(300, 8, dtype=torch.float64).mul(2).softmax(1).numpy()
    targets = rng.integers(0, 8, 300)
    assert calibration_error(probs.max(1), probs.argmax(1) == targets) == expected_calibration_error(probs, targets)
    # one bin at 50 %: a perfectly calibrated model's hit rate on 320 answers is off by
    # E|binomial mean - 0.5| = sqrt(2/pi) * sqrt(0.25/320) = 0.022 on average
    assert calibrated_floor(np.full(320, 0.5)) == pytest.approx(0.0223, rel=0.15)
    # confidences spread from 20 % to 95 %, as on a hard set: sampling alone passes 0.05
    assert calibrated_floor(np.linspace(0.2, 0.95, 320)) > 0.05
    assert calibrated_floor(np.ones(50)) == 0.0
    # answers drawn right with their stated probability read as chance; 90 % said, half right, do not
    stated = np.linspace(0.3, 0.95, 100)
    assert check_calibration(stated, rng.random(100) < stated).within_chance
    overconfident = check_calibration(np.full(100, 0.9), np.arange(100) % 2 == 0)
    assert overconfident.ece == pytest.approx(0.4) and overconfident.chance == 0 and not overconfident.within_chance


def test_probe_is_scikit_learns_logistic_regression(example_features, example_dataset):
    """Same penalty, same standardisation (each feature's scale floored at 0.3x the median one's):
    the same probabilities as scikit-learn's solver."""
    from sklearn.linear_model import LogisticRegression

    x, y = example_features, torch.tensor(example_dataset.targets)
    std = x.double().std(0, unbiased=False)
    std = std.clamp_min(0.3 * std.median())
    z = ((x.double() - x.double().mean(0)) / std).numpy()
    for penalty in (0.01, 0.3):
        w, b = fit_head(x, y, len(example_dataset.labels), penalty)
        ours = (x @ w.T + b).softmax(1).numpy()
        theirs = LogisticRegression(C=penalty, max_iter=10_000, tol=1e-10).fit(z, y.numpy()).predict_proba(z)
        assert np.abs(ours - theirs).max() < 2e-3


@pytest.mark.slow
def test_fine_tune_is_kept_only_when_it_beats_quick_and_then_learns_from_every_image(example_dataset):
    """Whichever way the evidence goes, what was kept, the history and the note agree; the
    decision is a sign test on the held-out pictures the two models disagree on."""
    from transfer_gui.engine.finetune import Outcome as _Outcome
    from transfer_gui.engine.policies import SIGN_TEST_LEVEL, _judge

    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    probe = np.eye(2)[[0, 0, 1, 1, 0, 0, 0, 0]]  # right on 0, 3, 4, 6: 4 of 8
    three_fixes = _judge(_Outcome(1, 0.5, 0.875, np.eye(2)[[0, 1, 0, 1, 0, 0, 0, 1]]), probe, y)
    assert (three_fixes.fixed, three_fixes.broke) == (3, 0) and three_fixes.p_value == 0.125
    assert not three_fixes.wins and SIGN_TEST_LEVEL == 0.1  # 3-0 is not clear enough
    four_fixes = _judge(_Outcome(1, 0.5, 1.0, np.eye(2)[[0, 1, 0, 1, 0, 1, 0, 1]]), probe, y)
    assert (four_fixes.fixed, four_fixes.broke, four_fixes.p_value) == (4, 0, 0.0625) and four_fixes.wins
    result = train(example_dataset, TrainConfig(mode="finetune", epochs=2, seed=0))
    v = result.validation
    phases = [r.phase for r in result.history]
    assert phases.count("finetune") >= 1 and v.trained_on_all
    if result.best.phase == "head":  # fine-tuning lost: the cross-validated quick model stays
        assert v.method == "cross-validation" and "did not clearly beat the quick model" in v.note
        assert "refit" not in phases
    else:  # it won: the network was trained again on all images for the winning number of epochs
        assert v.method == "holdout" and "fine-tuned on all 96 images" in v.note
        winner = min((r for r in result.history if r.phase == "finetune"), key=lambda r: r.val_loss)
        assert phases.count("refit") == winner.epoch and result.best.phase == "refit"
