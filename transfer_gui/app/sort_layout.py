"""Step 7's layout and wiring ("Sort a pile"), built inside ``build_demo``'s tabs. No logic lives
here: the events are ``SortStep``'s (sort_step.py)."""

from __future__ import annotations

import gradio as gr

from .server import Server
from .sort_step import NO_PILE, SortView
from .train_step import CurveUpdate
from .texts import SORT_INTRO
from .views import heavy_group, image_extensions, outputs

__all__ = ["sort_tab"]


def sort_tab(h: Server, state: gr.State, slots: int, model_download: gr.DownloadButton) -> None:
    """The "7. Sort a pile" tab and its events (call inside ``gr.Tabs``); ``model_download`` is
    step 6's button, which a retraining here updates."""
    with gr.Tab("7. Sort a pile", id="tab-sort"):
        gr.Markdown(SORT_INTRO)
        pile_upload = gr.File(label="Unsorted pictures (many files, or a .zip)", file_count="multiple",
                              file_types=image_extensions() + [".zip"], height=180, elem_id="pile-upload")
        status = gr.Markdown(NO_PILE, elem_id="pile-status")
        with gr.Row():
            current = gr.Image(label="The picture the model is least sure of", interactive=False, visible=False,
                               height=320, elem_id="pile-current")
            with gr.Column():
                question = gr.Markdown(elem_id="pile-question")
                accept = gr.Button("Yes", variant="primary", interactive=False, elem_id="pile-accept")
                # one click per answer (a dropdown also reports its value again when it loses focus)
                other = gr.Radio(label="No, it is:", choices=[], interactive=False, elem_id="pile-other")
                skip = gr.Button("Skip (ask me later)", elem_id="pile-skip")
                with gr.Row():
                    confidence = gr.Slider(0.5, 1.0, value=0.95, step=0.01, label="Accept every suggestion at least "
                                           "this sure", elem_id="pile-threshold")
                    accept_all = gr.Button("Accept them all", elem_id="pile-accept-all")
                retrain = gr.Button("Retrain with the sorted pictures now", elem_id="pile-retrain")
        queue = gr.Gallery(label="Next up (least certain first): suggestion and how sure", columns=6,
                           height="auto", object_fit="contain", elem_id="pile-queue")
        with gr.Row():
            pack = gr.Button("Make a zip of the sorted pictures", elem_id="pile-pack")
            download = gr.DownloadButton("Download the sorted pictures", interactive=False, elem_id="pile-download")
        with gr.Row():
            curve_btn = gr.Button("Would more images help? (on the labelled pictures)", elem_id="pile-curve-btn")
            curve_note = gr.Markdown(elem_id="pile-curve-note")
        curve_plot = gr.Image(show_label=False, type="pil", interactive=False, visible=False, elem_id="pile-curve")

    s = h.sort
    view = outputs(SortView, status=status, current=current, question=question, accept_button=accept, other=other,
                   queue=queue, download_button=download, model_download=model_download, session=state)
    # Each decision is instant; every RETRAIN_EVERY decisions the head retrains, in the training line.
    long = {"concurrency_limit": slots, "concurrency_id": "training", "show_progress_on": [status]}
    quick = {"show_progress_on": [status]}  # the picture and its question stay in view
    for event in (accept.click(h.event(s.accept), [state], view, api_visibility="private", **quick),
                  other.input(h.event(s.choose), [state, other], view, api_visibility="private", **quick),
                  accept_all.click(h.event(s.accept_above), [state, confidence], view, api_visibility="private",
                                   **quick)):
        event.success(h.event(s.retrain_when_due), [state], view, api_visibility="private", **long)
    skip.click(h.event(s.skip), [state], view, api_visibility="private", **quick)
    heavy = heavy_group(h.limits.heavy_jobs)
    pile_upload.upload(h.event(s.load_pile, heavy=True), [state, pile_upload], view, show_progress_on=[status],
                       api_visibility="private", **heavy)
    retrain.click(h.event(s.retrain), [state], view, api_visibility="private", **long)
    pack.click(h.event(s.download, heavy=True), [state], view, show_progress_on=[status], api_visibility="private",
               **heavy)
    curve_btn.click(h.event(s.curve), [state], outputs(CurveUpdate, status=curve_note, plot=curve_plot, session=state),
                    concurrency_limit=slots, concurrency_id="training", show_progress_on=[curve_note],
                    api_name="sort_curve", api_visibility="private")  # named: step 3's public one is /curve
