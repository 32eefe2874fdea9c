"""The door for preprocessing: a model's timm data config, checked where it enters.

A data config says how pictures become tensors (input size, resize, crop, normalisation). It comes
from timm's ``pretrained_cfg``, which a bundle's ``config.json`` or a Hub repository sets as it
likes: an input side of 4096 px costs gigabytes per prediction. Every data config this app uses
is made by ``model_data_config`` (from a built model) and a bundle's ``pretrained_cfg`` is checked
by ``check_pretrained_cfg`` before its model is built; both refuse what this app would never write.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .errors import ModelError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MAX_INPUT_SIDE", "INTERPOLATIONS", "CROP_MODES", "checked_data_config", "check_pretrained_cfg",
           "model_data_config"]

# DINOv2's native 518 px is the largest input of any model this app lists or its users pick in
# practice; a side of 518 costs about 5x a 224 px picture, larger ones grow with the square.
MAX_INPUT_SIDE = 518
_MIN_INPUT_SIDE = 16
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
CROP_MODES = ("center", "squash", "border")
_CROP_PCT = (0.5, 1.0)
# The keys of timm's resolved data config; nothing else travels with a model.
_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def _bad(where: str, what: str) -> ModelError:
    return ModelError(f"The preprocessing in {where} {what}; this app does not use such a model. Use a model "
                      "this app (or its command line) trained, or a listed model.")


def _input_size(value: object, where: str, key: str) -> tuple[int, int, int]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not ok or value[0] != 3:
        raise _bad(where, f"gives {key} {str(value)[:60]}, not [3, height, width]")
    _, height, width = value
    if not (_MIN_INPUT_SIDE <= height <= MAX_INPUT_SIDE and _MIN_INPUT_SIDE <= width <= MAX_INPUT_SIDE):
        raise _bad(where, f"asks for pictures of {height}x{width} px (at most {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE})")
    return 3, height, width


def _triple(value: object, where: str, key: str, positive: bool) -> tuple[float, float, float]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if ok and positive:
        ok = all(v > 0 for v in value)
    if not ok:
        raise _bad(where, f"gives {key} {str(value)[:60]}, not three finite numbers"
                          + (" above 0" if positive else ""))
    return tuple(float(v) for v in value)


def _crop_pct(value: object, where: str, key: str) -> float:
    low, high = _CROP_PCT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _bad(where, f"gives {key} {str(value)[:40]} (from {low} to {high})")
    return float(value)


def _choice(value: object, allowed: tuple[str, ...], where: str, key: str) -> str:
    if value not in allowed:
        raise _bad(where, f"gives {key} {str(value)[:40]!r} (one of: {', '.join(allowed)})")
    return value


def checked_data_config(config: dict, where: str) -> dict:
    """A resolved timm data config with every value checked, as tuples (comparable with ``==``).

    Raises:
        ModelError: an input side over ``MAX_INPUT_SIDE``, a crop outside 0.5-1, mean/std not three
            finite numbers (std above 0), an unknown interpolation or crop mode.
    """
    if not isinstance(config, dict):
        raise _bad(where, "is not a mapping")
    return {
        "input_size": _input_size(config.get("input_size"), where, "input_size"),
        "interpolation": _choice(config.get("interpolation", "bicubic"), INTERPOLATIONS, where, "interpolation"),
        "mean": _triple(config.get("mean"), where, "mean", positive=False),
        "std": _triple(config.get("std"), where, "std", positive=True),
        "crop_pct": _crop_pct(config.get("crop_pct", 0.875), where, "crop_pct"),
        "crop_mode": _choice(config.get("crop_mode", "center"), CROP_MODES, where, "crop_mode"),
    }


def check_pretrained_cfg(cfg: object, where: str) -> None:
    """Refuse a ``pretrained_cfg`` (from a bundle's or a Hub repository's config.json) whose
    preprocessing fields this app would not use, before any model is built from it. Fields that
    are absent take timm's defaults; fields that do not concern preprocessing are not looked at.

    Raises:
        ModelError: as ``checked_data_config``.
    """
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise _bad(where, "is not a mapping")
    for key in ("input_size", "test_input_size", "min_input_size"):
        if cfg.get(key) is not None:
            _input_size(cfg[key], where, key)
    for key in ("mean", "std"):
        if cfg.get(key) is not None:
            _triple(cfg[key], where, key, positive=key == "std")
    for key in ("crop_pct", "test_crop_pct"):
        if cfg.get(key) is not None:
            _crop_pct(cfg[key], where, key)
    if cfg.get("interpolation") is not None:
        _choice(cfg["interpolation"], INTERPOLATIONS, where, "interpolation")
    if cfg.get("crop_mode") is not None:
        _choice(cfg["crop_mode"], CROP_MODES, where, "crop_mode")


def model_data_config(model: nn.Module, where: str = "this model's configuration") -> dict:
    """The preprocessing of a built timm model (``timm.data.resolve_model_data_config``), checked.

    Raises:
        ModelError: see ``checked_data_config``.
    """
    import timm.data

    resolved = timm.data.resolve_model_data_config(model)
    return checked_data_config({k: resolved.get(k) for k in _KEYS if resolved.get(k) is not None}, where)
