"""Insight: calibration, confusion matrix picture and cells, Grad-CAM heat maps, dataset checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import PHOTOS, TEST_IMAGES, shape_with_box, write_shapes
from transfer_gui.engine.bundle import save_bundle
from transfer_gui.engine.calibration import fit_temperature, top_label_nll
from transfer_gui.engine.catalog import CATALOG
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.data import open_dataset, scan_folder, split_dataset
from transfer_gui.engine.explain import heat_map
from transfer_gui.engine.figures import confusion_picture, overlay_heat
from transfer_gui.engine.inference import Predictor
from transfer_gui.engine.workflow import finish, open_model
from transfer_gui.engine.training import train
from transfer_gui.engine.weights import create_model


@pytest.fixture(scope="module")
def evaluated(quick_result, example_dataset):
    """(predictor, calibration, evaluation) of the quick model on its out-of-fold predictions."""
    trained = finish(quick_result, example_dataset)
    return trained.predictor, trained.calibration, trained.evaluation


# --- calibration -------------------------------------------------------------------------------

def _logits(rng, n, k, scale):
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 1.5
    return z * scale, y


# 0.5: under-confident by 2x, inside the fitted range (0.25-4); the bounds have their own test
@pytest.mark.parametrize("scale, softer", [(6.0, True), (0.5, False)])
def test_temperature_undoes_over_and_under_confidence(scale, softer):
    rng = np.random.default_rng(0)
    logits, y = _logits(rng, 400, 5, scale)
    cal = fit_temperature(logits, y)
    assert (cal.temperature > 1.5) if softer else (cal.temperature < 0.7)
    assert cal.nll_after < cal.nll_before
    assert cal.nll_after == pytest.approx(top_label_nll(logits, y, cal.temperature))
    # the fitted T is the minimum: nudging it either way does not lower the loss
    for t in (cal.temperature * 0.9, cal.temperature * 1.1):
        assert top_label_nll(logits, y, t) >= cal.nll_after - 1e-9


def test_temperature_never_worse_and_empty_is_identity():
    logits = np.array([[5.0, 0.0], [0.0, 5.0]])
    cal = fit_temperature(logits, np.array([0, 1]))
    assert cal.nll_after <= cal.nll_before
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0)).temperature == 1.0


def test_calibration_on_real_out_of_fold_predictions_and_kept_in_the_bundle(evaluated, quick_result,
                                                                           example_dataset, tmp_path):
    predictor, cal, report = evaluated
    assert cal.n_images == len(quick_result.validation.indices) == 96 and cal.fitted
    assert cal.nll_after <= cal.nll_before
    assert predictor.temperature == cal.temperature
    # accuracy is untouched (same ranking), confidences follow the temperature
    raw = np.asarray(quick_result.validation.logits).argmax(1)
    assert (raw == np.array(example_dataset.targets)).mean() == report.accuracy
    folder = save_bundle(quick_result, tmp_path / "b", calibration=cal.to_dict())
    reloaded = open_model(folder).predictor
    assert reloaded.temperature == cal.temperature
    image = TEST_IMAGES / "fruit_lemon_wedge_ganson.png"
    assert np.allclose(reloaded.probabilities([image]), predictor.probabilities([image]), atol=1e-5)


# --- confusion matrix ----------------------------------------------------------------------------

def test_confusion_picture_counts_and_cells_match_the_evaluation(evaluated, artifacts):
    _, _, report = evaluated
    pic = confusion_picture(report.labels, report.confusion)
    pic.image.save(artifacts / "confusion_matrix.png")
    assert pic.counts == report.confusion
    assert sum(map(sum, pic.counts)) == report.n_images
    assert pic.image.width >= pic.left + len(report.labels) * pic.cell
    for i, t in enumerate(report.labels):
        for j, p in enumerate(report.labels):
            assert pic.cell_at(*pic.centre(t, p)) == (t, p)
            cell = report.cell(t, p)
            assert len(cell) == report.confusion[i][j]
            assert all(r.true_label == t and r.predicted_label == p for r in cell)
    assert pic.cell_at(2, 2) is None  # the label margin is not a cell
    # every mistake sits in an off-diagonal cell, and the cells hold every image exactly once
    cells = [r.index for t in report.labels for p in report.labels for r in report.cell(t, p)]
    assert sorted(cells) == list(range(report.n_images))


# --- heat maps -----------------------------------------------------------------------------------

def test_heat_maps_have_the_picture_size_and_are_not_constant(evaluated, artifacts):
    predictor, _, _ = evaluated
    for path in sorted(TEST_IMAGES.glob("*.png"))[:3] + [PHOTOS / "chelsea.jpg"]:
        hm = heat_map(predictor, path)
        size = Image.open(path).size
        assert hm.heat.shape == (size[1], size[0])
        assert hm.heat.min() >= 0 and hm.heat.max() == pytest.approx(1.0, abs=0.02)
        assert hm.heat.std() > 0.05
        assert hm.label == predictor.predict(path, top_k=1)[0][0]
        assert np.allclose(hm.probabilities, predictor.probabilities([path])[0], atol=1e-6)  # same pass
        overlay = hm.overlay()
        assert overlay.size == size and overlay.mode == "RGB"
    overlay.save(artifacts / "heat_map_photo.png")
    # any class can be explained, not only the predicted one
    other = heat_map(predictor, PHOTOS / "chelsea.jpg", label="vehicle")
    assert other.label == "vehicle" and other.heat.shape == hm.heat.shape
    with pytest.raises(KeyError):
        heat_map(predictor, PHOTOS / "chelsea.jpg", label="no such class")


def test_heat_map_mass_lies_on_the_shape(tmp_path, artifacts):
    """A model trained to tell a red square from a blue circle on noise must look at the shape."""
    size = 224
    root = tmp_path / "shapes"
    write_shapes(root, per_class=12, size=size)
    dataset = open_dataset(root)
    result = train(dataset, TrainConfig(mode="quick", seed=0))
    trained = finish(result, dataset)
    predictor, report = trained.predictor, trained.evaluation
    assert report.accuracy == 1.0
    masses, shares = [], []
    for seed in range(5000, 5008):  # new images, not in training
        kind = "square" if seed % 2 else "circle"
        image, (x0, y0, x1, y1) = shape_with_box(kind, seed, size)
        hm = heat_map(predictor, image)
        assert hm.label == kind
        inside = np.zeros(hm.heat.shape, bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        masses.append(float(hm.heat[inside].sum() / hm.heat.sum()))
        shares.append(float(inside.mean()))
        if seed < 5002:
            hm.overlay().save(artifacts / f"heat_map_{kind}.png")
    # The shape covers about a quarter of the picture; the map puts most of its mass there:
    # more than half on average, and on every image well above the shape's share of the area.
    assert np.mean(masses) > 0.55, masses
    assert all(m > 1.5 * s for m, s in zip(masses, shares)), (masses, shares)


@pytest.mark.parametrize("info", CATALOG, ids=[m.name for m in CATALOG])
def test_every_catalog_family_gives_a_heat_map(info):
    """CNNs and ViTs alike (architecture only: random weights, no download)."""
    loaded = create_model(info.name, 3, pretrained=False)
    import timm.data

    config = timm.data.resolve_model_data_config(loaded.model)
    predictor = Predictor(loaded.model, ["a", "b", "c"], config, device="cpu")
    hm = heat_map(predictor, TEST_IMAGES / "animal_dolphin.png")
    assert hm.reason is None, hm.reason
    assert hm.heat.shape == (171, 171) and hm.heat.std() > 0.01
    assert ("norm1" in hm.method) == (info.family == "vit")


def test_a_model_without_a_spatial_map_says_so_in_a_sentence():
    """MLP-Mixer's features are a token list without a patch grid this code knows."""
    import timm

    model = timm.create_model("mixer_s32_224", pretrained=False, num_classes=2)
    config = timm.data.resolve_model_data_config(model)
    hm = heat_map(Predictor(model, ["a", "b"], config, device="cpu"), TEST_IMAGES / "animal_dolphin.png")
    assert hm.heat is None and "no heat map can be drawn" in hm.reason
    assert hm.overlay().size == (171, 171)  # the picture alone, nothing crashes


