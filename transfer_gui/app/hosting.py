"""How the page is served: its styling and upload cap (``launch_kwargs``), and Hugging Face
ZeroGPU when the Space has it (``zero_gpu``)."""

from __future__ import annotations

import logging

import gradio as gr

from ..settings import Limits
from .assets import ROOT

__all__ = ["launch_kwargs", "zero_gpu", "cache_ttl_s"]

CSS_FILE = ROOT / "assets" / "style.css"


def cache_ttl_s(limits: Limits) -> int:
    """How long Gradio keeps its copies of uploads and downloads: as long as an idle session
    lives, so a download link on the page works as long as its session (Gradio touches a copy
    each time it hands it out again)."""
    return int((limits.session_idle_min + limits.session_grace_min) * 60)


def zero_gpu(on_zero_gpu: bool):
    """``spaces.GPU`` on a ZeroGPU Space (``on_zero_gpu``: ``Settings.zero_gpu``, from
    ``SPACES_ZERO_GPU``; and ``spaces`` importable), else None: there the trainings run on a GPU lent per call (``Server.fit``). Elsewhere, even where
    the ``spaces`` package happens to be installed (an ordinary GPU Space), the app uses what the
    machine has."""
    if not on_zero_gpu:
        return None
    try:
        import spaces
    except ImportError:
        logging.getLogger(__name__).warning("SPACES_ZERO_GPU is set but the spaces package is missing: "
                                            "training runs on the CPU")
        return None
    return spaces.GPU


def launch_kwargs(limits: Limits | None = None) -> dict:
    """Arguments for ``demo.launch`` that style the page (Gradio 6 takes css/theme at launch) and
    cap uploads at ``limits`` (default: ``Limits()``)."""
    return {"css": CSS_FILE.read_text() if CSS_FILE.is_file() else None, "theme": gr.themes.Soft(),
            # Gradio refuses bigger uploads before they reach the disk; the same cap as a zip's
            # unpacked size (an upload is never larger than what it unpacks to, for images).
            "max_file_size": (limits or Limits()).archive.max_total_bytes,
            # Gradio's run history (the footer's "Runs") keeps every call's inputs and outputs in the
            # browser: on a shared computer (a classroom, a library) the next person would find the
            # last one's pictures and models. Off.
            "run_history": False}
