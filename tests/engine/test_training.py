"""Training behaviour: tiny timm test models for the mechanics, real weights for the learning."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.data import scan_folder, split_dataset
from transfer_gui.engine.errors import UserInputError
from transfer_gui.engine.features import FeatureCache
from transfer_gui.engine.training import fit, train

TINY = dict(model="test_efficientnet", pretrained=False)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_quick_trains_only_the_head_and_outputs_num_classes(shapes_dir):
    from transfer_gui.engine.weights import create_model

    ds = scan_folder(shapes_dir)
    result = train(ds, TrainConfig(mode="quick", **TINY))
    torch.manual_seed(0)  # what fit does before it creates the model: the same initial weights
    untouched = _snapshot(create_model("test_efficientnet", 2, pretrained=False).model)
    with torch.no_grad():
        assert result.model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    trained = _snapshot(result.model)
    head = {f"classifier.{n}" for n in ("weight", "bias")}
    changed = {k for k in trained if not torch.equal(trained[k], untouched[k])}
    assert changed == head  # same seed, same init: only the classifier moved


def test_finetune_overfits_eight_images_and_loss_falls(tmp_path):
    from conftest import write_shapes

    ds = scan_folder(write_shapes(tmp_path / "s", per_class=4))
    split = split_dataset(ds, 0.5, 0)
    split = type(split)(train=list(range(8)), val=list(range(8)))  # fit and check the same 8
    # All 8 in one batch at lr 1e-3: the random network's BatchNorm sees the same 8 every step. With
    # batches of 4 at 3e-3 the loss jumped between 0 and 40 from epoch to epoch, and in bf16 on a
    # CPU with AMX it ended at 14 (seen in a fresh environment).
    cfg = TrainConfig(mode="finetune", epochs=12, lr=1e-3, patience=100, batch_size=8,
                      label_smoothing=0.0, backbone_lr_scale=1.0, **TINY)
    result = train(ds, cfg, split=split)
    ft = [row for row in result.history if row.phase == "finetune"]
    assert min(r.train_loss for r in ft[-3:]) < 0.3 * ft[0].train_loss
    assert result.best.val_acc == 1.0


def test_finetune_param_groups_give_the_backbone_a_lower_learning_rate(shapes_dir):
    from transfer_gui.engine.finetune import optimiser
    from transfer_gui.engine.weights import create_model

    model = create_model("test_efficientnet", 2, pretrained=False).model
    cfg = TrainConfig()
    groups = optimiser(model, model.get_classifier(), cfg, torch.device("cpu")).param_groups
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    for g in groups:
        is_head = any(id(p) in head_ids for p in g["params"])
        assert all((id(p) in head_ids) == is_head for p in g["params"])
        assert g["lr_scale"] == (1.0 if is_head else cfg.backbone_lr_scale)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # the comparison's run from random weights: one rate for all
    scratch = optimiser(model, model.get_classifier(), cfg, torch.device("cpu"), backbone_lr_scale=1.0)
    assert {g["lr_scale"] for g in scratch.param_groups} == {1.0}


def test_events_are_ordered_and_the_last_carries_the_result(shapes_dir):
    from transfer_gui.engine.probe import PENALTIES

    ds = scan_folder(shapes_dir)
    events = list(fit(ds, TrainConfig(mode="finetune", epochs=2, **TINY)))
    phases = [e.phase for e in events]
    assert phases[0] == "load" and phases[-1] == "done"
    assert phases.index("features") < phases.index("head") < phases.index("finetune")
    assert all(e.result is None for e in events[:-1]) and events[-1].result is not None
    checked = [e for e in events if e.val_loss is not None and e.phase != "done"]
    # one per head setting tried (cross-validated), then one per fine-tune epoch (held out)
    assert [e.phase for e in checked] == ["head"] * len(PENALTIES) + ["finetune"] * 2
    assert all(0 <= e.val_acc <= 1 for e in checked)
    assert [e.elapsed_s for e in events] == sorted(e.elapsed_s for e in events)
    json.dumps([row.to_dict() for row in events[-1].result.history])  # the history goes into bundles as JSON


def test_seeded_runs_are_identical(shapes_dir):
    ds = scan_folder(shapes_dir)
    a = train(ds, TrainConfig(mode="quick", seed=3, **TINY))
    b = train(ds, TrainConfig(mode="quick", seed=3, **TINY))
    assert [r.val_loss for r in a.history] == [r.val_loss for r in b.history]
    assert torch.equal(a.model.get_classifier().weight, b.model.get_classifier().weight)


def test_stop_during_fine_tuning_keeps_the_quick_model(shapes_dir):
    """Stop after the first fine-tune epoch of a small set: the cross-validated quick model,
    trained on every image, is what is kept (the fine-tune run was only gathering evidence)."""
    ds = scan_folder(shapes_dir)
    stop = threading.Event()
    events = []
    for event in fit(ds, TrainConfig(mode="finetune", epochs=50, **TINY), stop=stop):
        events.append(event)
        if event.phase == "finetune" and event.val_loss is not None:
            stop.set()  # the user presses Stop after the first fine-tune epoch
    result = events[-1].result
    assert result.stopped
    assert sum(1 for r in result.history if r.phase == "finetune") == 1
    assert result.best.phase == "head" and result.validation.method == "cross-validation"
    assert result.validation.trained_on_all and "Stopped" in events[-1].message
    head = result.model.get_classifier()
    quick = train(ds, TrainConfig(mode="quick", **TINY))
    assert torch.allclose(head.weight, quick.model.get_classifier().weight, atol=1e-6)


def test_feature_cache_skips_the_backbone_the_second_time(shapes_dir):
    ds = scan_folder(shapes_dir)
    cache = FeatureCache()
    first = list(fit(ds, TrainConfig(mode="quick", **TINY), cache=cache))
    second = list(fit(ds, TrainConfig(mode="quick", seed=1, **TINY), cache=cache))
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
    # the same images judged, in the same folds
    assert quick_result.validation.indices == scratch.validation.indices
    assert (quick_result.validation.folds == scratch.validation.folds).all()
