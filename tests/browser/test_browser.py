"""A real Chromium clicks through the real app, saving a screenshot of each step.

Uses Debian's Chromium (`apt-get install -y chromium`) through the playwright pip package; never
`playwright install`. Skipped on a developer machine without Chromium, never in CI (CI=true).
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile

import pytest

from conftest import EXAMPLE, TEST_IMAGES, zip_folder
from transfer_gui.settings import Limits

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: apt-get install -y chromium")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.browser  # left out of the fast subset (README)

expect.set_options(timeout=60_000)  # the default 5 s is too short for a 2-core CI machine

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic",
        # a fake camera, allowed without asking, that films one of the test pictures (see below)
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
CAMERA_PICTURE = TEST_IMAGES / "animal_dolphin.png"


def _camera_video(picture, dest, size=(640, 480), frames=2):
    """A raw video (YUV4MPEG2, 4:2:0) of ``picture`` on white, for Chromium's fake camera."""
    import numpy as np
    from PIL import Image

    with Image.open(picture) as img:
        img = img.convert("RGBA")
        img.thumbnail(size)
    frame = Image.new("RGBA", size, "white")
    frame.alpha_composite(img, ((size[0] - img.width) // 2, (size[1] - img.height) // 2))
    ycc = np.asarray(frame.convert("RGB").convert("YCbCr"))
    planes = [ycc[..., 0], ycc[::2, ::2, 1], ycc[::2, ::2, 2]]
    with open(dest, "wb") as f:
        f.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + b"".join(p.tobytes() for p in planes))
    return dest


@pytest.fixture(scope="module")
def app_url():
    import huggingface_hub.constants

    from transfer_gui.app.hosting import launch_kwargs
    from transfer_gui.app.layout import build_demo

    # as on this project's machines: the Hub is unreachable (also on a developer's laptop)
    offline, huggingface_hub.constants.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE, True

    demo = build_demo(training_slots=1)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield url
    demo.close()
    huggingface_hub.constants.HF_HUB_OFFLINE = offline


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One Chromium for the module (playwright's sync API allows one instance per thread). Its
    camera films CAMERA_PICTURE."""
    video = _camera_video(CAMERA_PICTURE, tmp_path_factory.mktemp("camera") / "camera.y4m")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=ARGS + [f"--use-file-for-fake-video-capture={video}"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(app_url, browser):
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, accept_downloads=True,
                                  permissions=["camera"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    yield page
    context.close()


def _wait_for_images(page, selector):
    """Wait until every image matching ``selector`` has loaded (so screenshots show them). Each is
    scrolled into view first: the browser loads a lazy gallery image only once it is near view."""
    images = page.locator(selector).all()
    for image in images:
        image.scroll_into_view_if_needed()
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(i => i.complete && i.naturalWidth > 0)",
        arg=selector, timeout=30_000)
    if images:
        images[0].scroll_into_view_if_needed()  # back to the first, as a person would see it


def _click_map_dot(page):
    """Click the first dot of the map's left half, found by its colour in the picture's pixels
    (the first class's colour), where the browser shows it."""
    found = page.evaluate("""() => {
        const img = document.querySelector('#feature-map img');
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        for (let y = 40; y < 430; y++) for (let x = 20; x < 410; x++) {
            const i = 4 * (y * c.width + x);
            const near = Math.abs(d[i] - 78) + Math.abs(d[i + 1] - 121) + Math.abs(d[i + 2] - 167) < 24;
            if (near) return [x + 2, y + 3, c.width, c.height];
        }
        return null; }""")
    assert found, "no dot of the first class on the map"
    x, y, width, height = found
    img = page.locator("#feature-map img")
    box = img.bounding_box()
    scale = min(box["width"] / width, box["height"] / height, 1)  # scaled to fit, centred
    pad_x, pad_y = (box["width"] - width * scale) / 2, (box["height"] - height * scale) / 2
    img.click(position={"x": pad_x + x * scale, "y": pad_y + y * scale})


def _tab(page, name):
    page.get_by_role("tab", name=name).click()


EXAMPLE_LABELS = sorted(p.name for p in EXAMPLE.iterdir() if p.is_dir())


def _click_cell(page, labels, true_label, predicted):
    """Click a confusion-matrix cell where the user would: the picture is scaled to fit, so the
    cell's pixel position is mapped through the displayed size. The layout does not depend on the
    counts, so the geometry of an all-zero matrix with the same labels is the real one."""
    from transfer_gui.engine.figures import confusion_picture

    geometry = confusion_picture(labels, [[0] * len(labels)] * len(labels))
    x, y = geometry.centre(true_label, predicted)
    img = page.locator("#confusion img")
    box = img.bounding_box()
    natural = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    scale = min(box["width"] / natural[0], box["height"] / natural[1], 1)
    pad_x, pad_y = (box["width"] - natural[0] * scale) / 2, (box["height"] - natural[1] * scale) / 2
    img.click(position={"x": pad_x + x * scale, "y": pad_y + y * scale})


def test_whole_flow_from_images_to_prediction_stop_and_download(page, artifacts, tmp_path):
    shot = lambda name: page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)  # noqa: E731
    expect(page.locator("#example-btn")).to_be_visible()  # the page has rendered, not Gradio's loading spinner
    expect(page.locator("#curve-plot")).to_be_hidden()  # no empty plot before there is a curve
    shot("01-start")
    _tab(page, "3. Train")
    expect(page.locator("#train-btn")).to_be_disabled()  # nothing to train on yet
    expect(page.locator("#train-status")).to_contain_text("Load images in step 1 first")
    # Opened now, long before use: a field filled while the accordion is still mounting can be
    # reset to its initial value by the mount.
    page.get_by_text("Advanced settings").click()
    expect(page.locator("#epochs input")).to_have_value("0")

    _tab(page, "1. Your images")
    page.locator("#example-btn").click()
    expect(page.locator("#data-summary")).to_contain_text("96 images in 6 classes")
    expect(page.locator("#gallery img").first).to_be_visible()
    _wait_for_images(page, "#gallery img")
    shot("02-data")

    _tab(page, "2. Model")
    expect(page.locator("#model-card")).to_contain_text("built in (works offline)")
    shot("03-model")

    # A model that needs the internet, offline: a clear message, and Train works again after it.
    page.get_by_text("Advanced: any timm model").click()
    page.locator("#custom-model textarea, #custom-model input").first.fill("resnet18.a1_in1k")
    _tab(page, "3. Train")
    page.locator("#train-btn").click()
    expect(page.locator("#train-status")).to_contain_text("Could not train: Model resnet18.a1_in1k needs the internet")
    expect(page.locator("#train-btn")).to_be_enabled()
    shot("03b-offline-model-error")
    # a user closes the error's notice: it would otherwise stay over the later screenshots
    page.locator(".toast-close").first.click()
    expect(page.locator(".toast-close")).to_have_count(0)
    _tab(page, "2. Model")
    page.locator("#custom-model textarea, #custom-model input").first.fill("")

    _tab(page, "3. Train")
    expect(page.locator("#train-btn")).to_be_enabled()
    page.locator("#train-btn").click()
    status = page.locator("#train-status")
    expect(status).to_contain_text("Reading images", timeout=60_000)
    expect(status).to_contain_text("Done.", timeout=240_000)
    # the live plots have their lines (training and validation loss; accuracy) and nothing covers them
    expect(page.locator("#loss-plot .mark-line path")).to_have_count(2)
    expect(page.locator("#acc-plot .mark-line path")).to_have_count(1)
    expect(page.locator("#loss-plot .mark-line path").first).to_be_visible()
    shot("04-trained-quick")

    _tab(page, "4. Results")
    # every image's out-of-fold result, the calibration measured, and the reliability chart
    expect(page.locator("#results-summary")).to_contain_text("pictures like yours will be right")
    expect(page.locator("#results-summary")).to_contain_text("estimated by 5-fold cross-validation on all 96 images")
    expect(page.locator("#results-summary")).to_contain_text("Wilson score interval")
    expect(page.locator("#results-summary")).to_contain_text("Confidences were")
    expect(page.locator("#results-summary")).to_contain_text("Expected calibration error")
    # ... read against what chance alone gives on 96 pictures
    expect(page.locator("#results-summary")).to_contain_text("exactly right would show")
    expect(page.locator("#per-class")).to_contain_text("16")  # each class: all 16 images judged
    expect(page.locator("#reliability")).to_be_visible()
    expect(page.locator("#reliability")).to_contain_text("perfectly calibrated")
    _wait_for_images(page, "#confusion img")
    _wait_for_images(page, "#mistakes img")
    shot("05-results")
    # what the model sees: a map of the images; a click on a dot shows that image
    _wait_for_images(page, "#feature-map img")
    expect(page.locator("#map-note")).to_contain_text("Compare with training from scratch")
    _click_map_dot(page)
    expect(page.locator("#map-pick-note")).to_contain_text("class animal")
    _wait_for_images(page, "#map-pick img")
    page.locator("#feature-map").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "05e-feature-map.png"))
    # pictures to check: the likeliest mislabelled first, each with its reason; keep one, then undo
    expect(page.locator("#check-note")).to_contain_text("picture(s) to check")
    _wait_for_images(page, "#check-gallery img")
    page.locator("#check-gallery img").first.click()
    expect(page.locator("#check-pick")).to_contain_text("Labelled")
    expect(page.locator("#check-pick")).to_contain_text("the model that had not seen it says")
    page.locator("#check-keep").click()
    expect(page.locator("#check-changes")).to_contain_text("kept as")
    expect(page.locator("#check-undo")).to_be_enabled()
    page.locator("#check-gallery img").first.click()  # the next one: its reason and a suggested class
    expect(page.locator("#check-pick")).to_contain_text("the model that had not seen it says")
    page.locator("#check-gallery").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "05f-pictures-to-check.png"))
    page.locator("#check-undo").click()
    expect(page.locator("#check-changes")).not_to_contain_text("kept as")
    # Pretrained vs from scratch on one seconds axis; then the map beside the random-weight one.
    _tab(page, "3. Train")
    page.locator("#compare-btn").click()
    expect(page.locator("#compare-plot img")).to_be_visible()  # drawn while the runs go
    expect(page.locator("#stop-btn")).to_be_enabled()
    shot("12-compare-running")
    note = page.locator("#compare-note")
    expect(note).to_contain_text(re.compile(r"Pretrained: \d+% after \d+ s; from scratch: \d+% after \d+ s"),
                                 timeout=300_000)
    expect(note).to_contain_text("same 24 held-out images")
    expect(page.locator("#compare-btn")).to_be_enabled()
    _wait_for_images(page, "#compare-plot img")
    page.locator("#compare-plot").scroll_into_view_if_needed()
    shot("12-compare-with-scratch")
    _tab(page, "4. Results")
    page.wait_for_function("() => document.querySelector('#feature-map img').naturalWidth > 800")
    expect(page.locator("#map-note")).not_to_contain_text("Compare with training from scratch")
    page.locator("#feature-map").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "12b-map-pretrained-vs-random.png"))

    # a click on the (bug, bug) cell of the matrix shows the bugs it recognised
    _click_cell(page, EXAMPLE_LABELS, "bug", "bug")
    expect(page.locator("#cell-note")).to_contain_text("of 'bug' were correctly recognised")
    expect(page.locator("#cell-true input")).to_have_value("bug")
    _wait_for_images(page, "#cell-gallery img")
    n_shown = page.locator("#cell-gallery img").count()
    assert n_shown >= 1
    page.locator("#mistake-heat input").check()
    expect(page.locator("#mistakes .progress-text, #mistakes .eta-bar")).to_have_count(0)
    expect(page.locator("#mistakes img").first).to_be_visible()
    _wait_for_images(page, "#mistakes img")
    shot("05b-mistakes-heat-maps")

    _tab(page, "5. Test")
    page.locator("#test-image input[type=file]").set_input_files(str(TEST_IMAGES / "animal_dolphin.png"))
    expect(page.locator("#prediction")).to_contain_text("%", timeout=60_000)
    expect(page.locator("#verdict")).to_contain_text("sure")
    expect(page.locator("#heat-note")).to_contain_text("where the model found the most evidence")
    expect(page.locator("#threshold-note")).to_contain_text("On your images")
    _wait_for_images(page, "#test-heat img")
    shot("05c-test-heat-map")
    # a 100% threshold: the answer becomes "not sure" with the candidates
    page.locator("#threshold input[type=number]").fill("1")
    page.locator("#threshold input[type=number]").press("Enter")
    expect(page.locator("#verdict")).to_contain_text("Not sure", timeout=60_000)
    expect(page.locator("#verdict")).to_contain_text("Top candidates")
    # many pictures at once -> a table and a CSV (threshold back to 50%)
    page.locator("#threshold input[type=number]").fill("0.5")
    page.locator("#threshold input[type=number]").press("Enter")
    expect(page.locator("#verdict")).not_to_contain_text("Not sure")
    page.locator("#batch-files input[type=file]").set_input_files(
        [str(p) for p in sorted(TEST_IMAGES.glob("*.png"))])
    page.locator("#batch-btn").click()
    expect(page.locator("#batch-note")).to_contain_text("6 picture(s) classified", timeout=60_000)
    expect(page.locator("#batch-csv")).to_be_enabled()
    expect(page.locator("#batch-table")).to_contain_text("vehicle_hummer_01.png")
    expect(page.locator("#batch-table")).to_contain_text("vehicle")
    shot("05d-batch")
    # The webcam (Chromium's fake camera films a dolphin drawing): a snapshot classified here, and
    # a snapshot added to a new class in step 1.
    test = page.locator("#test-image")
    test.get_by_label("Capture from camera").click()
    test.get_by_text("Click to Access Webcam").click()
    expect(test.locator("video")).to_be_visible()
    test.get_by_label("capture photo").click()
    expect(page.locator("#verdict")).to_contain_text("animal", timeout=60_000)  # the filmed dolphin
    _wait_for_images(page, "#test-heat img")
    shot("17-webcam-test")
    _tab(page, "1. Your images")
    page.locator("#class-name textarea, #class-name input").first.fill("dolphins")
    snapshot = page.locator("#class-snapshot")
    snapshot.get_by_text("Click to Access Webcam").click()
    expect(snapshot.locator("video")).to_be_visible()
    snapshot.get_by_label("capture photo").click()
    _wait_for_images(page, "#class-snapshot img[src]")
    shot("17-webcam-snapshot")
    page.locator("#add-images").click()
    expect(page.locator("#classes-table")).to_contain_text("dolphins")
    expect(page.locator("#classes-table tbody")).to_contain_text("1")
    shot("17-webcam-class")

    # A longer fine-tune, stopped by the user: the quick model, trained on every image, is kept.
    _tab(page, "3. Train")
    page.get_by_text("Fine-tune: also adjust the whole model").click()
    epochs = page.locator("#epochs input")
    epochs.fill("40")
    epochs.press("Tab")
    expect(epochs).to_have_value("40")
    page.locator("#train-btn").click()
    # Stop once a fine-tune epoch has finished, so there is a fine-tuned epoch to keep. Early
    # stopping needs 5 epochs without improvement, so the run is still going at this point.
    expect(status).to_contain_text(re.compile(r"Fine-tuning: epoch \d+/\d+, accuracy on held-out images"),
                                   timeout=300_000)
    shot("06-fine-tuning")
    page.locator("#stop-btn").click()
    expect(status).to_contain_text("Stopped.", timeout=120_000)
    expect(status).to_contain_text("the quick model (the new head alone) was kept")
    shot("07-stopped")

    _tab(page, "6. Download")
    button = page.locator("#download-btn")
    expect(button).to_be_enabled()
    with page.expect_download() as info:
        button.click()
    saved = tmp_path / "model.zip"
    info.value.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        assert {"config.json", "model.safetensors", "transfer_gui.json"} <= set(zf.namelist())
    shot("08-download")

    # Export for other apps: both files are written and pass their parity check.
    page.locator("#export-btn").click()
    export_status = page.locator("#export-status")
    expect(export_status).to_contain_text("ONNX: parity check passed", timeout=300_000)
    expect(export_status).to_contain_text("TorchScript: parity check passed")
    expect(page.locator("#export-download")).to_be_enabled()
    page.get_by_text("Model card (README.md in the .zip)").click()
    expect(page.locator("#model-card-preview")).to_contain_text("Intended use and limits")
    shot("09-export")

    # Load the downloaded model back (as a user would in a later visit) and measure it.
    _tab(page, "2. Model")
    page.locator("#bundle-upload input[type=file]").set_input_files(str(saved))
    expect(page.locator("#bundle-status")).to_contain_text("Loaded tf_efficientnet_lite0.in1k with 6 classes")
    page.locator("#evaluate-btn").click()
    expect(page.locator("#evaluate-status")).to_contain_text("Evaluated on 96 images", timeout=120_000)
    shot("10-loaded-model")
    _tab(page, "3. Train")
    expect(page.locator("#continue-loaded input")).to_be_checked()
    _tab(page, "4. Results")
    expect(page.locator("#results-summary")).to_contain_text("of the 96 pictures of step 1 right")
    _wait_for_images(page, "#confusion img")
    shot("11-loaded-model-results")

    # the explainer, and "would more images help?"
    _tab(page, "3. Train")
    page.get_by_text("What is happening?").click()
    _wait_for_images(page, "#explainer-diagram img")
    shot("12-explainer")
    page.locator("#curve-btn").click()
    expect(page.locator("#curve-note")).to_contain_text("images per class", timeout=300_000)
    expect(page.locator("#curve-plot img")).to_be_visible()
    shot("13-learning-curve")



