"""``build_demo()``: the page, assembled from its tabs (tabs/, one module each with its
components and wiring). No logic lives here or there: the events are the steps' functions
(data_step.py ... sort_step.py), reached through the ``Server``; how the page is served
(styling, ZeroGPU) is in hosting.py."""

from __future__ import annotations

import gradio as gr

from ..settings import Settings
from .hosting import cache_ttl_s, zero_gpu
from .server import Server
from .tabs.data import DataTab
from .tabs.download import DownloadTab
from .tabs.model import ModelTab
from .tabs.page import Page
from .tabs.results import ResultsTab
from .tabs.sort import SortTab
from .tabs.test import TestTab
from .tabs.train import TrainTab
from .texts import DEMO_BUTTON, INTRO
from .wiring import Wire

__all__ = ["build_demo"]

STATE_TTL_S = 6 * 3600  # an idle session's files are deleted after 6 hours at the latest


def build_demo(training_slots: int | None = None, queue_size: int | None = None,
               state_ttl_s: float = STATE_TTL_S, server: Server | None = None,
               sign_in: bool | None = None, settings: Settings | None = None) -> gr.Blocks:
    """Build the app.

    Args:
        training_slots: trainings at once across all users (default: $TLS_TRAINING_SLOTS or 1).
        queue_size: short events allowed to wait in the queue (default: $TLS_QUEUE_SIZE or 64).
        state_ttl_s: an unused session's data and files are deleted after this many seconds.
        server: the server with its event functions (built here when None; tests pass their own
            to inspect sessions and limits).
        sign_in: offer "Sign in with Hugging Face" for publishing (default: on a Space with
            OAuth, see Settings.sign_in; off the Space Gradio signs in a stand-in user).
        settings: the app's settings, read once by its entry point (default: read here).
    """
    settings = settings or Settings.from_env()
    gpu = zero_gpu(settings.zero_gpu)
    sign_in = settings.sign_in if sign_in is None else sign_in
    h = server or Server(training_slots, device="cpu" if gpu else "auto", limits=settings.limits, lent_gpu=gpu,
                         weights_cache=settings.cache_dir)
    # delete_cache: Gradio keeps copies of uploads and downloads in its own cache; drop those older
    # than a session lives, checking every 10 minutes, so a public server's disk does not fill up (the
    # server's disk budget counts them meanwhile). Uploads are not deleted once read: Gradio
    # stores identical uploads at one path, so another request may still need the same file.
    with gr.Blocks(title="Transfer Learning Studio", delete_cache=(600, cache_ttl_s(h.limits))) as demo:
        # The page's copy of its Session, set by the first event (on_load). Events look their
        # Session up in the server's registry (Server.event), so this only lets Gradio's own
        # expiry end sessions too. No factory here: Gradio would call it in a page-load event of
        # its own and keep a second Session beside the registered one.
        state = gr.State(None, time_to_live=state_ttl_s, delete_callback=h.on_state_deleted)
        gr.Markdown(INTRO)
        demo_button = gr.Button(DEMO_BUTTON, variant="primary", elem_id="demo-btn")
        with gr.Tabs() as tabs:
            # Long jobs enter their function at once and wait for a slot in the server's own line, which
            # has its own length and tells each user their place; Gradio's queue then only ever holds
            # short events, so predictions and loading never wait behind trainings.
            page = Page(demo, Wire(h, state), h.limits.training_slots + h.limits.training_waiting,
                        DataTab(), ModelTab(), TrainTab(h.limits_note()), ResultsTab(), TestTab(),
                        DownloadTab(sign_in), SortTab())
        demo.load(h.event(h.on_load, counted=False), [state], [state], queue=False, api_visibility="private")
        demo.unload(h.on_unload)
        page.wire_all()
        _wire_demo_button(page, demo_button, tabs)
    demo.queue(max_size=queue_size or h.limits.queue_size, default_concurrency_limit=4)
    return demo


def _wire_demo_button(page: Page, button: gr.Button, tabs: gr.Tabs) -> None:
    """The first impression: the example's images, Quick with the built-in model while the Train
    step shows the curves, then the Results step."""
    w, train = page.wire, page.train
    shown = button.click(lambda: gr.Tabs(selected="tab-train"), None, [tabs], queue=False, api_visibility="private")
    loaded = w.event(shown.then, w.server.data.load_example, [], page.data.outputs(page),
                     show_progress_on=[train.status], api_visibility="private")
    run = w.event(loaded.success, w.server.train.demo, [], train.outputs(page), show_progress_on=[train.status],
                  api_name="demo", **train.long_job(page.slots))
    run.success(lambda: gr.Tabs(selected="tab-results"), None, [tabs], queue=False, api_visibility="private")
    train.after_run(page, run)
