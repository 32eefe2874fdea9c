"""Faults during training (Stop mid-epoch, an exception inside a training step, many runs in a
row): the app stays usable for that user and others, the training slot is freed, the best model
so far is kept, and no thread is left behind."""

from __future__ import annotations

import contextlib
import threading
import time

import gradio as gr
import pytest
import torch

from conftest import run_training, write_shapes
from transfer_gui.engine.data import open_dataset
from transfer_gui.app.server import Server



@pytest.fixture
def h():
    server = Server(training_slots=1)
    yield server
    server.close()


@contextlib.contextmanager
def fault_in_training_step(after_calls: int):
    """Make the whole network's forward pass raise in training mode after ``after_calls`` calls,
    through torch's global module hook (the engine itself is not touched): the kind of
    RuntimeError an out-of-memory or a broken layer raises mid-epoch."""
    calls = {"n": 0}

    def hook(module, args, output):
        if module.training and torch.is_grad_enabled() and type(module).__name__ == "EfficientNet":
            calls["n"] += 1
            if calls["n"] > after_calls:
                raise RuntimeError("simulated fault in a training step")

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def _slot_is_free(h, session) -> bool:
    return h.slots.busy() == (0, 0) and not session.training.locked()


def _threads_settle(before: int, deadline_s: float = 20) -> int:
    """Thread count once stray threads had the chance to end (none should remain)."""
    end = time.monotonic() + deadline_s
    while threading.active_count() > before and time.monotonic() < end:
        time.sleep(0.2)
    return threading.active_count()


@pytest.fixture
def shapes_session(h, tmp_path):
    session = h.new_session()
    session.dataset = open_dataset(write_shapes(tmp_path / "shapes", per_class=8))
    yield session
    session.close()


@pytest.mark.slow
def test_exception_in_a_fine_tune_step_keeps_the_best_model_and_frees_the_slot(h, shapes_session, tmp_path):
    before = threading.active_count()
    with fault_in_training_step(after_calls=1) as calls:
        updates = run_training(h, shapes_session, mode="finetune", epochs=3)
    assert calls["n"] == 2  # one good step, then the fault
    status = updates[-1][0]
    # 12 training images = one step per epoch: epoch 1 finished, the fault hit epoch 2; the
    # cross-validated quick model (trained on all images before fine-tuning began) is kept
    assert "**Broke off with an error.**" in status and "the quick model" in status
    assert shapes_session.result.best.phase == "head" and shapes_session.result.validation.trained_on_all
    assert "The error was: `RuntimeError: simulated fault in a training step`" in status
    result = shapes_session.result
    assert result.error and [r.phase for r in result.history][-1] == "finetune" and len(
        [r for r in result.history if r.phase == "finetune"]) == 1
    assert shapes_session.predictor is not None
    assert shapes_session.bundle_zip.is_file() and shapes_session.workdir in shapes_session.bundle_zip.parents
    assert _slot_is_free(h, shapes_session)
    assert _threads_settle(before) <= before
    # the app is still usable: the same user trains again, and so does someone else
    assert "**Done.**" in run_training(h, shapes_session)[-1][0]
    other = h.new_session()
    other.dataset = shapes_session.dataset
    try:
        assert "**Done.**" in run_training(h, other)[-1][0]
    finally:
        other.close()


def test_exception_before_any_epoch_is_a_message_and_nothing_is_kept(h, shapes_session):
    before = threading.active_count()
    # the frozen backbone's very first batch fails (any convolution raises)
    def hook(module, args, output):
        if isinstance(module, torch.nn.Conv2d):
            raise OSError("simulated unreadable batch")

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with pytest.raises(gr.Error, match="Training broke off before the first model was trained: "
                                           "simulated unreadable batch. Nothing was kept"):
            run_training(h, shapes_session)
    finally:
        handle.remove()
    status, train_btn, _ = h.train.after_failure(shapes_session)
    assert status.startswith("**Could not train:** Training broke off") and train_btn.interactive
    assert shapes_session.predictor is None and _slot_is_free(h, shapes_session)
    assert _threads_settle(before) <= before
    assert "**Done.**" in run_training(h, shapes_session)[-1][0]


@pytest.mark.slow
def test_stop_mid_epoch_keeps_the_best_model_frees_the_slot_and_leaves_no_thread(h, tmp_path):
    session = h.new_session()
    session.dataset = open_dataset(write_shapes(tmp_path / "shapes", per_class=24))  # 36 to train: 3 steps
    before = threading.active_count()
    calls = {"n": 0}

    def press_stop_after_first_step(module, args, output):
        # Stop is pressed (from another thread in the app) while fine-tuning epoch 1 runs
        if module.training and torch.is_grad_enabled() and type(module).__name__ == "EfficientNet":
            calls["n"] += 1
            if calls["n"] == 1:
                threading.Thread(target=h.train.stop, args=(session,)).start()
                time.sleep(0.5)  # the click lands during this step

    handle = torch.nn.modules.module.register_module_forward_hook(press_stop_after_first_step)
    try:
        updates = run_training(h, session, mode="finetune", epochs=4)
    finally:
        handle.remove()
    assert calls["n"] == 1  # stopped before the second batch of the epoch
    assert "**Stopped.**" in updates[-1][0] and "the quick model (the new head alone) was kept" in updates[-1][0]
    assert session.result.stopped and session.predictor is not None and session.bundle_zip.is_file()
    assert _slot_is_free(h, session)
    assert _threads_settle(before) <= before
    session.close()


@pytest.mark.slow
def test_many_trainings_in_a_row_do_not_grow_memory(h, tmp_path):
    """Each run in a fresh session (as many users in a row would); the growth after the first
    few runs (allocator warm-up) is what must stay bounded. benchmarks/soak.py runs 50."""
    dataset = open_dataset(write_shapes(tmp_path / "shapes", per_class=6))

    def rss_mb() -> float:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    before = threading.active_count()
    rss = []
    for i in range(16):
        session = h.new_session()
        session.dataset = dataset
        assert "**Done.**" in run_training(h, session, epochs=5)[-1][0]
        session.close()
        rss.append(rss_mb())
    growth = rss[-1] - rss[3]
    print(f"\nRSS after runs 4 and 16: {rss[3]:.0f} -> {rss[-1]:.0f} MB (growth {growth:.0f} MB)")
    assert growth < 150
    assert _threads_settle(before) <= before
    assert not any(h.root.glob("tls-session-*"))  # every closed session's folder is gone


def test_training_resumed_on_other_threads_leaves_every_thread_able_torun_training(tmp_path):
    """Gradio resumes a generator handler on whichever worker thread is free. A grad mode (thread
    local in torch) left open across a yield once switched gradients off in a worker thread,
    and the next user's training on it failed ("element 0 of tensors does not require grad")."""
    from transfer_gui.engine.config import TrainConfig
    from transfer_gui.engine.training import fit

    dataset = open_dataset(write_shapes(tmp_path / "shapes", per_class=6))
    modes = []

    def step(gen, out):
        out.append(next(gen))
        modes.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))

    gen = fit(dataset, TrainConfig(epochs=3, mode="finetune", progress_interval_s=0))
    events = []
    while not events or events[-1].result is None:
        t = threading.Thread(target=step, args=(gen, events))  # each step on a new thread
        t.start()
        t.join()
    assert len(modes) > 5 and set(modes) == {(True, False)}