def test_trying_every_built_in_model_shows_a_table_and_one_click_picks_the_best(page, artifacts, tmp_path):
    page.locator("#zip-upload input[type=file]").set_input_files(str(zip_folder(EXAMPLE, tmp_path / "example.zip")))
    expect(page.locator("#data-summary")).to_contain_text("96 images in 6 classes", timeout=60_000)
    _tab(page, "2. Model")
    page.locator("#trials-btn").click()
    expect(page.locator("#trials-status")).to_contain_text("did best on your pictures", timeout=240_000)
    table = page.locator("#trials-table")
    for title in ("EfficientNet-Lite0", "EfficientNet-Lite1", "EfficientNet-Lite2"):
        expect(table).to_contain_text(title)
    best = page.locator("#use-best")
    expect(best).to_be_visible()
    winner = best.inner_text().removeprefix("Use ")
    best.click()
    expect(page.locator("#model-card")).to_contain_text(winner.split(" (")[0])
    page.screenshot(path=str(artifacts / "03c-try-every-model.png"), full_page=True)

def test_closing_the_tab_mid_training_frees_the_slot_for_the_next_user(browser, artifacts, monkeypatch):
    """A tab closed while it fine-tunes: its training stops, its files go once the grace period
    for a page to come back (here 3 s) is over, no thread of ours is left behind, and the next
    visitor trains at once."""
    import gc
    import threading
    import time

    from transfer_gui.app.server import Server
    from transfer_gui.app.hosting import launch_kwargs
    from transfer_gui.app.layout import build_demo

    def our_threads() -> int:  # Gradio's worker pool keeps idle threads; those are not ours
        return sum(not t.name.startswith("AnyIO worker") for t in threading.enumerate())

    monkeypatch.setenv("TLS_SESSION_GRACE_MIN", "0.05")
    h = Server(training_slots=1, limits=Limits.from_env())
    demo = build_demo(server=h)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        threads_before = our_threads()
        tab = browser.new_context(viewport={"width": 1360, "height": 1000})
        a = tab.new_page()
        a.goto(url)
        a.locator("#example-btn").click()
        expect(a.locator("#data-summary")).to_contain_text("96 images in 6 classes")
        _tab(a, "3. Train")
        a.get_by_text("Fine-tune: also adjust the whole model").click()
        a.locator("#train-btn").click()
        expect(a.locator("#train-status")).to_contain_text(re.compile("Reading images|Training the new head"))
        (key,) = h.sessions.keys()
        session = h.sessions.find(key)
        gc.collect()  # a Session that only a weak reference knew would be gone now
        tab.close()  # the tab (its whole browsing context) closes mid-training
        deadline = time.monotonic() + 180  # Gradio notices the closed connection, then unloads
        while not session.closed and time.monotonic() < deadline:
            time.sleep(0.5)
        # the session ended: training stopped, files deleted
        left = sorted(p.name for p in h.root.glob("tls-session-*"))
        assert session.closed and not left, f"no unload after 180 s; sessions still known: {h.sessions.keys()}; {left}"
        deadline = time.monotonic() + 60  # ...and the training slot is free
        while h.slots.busy() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert h.slots.busy() == (0, 0)
        b = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
        b.goto(url)
        b.locator("#example-btn").click()
        _tab(b, "3. Train")
        b.locator("#train-btn").click()
        expect(b.locator("#train-status")).to_contain_text("Done.", timeout=300_000)
        b.screenshot(path=str(artifacts / "14-next-user-after-closed-tab.png"), full_page=True)
        b.close()
        deadline = time.monotonic() + 30
        while our_threads() > threads_before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert our_threads() <= threads_before, [t.name for t in threading.enumerate()]
    finally:
        demo.close()
        h.close()


