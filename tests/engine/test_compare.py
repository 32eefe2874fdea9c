"""Why transfer learning works: pretrained vs from scratch, and the learning curve."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import EXAMPLE
from PIL import Image

import numpy as np

from transfer_gui.engine.comparison import CHECKS, COMPARE_SECONDS, compare_with_scratch
from transfer_gui.engine.feature_map import MAP_MAX_IMAGES, FeatureMap, map_picture, map_sample, trained_maps
from transfer_gui.engine.workflow import finish
from transfer_gui.engine.learning_curve import CurvePoint, learning_curve, slope_sentence, subsample
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.data import split_dataset


@pytest.mark.slow
def test_pretrained_climbs_and_scratch_barely_moves_both_from_0_s_with_a_curve_each(example_dataset, quick_result):
    """Measured (seed 0, example data): pretrained 8 % -> 79 % in 2.8-3.0 s of training, from
    scratch 17-25 % over 20 s. Asserted: a 30-point gap, both runs checked from 0 s, 11+ checks."""
    updates = []
    for comparison in compare_with_scratch(example_dataset, TrainConfig(seed=0)):
        updates.append((comparison.running, {run: len(p) for run, p in comparison.points.items()}))
    assert [r for r, _ in updates] == sorted([r for r, _ in updates], key=["pretrained", "scratch", None].index)
    assert updates[-1][0] is None and not comparison.stopped
    pre, scratch = comparison.points["pretrained"], comparison.points["scratch"]
    split = split_dataset(example_dataset, TrainConfig.val_fraction, 0)
    assert comparison.n_checked == len(split.val) == 24 and comparison.n_train == len(split.train) == 72
    for points in (pre, scratch):
        assert points[0].seconds == 0.0 and points[0].steps == 0  # checked before learning anything
        assert len(points) >= CHECKS + 1  # on any machine: slow steps are checked one by one
        assert [p.seconds for p in points] == sorted(p.seconds for p in points)
        assert all(0 <= p.accuracy <= 1 for p in points)
    assert [p.steps for p in pre] == list(range(11))  # a head per tenth of the training images
    assert scratch[-1].seconds >= max(COMPARE_SECONDS, pre[-1].seconds)  # at least the pretrained run's time
    assert pre[-1].accuracy - scratch[-1].accuracy >= 0.30, (pre[-1], scratch[-1])
    assert comparison.chance == 4 / 24  # the largest class of the held-out images
    sentence = comparison.sentence()
    assert sentence.startswith(f"Pretrained: {pre[-1].accuracy:.0%} after") and "from scratch:" in sentence

    # the picture draws exactly these checks, both from 0 s, and labels where each run ended
    picture = comparison.picture()
    assert picture.series == {"pretrained": [(p.seconds, p.accuracy) for p in pre],
                              "from scratch": [(p.seconds, p.accuracy) for p in scratch]}
    assert picture.labels == {"pretrained": f"{pre[-1].accuracy:.0%} after {pre[-1].seconds:.0f} s",
                              "from scratch": f"{scratch[-1].accuracy:.0%} after {scratch[-1].seconds:.0f} s"}
    assert picture.x_max >= scratch[-1].seconds

    # before its first step the random network read the map's images: beside the trained model's
    # map, the same images through random weights
    indices, random_features = comparison.random_features
    assert indices == map_sample(96, 0) == list(range(96)) and random_features.shape == (96, 1280)
    assert comparison.fingerprint == example_dataset.fingerprint()
    trained = finish(quick_result, example_dataset)  # Quick, seed 0
    pretrained_map, random_map = trained_maps(trained, example_dataset, random_features=comparison.random_features)
    for fmap in (pretrained_map, random_map):
        assert fmap.indices == list(range(96)) and fmap.xy.shape == (96, 2) and fmap.n_total == 96
        assert fmap.true == [item.label for item in example_dataset.items]
    # every image has an answer from a model that had not learned from it; mistakes are those
    assert pretrained_map.mistakes == len(trained.evaluation.mistakes) > 0
    assert random_map.predicted == [None] * 96 and random_map.mistakes == 0
    # measured: of each image's 5 nearest on the map, 58 % share its class with pretrained
    # features, 20 % with random ones (guessing: 17 %)
    assert pretrained_map.neighbours >= random_map.neighbours + 0.2, (pretrained_map.neighbours,
                                                                       random_map.neighbours)
    drawn = map_picture([pretrained_map, random_map], example_dataset.labels)
    assert drawn.image.width > 2 * 400 and [len(p) for p in drawn.points] == [96, 96]
    x, y = drawn.points[1][7]
    assert drawn.point_at(x + 2, y - 2) == (1, 7)  # a click on a dot picks its image
    assert drawn.point_at(1, 1) is None


def test_a_large_set_is_mapped_from_a_stated_seeded_sample():
    sample = map_sample(MAP_MAX_IMAGES + 250, seed=3)
    assert len(sample) == MAP_MAX_IMAGES == len(set(sample)) and sample == sorted(sample)
    assert sample == map_sample(MAP_MAX_IMAGES + 250, seed=3) != map_sample(MAP_MAX_IMAGES + 250, seed=4)
    assert map_sample(10, seed=3) == list(range(10))
    fmap = FeatureMap("x", [0, 1], np.zeros((2, 2)), ["a", "b"], [None, None], 0.0, MAP_MAX_IMAGES + 250)
    assert map_picture([fmap], ["a", "b"]).notes[0][0] == f"a random 2 of {MAP_MAX_IMAGES + 250} images"


@pytest.mark.slow
def test_a_budget_shorter_than_a_step_still_gives_a_check_per_step_up_to_checks(example_dataset):
    """Measured: a step of 16 pictures takes 0.6-1.5 s on two cores, so a 1 s budget (the
    pretrained run's ~3 s then sets it) is what a slow machine sees with the 20 s one: each step is
    checked, and the run goes on until CHECKS of them, so the curve has the same points anywhere."""
    *_, comparison = compare_with_scratch(example_dataset, TrainConfig(seed=0), seconds=1.0)
    scratch = comparison.points["scratch"]
    steps = [p.steps for p in scratch]
    assert len(steps) == CHECKS + 1 and steps[0] == 0 and steps == sorted(set(steps))


@pytest.mark.slow
def test_learning_curve_points_fractions_and_sentence(example_dataset):
    config = TrainConfig(seed=0)
    found = [c for _, _, c in learning_curve(example_dataset, config, repeats=2) if c is not None]
    assert len(found) == 1
    curve = found[0]
    assert [p.fraction for p in curve.points] == [0.25, 0.5, 0.75, 1.0]
    assert [len(p.accuracies) for p in curve.points] == [2, 2, 2, 1]
    assert [p.images_per_class for p in curve.points] == [3, 6, 9, 12]  # 12 training images per class
    assert curve.n_val == 24 and curve.sentence == slope_sentence(curve.points)
    assert all(0 <= a <= 1 for p in curve.points for a in p.accuracies)
    # stratified: every class gives round(n * fraction) of its training images, chosen by seed
    split = split_dataset(example_dataset, config.val_fraction, config.seed)
    per_class = Counter(example_dataset.items[i].label for i in split.train)
    for fraction in (0.25, 0.5, 0.75, 1.0):
        chosen = subsample(example_dataset, split.train, fraction, seed=7)
        assert set(chosen) <= set(split.train)
        got = Counter(example_dataset.items[i].label for i in chosen)
        assert got == {label: max(1, round(n * fraction)) for label, n in per_class.items()}
    assert subsample(example_dataset, split.train, 0.5, 1) != subsample(example_dataset, split.train, 0.5, 2)


def _points(means):
    return [CurvePoint(f, 12 * f, (m,), m, 0.0) for f, m in zip((0.25, 0.5, 0.75, 1.0), means)]


@pytest.mark.parametrize("means, word", [((0.4, 0.5, 0.6, 0.7), "Still rising"), ((0.6, 0.8, 0.81, 0.8), "Flat"),
                                         ((0.5, 0.7, 0.72, 0.72), "Flat"), ((0.5, 0.6, 0.62, 0.64), "Still rising")])
def test_the_sentence_reads_the_slope(means, word):
    sentence = slope_sentence(_points(means))
    assert sentence.startswith(word)
    assert ("more images of each class would likely help" in sentence) == (word == "Still rising")


@pytest.mark.slow
def test_cli_curve_prints_json(cli):
    proc = cli("curve", EXAMPLE, "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    curve = json.loads(proc.stdout)
    assert [p["fraction"] for p in curve["points"]] == [0.25, 0.5, 0.75, 1.0]
    assert curve["sentence"].startswith(("Still rising", "Flat")) and curve["n_val"] == 24
    assert "trained on 25% of the images (repeat 1)" in proc.stderr


@pytest.mark.slow
def test_cli_compare_prints_both_runs_checks_and_draws_them(cli, tmp_path):
    picture = tmp_path / "compare.png"
    proc = cli("compare", EXAMPLE, "--seed", "2", "--seconds", "3", "--picture", str(picture))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["runs"]) == {"pretrained", "scratch"} and out["n_checked"] == 24 and out["seconds"] == 3
    for points in out["runs"].values():
        assert points[0]["seconds"] == 0 and points[0]["steps"] == 0
    assert len(out["runs"]["pretrained"]) == 11
    assert out["runs"]["scratch"][-1]["seconds"] >= 3
    assert out["sentence"].startswith(f"Pretrained: {out['runs']['pretrained'][-1]['accuracy']:.0%} after")
    assert "[scratch" in proc.stderr and "[pretrained" in proc.stderr
    with Image.open(picture) as image:
        assert image.size == (720, 360)


@pytest.mark.slow
def test_the_curve_picture_has_whole_number_ticks_at_the_measured_sizes_and_a_band_of_the_tries(example_dataset):
    from transfer_gui.engine.figures import curve_picture

    found = [c for _, _, c in learning_curve(example_dataset, TrainConfig(seed=0), repeats=2) if c is not None][0]
    picture = curve_picture([p.images_per_class for p in found.points], [p.accuracies for p in found.points])
    assert picture.x_ticks == [3, 6, 9, 12] and all(isinstance(x, int) for x in picture.x_ticks)
    assert picture.low == [min(p.accuracies) for p in found.points]
    assert picture.high == [max(p.accuracies) for p in found.points]
    assert all(lo <= m <= hi for lo, m, hi in zip(picture.low, picture.mean, picture.high))
    # the band is drawn: its colour fills pixels between the lowest and highest tries where they differ
    assert any(lo < hi for lo, hi in zip(picture.low, picture.high))
    assert (191, 212, 250) in {c for _, c in picture.image.getcolors(maxcolors=1 << 16)}
