"""The training policies: what is trained, what it is judged on, and what is kept.

``POLICIES`` names them by ``TrainConfig.mode``; each is called the same way, ``policy(run, setup)``,
yields progress events and returns the ``Validation`` of the model it kept (its weights are
``run.best_state``). A step that fails once a model is kept (fine-tuning after the probe) ends the
policy with that model and the error in its ``Validation``.

  quick  the linear probe (probe.py) on the frozen backbone's features: cross-validated on every
         image, then fitted on all of them; on a large set, one holdout instead.
  lp_ft  LP-FT (Kumar et al., ICLR 2022; fastai's ``fine_tune``): the quick probe first, then the
         whole network (finetune.py), kept only when a sign test on held-out images says it fixed
         clearly more pictures than it broke.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Callable, Generator, Sequence

import numpy as np
import torch
from torch import nn

from .data import Split, split_dataset
from .errors import without_paths
from .finetune import Outcome, finetune, scores
from .probe import PENALTIES, CrossValidation, Fixed, cross_validate, fit_head, holdout_select, n_folds, stratified_folds
from .progress import ProgressEvent, Run

__all__ = ["Validation", "Setup", "Policy", "POLICIES", "STEP_FAILURES", "quick", "lp_ft", "CV_MAX_IMAGES",
           "LARGE_CLASS", "SIGN_TEST_LEVEL"]

_logger = logging.getLogger(__name__)

# What a training step can raise that is not a bug in the caller: unreadable files (OSError),
# out of memory (torch.OutOfMemoryError is a RuntimeError), numerical/shape errors inside a model.
STEP_FAILURES = (RuntimeError, OSError, ValueError, MemoryError)


# The probe is cross-validated up to this many images (k-fold on cached features costs well under
# a second at 100 images and ~10 s at 2,000 on two CPU cores); above it one holdout of a few
# hundred images is reliable, and k fits would cost k times as much.
CV_MAX_IMAGES = 2000
# Fine-tuning on a small set takes its evidence from one holdout and then trains again on every
# image; from this many images in the smallest class, the holdout alone is trusted (its quarter
# is 25+ images a class) and the refit, which would double a long run, is skipped.
LARGE_CLASS = 100


@dataclass(frozen=True)
class Validation:
    """How the figures shown for a trained model were measured: predictions on images that the
    model making them did not learn from.

    Attributes:
        method: "cross-validation" (every image, each judged by the fold model that did not see it)
            or "holdout" (a held-out share of the images).
        k: number of folds (1 for a holdout).
        indices: the dataset images that have such a prediction.
        folds: the fold of each entry of ``indices``.
        logits: (len(indices), classes) their logits.
        trained_on_all: the kept model learned from every image (the checked ones too).
        note: one plain sentence on what was kept and why.
        error: why training broke off after this model was kept ("Type: message"), or None.
    """

    method: str
    k: int
    indices: tuple[int, ...]
    folds: np.ndarray
    logits: np.ndarray
    trained_on_all: bool
    note: str
    error: str | None = None

    def broke_off(self, exc: BaseException) -> Validation:
        """This model, kept after ``exc`` ended the training that came after it."""
        return dataclasses.replace(self, note=f"Training broke off with an error. {self.note}",
                                   error=f"{type(exc).__name__}: {without_paths(str(exc))}")

    def to_dict(self) -> dict:
        """JSON-ready summary (the logits stay out)."""
        return {"method": self.method, "folds": self.k, "n_images": len(self.indices),
                "trained_on_all_images": self.trained_on_all, "note": self.note}


@dataclass(frozen=True)
class Setup:
    """What a policy trains.

    Attributes:
        model: the network, its backbone pretrained (or a continued model).
        head: its linear classifier.
        features: the frozen backbone's features of every image of the run's dataset.
        data_config: the model's preprocessing (timm data config).
        device: where it trains.
        split: a train/validation split given by the caller, or None (the policy chooses).
    """

    model: nn.Module
    head: nn.Linear
    features: torch.Tensor
    data_config: dict
    device: torch.device
    split: Split | None


Policy = Callable[[Run, Setup], Generator[ProgressEvent, None, Validation]]


def _fixed(run: Run) -> Fixed | None:
    if run.kept is None:
        return None
    index, weight, bias = run.kept
    return Fixed(tuple(index.tolist()), weight.cpu(), bias.cpu())


def _set_head(head: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.device, head.weight.dtype))
        head.bias.copy_(bias.to(head.bias.device, head.bias.dtype))


def _probe_events(run: Run, choice: CrossValidation, how: str):
    """One history row and one event per penalty tried (they are found together, in a second)."""
    n = len(choice.scores)
    for i, (penalty, loss, acc, train_loss) in enumerate(choice.scores, start=1):
        row = run.add_row("head", i, train_loss, loss, acc, penalty=penalty)
        chosen = penalty == choice.penalty
        if chosen:
            run.best = row
        yield run.event("head", i, n, 1, 1, train_loss=train_loss, val_loss=loss, val_acc=acc, is_best=chosen,
                        message=f"Training the new head: setting {i}/{n} checked by {how}, accuracy {acc:.0%}")


def _probe(run: Run, model: nn.Module, head: nn.Linear, features: torch.Tensor, indices: list[int],
           held_out: list[int] | None):
    """Fit the linear probe on ``indices``, its penalty chosen by k-fold cross-validation there
    (or, past CV_MAX_IMAGES, on ``held_out``). Sets the head; returns (choice, logits of
    ``held_out`` or None)."""
    cfg = run.config
    y = run.targets
    n_classes = head.out_features
    idx = torch.tensor(indices)
    x_in, y_in = features[idx], y[idx]
    fixed = _fixed(run)
    if len(indices) <= CV_MAX_IMAGES or held_out is None:
        yield run.event("head", 0, len(PENALTIES), 0, 1,
                        message=f"Training the new head: trying {len(PENALTIES)} settings, each checked by "
                                "cross-validation...")
        groups = [run.dataset.items[i].sha1 for i in indices]
        folds = stratified_folds(y_in.numpy(), n_folds(y_in.numpy()), cfg.seed, groups)
        choice = cross_validate(x_in, y_in, n_classes, folds, fixed=fixed)
        yield from _probe_events(run, choice, f"{choice.k}-fold cross-validation")
        weight, bias = fit_head(x_in, y_in, n_classes, choice.penalty, fixed=fixed)
    else:  # a large set: choose on the holdout itself
        yield run.event("head", 0, len(PENALTIES), 0, 1,
                        message=f"Training the new head: trying {len(PENALTIES)} settings on the held-out images...")
        everything = sorted(indices + held_out)
        pos = {i: p for p, i in enumerate(everything)}
        choice, (weight, bias) = holdout_select(features[torch.tensor(everything)], y[torch.tensor(everything)],
                                                n_classes, [pos[i] for i in indices], [pos[i] for i in held_out],
                                                fixed=fixed)
        yield from _probe_events(run, choice, "the held-out images")
    _set_head(head, weight, bias)
    run.restore_rows(head)  # a continued model's classes exactly as saved (not via standardisation)
    held_logits = None
    if held_out is not None:
        with torch.no_grad():
            held_logits = (features[torch.tensor(held_out)] @ weight.T + bias).numpy()
        loss, acc = scores(held_logits, y[torch.tensor(held_out)])
        run.best = dataclasses.replace(run.best, val_loss=loss, val_acc=acc)  # the figures on the held-out images
    run.snapshot(model)
    return choice, held_logits


def _holdout_folds(run: Run, indices: Sequence[int]) -> np.ndarray:
    """Folds over held-out images (for cross-fitted calibration error)."""
    y = run.targets[torch.tensor(list(indices))].numpy()
    return stratified_folds(y, n_folds(y), run.config.seed)


def quick(run: Run, setup: Setup) -> Generator[ProgressEvent, None, Validation]:
    """Quick: the probe alone. Cross-validated on every image, then fitted on all of them; or, on
    a given split (or a large set), fitted on its training part and checked on its held-out part."""
    n = len(run.dataset.items)
    model, head, features = setup.model, setup.head, setup.features
    if setup.split is None and n <= CV_MAX_IMAGES:
        everything = list(range(n))
        choice, _ = yield from _probe(run, model, head, features, everything, None)
        return Validation("cross-validation", choice.k, tuple(everything), choice.folds, choice.logits, True,
                          f"The new head was trained on all {n} images with the setting that did best in "
                          f"{choice.k}-fold cross-validation.")
    split = setup.split or split_dataset(run.dataset, run.config.val_fraction, run.config.seed)
    run.split = split
    _, logits = yield from _probe(run, model, head, features, split.train, split.val)
    return Validation("holdout", 1, tuple(split.val), _holdout_folds(run, split.val), logits, False,
                      f"The new head was trained on {len(split.train)} images and checked on "
                      f"{len(split.val)} held-out ones.")


def lp_ft(run: Run, setup: Setup) -> Generator[ProgressEvent, None, Validation]:
    """LP-FT, kept only when it beats the probe on held-out images.

    * Small sets (no split given, smallest class under LARGE_CLASS images): the probe is
      cross-validated and fitted on every image, as in Quick. Then the evidence: on one holdout,
      a probe fitted on the rest is fine-tuned and checked after every epoch. If its best epoch
      fixes clearly more held-out images than it breaks against that probe (a sign test, see
      SIGN_TEST_LEVEL), the network is fine-tuned again from the all-image probe, on every
      image, for that many epochs; otherwise the all-image probe is kept.
    * Large sets, or a given split: the probe and the fine-tuned network both learn from the
      training part and are compared on the held-out part by the same test; the winner is kept
      as trained.
    """
    counts = np.bincount(run.targets.numpy())
    small = setup.split is None and counts[counts > 0].min() < LARGE_CLASS and len(run.targets) <= CV_MAX_IMAGES
    return (yield from (_lp_ft_small(run, setup) if small else _lp_ft_on_split(run, setup)))


def _lp_ft_on_split(run: Run, setup: Setup) -> Generator[ProgressEvent, None, Validation]:
    """LP-FT on one split: the probe and the fine-tuned network learn from its training part;
    the winner on its held-out part is kept."""
    cfg = run.config
    split = setup.split or split_dataset(run.dataset, cfg.val_fraction, cfg.seed)
    run.split = split
    _, probe_logits = yield from _probe(run, setup.model, setup.head, setup.features, split.train, split.val)
    folds = _holdout_folds(run, split.val)
    probe = Validation("holdout", 1, tuple(split.val), folds, probe_logits, False,
                       f"The new head was trained on {len(split.train)} images.")
    try:
        outcome = yield from finetune(run, setup.model, setup.head, setup.data_config, setup.device, split.train,
                                      split.val, cfg.resolved_epochs, "finetune")
    except STEP_FAILURES as exc:
        _logger.exception("Fine-tuning failed after %.1f s; the probe is kept", run.elapsed())
        return probe.broke_off(exc)
    verdict = _judge(outcome, probe_logits, run.targets[torch.tensor(split.val)])
    if verdict is None or not verdict.wins:
        return dataclasses.replace(probe, note=_probe_kept(run, verdict, len(split.val)))
    run.best_state = outcome.state
    run.best = next(r for r in run.history if r.phase == "finetune" and r.epoch == outcome.epoch)
    return Validation("holdout", 1, tuple(split.val), folds, outcome.logits, False,
                      f"Fine-tuned on {len(split.train)} images and kept: at its best epoch "
                      f"({outcome.epoch}), {verdict.sentence(len(split.val))}.")


def _lp_ft_small(run: Run, setup: Setup) -> Generator[ProgressEvent, None, Validation]:
    """LP-FT on a small set: the cross-validated probe on every image first, kept unless
    fine-tuning on a holdout clearly beats a probe of the same images; then a refit on all."""
    probe_only = yield from quick(run, dataclasses.replace(setup, split=None))
    if run.stopped:
        return probe_only
    # what stays if fine-tuning does not get to its end (an error): the quick model
    fallback = dataclasses.replace(probe_only, note="Fine-tuning did not finish, so the quick model (the new "
                                                    "head alone, trained on all images) was kept.")
    try:
        return (yield from _finetune_and_refit(run, setup, probe_only))
    except STEP_FAILURES as exc:
        _logger.exception("Fine-tuning failed after %.1f s; the quick model is kept", run.elapsed())
        return fallback.broke_off(exc)


def _finetune_and_refit(run: Run, setup: Setup, probe_only: Validation) -> Generator[ProgressEvent, None, Validation]:
    cfg = run.config
    model, head = setup.model, setup.head
    probe_state, probe_row = run.best_state, run.best
    evidence = split_dataset(run.dataset, cfg.val_fraction, cfg.seed)
    run.split = evidence
    tr, va = torch.tensor(evidence.train), torch.tensor(evidence.val)
    weight, bias = fit_head(setup.features[tr], run.targets[tr], head.out_features, probe_row.penalty,
                            fixed=_fixed(run))
    probe_logits = (setup.features[va] @ weight.T + bias).numpy()
    _set_head(head, weight, bias)
    run.restore_rows(head)
    outcome = yield from finetune(run, model, head, setup.data_config, setup.device, evidence.train, evidence.val,
                                  cfg.resolved_epochs, "finetune")
    verdict = _judge(outcome, probe_logits, run.targets[va])
    if verdict is None or not verdict.wins or run.stopped:
        return dataclasses.replace(probe_only, note=_probe_kept(run, verdict, len(evidence.val)))
    model.load_state_dict(probe_state)  # start again from the pretrained backbone and the all-image head
    refit = yield from finetune(run, model, head, setup.data_config, setup.device, list(range(len(run.targets))),
                                None, outcome.epoch, "refit")
    if refit is None:  # stopped during the refit: the probe stays
        return dataclasses.replace(probe_only, note="Fine-tuning on all images was stopped before it finished, so "
                                                    "the quick model (trained on all images) was kept.")
    run.best_state = refit.state
    run.best = dataclasses.replace(run.history[-1], val_loss=outcome.loss, val_acc=outcome.acc)
    return Validation("holdout", 1, tuple(evidence.val), _holdout_folds(run, evidence.val), outcome.logits, True,
                      f"Fine-tuning clearly beat the quick model: {verdict.sentence(len(evidence.val))}; so the "
                      f"network was then fine-tuned on all {len(run.targets)} images for the {outcome.epoch} "
                      "epoch(s) that did best there.")


# Fine-tuning must fix clearly more held-out pictures than it breaks: a one-sided sign test
# (exact binomial on the pictures the two models disagree on) at this level. Measured with the
# plain rule "more right wins" instead (benchmarks/bench_engine.py, 10 images per class, 3 seeds
# of openclipart-8 and Fashion-MNIST): fine-tuning was kept in 5 of 6 runs on 16-20 held-out
# images, and scored 1.8 points under the probe on new images on average.
SIGN_TEST_LEVEL = 0.1


@dataclass(frozen=True)
class _Verdict:
    """Fine-tuning against the probe on the same held-out images."""

    fixed: int  # right after fine-tuning, wrong with the probe
    broke: int  # the other way round
    p_value: float  # of so many fixes or more among the disagreements, were both equally good
    probe_acc: float
    tuned_acc: float

    @property
    def wins(self) -> bool:
        return self.fixed > self.broke and self.p_value <= SIGN_TEST_LEVEL

    def sentence(self, n_val: int) -> str:
        return (f"on {n_val} held-out images it got {self.tuned_acc:.0%} right against the quick model's "
                f"{self.probe_acc:.0%} ({self.fixed} fixed, {self.broke} broken)")


def _judge(outcome: Outcome | None, probe_logits: np.ndarray, targets: torch.Tensor) -> _Verdict | None:
    """Compare the fine-tuned epoch's held-out answers with the probe's, picture by picture."""
    if outcome is None:
        return None
    y = targets.numpy()
    probe_right = np.asarray(probe_logits).argmax(1) == y
    tuned_right = np.asarray(outcome.logits).argmax(1) == y
    fixed, broke = int((tuned_right & ~probe_right).sum()), int((probe_right & ~tuned_right).sum())
    n = fixed + broke
    p_value = sum(math.comb(n, i) for i in range(fixed, n + 1)) / 2 ** n if n else 1.0
    return _Verdict(fixed, broke, p_value, float(probe_right.mean()), float(tuned_right.mean()))


def _probe_kept(run: Run, verdict: _Verdict | None, n_val: int) -> str:
    if run.stopped or verdict is None:
        return ("Fine-tuning was stopped before it had shown that it beats the quick model, so the quick model "
                "(the new head alone) was kept.")
    return (f"Fine-tuning did not clearly beat the quick model: {verdict.sentence(n_val)}, so the quick model (the "
            "new head alone) was kept.")


# The policies by ``TrainConfig.mode``.
POLICIES: dict[str, Policy] = {"quick": quick, "finetune": lp_ft}