def test_overlay_rejects_a_map_of_another_size():
    with pytest.raises(ValueError, match="does not match"):
        overlay_heat(Image.new("RGB", (10, 10)), np.zeros((5, 5)))


# --- dataset checks ------------------------------------------------------------------------------

def test_dataset_checks_name_the_offending_images(tmp_path):
    root = write_shapes(tmp_path / "d", per_class=16)
    for p in sorted((root / "circle").glob("*.png"))[4:]:
        p.unlink()
    (root / "circle" / "copy.png").write_bytes((root / "square" / "square_0.png").read_bytes())
    (root / "square" / "again.png").write_bytes((root / "square" / "square_1.png").read_bytes())
    ds = scan_folder(root)

    def leaked_in(split):  # computed directly: validation images whose bytes are in training
        train_hashes = {ds.items[i].sha1 for i in split.train}
        return [ds.items[i].rel for i in split.val if ds.items[i].sha1 in train_hashes]

    # a seed whose split puts a copy on each side (the copies make that likely, not certain)
    split = next(s for s in (split_dataset(ds, 0.5, seed) for seed in range(50)) if leaked_in(s))
    # the scan's checks, made once, and the split's leakage check, made once
    checks = {c.key: c for c in [*ds.report.checks, split.leakage]}
    assert set(checks) == {"imbalance", "small_classes", "conflicts", "duplicates", "leakage"}
    assert not checks["imbalance"].ok and "'square' has 17" in checks["imbalance"].message
    assert checks["small_classes"].ok  # circle has 5 = the minimum we ask for
    conflict_files = sorted(p.split("/")[-2] + "/" + p.split("/")[-1] for p, _ in checks["conflicts"].images)
    assert conflict_files == ["circle/copy.png", "square/square_0.png"]
    dup_files = sorted(p.rsplit("/", 1)[-1] for p, _ in checks["duplicates"].images)
    assert dup_files == ["again.png", "square_1.png"]
    assert "1 image(s) are exact copies" in checks["duplicates"].message
    assert not checks["leakage"].ok
    leaked = leaked_in(split)
    shown = {c.split(": ", 1)[1] for _, c in checks["leakage"].images if c.startswith("checked")}
    assert shown == set(leaked)
    # the scan's warnings are these checks' messages
    for key in ("imbalance", "conflicts", "duplicates"):
        assert checks[key].message in ds.report.warnings


def test_clean_example_data_passes_every_check(example_dataset):
    split = split_dataset(example_dataset, 0.25, 0)
    assert all(c.ok for c in [*example_dataset.report.checks, split.leakage])
