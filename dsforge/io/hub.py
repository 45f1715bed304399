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
    """Create the dataset repo if needed and upload every file of ``folder`` in one commit.

    The token comes from ``HF_TOKEN`` or the stored ``huggingface-cli login``; it is handed to
    huggingface_hub only and never printed or written anywhere.
    """
    folder = Path(folder)
    if not (folder / "stats.json").exists() or not (folder / "README.md").exists():
        raise DsforgeError(f"{folder}: not a built dsforge dataset (needs README.md and stats.json)")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise DsforgeError(f"repo id {repo_id!r}: expected OWNER/NAME")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

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
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DsforgeError(f"push to {repo_id} failed: {first}") from None
    return getattr(commit, "repo_url", None) or f"{api.endpoint}/datasets/{repo_id}"
