"""Step 5's layout and wiring ("Test"), built inside ``build_demo``'s tabs. No logic lives here:
the events are ``PredictStep``'s (predict_step.py), and "file under" is step 7's."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .predict_step import BatchView, Verdict
from .server import TEST_IMAGES, Server
from .sort_step import FiledView
from .views import BATCH_COLUMNS, heavy_group, image_extensions, outputs

__all__ = ["predict_tab"]


def predict_tab(h: Server, state: gr.State) -> tuple[gr.Slider, gr.Markdown]:
    """The "5. Test" tab and its events (call inside ``gr.Tabs``). Returns the "not sure"
    threshold and the note on what it means, which a finished training updates."""
    with gr.Tab("5. Test", id="tab-test"):
        threshold = gr.Slider(0, 1, value=0.5, step=0.05, elem_id="threshold",
                              label='Answer "not sure" below this confidence')
        threshold_note = gr.Markdown(elem_id="threshold-note")
        with gr.Row():
            with gr.Column():
                test_image = gr.Image(label="A new picture (upload, webcam or paste)", type="filepath",
                                      image_mode=None,
                                      sources=["upload", "webcam", "clipboard"], elem_id="test-image")
                examples = sorted(str(p) for p in TEST_IMAGES.glob("*") if p.is_file())
                gr.Examples(examples, inputs=[test_image], label="Or try one of these",
                            cache_examples=False)
            with gr.Column():
                verdict = gr.Markdown(elem_id="verdict")
                prediction = gr.Label(num_top_classes=5, label="Confidence per class", elem_id="prediction")
            with gr.Column():
                heat = gr.Image(label="Where the model looked", type="pil", interactive=False,
                                elem_id="test-heat")
                heat_note = gr.Markdown(elem_id="heat-note")
                file_under = gr.Radio(label="Wrong? File this picture under the right class (it joins "
                                      "the training data)", choices=[], interactive=False,
                                      elem_id="file-under")
                filed_note = gr.Markdown(elem_id="filed-note")
        gr.Markdown("**Many pictures at once**: choose pictures or .zip files; get a table and a CSV "
                    "(the same rows as `python -m transfer_gui predict --csv`).")
        with gr.Row():
            batch_files = gr.File(label="Pictures or .zip files", file_count="multiple",
                                  file_types=image_extensions() + [".zip"], elem_id="batch-files")
            with gr.Column():
                batch_btn = gr.Button("Classify them", variant="primary", elem_id="batch-btn")
                batch_csv = gr.DownloadButton("Download the table (.csv)", interactive=False,
                                              elem_id="batch-csv")
        batch_note = gr.Markdown(elem_id="batch-note")
        batch_table = gr.Dataframe(pd.DataFrame(columns=BATCH_COLUMNS),
                                   label="Predictions", interactive=False, elem_id="batch-table")


    te = h.test
    predict_outputs = outputs(Verdict, verdict=verdict, confidences=prediction, heat=heat, heat_note=heat_note,
                              file_under=file_under)
    # One picture decodes under the memory budget (PredictStep.predict), in Gradio's own groups of
    # four per listener: a prediction of a photo takes seconds, never the heavy group's turn.
    test_image.change(h.event(te.predict), [state, test_image, threshold], predict_outputs,
                      show_progress_on=[verdict], api_name="predict")
    threshold.change(h.event(te.predict), [state, test_image, threshold], predict_outputs,
                     trigger_mode="always_last", show_progress_on=[verdict], api_visibility="private")
    threshold.change(h.event(h.results.threshold_note), [state, threshold], [threshold_note],
                     trigger_mode="always_last", api_name="not_sure_meaning")
    file_under.input(h.event(h.sort.file_test_picture), [state, test_image, file_under],
                     outputs(FiledView, note=filed_note, choice=file_under), api_visibility="private")
    batch_btn.click(h.event(te.batch_predict, heavy=True), [state, batch_files, threshold],
                    outputs(BatchView, summary=batch_note, table=batch_table, csv_button=batch_csv),
                    show_progress_on=[batch_note], api_name="batch_predict", **heavy_group(h.limits.heavy_jobs))
    return threshold, threshold_note

