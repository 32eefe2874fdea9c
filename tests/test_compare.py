"""Why transfer learning works: pretrained vs from scratch, and the learning curve."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import EXAMPLE
from transfer_gui.engine.experiments import CurvePoint, compare_with_scratch, learning_curve, slope_sentence, subsample
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.data import split_dataset


def test_pretrained_beats_scratch_by_a_wide_margin_and_runs_never_mix(example_dataset):
    """Measured on seeds 0-3 (quick mode, same split, same seconds): pretrained 83/62/79/75 %,
    from scratch 17/21/17/25 %; the smallest gap was 42 points. Asserted here: 30 points."""
    events = list(compare_with_scratch(example_dataset, TrainConfig(seed=0)))
    runs = [e.run for e in events]
    assert runs == sorted(runs, key=["pretrained", "scratch"].index)  # all of one run, then the other
    results = {e.run: e.event.result for e in events if e.event.result is not None}
    assert set(results) == {"pretrained", "scratch"}
    pre, scratch = results["pretrained"], results["scratch"]
    assert pre.config.pretrained and pre.weights_source == "builtin"
    assert not scratch.config.pretrained and scratch.weights_source == "random"
    assert pre.split == scratch.split  # the same training and validation images
    assert pre.val_accuracy - scratch.val_accuracy >= 0.30, (pre.val_accuracy, scratch.val_accuracy)
    for name in ("pretrained", "scratch"):
        own = [e.event for e in events if e.run == name]
        assert own[-1].result is results[name] and sum(e.result is not None for e in own) == 1
        elapsed = [e.elapsed_s for e in own]
        assert elapsed == sorted(elapsed)  # each run's clock is its own
        history = results[name].history  # each run's history holds only its own epochs
        reported = [(e.phase, e.epoch) for e in own if e.val_loss is not None and e.result is None]
        assert [(h.phase, h.epoch) for h in history] == reported


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


def test_cli_curve_prints_json(cli):
    proc = cli("curve", EXAMPLE, "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    curve = json.loads(proc.stdout)
    assert [p["fraction"] for p in curve["points"]] == [0.25, 0.5, 0.75, 1.0]
    assert curve["sentence"].startswith(("Still rising", "Flat")) and curve["n_val"] == 24
    assert "trained on 25% of the images (repeat 1)" in proc.stderr


def test_cli_compare_prints_both_runs(cli):
    proc = cli("compare", EXAMPLE, "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["pretrained"]["pretrained"] is True and out["scratch"]["pretrained"] is False
    assert out["pretrained"]["val_accuracy"] > out["scratch"]["val_accuracy"] + 0.3
    assert out["sentence"].startswith(f"Pretrained: {out['pretrained']['val_accuracy']:.0%} after")
    assert "from scratch" in out["sentence"] and "[scratch" in proc.stderr


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
