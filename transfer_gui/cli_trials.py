"""The command line's ``compare-models``: Quick with every built-in model (or the ones named) on
the user's images, one JSON row per model, best first."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .cli_output import err, out
from .settings import Settings

__all__ = ["add_trials_command", "cmd_compare_models"]


def add_trials_command(sub) -> None:
    """Add ``compare-models`` to the command line's subcommands."""
    m = sub.add_parser("compare-models", help="Quick with every built-in model on your images, best first")
    m.add_argument("data", help="folder with one sub-folder per class, a .zip of it, or a CSV")
    m.add_argument("--models", nargs="+", help="timm model names to try (default: every built-in model, and "
                                                "the catalog's others whose weights can be had here, smallest first)")
    m.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def cmd_compare_models(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``compare-models``: progress on stderr, the ranked rows as JSON on stdout."""
    from .engine.data import open_dataset
    from .engine.model_trials import models_to_try, ranked, try_models
    from .engine.names import model_name
    from .engine.weights import check_available, hub_reachable

    models = [model_name(m, "--models") for m in args.models] if args.models else models_to_try(hub_reachable())
    for name in models:
        check_available(name)  # before reading any images
    trials = []
    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        dataset = open_dataset(args.data, workdir=Path(tmp) / "data", limits=settings.limits.archive)
        for name, trial in try_models(dataset, models, seed=args.seed, weights_cache=str(settings.cache_dir)):
            if trial is None:
                err(f"trying {name} (Quick, cross-validated)...")
            else:
                trials.append(trial)
                err(f"{name}: about {trial.accuracy:.0%} right ({trial.low:.0%}-{trial.high:.0%}), "
                    f"{trial.seconds:.1f} s, {trial.ms_per_picture:.0f} ms a picture")
    out({"models": [t.to_dict() for t in ranked(trials)], "ranked_by": "estimated accuracy (cross-validated), "
         "then calibration error, then seconds"})
    return 0
