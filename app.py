"""Start the Transfer Learning Studio web app: ``python app.py``.

Serves on http://127.0.0.1:7860 by default; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (which Hugging
Face Spaces sets) take precedence. Works offline with the built-in model and the example data.
"""

import logging
import os
import shutil
import signal
import sys

from transfer_gui.app.hosting import launch_kwargs
from transfer_gui.app.layout import build_demo
from transfer_gui.app.preload import preload_engine
from transfer_gui.app.server import own_upload_folder
from transfer_gui.settings import Settings


def main() -> None:
    """Build the app and serve it until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A stopped server (Ctrl+C, or SIGTERM from a Space or a container runtime) exits normally, so
    # the session folders are deleted on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = Settings.from_env()  # read once, here, and passed down
    uploads = None
    if not os.environ.get("GRADIO_TEMP_DIR"):
        # Gradio reads this when the page is built: set before build_demo
        uploads = own_upload_folder()
        os.environ["GRADIO_TEMP_DIR"] = str(uploads)
    try:
        _serve(settings)
    finally:
        if uploads is not None:
            shutil.rmtree(uploads, ignore_errors=True)


def _serve(settings: Settings) -> None:
    demo = build_demo(settings=settings)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        prevent_thread_lock=True,
        **launch_kwargs(settings.limits),
    )
    # The page is up without torch and timm (~7 s of imports); load them now, before a click needs them.
    preload_engine(settings.keep_malloc)
    demo.block_thread()


if __name__ == "__main__":
    main()
