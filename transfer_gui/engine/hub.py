"""Publishing a bundle on the Hugging Face Hub.

The folder is uploaded exactly as ``save_bundle`` wrote it (config.json, model.safetensors,
README.md model card, transfer_gui.json), which is timm's own hub layout, so
``timm.create_model("hf-hub:USER/REPO", pretrained=True)`` loads it with no other code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from .errors import UserInputError, WeightsUnavailableError
from .names import check_repo_id
from .weights import hub_reachable

__all__ = ["push_bundle", "push_demo_space"]

_logger = logging.getLogger(__name__)



def push_bundle(folder: str | Path, repo_id: str, token: str, private: bool = True) -> str:
    """Create (or reuse) a model repo and upload the bundle folder to it.

    Args:
        folder: a bundle folder written by ``save_bundle``.
        repo_id: "USER/NAME" (or "ORG/NAME").
        token: a Hugging Face access token with write permission.
        private: create the repo as private (the safe default for a user's own data).

    Returns:
        The URL of the model's page.

    Raises:
        UserInputError: no token, a malformed repo id, or the Hub refused (bad token, no rights).
        WeightsUnavailableError: the Hub cannot be reached from here (said at once, before any upload).
    """
    folder = Path(folder)
    repo_id = check_repo_id(repo_id)
    if not (token or "").strip():
        raise UserInputError("Publishing needs a Hugging Face access token with write permission: on a Space, "
                             "sign in with Hugging Face; elsewhere paste one (huggingface.co/settings/tokens), "
                             "or for the command line run `hf auth login` once.")
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise UserInputError(f"{folder} is not a trained-model bundle; train or load a model first.")
    if not hub_reachable():
        raise WeightsUnavailableError(
            "Publishing needs the internet, and the Hugging Face Hub cannot be reached from here. "
            "Download the model (.zip) instead and upload it from a connected machine with "
            "`hf upload USER/NAME FOLDER` (huggingface_hub's command line).")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token.strip())
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                                   commit_message="Upload model trained with Transfer Learning Studio")
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = (" Check that the token has write permission and that you may create repos under "
                f"'{repo_id.split('/')[0]}'." if status in (401, 403) else "")
        raise UserInputError(f"The Hugging Face Hub refused the upload: {str(exc).splitlines()[0]}.{hint}") from exc
    _logger.info("Pushed %s to %s (%s)", Path(folder).name, repo_id, getattr(commit, "commit_url", ""))
    return f"https://huggingface.co/{repo_id}"


def push_demo_space(labels: Sequence[str], temperature: float, model_repo: str, token: str,
                    private: bool = False) -> str:
    """Publish a demo Space (``USER/NAME-demo``, see space.py) for the model published as
    ``model_repo``, whose classes are ``labels`` and calibration ``temperature``. Returns the
    Space's URL.

    Raises:
        UserInputError: the model is private (a Space cannot load it without a token of its own),
            no token, or the Hub refused.
        WeightsUnavailableError: the Hub cannot be reached from here.
    """
    from .space import demo_space_id, write_demo_space

    if private:
        raise UserInputError("A demo Space shows the model to anyone, so the model must be public: untick "
                             "'Private' (or use --public) to publish both.")
    if not (token or "").strip():
        raise UserInputError("Publishing a demo Space needs a Hugging Face access token with write permission.")
    if not hub_reachable():
        raise WeightsUnavailableError("Publishing needs the internet, and the Hugging Face Hub cannot be reached "
                                      "from here.")
    import tempfile

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    space_id = demo_space_id(model_repo)
    api = HfApi(token=token.strip())
    with tempfile.TemporaryDirectory(prefix="tls-space-") as tmp:
        files = write_demo_space(labels, temperature, model_repo, tmp)
        try:
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", exist_ok=True)
            api.upload_folder(repo_id=space_id, repo_type="space", folder_path=str(files),
                              commit_message="Demo of the model, written by Transfer Learning Studio")
        except HfHubHTTPError as exc:
            raise UserInputError(f"The Hugging Face Hub refused the demo Space: {str(exc).splitlines()[0]}.") from exc
    _logger.info("Published the demo Space %s", space_id)
    return f"https://huggingface.co/spaces/{space_id}"

