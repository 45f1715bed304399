"""`dsforge push` end to end: the real huggingface_hub client against a local recording Hub.

The dataset is a real build (200 C4 documents, split into train/test shards); the push runs the
installed `dsforge` command in a subprocess, so the token, environment and exit codes are the
user's. The server (tests/hub_server.py) checks the token and records every file committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hub_server import HF_TEST_TOKEN, FakeHub, serve

from dsforge.runner import build

DSFORGE = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "dsforge"


@pytest.fixture(scope="module")
def dataset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real built dataset folder with train and test shards (several train shards)."""
    root = tmp_path_factory.mktemp("push")
    recipe = {
        "name": "push-demo",
        "sources": [{"path": str(shared_data / "raw" / "c4_demo.jsonl.zst"), "max_rows": 200}],
        "steps": [{"step": "split", "test_size": 0.2}],
        "output": {"path": str(root / "out"), "shard_rows": 60},
        "runtime": {"workers": 1, "batch_size": 500},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    result = build(path, progress=False)
    assert set(result.stats["output"]["splits"]) == {"train", "test"}
    return result.output


@pytest.fixture
def hub_server() -> Iterator[FakeHub]:
    """A fresh local Hub on an ephemeral port expecting HF_TEST_TOKEN; every file goes inline."""
    with serve(FakeHub(token=HF_TEST_TOKEN)) as hub:
        yield hub


def local_files(folder: Path) -> dict[str, tuple[str, int]]:
    """Relative POSIX path → (sha256, size) of every file in the folder."""
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file()
    }