def test_an_open_tab_has_one_session_the_same_one_its_events_and_its_unload_use(browser, monkeypatch):
    """Opening the page makes exactly one Session, registered under the tab's session hash, and it
    is the object the page's state holds; after a garbage collection it is still the one known,
    and closing the tab ends it once the grace period for a page to come back (here 3 s) is over.
    (A gr.State factory made a second Session in Gradio's own page-load event, and the registered
    one was dropped: the unload then found nothing to close.)"""
    import gc
    import time

    from transfer_gui.app.server import Server
    from transfer_gui.app.session import Session
    from transfer_gui.app.hosting import launch_kwargs
    from transfer_gui.app.layout import build_demo

    monkeypatch.setenv("TLS_SESSION_GRACE_MIN", "0.05")
    h = Server(training_slots=1, limits=Limits.from_env())
    demo = build_demo(server=h)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        context = browser.new_context(viewport={"width": 1360, "height": 1000})
        page = context.new_page()
        page.goto(url)
        page.locator("#example-btn").click()
        expect(page.locator("#data-summary")).to_contain_text("96 images in 6 classes")
        gc.collect()
        (key,) = h.sessions.keys()
        session = h.sessions.get(key)
        held = [v for v in demo.state_holder.session_data[key].state_data.values() if isinstance(v, Session)]
        assert held == [session] and session.dataset is not None
        assert list(h.root.glob("tls-session-*")) == []  # the example is read in place: no folder made
        context.close()
        deadline = time.monotonic() + 120
        while not session.closed and time.monotonic() < deadline:
            time.sleep(0.5)
        assert session.closed and h.sessions.keys() == [] and list(h.root.glob("tls-session-*")) == []
    finally:
        demo.close()
        h.close()


