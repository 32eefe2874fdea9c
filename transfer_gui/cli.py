"""The command line: ``python -m transfer_gui models | train | evaluate | predict | suggest | export | push | compare
| compare-models | check-labels | curve``.

This interface is a contract: results go to stdout as JSON (or CSV for ``predict``/``suggest``/``check-labels --csv``),
progress and warnings to stderr. Exit code 0 on success, 2 with a one-line reason for bad input.
"""

from __future__ import annotations

import argparse
import os
import logging
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from . import __version__
from .cli_publish import add_publish_commands, cmd_demo_space, cmd_push
from .cli_labels import add_labels_command, cmd_check_labels
from .cli_trials import add_trials_command, cmd_compare_models
from .cli_output import EXIT_USAGE, err as _err, out as _out
from .engine.catalog import CATALOG, DEFAULT_MODEL
from .engine.config import MODES, PRECISIONS, TrainConfig
from .engine.errors import UserInputError
from .settings import Settings
from .engine.weights import availability, check_available, hub_reachable

# The engine (torch, timm: ~7 s to import on 2 cores) is imported by the commands that use it, so
# --help and a usage error answer at once.

__all__ = ["main", "build_parser"]

_logger = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = _Parser(prog="python -m transfer_gui",
                     description="Teach a pretrained image model your own pictures.")
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("models", help="list the model shortlist and whether each works here")

    t = sub.add_parser("train", help="train a classifier on a folder or .zip with one folder per class")
    t.add_argument("data", help="folder with one sub-folder per class, a .zip of it, or a filename,label CSV")
    t.add_argument("--model", default=DEFAULT_MODEL, help=f"timm model name (default {DEFAULT_MODEL}, built in)")
    t.add_argument("--weights", dest="weights_file", help="local .safetensors weights for --model (pickled .pth/.bin files are refused)")
    t.add_argument("--mode", choices=MODES, default="quick",
                   help="quick: frozen backbone, seconds; finetune: whole network, minutes")
    t.add_argument("--epochs", type=int, help="fine-tune epochs at most (default 12; quick fits its head to "
                                               "convergence and ignores it)")
    t.add_argument("--lr", type=float, help="fine-tune learning rate (default 1e-3)")
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="fine-tune batch size (default 16)")
    t.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction,
                   help="share of each class held out to judge fine-tuning, and on sets over 2,000 images "
                        "(default 0.25; quick cross-validates smaller sets instead)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto (bf16 where fast), fp32, bf16")
    t.add_argument("--scratch", action="store_true",
                   help="start from random weights, not pretrained ones (no download; for comparisons and tests)")
    t.add_argument("--out", required=True, help="folder to write the trained model bundle to")
    t.add_argument("--zip", dest="zip_path", help="also write the bundle as this .zip file")
    t.add_argument("--force", action="store_true",
                   help="write into --out even when it holds files that are not a bundle of this app")
    t.add_argument("--continue-from", dest="continue_from",
                   help="a bundle (folder or .zip) to keep training; new classes are added to its head")

    e = sub.add_parser("evaluate", help="measure a trained bundle on labelled images")
    e.add_argument("bundle", help="bundle folder or .zip")
    e.add_argument("data", help="folder with one sub-folder per class (names as in the bundle), or a .zip")

    p = sub.add_parser("predict", help="classify images")
    p.add_argument("bundle", help="bundle folder or .zip")
    p.add_argument("paths", nargs="+", help="images, folders of images, or .zip files")
    p.add_argument("--top-k", type=int, default=3, help="how many top classes to list (default 3)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help='answer "not sure" below this confidence, 0-1 (default 0: always answer)')
    p.add_argument("--always-a-class", dest="none_of_these", action="store_false",
                   help='never answer "not one of your classes" (the novelty column still has the score)')
    p.add_argument("--csv", dest="csv_path", help="write rows to this CSV file instead of JSON lines on stdout")
    g = sub.add_parser("suggest", help="suggest a class for unlabelled pictures, least certain first")
    g.add_argument("bundle", help="bundle folder or .zip")
    g.add_argument("paths", nargs="+", help="unlabelled images, folders of images, or .zip files")
    g.add_argument("--top-k", type=int, default=3, help="how many likeliest classes to list (default 3)")
    g.add_argument("--csv", dest="csv_path", help="write rows to this CSV file instead of JSON lines on stdout")
    x = sub.add_parser("export", help="export a bundle to TorchScript and ONNX (preprocessing inside) "
                                      "and check each file against the bundle")
    x.add_argument("bundle", help="bundle folder or .zip")
    x.add_argument("--out", required=True, help="folder for model.torchscript.pt, model.onnx, labels.json")
    x.add_argument("--images", nargs="+", help="images, folders or .zip files to check parity on "
                                               "(default: the repository's assets/test_images)")
    x.add_argument("--format", dest="formats", nargs="+", choices=["torchscript", "onnx"],
                   default=["torchscript", "onnx"], help="what to export (default both)")

    c = sub.add_parser("compare", help="pretrained (Quick) vs the same model from scratch on the same images, "
                                        "checked as they learn; print both runs' checks")
    c.add_argument("data", help="folder with one sub-folder per class, a .zip of it, or a CSV")
    c.add_argument("--model", default=DEFAULT_MODEL, help=f"timm model name (default {DEFAULT_MODEL})")
    c.add_argument("--seconds", type=float, help="least seconds of training from scratch (default 20)")
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.add_argument("--picture", help="also draw both runs into this PNG file")

    k = sub.add_parser("curve", help="learning curve: validation accuracy with 25/50/75/100%% of the images")
    k.add_argument("data", help="folder with one sub-folder per class, a .zip of it, or a CSV")
    k.add_argument("--model", default=DEFAULT_MODEL, help=f"timm model name (default {DEFAULT_MODEL})")
    k.add_argument("--repeats", type=int, default=3, help="random subsets per fraction (default 3)")
    k.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    add_trials_command(sub)
    add_labels_command(sub)
    add_publish_commands(sub)
    return parser


def _cmd_models(_: argparse.Namespace, settings: Settings) -> int:
    online = hub_reachable()
    for info in CATALOG:
        _out({"name": info.name, "title": info.title, "params_m": info.params_m, "input_size": info.input_size,
              "speed": info.speed, "trained_on": info.trained_on, "licence": info.licence,
              "source": info.source, "availability": availability(info.name, online)})
    return 0


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from .engine.distributed import start_distributed, stop_distributed

    try:
        rank, world, device = start_distributed(args.device)
    except UserInputError:
        if os.environ.get("RANK", "0") != "0":  # every process refuses the same way; rank 0 alone says why
            return EXIT_USAGE
        raise
    try:
        return _train(args, settings, rank, world, device)
    finally:
        stop_distributed(world)


def _progress_line(event) -> None:
    """One training progress event as a line on stderr."""
    line = f"[{event.elapsed_s:6.1f}s] {event.message}"
    if event.train_loss is not None and event.phase != "done":
        line += f" | train loss {event.train_loss:.3f}"
    if event.val_loss is not None and event.phase != "done":
        line += f" | checked loss {event.val_loss:.3f}"
    _err(line)


def _train(args: argparse.Namespace, settings: Settings, rank: int, world: int, device: str) -> int:
    from .engine.data import open_dataset
    from .engine.training import train
    from .engine.workflow import continuing, finish_training, open_model

    config = TrainConfig(model=args.model, mode=args.mode, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         val_fraction=args.val_fraction, seed=args.seed, device=device, precision=args.precision,
                         weights_file=args.weights_file, pretrained=not args.scratch,
                         weights_cache=str(settings.cache_dir))
    _check_out(Path(args.out), args.force)
    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        if args.continue_from:
            config = continuing(config, open_model(args.continue_from, Path(tmp) / "base",
                                                   limits=settings.limits.archive))
        elif config.pretrained:
            check_available(config.model, weights_file=config.weights_file)  # before reading any images
        dataset = open_dataset(args.data, workdir=Path(tmp) / "data", limits=settings.limits.archive)
        for warning in dataset.report.warnings:
            _err(f"warning: {warning}")
        for skipped in dataset.report.skipped:
            _err(f"skipped {skipped.path}: {skipped.reason}")
        result = train(dataset, config, on_event=_progress_line if rank == 0 else None)  # one process reports
        if result.error:
            _err(f"warning: training broke off ({result.error}); the model trained before it is kept")
        if rank != 0:
            return 0  # every process holds the same model; only the first writes it
        if world > 1:
            _err(f"trained in {world} processes; this one (rank 0) writes the bundle")
        trained = finish_training(result, dataset, args.out, device=config.device, zip_path=args.zip_path)
    split = result.split
    _err(f"{trained.estimate.sentence()}. {trained.estimate.note}")
    _out({"out": str(Path(args.out).resolve()),
          "zip": str(Path(args.zip_path).resolve()) if args.zip_path else None,
          **trained.summary(),
          "skipped": [s.to_dict() for s in dataset.report.skipped],
          "warnings": dataset.report.warnings + (split.warnings if split is not None else [])})
    return 0


def _check_out(out: Path, force: bool) -> None:
    """Refuse, before any work, an --out folder whose files a bundle would overwrite by surprise."""
    from .engine.bundle import METADATA_FILE

    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; give a folder for the trained model.")
    if force or not out.is_dir() or not any(out.iterdir()) or (out / METADATA_FILE).is_file():
        return
    raise UserInputError(f"--out {out} is not empty and holds no bundle of this app; its files could be "
                         "overwritten. Choose a new or empty folder, or add --force.")


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from .engine.data import open_dataset
    from .engine.workflow import open_model

    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        saved = open_model(args.bundle, Path(tmp) / "b", limits=settings.limits.archive)
        dataset = open_dataset(args.data, workdir=Path(tmp) / "data", require_trainable=False,
                               limits=settings.limits.archive)
        if not dataset.items:
            raise UserInputError(f"No readable images in class folders under {args.data}.")
        report = saved.predictor.evaluate(dataset)
    result = report.to_dict()
    result["skipped"] = [s.to_dict() for s in dataset.report.skipped]
    _out(result)
    return 0


def _cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from .engine.batch import iter_image_files, prediction_rows, write_csv
    from .engine.workflow import open_model

    if args.top_k < 1:
        raise UserInputError("--top-k must be at least 1.")
    if not 0.0 <= args.threshold <= 1.0:
        raise UserInputError("--threshold must be between 0 and 1.")
    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        predictor = open_model(args.bundle, Path(tmp) / "b", limits=settings.limits.archive).predictor
        skip = lambda shown, why: _err(f"skipped {shown}: {why}")  # noqa: E731
        images = iter_image_files([(raw, Path(raw)) for raw in args.paths], Path(tmp), skip)
        rows = prediction_rows(predictor, images, args.top_k, args.threshold, skip, none_of_these=args.none_of_these)
        if args.csv_path:
            count = write_csv(rows, args.csv_path)
        else:
            count = 0
            for row in rows:
                _out(row)
                count += 1
    if count == 0:
        raise UserInputError("No readable images were found in the given paths.")
    _err(f"{count} image(s) classified" + (f"; rows written to {args.csv_path}" if args.csv_path else ""))
    return 0


def _cmd_suggest(args: argparse.Namespace, settings: Settings) -> int:
    from .engine.batch import iter_image_files, write_csv
    from .engine.labelling import suggestion_rows
    from .engine.workflow import open_model

    if args.top_k < 2:
        raise UserInputError("--top-k must be at least 2 (the order compares the two likeliest classes).")
    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        predictor = open_model(args.bundle, Path(tmp) / "b", limits=settings.limits.archive).predictor
        skip = lambda shown, why: _err(f"skipped {shown}: {why}")  # noqa: E731
        images = iter_image_files([(raw, Path(raw)) for raw in args.paths], Path(tmp), skip)
        rows = suggestion_rows(predictor, images, args.top_k, skip)
        if not rows:
            raise UserInputError("No readable images were found in the given paths.")
        if args.csv_path:
            write_csv(rows, args.csv_path)
        else:
            for row in rows:
                _out(row)
    _err(f"{len(rows)} suggestion(s), least certain first (smallest margin between the two likeliest classes)"
         + (f"; rows written to {args.csv_path}" if args.csv_path else ""))
    return 0


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from .engine.images import IMAGE_EXTENSIONS
    from .engine.batch import iter_image_files
    from .engine.export import export_all
    from .engine.workflow import open_model

    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        predictor = open_model(args.bundle, Path(tmp) / "b", limits=settings.limits.archive).predictor
        sources = args.images or [str(Path(__file__).resolve().parents[1] / "assets" / "test_images")]
        skip = lambda shown, why: _err(f"skipped {shown}: {why}")  # noqa: E731
        files = [file for _, file in iter_image_files([(raw, Path(raw)) for raw in sources], Path(tmp), skip)]
        images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            raise UserInputError("No images to check the exports on; give some with --images.")
        result = export_all(predictor, args.out, images, formats=args.formats)
    for check in result.checks:
        _err(check.sentence())
    _out(result.to_dict())
    return 0 if result.passed else 1


def _cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    from .engine.comparison import COMPARE_SECONDS, compare_with_scratch
    from .engine.data import open_dataset

    args.seconds = COMPARE_SECONDS if args.seconds is None else args.seconds
    if args.seconds <= 0:
        raise UserInputError("--seconds must be more than 0.")
    config = TrainConfig(model=args.model, seed=args.seed, weights_cache=str(settings.cache_dir))
    check_available(config.model)
    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        dataset = open_dataset(args.data, workdir=Path(tmp) / "data", limits=settings.limits.archive)
        found = None
        for found in compare_with_scratch(dataset, config, args.seconds):
            if found.running is not None:
                point = found.final(found.running)
                _err(f"[{found.running:10s} {point.seconds:6.1f}s] check {len(found.points[found.running])}: "
                     f"accuracy {point.accuracy:.0%}")
    if args.picture:
        found.picture().image.save(args.picture)
    _out(found.to_dict())
    return 0


def _cmd_curve(args: argparse.Namespace, settings: Settings) -> int:
    from .engine.learning_curve import learning_curve
    from .engine.data import open_dataset

    if args.repeats < 1:
        raise UserInputError("--repeats must be at least 1.")
    config = TrainConfig(model=args.model, seed=args.seed, weights_cache=str(settings.cache_dir))
    check_available(config.model)
    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        dataset = open_dataset(args.data, workdir=Path(tmp) / "data", limits=settings.limits.archive)
        curve = None
        for fraction, repeat, curve in learning_curve(dataset, config, repeats=args.repeats):
            if curve is None:
                _err(f"trained on {fraction:.0%} of the images (repeat {repeat + 1})")
    _out(curve.to_dict())
    return 0


# The commands that run a model: the process is tuned for them first (threads, allocator).
_RUNS_MODELS = frozenset({"train", "evaluate", "predict", "export", "compare", "compare-models", "curve", "suggest",
                          "check-labels"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    commands = {"models": _cmd_models, "train": _cmd_train, "evaluate": _cmd_evaluate, "predict": _cmd_predict,
                "export": _cmd_export, "push": cmd_push, "demo-space": cmd_demo_space, "compare": _cmd_compare, "compare-models": cmd_compare_models,
                "check-labels": cmd_check_labels,
                "curve": _cmd_curve, "suggest": _cmd_suggest}
    settings = Settings.from_env()  # read once, passed down
    try:
        if args.command in _RUNS_MODELS:
            from .engine.speed import tune_process

            tune_process(settings.keep_malloc)
        return commands[args.command](args, settings)
    except UserInputError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
