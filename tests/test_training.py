"""Training behaviour: tiny timm test models for the mechanics, real weights for the learning."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from transfer_gui.config import TrainConfig
from transfer_gui.data import scan_folder, split_dataset
from transfer_gui.errors import UserInputError
from transfer_gui.training import FeatureCache, fit, train

TINY = dict(model="test_efficientnet", pretrained=False)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_quick_trains_only_the_head_and_outputs_num_classes(shapes_dir):
    ds = scan_folder(shapes_dir)
    result = train(ds, TrainConfig(mode="quick", epochs=5, **TINY))
    fresh = train(ds, TrainConfig(mode="quick", epochs=1, **TINY, lr=1e-9))
    with torch.no_grad():
        assert result.model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    trained, untouched = _snapshot(result.model), _snapshot(fresh.model)
    head = {f"classifier.{n}" for n in ("weight", "bias")}
    changed = {k for k in trained if not torch.equal(trained[k], untouched[k])}
    assert changed == head  # same seed, same init: only the classifier moved


def test_finetune_overfits_eight_images_and_loss_falls(tmp_path):
    from conftest import write_shapes

    ds = scan_folder(write_shapes(tmp_path / "s", per_class=4))
    split = split_dataset(ds, 0.5, 0)
    split = type(split)(train=list(range(8)), val=list(range(8)), warnings=[])  # fit and check the same 8
    cfg = TrainConfig(mode="finetune", epochs=12, head_epochs=1, lr=3e-3, patience=100, batch_size=4,
                      label_smoothing=0.0, backbone_lr_scale=1.0, **TINY)
    result = train(ds, cfg, split=split)
    ft = [row for row in result.history if row["phase"] == "finetune"]
    assert min(r["train_loss"] for r in ft[-3:]) < 0.3 * ft[0]["train_loss"]
    assert result.best["val_acc"] == 1.0


def test_finetune_param_groups_give_the_backbone_a_lower_learning_rate(shapes_dir):
    from transfer_gui.training import _param_groups
    from transfer_gui.weights import create_model

    model = create_model("test_efficientnet", 2, pretrained=False).model
    cfg = TrainConfig()
    groups = _param_groups(model, model.get_classifier(), cfg)
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    for g in groups:
        is_head = any(id(p) in head_ids for p in g["params"])
        assert all((id(p) in head_ids) == is_head for p in g["params"])
        assert g["lr_scale"] == (1.0 if is_head else cfg.backbone_lr_scale)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_events_are_ordered_and_the_last_carries_the_result(shapes_dir):
    ds = scan_folder(shapes_dir)
    events = list(fit(ds, TrainConfig(mode="finetune", epochs=2, head_epochs=3, **TINY)))
    phases = [e.phase for e in events]
    assert phases[0] == "load" and phases[-1] == "done"
    assert phases.index("features") < phases.index("head") < phases.index("finetune")
    assert all(e.result is None for e in events[:-1]) and events[-1].result is not None
    epochs = [e for e in events if e.val_loss is not None and e.phase != "done"]
    assert len(epochs) == 5 and all(0 <= e.val_acc <= 1 for e in epochs)
    assert [e.elapsed_s for e in events] == sorted(e.elapsed_s for e in events)
    json.dumps(events[-1].result.history)  # the history goes into bundles as JSON


def test_seeded_runs_are_identical(shapes_dir):
    ds = scan_folder(shapes_dir)
    a = train(ds, TrainConfig(mode="quick", epochs=10, seed=3, **TINY))
    b = train(ds, TrainConfig(mode="quick", epochs=10, seed=3, **TINY))
    assert [r["val_loss"] for r in a.history] == [r["val_loss"] for r in b.history]
    assert torch.equal(a.model.get_classifier().weight, b.model.get_classifier().weight)


def test_stop_between_batches_keeps_best_so_far(shapes_dir):
    ds = scan_folder(shapes_dir)
    stop = threading.Event()
    events = []
    for event in fit(ds, TrainConfig(mode="finetune", epochs=50, head_epochs=4, **TINY), stop=stop):
        events.append(event)
        if event.phase == "finetune" and event.val_loss is not None:
            stop.set()  # the user presses Stop after the first fine-tune epoch
    result = events[-1].result
    assert result.stopped
    assert sum(1 for r in result.history if r["phase"] == "finetune") == 1
    assert result.best == min(result.history, key=lambda r: r["val_loss"])
    assert "Stopped" in events[-1].message


def test_feature_cache_skips_the_backbone_the_second_time(shapes_dir):
    ds = scan_folder(shapes_dir)
    cache = FeatureCache()
    first = list(fit(ds, TrainConfig(mode="quick", epochs=2, **TINY), cache=cache))
    second = list(fit(ds, TrainConfig(mode="quick", epochs=2, lr=0.01, **TINY), cache=cache))
    assert len(cache) == 1
    assert any("reused" in e.message for e in second) and not any("reused" in e.message for e in first)


def test_bad_config_is_a_clear_error():
    with pytest.raises(UserInputError, match="Unknown training mode 'slow'"):
        TrainConfig(mode="slow")
    with pytest.raises(UserInputError, match="Epochs must be between"):
        TrainConfig(epochs=0)


def test_real_weights_learn_the_example_data_far_above_chance_and_random_init(example_dataset, quick_result):
    """Integration: the built-in pretrained backbone, real images."""
    chance = 1 / len(example_dataset.labels)
    assert quick_result.val_accuracy >= 0.5 > 2 * chance
    scratch = train(example_dataset, TrainConfig(mode="quick", seed=0, pretrained=False))
    assert quick_result.val_accuracy >= scratch.val_accuracy + 0.2
    assert quick_result.split.val == scratch.split.val  # same images judged