def test_one_click_on_the_first_page_trains_the_example_and_opens_the_results(app_url, browser, artifacts):
    """The page's first button: the example's images, Quick with the built-in model while the
    Train step shows its curves, then the Results step. The time from click to Results is written
    to tests/artifacts/demo-seconds.txt (a measurement, never asserted)."""
    import time

    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    expect(page.locator("#demo-btn")).to_be_visible()
    start = time.perf_counter()
    page.locator("#demo-btn").click()
    expect(page.get_by_role("tab", name="3. Train")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#results-summary")).to_contain_text("right", timeout=300_000)
    seconds = time.perf_counter() - start
    expect(page.get_by_role("tab", name="4. Results")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#results-summary")).to_contain_text("cross-validation on all 96 images")
    expect(page.locator("#confusion img")).to_be_visible()
    page.screenshot(path=str(artifacts / "15-one-click-demo-results.png"), full_page=True)
    (artifacts / "demo-seconds.txt").write_text(f"{seconds:.1f}\n")
    _tab(page, "1. Your images")  # the example's images are the current ones
    expect(page.locator("#data-summary")).to_contain_text("96 images in 6 classes")
    context.close()


def test_sorting_a_pile_asks_least_certain_first_retrains_and_gives_a_sorted_zip(app_url, browser, artifacts,
                                                                                 tmp_path):
    """Step 7 as a person uses it: 4 labelled pictures per class, a Quick training, then a pile of
    72 unlabelled ones. The person answers (accepting right suggestions, correcting wrong ones,
    skipping one); after 10 answers the head retrains; then "accept them all" and the zip."""
    labelled, pile, truth = tmp_path / "labelled", tmp_path / "pile", {}
    pile.mkdir()
    for folder in sorted(p for p in EXAMPLE.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.png"))
        (labelled / folder.name).mkdir(parents=True)
        for f in files[:4]:
            shutil.copy(f, labelled / folder.name / f.name)
        for f in files[4:]:
            dest = pile / f"photo_{len(truth):03d}.png"
            shutil.copy(f, dest)
            truth[dest.name] = folder.name
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    page.locator("#zip-upload input[type=file]").set_input_files(str(zip_folder(labelled, tmp_path / "l.zip")))
    expect(page.locator("#data-summary")).to_contain_text("24 images in 6 classes")
    _tab(page, "3. Train")
    page.locator("#train-btn").click()
    expect(page.locator("#train-status")).to_contain_text("Done.", timeout=240_000)

    _tab(page, "7. Sort a pile")
    page.locator("#pile-upload input[type=file]").set_input_files([str(p) for p in sorted(pile.glob("*.png"))])
    status, question = page.locator("#pile-status"), page.locator("#pile-question")
    expect(status).to_contain_text("72 pictures to sort", timeout=120_000)
    _wait_for_images(page, "#pile-current img")
    _wait_for_images(page, "#pile-queue img")
    page.screenshot(path=str(artifacts / "18-sort-start.png"), full_page=True)
    answered, corrected, skipped = 0, 0, False
    while answered < 10:
        expect(question).to_contain_text(re.compile(r"photo_\d+\.png"))
        text = question.inner_text()
        name = re.search(r"photo_\d+\.png", text).group(0)
        suggested = re.search(r"Is it (.+?)\?", text).group(1).strip()
        if not skipped and answered == 3:
            page.locator("#pile-skip").click()
            skipped = True
        elif suggested == truth[name]:
            page.locator("#pile-accept").click()
            answered += 1
        else:
            page.locator("#pile-other").get_by_label(truth[name], exact=True).check()
            answered, corrected = answered + 1, corrected + 1
        expect(question).not_to_contain_text(name)  # the next picture is asked about
    expect(status).to_contain_text("Retrained on 34 labelled pictures", timeout=120_000)
    expect(status).to_contain_text(f"{corrected} of 10")  # the round's corrections
    expect(status).to_contain_text("Model now: About")
    page.screenshot(path=str(artifacts / "18-sort-retrained.png"), full_page=True)
    page.locator("#pile-accept-all").click()
    expect(status).to_contain_text("Accepted")
    page.locator("#pile-pack").click()
    expect(page.locator("#pile-download")).to_be_enabled()
    with page.expect_download() as info:
        page.locator("#pile-download").click()
    saved = tmp_path / "sorted.zip"
    info.value.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        names = zf.namelist()
        rows = zf.read("labels.csv").decode().splitlines()
    folders = {n.split("/")[0] for n in names if n != "labels.csv"}
    assert folders <= set(truth.values()) and len(rows) == len(names)  # a header and a row per picture
    assert sum(",you" in r for r in rows) >= 24 + corrected
    page.screenshot(path=str(artifacts / "18-sort-done.png"), full_page=True)
    context.close()


STEP_TABS = ["1. Your images", "2. Model", "3. Train", "4. Results", "5. Test", "6. Download"]
# The one control of each step that a user must be able to reach.
STEP_BUTTONS = {"1. Your images": "#example-btn", "2. Model": "#model", "3. Train": "#train-btn",
                "4. Results": "#confusion", "5. Test": "#batch-btn", "6. Download": "#download-btn"}


def _open_step(page, name):
    """Open a step as a person would: its tab, or, where the tabs do not fit (a phone), the tab
    menu's entry."""
    tab = page.get_by_role("tab", name=name)
    if tab.count() and tab.is_visible():
        tab.click()
        return
    page.get_by_role("button", name="More tabs").click()
    page.locator(".overflow-dropdown button", has_text=name).click()


@pytest.mark.parametrize("device,viewport", [("phone", {"width": 390, "height": 844}),
                                             ("tablet", {"width": 820, "height": 1180})])
def test_every_step_fits_a_phone_and_a_tablet(app_url, browser, artifacts, device, viewport):
    """Every step on a phone and a tablet, after a real training: no sideways scrolling, no gallery
    cut off at the screen's edge, and the step's main control lies within the screen's width. A
    screenshot of each step. (A table wider than a phone scrolls inside its own box.)"""
    context = browser.new_context(viewport=viewport, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    expect(page.locator("#demo-btn")).to_be_visible()
    page.locator("#demo-btn").click()
    expect(page.locator("#results-summary")).to_contain_text("right", timeout=300_000)
    for number, name in enumerate(STEP_TABS, start=1):
        _open_step(page, name)
        control = page.locator(STEP_BUTTONS[name])
        expect(control).to_be_visible()
        control.scroll_into_view_if_needed()
        box = control.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 1, (device, name, box)
        wide = page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= viewport["width"], f"{device}, {name}: the page is {wide} px wide on a {viewport['width']} px screen"
        # no gallery of the open step is wider than its box (pictures cut off at the edge)
        cut = page.evaluate("() => [...document.querySelectorAll('.tabitem')].filter(t => t.offsetParent)"
                            ".flatMap(t => [...t.querySelectorAll('.grid-wrap')])"
                            ".filter(g => g.scrollWidth > g.clientWidth + 1).map(g => g.closest('[id]').id)")
        assert cut == [], f"{device}, {name}: galleries cut off: {cut}"
        page.screenshot(path=str(artifacts / f"16-{device}-{number}.png"), full_page=True)
    context.close()


def test_publish_offers_sign_in_with_hugging_face_where_oauth_is_on(browser, artifacts, monkeypatch):
    """On a Space with ``hf_oauth`` the Publish box has the sign-in button. The Space is what
    Spaces sets (SYSTEM, SPACE_ID and the OAuth client Gradio reads when it is imported); the
    button is only looked at, never pressed, so nothing here leaves the machine."""
    import gradio.oauth

    from transfer_gui.app.hosting import launch_kwargs
    from transfer_gui.app.layout import build_demo

    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "someone/transfer-learning-studio")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "a-client")
    for name, value in (("OAUTH_CLIENT_ID", "a-client"), ("OAUTH_CLIENT_SECRET", "a-secret"),
                        ("OAUTH_SCOPES", "openid profile write-repos manage-repos"),
                        ("OPENID_PROVIDER_URL", "https://huggingface.co")):
        monkeypatch.setattr(gradio.oauth, name, value)
    demo = build_demo(training_slots=1)  # sign-in from the environment, as on the Space
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(url)
        _tab(page, "6. Download")
        page.get_by_text("Publish on the Hugging Face Hub (needs the internet)").click()
        button = page.locator("#hub-login")
        expect(button).to_contain_text("Sign in with Hugging Face")
        expect(page.locator("#hub-token")).to_be_visible()  # a pasted token still works
        button.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "19-publish-sign-in.png"))
        context.close()
    finally:
        demo.close()


