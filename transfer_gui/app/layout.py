"""``build_demo()``: the page's layout and wiring. No logic lives here: each step's events are in
its own module (data_step.py, ..., download_step.py), reached through the ``Server``; how the page
is served (styling, ZeroGPU) is in hosting.py."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ..engine.catalog import DEFAULT_MODEL
from .data_step import NO_IMAGES, ClassesView, DataView
from .download_step import DownloadView, ExportView
from ..settings import Settings
from .hosting import cache_ttl_s, zero_gpu
from .model_step import EvaluatedView, ModelLoaded, describe_model, model_choices
from .results_step import NO_RESULTS, CellPick, CellView, MapPick, ResultsView
from .server import ROOT, Server
from .sort_layout import sort_tab
from .predict_layout import predict_tab
from .train_step import MODE_CHOICES, CompareUpdate, CurveUpdate, FailureView, TrainUpdate
from .texts import COMPARE_INTRO, CURVE_INTRO, DEMO_BUTTON, EXPLAINER, INTRO
from .views import COUNTS_COLUMNS, PER_CLASS_COLUMNS, SKIPPED_COLUMNS, heavy_group, image_extensions, outputs

__all__ = ["build_demo"]

DIAGRAM = ROOT / "assets" / "transfer_diagram.png"
STATE_TTL_S = 6 * 3600  # an idle session's files are deleted after 6 hours at the latest


def build_demo(training_slots: int | None = None, queue_size: int | None = None,
               state_ttl_s: float = STATE_TTL_S, server: Server | None = None,
               sign_in: bool | None = None) -> gr.Blocks:
    """Build the app.

    Args:
        training_slots: trainings at once across all users (default: $TLS_TRAINING_SLOTS or 1).
        queue_size: short events allowed to wait in the queue (default: $TLS_QUEUE_SIZE or 64).
        state_ttl_s: an unused session's data and files are deleted after this many seconds.
        server: the server with its event functions (built here when None; tests pass their own
            to inspect sessions and limits).
        sign_in: offer "Sign in with Hugging Face" for publishing (default: on a Space with
            OAuth, see Settings.sign_in; off the Space Gradio signs in a stand-in user).
    """
    gpu = zero_gpu()
    sign_in = Settings.from_env().sign_in if sign_in is None else sign_in
    h = server or Server(training_slots, device="cpu" if gpu else "auto", lent_gpu=gpu)
    # Long jobs enter their function at once and wait for a slot in the server's own line, which
    # has its own length and tells each user their place; Gradio's queue then only ever holds
    # short events, so predictions and loading never wait behind trainings.
    slots = h.limits.training_slots + h.limits.training_waiting
    # On a ZeroGPU Space the GPU exists only inside functions wrapped by spaces.GPU: the server
    # trains there (Server.fit); predictions, heat maps and exports run on the CPU.
    train_fn, demo_fn = h.event(h.training.train), h.event(h.training.demo)
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
        demo_btn = gr.Button(DEMO_BUTTON, variant="primary", elem_id="demo-btn")
        with gr.Tabs() as tabs:
            # --- 1. data ---------------------------------------------------------------------
            with gr.Tab("1. Your images", id="tab-data"):
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("**Upload a .zip** with one folder per class "
                                    "(e.g. `cats/`, `dogs/`), pictures inside.")
                        zip_upload = gr.File(label="Zip of class folders", file_types=[".zip"],
                                             elem_id="zip-upload")
                        example_btn = gr.Button("Use the example dataset (6 kinds of drawings)",
                                                elem_id="example-btn")
                    with gr.Column():
                        gr.Markdown("**Or make classes here**: name a class, add pictures "
                                    "(files, webcam or paste), repeat for each class.")
                        with gr.Row():
                            class_name = gr.Textbox(label="Class name", placeholder="e.g. apples",
                                                    elem_id="class-name", scale=2)
                            add_btn = gr.Button("Add to class", elem_id="add-images", scale=1)
                        with gr.Row():
                            class_files = gr.File(label="Pictures", file_count="multiple",
                                                  file_types=image_extensions(), elem_id="class-files")
                            # image_mode=None keeps transparency: the engine composites it on white
                            # (Gradio's default "RGB" would drop alpha and expose hidden colours).
                            snapshot = gr.Image(label="Webcam or paste", type="filepath", image_mode=None,
                                                sources=["webcam", "clipboard", "upload"],
                                                elem_id="class-snapshot")
                        classes_table = gr.Dataframe(label="Your classes", interactive=False,
                                                     elem_id="classes-table")
                        with gr.Row():
                            use_classes_btn = gr.Button("Use these classes", variant="primary",
                                                        elem_id="use-classes")
                            clear_btn = gr.Button("Start over", elem_id="clear-classes")
                data_summary = gr.Markdown(NO_IMAGES,
                                           elem_id="data-summary")
                with gr.Row():
                    # Empty tables start with their column names (Gradio's default headers are "1 2 3").
                    counts = gr.Dataframe(pd.DataFrame(columns=COUNTS_COLUMNS), label="Images per class",
                                          interactive=False, elem_id="counts", scale=1)
                    gallery = gr.Gallery(label="A few images of each class", columns=8, height=260,
                                         object_fit="contain", elem_id="gallery", scale=3)
                skipped = gr.Dataframe(pd.DataFrame(columns=SKIPPED_COLUMNS), label="Skipped files and why",
                                       interactive=False, elem_id="skipped")
                gr.Markdown("**Checks**: problems that quietly spoil a small image set.")
                checks_md = gr.Markdown(elem_id="checks")
                check_images = gr.Gallery(label="Images to look at", columns=8, height="auto", visible=False,
                                          object_fit="contain", elem_id="check-images")

            # --- 2. model --------------------------------------------------------------------
            with gr.Tab("2. Model", id="tab-model"):
                model = gr.Dropdown(model_choices(), value=DEFAULT_MODEL, label="Pretrained model",
                                    elem_id="model")
                card = gr.Markdown(describe_model(DEFAULT_MODEL), elem_id="model-card")
                with gr.Accordion("Advanced: any timm model, or your own weights", open=False):
                    custom_model = gr.Textbox("", label="timm model name (overrides the list)",
                                              placeholder="e.g. efficientnet_b1.ra4_e3600_r240_in1k",
                                              elem_id="custom-model")
                    # .safetensors only: .pth/.pt/.bin files are pickles, which can run code when loaded
                    weights_file = gr.File(label="Weights file for that architecture (.safetensors)",
                                           file_types=[".safetensors"],
                                           elem_id="weights-file")
                gr.Markdown("**Or start from a model you trained before**: upload the .zip this app gave "
                            "you. Then test it, measure it on the images of step 1, or continue training it "
                            "(new classes are added, the old ones keep what they learned).")
                with gr.Row():
                    bundle_upload = gr.File(label="Trained model (.zip)", file_types=[".zip"],
                                            elem_id="bundle-upload")
                    with gr.Column():
                        bundle_status = gr.Markdown(elem_id="bundle-status")
                        evaluate_btn = gr.Button("Evaluate it on the images of step 1", elem_id="evaluate-btn")
                        evaluate_status = gr.Markdown(elem_id="evaluate-status")

            # --- 3. train --------------------------------------------------------------------
            with gr.Tab("3. Train", id="tab-train"):
                mode = gr.Radio(MODE_CHOICES, value="quick", label="How to train", elem_id="mode")
                with gr.Accordion("Advanced settings", open=False):
                    with gr.Row():
                        epochs = gr.Number(label="Fine-tune epochs at most (0 = automatic: 12)", value=0,
                                           precision=0, minimum=0, maximum=1000, elem_id="epochs")
                        lr = gr.Number(label="Fine-tune learning rate (0 = automatic: 0.001)", value=0, minimum=0,
                                       elem_id="lr")
                        val_fraction = gr.Slider(0.1, 0.5, value=0.25, step=0.05,
                                                 label="Share of images held back to judge fine-tuning "
                                                       "(Quick checks every image by cross-validation)",
                                                 elem_id="val-fraction")
                        seed = gr.Number(label="Random seed", value=0, precision=0, elem_id="seed")
                with gr.Accordion("What is happening? (transfer learning in one picture)", open=False,
                                  elem_id="explainer"):
                    gr.Image(str(DIAGRAM), show_label=False, interactive=False, elem_id="explainer-diagram",
                             buttons=[])
                    gr.Markdown(EXPLAINER)
                continue_loaded = gr.Checkbox(label="Continue training the uploaded model (step 2) instead of "
                                                    "starting from the pretrained one", value=False,
                                              visible=False, elem_id="continue-loaded")
                with gr.Row():
                    train_btn = gr.Button("Train", variant="primary", interactive=False, elem_id="train-btn")
                    stop_btn = gr.Button("Stop (keeps the best model so far)", variant="stop",
                                         interactive=False, elem_id="stop-btn")
                status = gr.Markdown("Load images in step 1 first; then press Train.", elem_id="train-status")
                limits_note = h.limits_note()
                gr.Markdown(limits_note, visible=bool(limits_note), elem_id="limits-note")
                with gr.Row():
                    loss_plot = gr.LinePlot(x="epoch", y="value", color="series", title="Loss (lower is better)",
                                            x_title="epoch", y_title="loss", height=300, elem_id="loss-plot")
                    acc_plot = gr.LinePlot(x="epoch", y="value", color="series",
                                           title="Validation accuracy (higher is better)", x_title="epoch",
                                           y_title="accuracy", y_lim=[0, 1], height=300, elem_id="acc-plot")
                gr.Markdown(CURVE_INTRO)
                with gr.Row():
                    curve_btn = gr.Button("Would more images help?", elem_id="curve-btn", scale=1)
                    curve_note = gr.Markdown(elem_id="curve-note")
                # A picture, drawn once the curve is measured: whole-number ticks at the measured
                # sizes and the spread of the tries as a band, which the live line plots cannot draw.
                # No label: its badge would cover the picture's legend (the axes say what it shows).
                curve_plot = gr.Image(show_label=False, type="pil", interactive=False, elem_id="curve-plot",
                                      visible=False, buttons=["download", "fullscreen"])  # until it has points
                gr.Markdown(COMPARE_INTRO)
                with gr.Row():
                    compare_btn = gr.Button("Compare with training from scratch", elem_id="compare-btn", scale=1)
                    compare_note = gr.Markdown(elem_id="compare-note")
                compare_plot = gr.Image(show_label=False, type="pil", interactive=False, elem_id="compare-plot",
                                        visible=False, buttons=["download", "fullscreen"])

            # --- 4. results ------------------------------------------------------------------
            with gr.Tab("4. Results", id="tab-results"):
                results = gr.Markdown(NO_RESULTS, elem_id="results-summary")
                per_class = gr.Dataframe(pd.DataFrame(columns=PER_CLASS_COLUMNS),
                                         label="Per class: precision, recall, F1 on answers for images the model had not seen",
                                         interactive=False, elem_id="per-class")
                with gr.Row():
                    with gr.Column(scale=2):
                        gr.Markdown("**Confusion matrix**: rows are the true classes, columns what the model "
                                    "said. Click a cell to see its images.")
                        # No label: its badge would cover the top of the picture.
                        confusion = gr.Image(show_label=False, type="pil", interactive=False,
                                             elem_id="confusion", buttons=["download", "fullscreen"])
                    with gr.Column(scale=3):
                        with gr.Row():
                            cell_true = gr.Dropdown(label="True class", choices=[], elem_id="cell-true")
                            cell_pred = gr.Dropdown(label="Predicted as", choices=[], elem_id="cell-pred")
                        cell_note = gr.Markdown(elem_id="cell-note")
                        cell_gallery = gr.Gallery(label="Images in this cell (predicted class, confidence)",
                                                  columns=5, height=320, object_fit="contain",
                                                  elem_id="cell-gallery")
                gr.Markdown("**What the model sees**: every image on one map, placed by the model's features.")
                map_note = gr.Markdown(elem_id="map-note")
                with gr.Row():
                    feature_map = gr.Image(show_label=False, type="pil", interactive=False, elem_id="feature-map",
                                           visible=False, buttons=["download", "fullscreen"], scale=3, format="png")
                    with gr.Column(scale=1):
                        map_pick = gr.Image(label="The image you clicked", interactive=False, visible=False,
                                            height=240, elem_id="map-pick")
                        map_pick_note = gr.Markdown(elem_id="map-pick-note")
                gr.Markdown("**Can you trust its confidence?** Each point groups answers given with about the "
                            "same confidence (3 answers or more) and shows how often they were right; on the "
                            "diagonal, \"80 %\" means right 80 % of the time.")
                reliability = gr.LinePlot(x="confidence", y="accuracy", color="series", x_lim=[0, 1], y_lim=[0, 1],
                                          x_title="confidence the model gave", y_title="share that was right",
                                          height=280, elem_id="reliability", visible=False)
                gr.Markdown("**Most confident mistakes**: the images the model got wrong with the most "
                            "conviction (fastai's *top losses*). Mislabelled images often show up here.")
                show_heat = gr.Checkbox(label="Show where the model looked (heat map of the class it chose)",
                                        value=False, elem_id="mistake-heat")
                mistakes = gr.Gallery(label="Mistakes (true → predicted)", columns=6, object_fit="contain",
                                      height="auto", elem_id="mistakes")

            threshold, threshold_note = predict_tab(h, state)

            # --- 6. download -----------------------------------------------------------------
            with gr.Tab("6. Download", id="tab-download"):
                gr.Markdown("The trained model as a zip in timm / Hugging Face layout "
                            "(`config.json` + `model.safetensors`, labels and preprocessing inside). "
                            "Load it with `timm.create_model('local-dir:FOLDER', pretrained=True)` "
                            "or `python -m transfer_gui predict model.zip photo.jpg`.")
                download_btn = gr.DownloadButton("Download the trained model (.zip)", interactive=False,
                                                 elem_id="download-btn")
                gr.Markdown("**For other apps**: TorchScript and ONNX files with the resizing and "
                            "normalisation built in (input: an RGB picture as a uint8 array of any size; "
                            "output: class probabilities). Each file is checked against this app's answers "
                            "on the held-out images right after it is written.")
                with gr.Row():
                    export_btn = gr.Button("Export to ONNX and TorchScript", elem_id="export-btn")
                    export_download = gr.DownloadButton("Download the exports (.zip)", interactive=False,
                                                        elem_id="export-download")
                export_status = gr.Markdown(elem_id="export-status")
                with gr.Accordion("Publish on the Hugging Face Hub (needs the internet)", open=False):
                    with gr.Row():
                        hub_repo = gr.Textbox(label="Repo (USER/NAME)", placeholder="alice/my-flowers",
                                              elem_id="hub-repo")
                        hub_token = gr.Textbox(label="Access token with write permission"
                                               + (" (or sign in below)" if sign_in else ""), type="password",
                                               elem_id="hub-token")
                        hub_private = gr.Checkbox(label="Private", value=True, elem_id="hub-private")
                        hub_space = gr.Checkbox(label="Also a demo Space anyone can try (needs a public model)",
                                                value=False, elem_id="hub-space")
                    if sign_in:  # its token publishes when no token is pasted
                        gr.LoginButton(elem_id="hub-login")
                    push_btn = gr.Button("Publish", elem_id="push-btn")
                    push_status = gr.Markdown(elem_id="push-status")
                with gr.Accordion("Model card (README.md in the .zip)", open=False):
                    card_md = gr.Markdown(elem_id="model-card-preview")
            sort_tab(h, state, slots, download_btn)

        # --- wiring: each event's outputs by the names of the fields its function returns -----------
        data_outputs = outputs(DataView, summary=data_summary, counts=counts, gallery=gallery, skipped=skipped,
                               checks=checks_md, check_images=check_images, train_button=train_btn, session=state)
        results_parts = dict(summary=results, per_class=per_class, confusion=confusion, cell_true=cell_true,
                             cell_pred=cell_pred, cell_note=cell_note, cell_gallery=cell_gallery, mistakes=mistakes,
                             show_heat=show_heat, reliability=reliability, feature_map=feature_map, map_note=map_note)
        results_outputs = outputs(ResultsView, **results_parts)
        download_outputs = outputs(DownloadView, card=card_md, export_status=export_status,
                                   export_download=export_download)
        cell_outputs = outputs(CellView, note=cell_note, gallery=cell_gallery)
        d, m, tr, r, dl = h.data, h.model, h.training, h.results, h.download
        heavy = heavy_group(h.limits.heavy_jobs)
        demo.load(h.event(h.on_load, counted=False), [state], [state], queue=False, api_visibility="private")
        demo.load(h.event(d.classes_table, counted=False), [state], [classes_table], queue=False,
                  api_visibility="private")
        demo.unload(h.on_unload)
        zip_upload.upload(h.event(d.load_zip, heavy=True), [state, zip_upload], data_outputs,
                          show_progress_on=[data_summary], api_name="load_zip", **heavy)
        example_btn.click(h.event(d.load_example), [state], data_outputs, show_progress_on=[data_summary],
                          api_name="use_example")
        add_btn.click(h.event(d.add_images, heavy=True), [state, class_name, class_files, snapshot],
                      outputs(ClassesView, table=classes_table, files=class_files, snapshot=snapshot, session=state),
                      api_visibility="private", **heavy)
        use_classes_btn.click(h.event(d.use_classes, heavy=True), [state], data_outputs,
                              show_progress_on=[data_summary], api_visibility="private", **heavy)
        clear_btn.click(h.event(d.clear_classes), [state], [classes_table, state], api_visibility="private")
        model.change(describe_model, [model], [card], show_progress_on=[card], api_visibility="private")
        train_outputs = outputs(TrainUpdate, status=status, loss_plot=loss_plot, acc_plot=acc_plot,
                                train_button=train_btn, stop_button=stop_btn, download_button=download_btn,
                                session=state)
        training = train_btn.click(
            train_fn, [state, model, custom_model, weights_file, mode, epochs, lr, val_fraction, seed,
                       continue_loaded], train_outputs,
            # the queue position and progress show on the status line, never over the live plots
            show_progress_on=[status], concurrency_limit=slots, concurrency_id="training", api_name="train",
        )
        # The first impression: the example's images, Quick with the built-in model while the Train
        # step shows the curves, then the Results step.
        demo_run = (demo_btn.click(lambda: gr.Tabs(selected="tab-train"), None, [tabs], queue=False,
                                   api_visibility="private")
                    .then(h.event(d.load_example), [state], data_outputs, show_progress_on=[status],
                          api_visibility="private")
                    .success(demo_fn, [state], train_outputs, show_progress_on=[status], concurrency_limit=slots,
                             concurrency_id="training", api_name="demo"))
        demo_run.success(lambda: gr.Tabs(selected="tab-results"), None, [tabs], queue=False, api_visibility="private")
        for run in (training, demo_run):
            # The Results step is filled once the model is evaluated (also after a Stop).
            run.success(h.event(r.view, heavy=True), [state], results_outputs, **heavy,
                        **({"api_name": "results"} if run is training else {"api_visibility": "private"}))
            run.success(h.event(r.threshold_note), [state, threshold], [threshold_note], api_visibility="private")
            run.success(h.event(dl.view), [state], download_outputs, api_visibility="private")
            # An error mid-run (e.g. a model that needs the internet) must not leave Train disabled.
            run.failure(h.event(tr.after_failure, counted=False), [state],
                        outputs(FailureView, status=status, train_button=train_btn, stop_button=stop_btn),
                        queue=False, api_visibility="private")
        bundle_upload.upload(h.event(m.load_model, heavy=True), [state, bundle_upload],
                             outputs(ModelLoaded, status=bundle_status, continue_box=continue_loaded,
                                     download_button=download_btn, session=state),
                             show_progress_on=[bundle_status], api_name="load_model", **heavy
                             ).success(h.event(dl.view), [state], download_outputs, api_visibility="private")
        evaluate_btn.click(h.event(m.evaluate_model, heavy=True), [state],
                           outputs(EvaluatedView, status=evaluate_status, **results_parts),
                           show_progress_on=[evaluate_status], api_name="evaluate_model", **heavy)
        export_btn.click(h.event(dl.export), [state], outputs(ExportView, report=export_status, download=export_download),
                         show_progress_on=[export_status], concurrency_limit=slots, concurrency_id="training",
                         api_name="export")
        push_btn.click(h.event(dl.push), [state, hub_repo, hub_token, hub_private, hub_space], [push_status],
                       show_progress_on=[push_status], api_name="push")
        stop_btn.click(h.event(tr.stop, counted=False), [state], [status], queue=False, api_name="stop")
        curve_btn.click(h.event(tr.curve), [state, model, custom_model, weights_file, seed],
                        outputs(CurveUpdate, status=curve_note, plot=curve_plot, session=state),
                        show_progress_on=[curve_note], concurrency_limit=slots, concurrency_id="training",
                        api_name="curve")
        compare_btn.click(h.event(tr.compare), [state, model, custom_model, weights_file, seed],
                          outputs(CompareUpdate, status=compare_note, plot=compare_plot, compare_button=compare_btn,
                                  stop_button=stop_btn, feature_map=feature_map, map_note=map_note, session=state),
                          show_progress_on=[compare_note], concurrency_limit=slots, concurrency_id="training",
                          api_name="compare")
        cell_true.input(h.event(r.cell_view), [state, cell_true, cell_pred], cell_outputs, api_visibility="private")
        cell_pred.input(h.event(r.cell_view), [state, cell_true, cell_pred], cell_outputs, api_visibility="private")
        confusion.select(r.select_cell, [state],
                         outputs(CellPick, true_label=cell_true, predicted=cell_pred, note=cell_note,
                                 gallery=cell_gallery), api_visibility="private")
        feature_map.select(r.select_point, [state], outputs(MapPick, image=map_pick, note=map_pick_note),
                           api_visibility="private")
        show_heat.input(h.event(r.mistakes_view, heavy=True), [state, show_heat], [mistakes],
                        show_progress_on=[mistakes], api_visibility="private", **heavy)
    # Every queued event passes admission before it joins the queue all share: counted events hold
    # one of their session's few places (freed when they end), the others are only checked.
    for fn in demo.fns.values():
        if fn.queue and fn.validator is None and fn.fn is not None:
            fn.validator = h.admit if getattr(fn.fn, "counts_events", False) else h.admit_uncounted
    demo.queue(max_size=queue_size or h.limits.queue_size, default_concurrency_limit=4)
    return demo
