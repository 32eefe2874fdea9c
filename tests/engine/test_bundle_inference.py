"""Bundles describe themselves and reload to identical predictions; metrics are right."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from conftest import TEST_IMAGES
from transfer_gui.engine.bundle import METADATA_FILE, load_bundle, zip_bundle
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.transforms import eval_transform
from transfer_gui.engine.images import load_image
from transfer_gui.engine.data import split_dataset
from transfer_gui.engine.errors import DataError, ModelError
from transfer_gui.engine.evaluation import evaluate_predictions
from transfer_gui.engine.inference import Predictor
from transfer_gui.engine.training import train


def test_bundle_is_timm_hf_layout_with_our_metadata(quick_bundle, quick_result):
    assert {p.name for p in quick_bundle.iterdir()} == {"config.json", "model.safetensors", METADATA_FILE, "README.md"}
    cfg = json.loads((quick_bundle / "config.json").read_text())
    assert cfg["architecture"] == "tf_efficientnet_lite0"
    assert cfg["num_classes"] == 6 and cfg["label_names"] == quick_result.labels
    pc = cfg["pretrained_cfg"]
    assert pc["mean"] == [0.5] * 3 and pc["std"] == [0.5] * 3
    assert pc["input_size"] == [3, 224, 224] and pc["crop_pct"] == 0.875 and pc["interpolation"] == "bicubic"
    meta = json.loads((quick_bundle / METADATA_FILE).read_text())
    assert meta["labels"] == quick_result.labels and meta["seed"] == 0
    assert meta["training"]["mode"] == "quick" and meta["best_epoch"]["val_acc"] == quick_result.val_accuracy
    assert meta["dataset"]["counts"]["animal"] == 16
    assert set(meta["versions"]) == {"python", "torch", "timm", "transfer_gui"}


def test_timm_alone_rebuilds_the_bundle_with_identical_logits(quick_bundle, quick_result):
    model = timm.create_model(f"local-dir:{quick_bundle}", pretrained=True).eval()
    x = torch.stack([eval_transform(quick_result.data_config)(load_image(p))
                     for p in sorted(TEST_IMAGES.iterdir())])
    with torch.no_grad():
        assert torch.allclose(model(x), quick_result.model(x), atol=1e-5)
    assert load_bundle(quick_bundle).data_config == quick_result.data_config


def test_zip_round_trip_predicts_the_same(quick_bundle, quick_result, tmp_path):
    z = zip_bundle(quick_bundle, tmp_path / "model.zip")
    loaded = load_bundle(z, tmp_path / "w")
    assert loaded.labels == quick_result.labels and loaded.metadata["seed"] == 0
    a = Predictor(quick_result.model, quick_result.labels, quick_result.data_config)
    b = Predictor(loaded.model, loaded.labels, loaded.data_config)
    images = sorted(TEST_IMAGES.iterdir())
    pa, pb = a.probabilities(images), b.probabilities(images)
    np.testing.assert_allclose(pa, pb, atol=1e-6)
    np.testing.assert_allclose(pa.sum(axis=1), 1.0, atol=1e-5)


def test_predictor_on_held_out_images_matches_training_numbers(example_dataset):
    """Same pixels at train and predict time: on a holdout, the Predictor reproduces the accuracy
    training measured on those images (from its cached features)."""
    split = split_dataset(example_dataset, 0.25, 0)
    result = train(example_dataset, TrainConfig(mode="quick", seed=0), split=split)
    predictor = Predictor(result.model, result.labels, result.data_config)
    report = predictor.evaluate(example_dataset, split.val)
    assert result.validation.indices == tuple(split.val)
    assert report.accuracy == pytest.approx(result.val_accuracy, abs=1e-6)
    top = predictor.predict(TEST_IMAGES / "animal_dolphin.png", top_k=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


def test_predictor_refuses_unknown_classes(quick_result, tmp_path):
    from conftest import write_shapes
    from transfer_gui.engine.data import scan_folder

    predictor = Predictor(quick_result.model, quick_result.labels, quick_result.data_config)
    with pytest.raises(DataError, match="not trained on: circle, square"):
        predictor.evaluate(scan_folder(write_shapes(tmp_path / "s")))


def test_not_a_bundle(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_bundle(tmp_path / "x")


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    probs[np.arange(200), y] += rng.random(200)  # better than chance, not perfect
    probs /= probs.sum(1, keepdims=True)
    labels = ["a", "b", "c", "d"]
    report = evaluate_predictions(y, probs, labels, [f"img{i}" for i in range(200)])
    pred = probs.argmax(1)
    assert report.accuracy == pytest.approx(accuracy_score(y, pred))
    assert report.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"))
    assert report.confusion == confusion_matrix(y, pred).tolist()
    p, r, f, s = precision_recall_fscore_support(y, pred)
    for i, label in enumerate(labels):
        assert report.per_class[label]["precision"] == pytest.approx(p[i])
        assert report.per_class[label]["recall"] == pytest.approx(r[i])
        assert report.per_class[label]["support"] == s[i]
    assert len(report.mistakes) == int((pred != y).sum())
    # top losses first: the lowest probability given to the true class
    losses = [-np.log(m.true_confidence) for m in report.mistakes]
    assert losses == sorted(losses, reverse=True)
    assert all(m.true_confidence == pytest.approx(probs[m.index, y[m.index]]) for m in report.images)
    # each confusion cell holds exactly the images with that (true, predicted) pair
    for i, t in enumerate(labels):
        for j, q in enumerate(labels):
            cell = report.cell(t, q)
            assert len(cell) == report.confusion[i][j]
            assert {r.index for r in cell} == set(np.nonzero((y == i) & (pred == j))[0].tolist())
