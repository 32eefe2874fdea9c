"""Every setting read from the environment, in one place and under one prefix, ``TLS_``.

``Settings.from_env()`` is the one reader; the app and the command line call it once at start and
pass what it found along. ``Limits`` are what a server lets one request or one user consume: a
public server (a Hugging Face Space, or ``TLS_PUBLIC=1``) is open to strangers, and each limit
stops one way a single request could exhaust it. Each setting has a default and an environment
variable named ``TLS_`` + the field name in capitals; ``settings()`` lists them (docs/hosting.md's
table is checked against it by a test). A missing or malformed value keeps the default.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .engine.archive import ArchiveLimits

__all__ = ["Settings", "Limits", "settings", "ENV_PREFIX"]

_logger = logging.getLogger(__name__)

ENV_PREFIX = "TLS_"
# Public servers get these where a private one has none (0 = no limit): a training that never ends
# and a model of billions of parameters are fine on your own machine, not on a shared one.
# memory_mb: sized for a 16 GB Space (its CPU-basic size), leaving 10 GB for what no reservation
# foresees (a training of a model up to the public size cap, Gradio, the system). Measured with
# benchmarks/load.py --abuse: peak 5.3 GB at 6 GB, 6.9 GB at 8 GB, ordinary users as fast.
_PUBLIC_DEFAULTS = {"train_minutes": 20.0, "model_params_m": 100.0, "memory_mb": 6144.0}
# On a Hugging Face Space its proxy stands between every client and the app (see client_address).
_SPACE_DEFAULTS = {"proxy_hops": 1}
_ZERO_ALLOWED = {*_PUBLIC_DEFAULTS, "proxy_hops"}


def _limit(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Limits:
    """The server's limits; each field's help text is what docs/hosting.md says of it.

    Attributes:
        public: strangers may use this server: only catalog models and hub models under
            ``model_params_m``, and a time budget per training.
    """

    public: bool = _limit(False, "strangers use this server: only listed and Hub models, the three public defaults below (on by itself on a Hugging Face Space)")
    max_upload_mb: float = _limit(2048, "MB one upload may unpack to (a zip of images, a model, a batch); also Gradio's upload limit")
    max_files: int = _limit(20_000, "entries in one zip, and rows in one labels CSV")
    max_ratio: float = _limit(200, "unpacked/packed size of any one zip entry (zip bombs reach 1000)")
    max_classes: int = _limit(300, "classes in one image set")
    batch_megapixels: float = _limit(100, "megapixels of decoded pictures held at once while classifying a batch "
                                          "(one picture at the 89-megapixel maximum always fits)")
    session_disk_mb: float = _limit(3072, "MB of files one session may keep (uploads, models, exports)")
    server_disk_mb: float = _limit(20_480, "MB all sessions together may keep, with Gradio's upload cache and downloaded hub models")
    session_idle_min: float = _limit(120, "minutes without an event after which a session ends and its files go (API clients never close a tab)")
    session_grace_min: float = _limit(15, "minutes a session whose page went away (a network drop, a phone switching apps) waits for it to come back before its files go")
    session_empty_min: float = _limit(5, "minutes a session that holds no pictures, model or pile lives without an event")
    max_sessions: int = _limit(1000, "sessions at once; the oldest empty one makes room, else new ones are refused, never others' work dropped")
    sessions_per_client: int = _limit(40, "sessions one client address may hold at once (a classroom behind one address fits)")
    proxy_hops: int = _limit(0, "proxies in front of the app that append to X-Forwarded-For; the client address is the entry the outermost one added (0 = the connection's own address; 1 on a Hugging Face Space)")
    training_slots: int = _limit(1, "trainings that run at once (a CPU has no room for two)")
    training_waiting: int = _limit(8, "trainings that may wait for a slot; more are refused")
    queue_size: int = _limit(64, "events waiting in Gradio's queue (trainings wait in their own line)")
    heavy_jobs: int = _limit(2, "heavy requests outside the training line that run at once across all users (a batch, evaluating, the sorting pile, the map, heat maps, loading a zip or a model); more wait in the queue")
    memory_mb: float = _limit(0, "MB of memory the whole server may use: a heavy request or a picture reserves what it may decode before it starts, and waits, then is refused when there is no room (0 = no budget; 6144 on a public server, sized for a 16 GB Space)")
    user_events: int = _limit(6, "events one session may have running or waiting at once")
    train_minutes: float = _limit(0, "minutes one training may run, then it stops and keeps its best model (0 = no limit; 20 on a public server)")
    model_params_m: float = _limit(0, "largest model, in millions of parameters, counted before it is built (0 = no limit; 100 on a public server)")

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Limits":
        """The defaults, overridden by ``TLS_<FIELD>`` variables; public when ``TLS_PUBLIC`` is
        true, or unset on a Hugging Face Space (``SPACE_ID`` set)."""
        env = os.environ if environ is None else environ
        public_text = env.get(ENV_PREFIX + "PUBLIC", "")
        space = bool(env.get("SPACE_ID"))
        public = _flag(public_text) if public_text.strip() else space
        values: dict = {"public": public}
        for f in fields(cls):
            if f.name == "public":
                continue
            default = _PUBLIC_DEFAULTS.get(f.name, f.default) if public else f.default
            default = _SPACE_DEFAULTS.get(f.name, default) if space else default
            text = env.get(ENV_PREFIX + f.name.upper())
            values[f.name] = _number(text, default, f.type, f.name)
        return cls(**values)

    @property
    def archive(self) -> ArchiveLimits:
        """The upload limits as ``extract_zip`` and the dataset readers take them."""
        return ArchiveLimits(max_total_bytes=int(self.max_upload_mb * 1024**2), max_files=self.max_files,
                             max_ratio=self.max_ratio, max_classes=self.max_classes)

    @property
    def train_seconds(self) -> float | None:
        """The training time budget in seconds, or None for no limit."""
        return self.train_minutes * 60 if self.train_minutes > 0 else None

    @property
    def max_params(self) -> int | None:
        """The model size cap in parameters, or None for no cap."""
        return int(self.model_params_m * 1e6) if self.model_params_m > 0 else None


def _number(text: str | None, default, kind, name: str):
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        _logger.warning("%s%s=%r is not a number; using the default %s", ENV_PREFIX, name.upper(), text, default)
        return default
    if value < 0 or (value == 0 and name not in _ZERO_ALLOWED):
        _logger.warning("%s%s=%r must be positive; using the default %s", ENV_PREFIX, name.upper(), text, default)
        return default
    return int(value) if kind in (int, "int") else value


def _flag(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


def _default_cache_dir(env) -> Path:
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transfer_gui"


@dataclass(frozen=True)
class Settings:
    """Everything this app reads from the environment.

    Attributes:
        limits: what one request or one user may consume (``TLS_<LIMIT>``).
        cache_dir: where the built-in models' converted weights are kept (``TLS_CACHE_DIR``).
        keep_malloc: leave glibc's allocator as it is (``TLS_KEEP_MALLOC``; see speed.py).
        sign_in: "Sign in with Hugging Face" works here: a Space whose front matter has
            ``hf_oauth: true`` (Spaces then sets ``OAUTH_CLIENT_ID``).
        zero_gpu: a ZeroGPU Space (``SPACES_ZERO_GPU``): GPUs are lent per call.
    """

    limits: Limits = field(default_factory=Limits)
    cache_dir: Path = field(default_factory=lambda: _default_cache_dir(os.environ))
    keep_malloc: bool = False
    sign_in: bool = False
    zero_gpu: bool = False

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Settings":
        """The settings from ``environ`` (default ``os.environ``): ``TLS_*`` variables over the
        defaults."""
        env = os.environ if environ is None else environ
        cache = env.get(ENV_PREFIX + "CACHE_DIR", "").strip()
        return cls(limits=Limits.from_env(env), cache_dir=Path(cache) if cache else _default_cache_dir(env),
                   keep_malloc=_flag(env.get(ENV_PREFIX + "KEEP_MALLOC")),
                   sign_in=bool(env.get("SPACE_ID") and env.get("OAUTH_CLIENT_ID")),
                   zero_gpu=_flag(env.get("SPACES_ZERO_GPU")))


# Settings that are no limit: (name, default as docs/hosting.md shows it, what it sets).
_OTHER_SETTINGS = (
    ("CACHE_DIR", "`~/.cache/transfer_gui`", "folder for the built-in models' weights, converted once per machine "
                                             "(`XDG_CACHE_HOME` moves the default)"),
    ("KEEP_MALLOC", "off", "leave the C allocator's settings alone (by default large blocks are reused, which "
                           "saves seconds per fine-tuning epoch, in two arenas, which bounds what a busy server "
                           "keeps)"),
)


def settings() -> list[tuple[str, str, str]]:
    """(environment variable, default, what it sets) for every setting, in docs/hosting.md's order."""
    def shown(value) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else f"{value:,g}"

    return ([(ENV_PREFIX + f.name.upper(), shown(f.default), f.metadata["help"]) for f in fields(Limits)]
            + [(ENV_PREFIX + name, default, what) for name, default, what in _OTHER_SETTINGS])