def push(
    hub: FakeHub | str, *args: str, disable_xet: bool = False, home: Path
) -> subprocess.CompletedProcess:
    """Run `dsforge push ARGS` against ``hub`` with a dummy token; the token must never be echoed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    endpoint = hub if isinstance(hub, str) else hub.base_url
    env.update(HF_ENDPOINT=endpoint, HF_TOKEN=HF_TEST_TOKEN, HF_HOME=str(home / "hf-home"))
    if disable_xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    proc = subprocess.run(
        [str(DSFORGE), "push", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert HF_TEST_TOKEN not in proc.stdout + proc.stderr
    if not isinstance(hub, str):
        assert all(HF_TEST_TOKEN not in str(r.headers) for r in hub.requests)
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("disable_xet", "upload_mode"),
    [
        pytest.param(False, "regular", id="default-client-inline"),
        pytest.param(True, "auto", id="no-xet-client-lfs"),
    ],
)
def test_push_uploads_exactly_the_folder(
    dataset: Path, tmp_path: Path, disable_xet: bool, upload_mode: str
) -> None:
    with_lfs = upload_mode == "auto"
    with serve(FakeHub(token=HF_TEST_TOKEN, upload_mode=upload_mode)) as hub:
        proc = push(hub, str(dataset), "user/demo", disable_xet=disable_xet, home=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"{hub.base_url}/datasets/user/demo" in proc.stdout

        expected = local_files(dataset)
        assert {"README.md", "stats.json"} <= set(expected)
        data_files = set(json.loads((dataset / "stats.json").read_text())["output"]["files"])
        assert {p for p in expected if p.startswith("data/")} == data_files
        assert any(p.startswith("data/test-") for p in data_files)
        assert sum(p.startswith("data/train-") for p in data_files) > 1
        assert len(hub.commits) == 1
        commit = hub.commits[0]
        assert (commit.repo_type, commit.repo_id, commit.revision) == ("dataset", "user/demo", "main")
        assert len(commit.files) == len({f.path for f in commit.files})  # no path twice
        assert {f.path: (f.sha256, f.size) for f in commit.files} == expected
        via = {f.path: f.via for f in commit.files}
        assert via["README.md"] == via["stats.json"] == "inline"
        parquet_via = {v for p, v in via.items() if p.endswith(".parquet")}
        assert parquet_via == ({"lfs"} if with_lfs else {"inline"})
        assert set(hub.lfs_objects) == ({expected[p][0] for p in via if via[p] == "lfs"})

        assert hub.repos[("dataset", "user/demo")].private is False
        assert hub.unhandled == []
        authed = [r for r in hub.requests if r.path.startswith("/api/") and "agent-harnesses" not in r.path]
        assert authed and all(r.token_ok and r.headers.get("authorization") == "<redacted>" for r in authed)


def test_private_reaches_create_repo(dataset: Path, tmp_path: Path, hub_server: FakeHub) -> None:
    proc = push(hub_server, str(dataset), "user/secret", "--private", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert hub_server.repos[("dataset", "user/secret")].private is True
    assert [c.repo_id for c in hub_server.commits] == ["user/secret"]


def test_revision_creates_the_branch_and_commits_there(
    dataset: Path, tmp_path: Path, hub_server: FakeHub
) -> None:
    for attempt in range(2):  # the second push finds the repo and the branch already there
        proc = push(
            hub_server,
            str(dataset),
            "user/demo",
            "--revision",
            "dev",
            "--message",
            f"push {attempt}",
            home=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
    branch_calls = [r for r in hub_server.requests if "/branch/" in r.path]
    assert [r.path for r in branch_calls] == ["/api/datasets/user/demo/branch/dev"] * 2
    assert [r.status for r in branch_calls] == [200, 409]
    assert [(c.revision, c.summary) for c in hub_server.commits] == [("dev", "push 0"), ("dev", "push 1")]
    repo = hub_server.repos[("dataset", "user/demo")]
    assert repo.branches["main"] == "0" * 40  # nothing went to main
    assert repo.branches["dev"] == hub_server.commits[-1].oid
    assert set(hub_server.committed_files("user/demo")) == set(local_files(dataset))
    assert not any(r.path.endswith("/main") for r in hub_server.requests)


def test_folder_that_is_not_a_dataset_sends_nothing(tmp_path: Path, hub_server: FakeHub) -> None:
    folder = tmp_path / "not-a-dataset"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "x.parquet").write_bytes(b"PAR1")
    proc = push(hub_server, str(folder), "user/demo", home=tmp_path)
    assert_one_line_error(proc, "not a built dsforge dataset")
    assert hub_server.requests == []


@pytest.mark.parametrize("repo_id", ["demo", "user/team/demo", "user/", "user/bad name", "user/--demo"])
def test_bad_repo_id_is_refused_before_any_request(
    dataset: Path, tmp_path: Path, hub_server: FakeHub, repo_id: str
) -> None:
    proc = push(hub_server, str(dataset), repo_id, home=tmp_path)
    assert_one_line_error(proc, "repo id")
    assert hub_server.requests == []


def test_server_refusing_the_commit_is_one_clear_line(
    dataset: Path, tmp_path: Path, hub_server: FakeHub
) -> None:
    hub_server.fail("commit", "user/forbidden", 403, "You have no write access to user/forbidden")
    proc = push(hub_server, str(dataset), "user/forbidden", home=tmp_path)
    assert_one_line_error(proc, "push to user/forbidden failed", "403")
    assert hub_server.commits == []
    assert [r.status for r in hub_server.requests if "/commit/" in r.path] == [403]


def test_xet_storage_failure_is_one_clear_line(dataset: Path, tmp_path: Path) -> None:
    """The default client sends LFS-mode files through Xet; a Hub without Xet storage makes that fail."""
    with serve(FakeHub(token=HF_TEST_TOKEN, upload_mode="auto")) as hub:
        proc = push(hub, str(dataset), "user/demo", home=tmp_path)
        assert_one_line_error(proc, "push to user/demo failed")
        assert hub.commits == []
        assert any(r.path.endswith("/xet-write-token/main") for r in hub.requests)


def test_unreachable_endpoint_is_one_clear_line(dataset: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = push(f"http://127.0.0.1:{port}", str(dataset), "user/demo", home=tmp_path)
    assert_one_line_error(proc, "push to user/demo failed")
