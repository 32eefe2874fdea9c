"""The fast paths give the same model as the plain fp32 path (accuracy parity), and training under
torchrun in 2 CPU processes gives the single process's model, written once."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, write_shapes
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.data import open_dataset
from transfer_gui.engine.distributed import synced_batchnorm, too_many_processes
from transfer_gui.engine.inference import Predictor
from transfer_gui.engine.workflow import finish, open_model
from transfer_gui.engine.speed import fast_paths, gpu_batch, loader_workers
from transfer_gui.engine.training import train
from transfer_gui.engine.weights import create_model


@pytest.fixture(scope="module")
def reference(example_dataset):
    """Quick training on the plain path: fp32, contiguous memory, batches of 32."""
    result = train(example_dataset, TrainConfig(mode="quick", precision="fp32"))
    return result, finish(result, example_dataset).evaluation


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_fast_paths_keep_validation_accuracy_within_one_point(example_dataset, reference, precision):
    """auto = what this machine picks (channels_last, allocator reuse, small batches, bf16 where the
    CPU does it in hardware); bf16 = bf16 autocast forced, so its parity is checked on any CPU."""
    ref_result, ref_eval = reference
    result = train(example_dataset, TrainConfig(mode="quick", precision=precision))
    evaluation = finish(result, example_dataset).evaluation
    assert result.validation.indices == ref_result.validation.indices
    assert abs(evaluation.accuracy - ref_eval.accuracy) <= 0.01, (precision, evaluation.accuracy, ref_eval.accuracy)
    if precision == "bf16":
        assert fast_paths(torch.device("cpu"), "bf16").autocast_dtype == torch.bfloat16


def test_loading_is_in_line_on_a_cpu_and_scales_with_cores_and_memory_on_a_gpu():
    """The loader plan: no workers on a CPU (one measured 0.62-0.80x there); on a GPU this
    process's share of the cores less one, at most 12; inference batches from free GPU memory."""
    cpu = fast_paths(torch.device("cpu"))
    assert cpu.workers == 0 and cpu.loader_kwargs() == {"num_workers": 0, "pin_memory": False}
    assert fast_paths(torch.device("cpu"), workers=2).loader_kwargs()["persistent_workers"]
    assert [loader_workers(cores, procs) for cores, procs in ((16, 1), (16, 2), (64, 1), (2, 1), (1, 1))] == \
        [12, 7, 12, 1, 0]
    gib = 1 << 30
    assert [gpu_batch(None, free) for free in (140 * gib, 14 * gib, 1 * gib)] == [512, 64, 32]
    assert gpu_batch(None, 140 * gib, (3, 448, 448)) == 128  # 4x the pixels: 243 fit, the power of two below


@pytest.mark.slow
def test_fine_tune_fast_path_parity(example_dataset):
    """Two fine-tune epochs on the example data, plain vs fast: the same validation accuracy."""
    accs = {}
    for precision in ("fp32", "auto"):
        config = TrainConfig(mode="finetune", epochs=2, precision=precision)
        accs[precision] = finish(train(example_dataset, config), example_dataset).evaluation.accuracy
    assert abs(accs["auto"] - accs["fp32"]) <= 0.01, accs