def test_the_demo_space_of_a_model_runs_and_answers_as_the_app_does(cli, quick_bundle, browser, artifacts,
                                                                      tmp_path):
    """The demo Space that Publish can create, written by `demo-space`, started as a Space starts
    it (python app.py) against the bundle on disk instead of the Hub, asked through its API and in
    a browser."""
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from gradio_client import Client, handle_file

    from transfer_gui.engine.workflow import open_model

    proc = cli("demo-space", quick_bundle, "alice/drawings", "--out", tmp_path / "space")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == ["README.md", "app.py", "requirements.txt"]
    readme = (tmp_path / "space" / "README.md").read_text()
    assert "sdk: gradio" in readme and "  - alice/drawings" in readme
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, TLS_DEMO_MODEL=f"local-dir:{quick_bundle}", HF_HUB_OFFLINE="1",
               GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "app.py"], cwd=tmp_path / "space", env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()[-3000:]
                time.sleep(0.5)
        picture = TEST_IMAGES / "vehicle_hummer_01.png"
        label, verdict = Client(url, verbose=False).predict(handle_file(str(picture)), 0.5, api_name="/predict")
        predictor = open_model(quick_bundle).predictor
        from transfer_gui.engine.images import load_image

        probs = predictor.probabilities([load_image(picture)])[0]
        shown = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert label["label"] == predictor.labels[int(probs.argmax())]  # the app's answer
        for name, p in shown.items():
            assert abs(p - float(probs[predictor.labels.index(name)])) < 1e-4
        assert verdict.startswith(f"### {label['label']}")
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(picture))
        page.get_by_role("button", name="Submit").click()
        expect(page.get_by_text(f"{label['label']}").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("sure.").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(artifacts / "20-demo-space.png"), full_page=True)
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
