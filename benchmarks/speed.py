"""Speed, side by side in one run: our engine's paths against plain PyTorch on the same images.

    python benchmarks/speed.py                       # the built-in model, on the CPU (or the GPU if any)
    python benchmarks/speed.py --device cuda         # every arm on the GPU, 2,000 images
    python benchmarks/speed.py --model convnext_atto --scratch   # any catalog model (random weights)

Every measurement runs in a fresh Python process, so one arm's process-wide settings (threads,
allocator) never help or hurt another; the images are decoded and preprocessed once by the parent
and shared. Every arm runs on the same device, and warm-up (CUDA start, cuDNN's autotuning, the
loader's first decoding) is outside every clock. Prints a table of figures and ratios:

1. feature extraction, images/s: ours (``features.extract_features`` with the fast paths) vs a
   bare fp32 ``model.eval()`` loop over the same preprocessed tensors (batches of 32);
2. fine-tune training, images/s, epochs after the first: ours (``fit`` in finetune mode, from the
   image files: decoding, timm's augmentation every epoch, a validation pass per epoch) vs a plain
   fp32 loop (AdamW, same batch size) over the same images augmented once beforehand and kept in
   the device's memory, so it pays no loading at all, with the same validation pass;
   on a CPU also ours with one loader worker process, to check that the in-line loader is right there;
3. end-to-end Quick training of 80 images (decode -> trained head), wall seconds, vs a bare fp32
   forward pass over the same 80 (already decoded) images;
4. warm single-image prediction latency (decode + preprocess + forward), p50/p95;
5. (CPU) ``python app.py`` to HTTP 200, seconds; peak RSS of a Quick training of 1,000 images.

The images are the example set's 96; with ``--images N`` (2,000 by default on a GPU) they are
repeated up to N, so a fast card is measured in steady state, not in its first few batches.
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
GPU_IMAGES = 2000
WARMUP_BATCHES = 3


# --- arms (each runs in its own process) ---------------------------------------------------------

def _model(args):
    from transfer_gui.engine.weights import create_model

    return create_model(args.model, 6, pretrained=not args.scratch).model


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def arm_bare_extract(args) -> dict:
    import torch

    device = torch.device(args.device)
    x = torch.load(args.tensors)
    model = _model(args).eval().to(device)
    with torch.inference_mode():
        for _ in range(WARMUP_BATCHES):
            model.forward_head(model.forward_features(x[:32].to(device)), pre_logits=True).cpu()
        _sync(device)
        t = time.perf_counter()
        for i in range(0, len(x), 32):
            model.forward_head(model.forward_features(x[i:i + 32].to(device)), pre_logits=True).cpu()
        _sync(device)
        dt = time.perf_counter() - t
    return {"images_per_s": len(x) / dt, "seconds": dt}


def arm_our_extract(args) -> dict:
    import torch

    from transfer_gui.engine.speed import fast_paths, tune_process
    from transfer_gui.engine.features import extract_features

    tune_process()
    x = torch.load(args.tensors)
    device = torch.device(args.device)
    paths = fast_paths(device)
    model = _model(args).to(device)
    if paths.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the tensors are already in memory, as for the bare loop: batches are slices of them (pinned
    # once on a GPU, so the copies do not block), not a DataLoader copying every batch again
    if paths.pin_memory:
        x = x.pin_memory()
    batches = [(x[i:i + paths.batch], None) for i in range(0, len(x), paths.batch)]
    for _ in range(WARMUP_BATCHES):
        for _ in extract_features(model, batches[:1], device, paths):
            pass
    t = time.perf_counter()
    for _ in extract_features(model, batches, device, paths):
        pass
    dt = time.perf_counter() - t
    return {"images_per_s": len(x) / dt, "seconds": dt, "paths": paths.describe()}


def _dataset(n: int | None = None):
    """The example set: its first n images (every class kept) when n < 96, repeated up to n above."""
    from transfer_gui.engine.data import open_dataset

    ds = open_dataset(EXAMPLE)
    if n is not None and n < len(ds.items):
        keep = sorted(range(len(ds.items)), key=lambda i: (i % 16, i))[:n]
        ds.items = [ds.items[i] for i in sorted(keep)]
    elif n is not None:
        ds.items = [ds.items[i % len(ds.items)] for i in range(n)]
    return ds


def arm_our_finetune(args) -> dict:
    from transfer_gui.engine.config import TrainConfig
    from transfer_gui.engine.data import split_dataset
    from transfer_gui.engine.training import fit

    ds = _dataset(args.images)
    # the split given: the fine-tune epochs run on its training part (no evidence run and refit),
    # the same images the plain loop trains on
    split = split_dataset(ds, 0.25, 0)
    config = TrainConfig(model=args.model, mode="finetune", epochs=args.epochs, pretrained=not args.scratch,
                         patience=99, batch_size=args.batch, device=args.device, loader_workers=args.workers)
    ends = []
    for event in fit(ds, config, split=split):
        if event.phase == "finetune" and event.val_loss is not None:
            ends.append(event.elapsed_s)  # an epoch's end, its validation pass included
    # the first epoch carries the warm-up (workers starting, images decoded, cuDNN's autotuning)
    return {"images_per_s": len(split.train) * (len(ends) - 1) / (ends[-1] - ends[0]), "seconds": ends[-1] - ends[0]}


def arm_plain_finetune(args) -> dict:
    import torch
    import torch.nn.functional as F
    import timm.data

    from transfer_gui.engine.transforms import TorchImages, eval_transform, train_transform
    from transfer_gui.engine.data import split_dataset

    device = torch.device(args.device)
    ds = _dataset(args.images)
    split = split_dataset(ds, 0.25, 0)
    model = _model(args).to(device)
    cfg = timm.data.resolve_model_data_config(model)
    targets = ds.targets
    train = TorchImages([ds.items[i] for i in split.train], [targets[i] for i in split.train], train_transform(cfg))
    val = TorchImages([ds.items[i] for i in split.val], [targets[i] for i in split.val], eval_transform(cfg))
    # augmented once, before the clock, and kept on the device: this loop pays nothing for loading
    x_train = torch.stack([train[i][0] for i in range(len(train))]).to(device)
    y_train = torch.tensor(train.targets, device=device)
    x_val = torch.stack([val[i][0] for i in range(len(val))]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    t = None
    for epoch in range(args.epochs):
        if epoch == 1:  # the first epoch is the warm-up
            _sync(device)
            t = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=gen).to(device)
        for i in range(0, len(order), args.batch):
            batch = order[i:i + args.batch]
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(x_val), 32):
                model(x_val[i:i + 32]).cpu()
    _sync(device)
    dt = time.perf_counter() - t
    return {"images_per_s": len(split.train) * (args.epochs - 1) / dt, "seconds": dt}


def arm_quick80(args) -> dict:
    import torch

    from transfer_gui.engine.config import TrainConfig
    from transfer_gui.engine.training import train

    if args.device == "cuda":
        torch.zeros(1, device="cuda")  # CUDA's start is not Quick's
    t = time.perf_counter()
    ds = _dataset(80)
    result = train(ds, TrainConfig(model=args.model, mode="quick", pretrained=not args.scratch, device=args.device))
    return {"seconds": time.perf_counter() - t, "val_acc": result.val_accuracy}


def arm_bare_forward80(args) -> dict:
    import torch

    device = torch.device(args.device)
    x = torch.load(args.tensors)[:80]
    model = _model(args).eval().to(device)
    with torch.inference_mode():
        model(x[:32].to(device)).cpu()  # warm-up
        t = time.perf_counter()
        for i in range(0, len(x), 32):
            model(x[i:i + 32].to(device)).cpu()
        dt = time.perf_counter() - t
    return {"seconds": dt}


def arm_latency(args) -> dict:
    import timm.data

    from transfer_gui.engine.inference import Predictor

    model = _model(args)
    predictor = Predictor(model, [str(i) for i in range(6)], timm.data.resolve_model_data_config(model),
                          device=args.device)
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

def _run_arm(name: str, args, tensors: Path, workers: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--arm", name, "--tensors", str(tensors), "--model", args.model,
           "--epochs", str(args.epochs), "--device", args.device, "--images", str(args.images),
           "--batch", str(args.batch)] + (["--scratch"] if args.scratch else []) + (
               ["--workers", str(workers)] if workers is not None else [])
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
    parser.add_argument("--device", default="auto", help="auto (the GPU if there is one), cpu or cuda: every arm")
    parser.add_argument("--images", type=int, help=f"images measured (default: 96 on a CPU, {GPU_IMAGES} on a GPU)")
    parser.add_argument("--batch", type=int, help="fine-tune batch size, ours and plain (default: 16 CPU, 64 GPU)")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tune epochs; the first is warm-up (default 3)")
    parser.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--tensors", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        sys.stdout.write(json.dumps(ARMS[args.arm](args)) + "\n")
        return

    import torch
    import timm.data

    from transfer_gui.engine.transforms import eval_transform
    from transfer_gui.engine.images import load_image
    from transfer_gui.engine.data import open_dataset

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args.device.startswith("cuda")
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first is warm-up and not measured")
    args.images = args.images or (GPU_IMAGES if gpu else 96)
    args.batch = args.batch or (64 if gpu else 16)
    with tempfile.TemporaryDirectory(prefix="tls-speed-") as tmp:
        tmp = Path(tmp)
        model = _model(args)
        transform = eval_transform(timm.data.resolve_model_data_config(model))
        items = open_dataset(EXAMPLE).items
        x = torch.stack([transform(load_image(i.path)) for i in items])
        tensors = tmp / "x.pt"
        torch.save(x[torch.arange(max(args.images, 80)) % len(x)].clone(), tensors)
        r = {name: _run_arm(name, args, tensors) for name in
             ("bare_extract", "our_extract", "plain_finetune", "our_finetune", "bare_forward80", "quick80",
              "latency")}
        if not gpu:  # workers on 2 cores: measured, to keep the in-line loader honest
            r["our_finetune_1_worker"] = _run_arm("our_finetune", args, tensors, workers=1)
            ready = _app_ready_s()
            rss, what = _rss_1000(args, tmp)
    where = f"CUDA {torch.cuda.get_device_name()}, {os.cpu_count()} cores" if gpu else f"CPU, {os.cpu_count()} cores"
    n_train = args.images - round(args.images / 6 * 0.25) * 6  # split_dataset's share per class
    extract_target, finetune_target = (">= 5,000/s and >= 1.0x", ">= 1,500/s and >= 1.0x") if gpu else \
        (">= 2.0x", ">= 1.0x")

    def ratio(ours: str, ref: str) -> str:
        return f"{r[ours]['images_per_s'] / r[ref]['images_per_s']:.2f}x"

    rows = [
        (f"1. extraction, images/s ({args.images} images)", f"{r['our_extract']['images_per_s']:.1f}",
         f"{r['bare_extract']['images_per_s']:.1f} (bare fp32 loop, batches of 32)",
         ratio("our_extract", "bare_extract"), extract_target),
        (f"2. fine-tune, images/s (~{n_train} images, batches of {args.batch}, epochs 2-{args.epochs})",
         f"{r['our_finetune']['images_per_s']:.1f}",
         f"{r['plain_finetune']['images_per_s']:.1f} (plain fp32 loop, tensors in memory)",
         ratio("our_finetune", "plain_finetune"), finetune_target),
    ]
    if not gpu:
        rows.append(("2b. the same, ours with 1 loader worker process",
                     f"{r['our_finetune_1_worker']['images_per_s']:.1f}",
                     f"{r['our_finetune']['images_per_s']:.1f} (ours, in-line)",
                     ratio("our_finetune_1_worker", "our_finetune"), "< 1.0x: in-line stays"))
    rows += [
        ("3. Quick training of 80 images, s", f"{r['quick80']['seconds']:.2f}",
         f"{r['bare_forward80']['seconds']:.2f} (bare fp32 forward)",
         f"{r['quick80']['seconds'] / r['bare_forward80']['seconds']:.2f}x", "<= 1.0x" if not gpu else ""),
        ("4. warm single-image prediction, ms p50 / p95",
         f"{r['latency']['p50_ms']:.1f} / {r['latency']['p95_ms']:.1f}", "", "", "p50 <= 30 ms"),
    ]
    if not gpu:
        rows += [("5a. python app.py to HTTP 200, s", f"{ready:.1f}", "", "", "<= 10 s"),
                 (f"5b. peak RSS, Quick training of 1,000 images ({what}), MB", f"{rss:.0f}", "", "", "")]
    out = [f"model {args.model}{' (random weights)' if args.scratch else ''} on {where}, torch {torch.__version__}; "
           f"our paths: {r['our_extract']['paths']}", "",
           "| measure | ours | reference | ratio | target |", "|---|---|---|---|---|"]
    out += [f"| {' | '.join(row)} |" for row in rows]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