@pytest.mark.slow
def test_loader_workers_train_on_exactly_the_in_line_pixels(tmp_path):
    """Fine-tuning with 2 loader worker processes (as on a GPU: images decoded once up front and
    shared with them, each augmented for the epoch its key carries) gives the in-line loader's
    losses in every epoch, and the same model."""
    dataset = open_dataset(write_shapes(tmp_path / "data", per_class=10))
    runs = {}
    for workers in (0, 2):
        result = train(dataset, TrainConfig(mode="finetune", epochs=3, loader_workers=workers, select_best=False))
        runs[workers] = ([(r.phase, r.epoch, r.train_loss, r.val_loss) for r in result.history
                          if r.phase in ("finetune", "refit")], result)
    # the same epochs in the same phases, then the same losses (pytest.approx compares flat
    # sequences of numbers only: since pytest 9.2 it refuses a list of tuples)
    rows = {w: runs[w][0] for w in (0, 2)}
    assert len(rows[2]) >= 3 and [r[:2] for r in rows[2]] == [r[:2] for r in rows[0]], runs
    for key in (2, 3):
        assert [r[key] for r in rows[2]] == pytest.approx([r[key] for r in rows[0]], abs=1e-6), runs
    images = sorted((tmp_path / "data").rglob("*.png"))
    logits = [finish(runs[w][1], dataset, device="cpu").predictor.logits(images) for w in (0, 2)]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one_process(tmp_path):
    data = write_shapes(tmp_path / "data", per_class=10)  # 16 to train: one step of 16 (8 per process)
    # The built-in pretrained model, whose BatchNorm statistics stay frozen while fine-tuning. A
    # random-initialised one trains them on each process's own half batch (PyTorch's SyncBatchNorm
    # is GPU-only), so its losses differ by a few percent from one process: see docs/benchmarks.md.
    # gloo on the CPU even where a GPU is present: two processes need two GPUs. fp32: bf16 autocast
    # rounds differently for a batch of 8 than for one of 16 (seen on a CPU with AMX: losses 1e-2
    # apart), so only the reference path can match to 1e-4.
    common = ["train", str(data), "--mode", "finetune", "--epochs", "2", "--val-fraction", "0.2", "--device", "cpu",
              "--precision", "fp32"]
    single = subprocess.run([sys.executable, "-m", "transfer_gui", *common, "--out", str(tmp_path / "single")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "transfer_gui", *common, "--out", str(tmp_path / "ddp")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    summaries = [json.loads(line) for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # rank 0 alone reports and writes
    assert ddp.stderr.count("this one (rank 0) writes the bundle") == 1
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "single").iterdir())
    a, b = json.loads(single.stdout.splitlines()[-1]), summaries[0]

    def metrics(row: dict) -> dict:  # everything but the wall time
        return {k: v for k, v in row.items() if k != "elapsed_s"}

    # the same model kept (the probe, or fine-tuning if it won), with the same figures
    assert (a["best_epoch"]["phase"], a["best_epoch"]["epoch"]) == (b["best_epoch"]["phase"], b["best_epoch"]["epoch"])
    assert metrics(a["best_epoch"]) == pytest.approx(metrics(b["best_epoch"]), abs=1e-4)
    assert a["estimate"]["note"] == b["estimate"]["note"]
    # both fine-tune epochs: the same losses and accuracy (metrics summed across the ranks)
    fine_tuned = [[metrics(row) for row in json.loads((tmp_path / run / "transfer_gui.json").read_text())["history"]
                   if row["phase"] in ("finetune", "refit")] for run in ("single", "ddp")]
    assert len(fine_tuned[0]) == len(fine_tuned[1]) >= 2
    for ra, rb in zip(*fine_tuned):
        assert ra == pytest.approx(rb, abs=1e-4), fine_tuned
    images = sorted(data.rglob("*.png"))
    la = open_model(tmp_path / "single").predictor.logits(images)
    lb = open_model(tmp_path / "ddp").predictor.logits(images)
    assert (la.argmax(1) == lb.argmax(1)).all()
    np.testing.assert_allclose(la, lb, atol=1e-3)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_more_torchrun_processes_than_gpus_are_refused_in_one_line(cli, monkeypatch, tmp_path, rank):
    """Two processes on a machine with fewer GPUs, a GPU asked for: refused before joining (no NCCL
    crash), every process exits 2, and rank 0 alone says why and what to do."""
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank}.items():
        monkeypatch.setenv(name, value)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    proc = cli("train", ROOT / "assets" / "example_dataset", "--device", "cuda", "--out", tmp_path / "m")
    assert proc.returncode == 2 and proc.stdout == "" and not (tmp_path / "m").exists()
    if rank == "1":
        assert proc.stderr == ""
        return
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: torchrun started 2 processes") and "--device cpu" in proc.stderr
    assert ("has none" if gpus == 0 else f"has {gpus} GPU") in proc.stderr
    assert too_many_processes(1, 1) is None and too_many_processes(8, 8) is None
    assert "Start at most 1 (--nproc_per_node=1)" in too_many_processes(2, 1)


def test_batchnorm_is_synced_in_a_copy_whose_weights_load_back():
    """What training from scratch under torchrun on GPUs trains: the same network with every
    BatchNorm synced across processes (timm's norm + activation layers kept whole)."""
    model = create_model("tf_efficientnet_lite0.in1k", 6, pretrained=True).model
    synced = synced_batchnorm(model)

    def kinds(m: torch.nn.Module) -> list[str]:
        return [type(x).__name__ for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]

    assert kinds(model) and set(kinds(model)) == {"BatchNormAct2d"}  # the original is untouched
    assert len(kinds(synced)) == len(kinds(model)) and set(kinds(synced)) == {"SyncBatchNormAct"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert list(synced.state_dict()) == list(before)
    with torch.no_grad():
        for p in synced.parameters():
            p.add_(1.0)
    model.load_state_dict(synced.state_dict())
    assert all(torch.equal(model.state_dict()[k], v + (1.0 if k in dict(model.named_parameters()) else 0))
               for k, v in before.items() if v.is_floating_point())


def test_single_image_fast_graph_gives_the_batch_answers(quick_result, example_dataset):
    """From the third single-image call the predictor answers with a frozen graph (BatchNorm
    folded); its probabilities equal the eager batch path's."""
    predictor = Predictor(quick_result.model, quick_result.labels, quick_result.data_config, device="cpu")
    images = [item.path for item in example_dataset.items[::12]]
    batch = predictor.probabilities(images)
    single = np.concatenate([predictor.probabilities([image]) for image in images])
    assert predictor._frozen not in (None, False)  # built, and it passed its parity check
    np.testing.assert_allclose(single, batch, atol=1e-4)
    assert (single.argmax(1) == batch.argmax(1)).all()
