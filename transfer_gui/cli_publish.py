"""The command line's publishing commands: ``push`` (a bundle to the Hugging Face Hub, with its
demo Space if asked) and ``demo-space`` (the demo Space's files, written locally)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .cli_output import EXIT_USAGE, err, out
from .settings import Settings

__all__ = ["add_publish_commands", "cmd_push", "cmd_demo_space"]


def add_publish_commands(sub) -> None:
    """Add ``push`` and ``demo-space`` to the command line's sub-parsers."""
    h = sub.add_parser("push", help="publish a bundle on the Hugging Face Hub (needs the internet)")
    h.add_argument("bundle", help="bundle folder or .zip")
    h.add_argument("repo", help="USER/NAME of the model repo (created if missing)")
    h.add_argument("--token", help="access token with write permission; by default $HF_TOKEN, else the token "
                                   "`hf auth login` saved (a token given here shows in the process list and the "
                                   "shell history)")
    h.add_argument("--public", action="store_true", help="make a new repo public (default private)")
    h.add_argument("--space", action="store_true",
                   help="also publish a demo Space (USER/NAME-demo) that shows the model working; needs --public")
    d = sub.add_parser("demo-space", help="write the files of a demo Space for a bundle published as REPO")
    d.add_argument("bundle", help="bundle folder or .zip")
    d.add_argument("repo", help="USER/NAME of the model repo the Space loads the model from")
    d.add_argument("--out", required=True, help="folder to write app.py, requirements.txt and README.md to")


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    """Publish a bundle (and its demo Space with ``--space``); prints the URLs as JSON."""
    from huggingface_hub import get_token

    from .engine.hub import push_bundle, push_demo_space
    from .engine.workflow import open_model

    if args.space and not args.public:  # said before anything is uploaded
        err("error: a demo Space shows the model to anyone, so the model must be public: add --public")
        return EXIT_USAGE
    if args.token:
        err("warning: a token given with --token shows in the process list and your shell history; "
            "set HF_TOKEN instead")
    # else $HF_TOKEN, else the token that `hf auth login` saved (huggingface_hub looks in that order)
    token = args.token or get_token() or ""
    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        saved = open_model(args.bundle, Path(tmp) / "b", limits=settings.limits.archive)
        result = {"url": push_bundle(saved.folder, args.repo, token, private=not args.public),
                  "load_with": f'timm.create_model("hf-hub:{args.repo}", pretrained=True)'}
        if args.space:
            result["space"] = push_demo_space(saved.predictor.labels, saved.predictor.temperature, args.repo, token,
                                              private=not args.public)
    out(result)
    return 0


def cmd_demo_space(args: argparse.Namespace, settings: Settings) -> int:
    """Write a demo Space's files for a bundle; prints the folder as JSON."""
    from .engine.space import write_demo_space
    from .engine.workflow import open_model

    with tempfile.TemporaryDirectory(prefix="tls-cli-") as tmp:
        predictor = open_model(args.bundle, Path(tmp) / "b", limits=settings.limits.archive).predictor
        written = write_demo_space(predictor.labels, predictor.temperature, args.repo, args.out)
    out({"space_folder": str(Path(written).resolve()), "files": sorted(p.name for p in Path(written).iterdir())})
    return 0
