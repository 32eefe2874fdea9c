"""Wall seconds a user waits in the app: from pressing Train to the first plot update and to a
trained model, on the example dataset with the built-in model (quick mode; fine-tune with --finetune).

Drives the real server through gradio_client, as the browser does. Prints figures, asserts nothing.
Usage: python benchmarks/bench_app.py [--runs 3] [--finetune]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradio_client import Client  # noqa: E402

from transfer_gui.app.layout import build_demo  # noqa: E402


def main() -> None:
    """Time training runs through the app's API and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--finetune", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    demo = build_demo()
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    mode = "finetune" if args.finetune else "quick"
    rows = []
    try:
        for run in range(args.runs):
            client = Client(url, verbose=False)  # a new session: no cached features
            client.predict(api_name="/use_example")
            t0 = time.perf_counter()
            job = client.submit("tf_efficientnet_lite0.in1k", "", None, mode, 0, 0, 0.25, 0, api_name="/train")
            first_status = first_plot = None
            for out in job:
                now = time.perf_counter() - t0
                first_status = first_status or now
                loss = out[1]
                if first_plot is None and isinstance(loss, dict) and loss.get("data"):
                    first_plot = now
            final = job.result()
            done = time.perf_counter() - t0
            rows.append({"run": run, "mode": mode, "first_status_s": round(first_status, 2),
                         "first_plot_update_s": round(first_plot, 2), "trained_model_s": round(done, 2),
                         "status": final[0][:90]})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        demo.close()
    for key in ("first_plot_update_s", "trained_model_s"):
        print(f"median {key}: {statistics.median(r[key] for r in rows):.2f}")


if __name__ == "__main__":
    main()
