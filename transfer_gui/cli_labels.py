"""The command line's ``check-labels``: Quick on the user's images, then every picture worth a
look (probably mislabelled, near-duplicate, unlike the others), the most likely first."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .cli_output import err, out
from .engine.catalog import DEFAULT_MODEL
from .settings import Settings

__all__ = ["add_labels_command", "cmd_check_labels"]


def add_labels_command(sub) -> None:
    """Add ``check-labels`` to the command line's subcommands."""
    c = sub.add_parser("check-labels", help="find pictures that are probably mislabelled, near-duplicates or "
                                            "unlike the others, most likely first")
    c.add_argument("data", help="folder with one sub-folder per class, a .zip of it, or a CSV")
    c.add_argument("--model", default=DEFAULT_MODEL, help=f"timm model name (default {DEFAULT_MODEL})")
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.add_argument("--csv", dest="csv_path", help="write the rows to this CSV file instead of JSON lines on stdout")


def cmd_check_labels(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``check-labels``: progress on stderr; one row per picture to check (rank, path, given
    label, suggested label, kind, reason) as JSON lines on stdout or into ``--csv``."""
    from .engine.config import TrainConfig
    from .engine.data import open_dataset
    from .engine.label_check import check_labels, write_findings
    from .engine.training import train
    from .engine.weights import check_available
    from .engine.workflow import finish

    config = TrainConfig(model=args.model, mode="quick", seed=args.seed, weights_cache=str(settings.cache_dir))
    check_available(config.model)  # before reading any images
    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        dataset = open_dataset(args.data, workdir=Path(tmp) / "data", limits=settings.limits.archive)
        for skipped in dataset.report.skipped:
            err(f"skipped {skipped.path}: {skipped.reason}")
        result = train(dataset, config, on_event=lambda e: err(f"[{e.elapsed_s:6.1f}s] {e.message}"))
        trained = finish(result, dataset, device="cpu")
        findings = check_labels(dataset, result.features, result.validation.indices, trained.checked_probs)
        if args.csv_path:
            write_findings(findings, dataset, args.csv_path)
        else:
            for rank, finding in enumerate(findings, start=1):
                out(finding.row(dataset, rank))
    err(f"{len(findings)} of {len(dataset.items)} pictures are worth a look"
        + (f"; rows written to {args.csv_path}" if args.csv_path else "")
        + f". The model that found them: {trained.estimate.sentence()}.")
    return 0
