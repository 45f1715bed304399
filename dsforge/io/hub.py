"""Upload a built dataset folder to the Hugging Face Hub, exactly as it is on disk."""

from __future__ import annotations

import os
from pathlib import Path

from dsforge.errors import DsforgeError


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
) -> str:
    """Create the dataset repo (and branch) if needed and upload every file of ``folder``.

    One commit for a dataset folder (huggingface_hub splits only folders of many files). Every
    Hub, network or Xet transfer failure becomes one ``DsforgeError`` line, never a traceback.

    The token comes from ``HF_TOKEN`` or the stored ``huggingface-cli login``; it is handed to
    huggingface_hub only and never printed or written anywhere.
    """
    folder = Path(folder)
    if not (folder / "stats.json").exists() or not (folder / "README.md").exists():
        raise DsforgeError(f"{folder}: not a built dsforge dataset (needs README.md and stats.json)")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("expected OWNER/NAME")
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise DsforgeError(f"repo id {repo_id!r}: {exc}") from None

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"))
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            revision=revision,
            commit_message=message or f"Upload {folder.name} with dsforge",
        )
    except (OSError, _transport_errors()) as exc:  # HTTP errors, Xet transfer errors, no connection
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DsforgeError(f"push to {repo_id} failed: {first}") from None
    return getattr(commit, "repo_url", None) or f"{api.endpoint}/datasets/{repo_id}"


def _transport_errors() -> type[Exception]:
    """The base of connection/timeout errors of the HTTP client huggingface_hub uses (not OSError)."""
    try:
        from httpx2 import TransportError  # huggingface_hub >= 2
    except ImportError:
        from httpx import TransportError
    return TransportError
