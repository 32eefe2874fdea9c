"""Speed, side by side in one run: our engine's paths against plain PyTorch on the same images.

    python benchmarks/speed.py                       # the built-in model, on the CPU
    python benchmarks/speed.py --model convnext_atto --scratch   # any catalog model (random weights)

Every measurement runs in a fresh Python process, so one arm's process-wide settings (threads,
allocator) never help or hurt another; the images are decoded and preprocessed once by the parent
and shared. Prints a table of figures and ratios:

1. feature extraction, images/s: ours (``training.extract_features`` with the fast paths) vs a
   bare fp32 ``model.eval()`` loop over the same preprocessed tensors (batches of 32);
2. fine-tune training, images/s: ours (``fit`` in finetune mode) vs a plain loop (fp32, same batch
   size, same timm augmentation, AdamW, an fp32 validation pass per epoch like ours);
3. end-to-end Quick training of 80 images (decode -> trained head), wall seconds, vs a bare fp32
   forward pass over the same 80 (already decoded) images;
4. warm single-image prediction latency (decode + preprocess + forward), p50/p95;
5. ``python app.py`` to HTTP 200, seconds; peak RSS of a Quick training of 1,000 images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "assets" / "example_dataset"
FASHION = Path("/usr/share/datasets/fashion-mnist")


# --- arms (each runs in its own process) ---------------------------------------------------------

def _model(args):
    from transfer_gui.engine.weights import create_model

    return create_model(args.model, 6, pretrained=not args.scratch).model


def arm_bare_extract(args) -> dict:
    import torch

    x = torch.load(args.tensors)
    model = _model(args).eval()
    with torch.inference_mode():
        model.forward_head(model.forward_features(x[:32]), pre_logits=True)  # warm-up
        t = time.perf_counter()
        for i in range(0, len(x), 32):
            model.forward_head(model.forward_features(x[i:i + 32]), pre_logits=True)
        dt = time.perf_counter() - t
    return {"images_per_s": len(x) / dt, "seconds": dt}


def arm_our_extract(args) -> dict:
    import torch

    from transfer_gui.engine.speed import fast_paths, tune_process
    from transfer_gui.engine.distributed import pick_device
    from transfer_gui.engine.features import extract_features

    tune_process()
    x = torch.load(args.tensors)
    device = pick_device("auto")
    paths = fast_paths(device)
    model = _model(args).to(device)
    if paths.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(len(x))),
                                         batch_size=paths.batch)
    for _ in extract_features(model, [next(iter(loader))], device, paths):  # warm-up
        pass
    t = time.perf_counter()
    for _ in extract_features(model, loader, device, paths):
        pass
    dt = time.perf_counter() - t
    return {"images_per_s": len(x) / dt, "seconds": dt, "paths": paths.describe()}


def _dataset(n: int | None = None):
    from transfer_gui.engine.data import open_dataset

    ds = open_dataset(EXAMPLE)
    if n is not None:  # the first n images, every class kept
        keep = sorted(range(len(ds.items)), key=lambda i: (i % 16, i))[:n]
        ds.items = [ds.items[i] for i in sorted(keep)]
    return ds


def arm_our_finetune(args) -> dict:
    from transfer_gui.engine.config import TrainConfig
    from transfer_gui.engine.data import split_dataset
    from transfer_gui.engine.training import fit

    ds = _dataset()
    # the split given: the fine-tune epochs run on its training part (no evidence run and refit),
    # the same images the plain loop trains on
    split = split_dataset(ds, 0.25, 0)
    config = TrainConfig(model=args.model, mode="finetune", epochs=args.epochs, pretrained=not args.scratch,
                         patience=99)
    start = end = None
    for event in fit(ds, config, split=split):
        if event.phase == "head":
            start = event.elapsed_s  # the last one: the head is ready, fine-tuning starts
        if event.phase == "finetune" and event.val_loss is not None:
            end = event.elapsed_s
    return {"images_per_s": len(split.train) * args.epochs / (end - start), "seconds": end - start}


def arm_plain_finetune(args) -> dict:
    import torch
    import torch.nn.functional as F
    import timm.data

    from transfer_gui.engine.transforms import TorchImages, eval_transform, train_transform
    from transfer_gui.engine.data import split_dataset

    ds = _dataset()
    split = split_dataset(ds, 0.25, 0)
    model = _model(args)
    cfg = timm.data.resolve_model_data_config(model)
    targets = ds.targets
    train = TorchImages([ds.items[i] for i in split.train], [targets[i] for i in split.train], train_transform(cfg))
    val = TorchImages([ds.items[i] for i in split.val], [targets[i] for i in split.val], eval_transform(cfg))
    train_loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for x, y in val_loader:
                model(x)
    dt = time.perf_counter() - t
    return {"images_per_s": len(split.train) * args.epochs / dt, "seconds": dt}


def arm_quick80(args) -> dict:
    from transfer_gui.engine.config import TrainConfig
    from transfer_gui.engine.training import train

    t = time.perf_counter()
    ds = _dataset(80)
    result = train(ds, TrainConfig(model=args.model, mode="quick", pretrained=not args.scratch))
    return {"seconds": time.perf_counter() - t, "val_acc": result.val_accuracy}


def arm_bare_forward80(args) -> dict:
    import torch

    x = torch.load(args.tensors)[:80]
    model = _model(args).eval()
    with torch.inference_mode():
        t = time.perf_counter()
        for i in range(0, len(x), 32):
            model(x[i:i + 32])
        dt = time.perf_counter() - t
    return {"seconds": dt}


def arm_latency(args) -> dict:
    from transfer_gui.engine.inference import Predictor

    model = _model(args)
    import timm.data

    predictor = Predictor(model, [str(i) for i in range(6)], timm.data.resolve_model_data_config(model))
    image = sorted((ROOT / "assets" / "test_images").glob("*.png"))[0]
    for _ in range(5):
        predictor.predict(image)
    times = []
    for _ in range(50):
        t = time.perf_counter()
        predictor.predict(image)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}


ARMS = {name[4:]: fn for name, fn in dict(globals()).items() if name.startswith("arm_")}


# --- the parent ------------------------------------------------------------------------------------

def _run_arm(name: str, args, tensors: Path) -> dict:
    cmd = [sys.executable, __file__, "--arm", name, "--tensors", str(tensors), "--model", args.model,
           "--epochs", str(args.epochs)] + (["--scratch"] if args.scratch else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _app_ready_s() -> float:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                return time.perf_counter() - t
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("the app exited before it was ready")
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _rss_1000(args, tmp: Path) -> tuple[float, str]:
    """Peak RSS (MB) of `train --mode quick` on 1,000 images, and what the images were."""
    sys.path.insert(0, str(ROOT / "tests"))
    folder = tmp / "thousand"
    if (FASHION / "train-images-idx3-ubyte.gz").is_file():
        from conftest import write_fashion_mnist

        write_fashion_mnist(folder, 1000)
        what = "Fashion-MNIST"
    else:  # the example images, each copied ~10 times
        import shutil

        for cls in EXAMPLE.iterdir():
            (folder / cls.name).mkdir(parents=True)
            for k in range(11):
                for img in cls.iterdir():
                    shutil.copy(img, folder / cls.name / f"{k}_{img.name}")
        what = "example images x11"
    from conftest import run_measured

    cmd = [sys.executable, "-m", "transfer_gui", "train", str(folder), "--mode", "quick", "--model", args.model,
           "--out", str(tmp / "m1000")] + (["--scratch"] if args.scratch else [])
    rc, _, err, peak_mb = run_measured(cmd, tmp)
    if rc != 0:
        raise SystemExit(f"the 1,000-image training failed:\n{err[-2000:]}")
    return peak_mb, what


def main() -> None:
    """Parse arguments; run one arm (child) or every arm and print the table (parent)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tf_efficientnet_lite0.in1k")
    parser.add_argument("--scratch", action="store_true", help="random weights (a model not available offline)")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tune epochs measured (default 2)")
    parser.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--tensors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        sys.stdout.write(json.dumps(ARMS[args.arm](args)) + "\n")
        return

    import torch
    import timm.data

    from transfer_gui.engine.transforms import eval_transform
    from transfer_gui.engine.images import load_image
    from transfer_gui.engine.data import open_dataset

    with tempfile.TemporaryDirectory(prefix="tls-speed-") as tmp:
        tmp = Path(tmp)
        model = _model(args)
        transform = eval_transform(timm.data.resolve_model_data_config(model))
        items = open_dataset(EXAMPLE).items
        tensors = tmp / "x.pt"
        torch.save(torch.stack([transform(load_image(i.path)) for i in items]), tensors)
        r = {name: _run_arm(name, args, tensors) for name in
             ("bare_extract", "our_extract", "plain_finetune", "our_finetune", "bare_forward80", "quick80",
              "latency")}
        ready = _app_ready_s()
        rss, what = _rss_1000(args, tmp)
    device = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU, {os.cpu_count()} cores, torch {torch.__version__}"
    rows = [
        ("1. extraction, images/s (96 images)", f"{r['our_extract']['images_per_s']:.1f}",
         f"{r['bare_extract']['images_per_s']:.1f} (bare fp32 loop)",
         f"{r['our_extract']['images_per_s'] / r['bare_extract']['images_per_s']:.2f}x", ">= 2.0x"),
        (f"2. fine-tune training, images/s ({args.epochs} epochs)", f"{r['our_finetune']['images_per_s']:.1f}",
         f"{r['plain_finetune']['images_per_s']:.1f} (plain loop)",
         f"{r['our_finetune']['images_per_s'] / r['plain_finetune']['images_per_s']:.2f}x", ">= 1.5x"),
        ("3. Quick training of 80 images, s", f"{r['quick80']['seconds']:.2f}",
         f"{r['bare_forward80']['seconds']:.2f} (bare fp32 forward)",
         f"{r['quick80']['seconds'] / r['bare_forward80']['seconds']:.2f}x", "<= 1.0x"),
        ("4. warm single-image prediction, ms p50 / p95",
         f"{r['latency']['p50_ms']:.1f} / {r['latency']['p95_ms']:.1f}", "", "", "p50 <= 30 ms"),
        ("5a. python app.py to HTTP 200, s", f"{ready:.1f}", "", "", "<= 10 s"),
        (f"5b. peak RSS, Quick training of 1,000 images ({what}), MB", f"{rss:.0f}", "", "", ""),
    ]
    out = [f"model {args.model}{' (random weights)' if args.scratch else ''} on {device}; "
           f"our paths: {r['our_extract']['paths']}", "",
           "| measure | ours | reference | ratio | target |", "|---|---|---|---|---|"]
    out += [f"| {' | '.join(row)} |" for row in rows]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
