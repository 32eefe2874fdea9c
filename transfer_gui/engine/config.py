"""The one training configuration, passed explicitly from the UI or CLI to the engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .catalog import DEFAULT_MODEL
from .errors import UserInputError
from .names import ModelName

__all__ = ["TrainConfig", "MODES", "PRECISIONS", "public_model_name"]

MODES = ("quick", "finetune")
PRECISIONS = ("auto", "fp32", "bf16")

# Defaults for the fields left as None. Quick fits its head to convergence (probe.py): it has no
# epochs or learning rate, so these apply to fine-tuning.
_DEFAULT_EPOCHS = 12
_DEFAULT_LR = 1e-3


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Choosing nothing works.

    Defaults are tuned for 5-50 images per class on a CPU; each has its reason beside it.
    """

    model: str = DEFAULT_MODEL  # the built-in model: works offline, fast on a CPU (a ModelName once made)
    mode: str = "quick"  # quick = cross-validated head on frozen features (seconds); finetune = LP-FT (minutes)
    epochs: int | None = None  # fine-tuning epochs at most (None: 12); Quick fits its head to convergence
    lr: float | None = None  # fine-tuning learning rate of the head (None: 1e-3); the backbone gets x0.1
    batch_size: int = 16  # several optimizer steps per epoch even with ~50 images, small CPU memory
    val_fraction: float = 0.25  # held out to judge fine-tuning (and on sets too large to cross-validate)
    seed: int = 0  # same seed + same data = same split and same result
    label_smoothing: float = 0.1  # few images: discourage 100% confident fits (Szegedy et al. 2016)
    weight_decay: float = 0.01  # mild AdamW decay; the head is small and data scarce
    backbone_lr_scale: float = 0.1  # LP-FT: the pretrained backbone moves 10x slower than the head
    warmup_epochs: float = 1.0  # linear warmup keeps the first unfrozen steps from wrecking features
    patience: int = 4  # early stopping: fine-tune epochs without a better held-out loss before stopping
    select_best: bool = True  # fine-tuning's best epoch has the lowest held-out loss (False: the last one)
    weights_file: str | None = None  # a local .safetensors for the chosen architecture
    init_bundle: str | None = None  # continue from this saved bundle folder (its model and head)
    pretrained: bool = True  # False trains from random weights (the "from scratch" comparison)
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    precision: str = "auto"  # auto: all fast paths (see speed.py); fp32: none (the reference); bf16
    progress_interval_s: float = 2.0  # mid-epoch progress at most this often (live plots)
    loader_workers: int | None = None  # DataLoader worker processes; None: from the cores on a GPU, 0 on a CPU
    weights_cache: str | None = None  # where built-in weights are converted once (None: builtin's default); not saved

    def __post_init__(self) -> None:
        # The door for model names: every path that builds a model builds it from a config.
        object.__setattr__(self, "model", ModelName(self.model, "the training settings"))
        if self.mode not in MODES:
            raise UserInputError(f"Unknown training mode {self.mode!r}; use one of: {', '.join(MODES)}.")
        if self.epochs is not None and not 1 <= self.epochs <= 1000:
            raise UserInputError(f"Epochs must be between 1 and 1000 (got {self.epochs}).")
        if self.lr is not None and not 0 < self.lr < 1:
            raise UserInputError(f"The learning rate must be between 0 and 1 (got {self.lr}).")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserInputError(f"The validation fraction must be between 0 and 1 (got {self.val_fraction}).")
        if self.batch_size < 1:
            raise UserInputError(f"The batch size must be at least 1 (got {self.batch_size}).")
        if self.loader_workers is not None and not 0 <= self.loader_workers <= 64:
            raise UserInputError(f"Loader workers must be between 0 and 64 (got {self.loader_workers}).")
        if self.precision not in PRECISIONS:
            raise UserInputError(f"Unknown precision {self.precision!r}; use one of: {', '.join(PRECISIONS)}.")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserInputError(f"Unknown device {self.device!r}; use auto, cpu or cuda.")

    @property
    def resolved_epochs(self) -> int:
        """Fine-tuning epochs after applying the default."""
        return self.epochs if self.epochs is not None else _DEFAULT_EPOCHS

    @property
    def resolved_lr(self) -> float:
        """Fine-tuning learning rate (head) after applying the default."""
        return self.lr if self.lr is not None else _DEFAULT_LR

    def to_dict(self) -> dict:
        """JSON-ready copy, saved in bundles: files by name only. A server path in a published
        bundle tells strangers where a user's private files are (and for a while, how to fetch them)."""
        out = asdict(self)
        del out["weights_cache"]  # this machine's folder: nothing to do with the model
        for key in ("weights_file", "init_bundle"):
            if out[key]:
                out[key] = Path(out[key]).name
        out["model"] = public_model_name(self.model)
        return out


def public_model_name(name: str) -> str:
    """A model name fit to publish: a ``local-dir:`` folder keeps only its last part."""
    return f"local-dir:{Path(name[len('local-dir:'):]).name}" if name.startswith("local-dir:") else name

