"""A local stand-in for the Hugging Face Hub HTTP API that records what the real client sends.

Just enough of the API for ``huggingface_hub``'s ``create_repo``, ``create_branch`` and
``upload_folder`` (preupload, LFS batch with the "basic" transfer, PUT + verify, NDJSON commit).
It never speaks Xet: Xet is a client-side choice (``hf_xet`` installed and ``HF_HUB_DISABLE_XET``
unset), so in ``upload_mode="regular"`` the server asks for every file inline (base64 in the
commit), which is the only path such a client can take without a Xet storage server; with
``upload_mode="auto"`` it answers like the Hub (binary files → LFS) for clients with Xet disabled.

Every request is recorded with its headers, the ``Authorization`` value replaced by
``<redacted>``: the token is compared, never stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO = r"(?P<type>dataset|model|space)s/(?P<repo>[^/]+/[^/]+)"
LFS_EXTENSIONS = (".parquet", ".arrow", ".bin", ".zst", ".gz", ".safetensors")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    token_ok: bool
    status: int = 0


@dataclass
class CommittedFile:
    path: str
    sha256: str
    size: int
    via: str  # "inline" (base64 in the commit) or "lfs" (uploaded by PUT, referenced by oid)


@dataclass
class Commit:
    repo_id: str
    repo_type: str
    revision: str
    summary: str
    oid: str
    files: list[CommittedFile]


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})


class HubError(Exception):
    """An HTTP error answer, shaped like the Hub's (JSON ``error`` + ``X-Error-Message``)."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class FakeHub:
    """State and routing of the fake Hub; one instance per test."""

    def __init__(self, token: str | None = None, upload_mode: str = "regular") -> None:
        self.token = token
        self.upload_mode = upload_mode
        self.base_url = ""
        self.requests: list[Request] = []
        self.repos: dict[tuple[str, str], Repo] = {}
        self.commits: list[Commit] = []
        self.lfs_objects: dict[str, int] = {}  # oid → size, content checked against the oid on PUT
        self.unhandled: list[str] = []
        self._failures: dict[tuple[str, str], tuple[int, str]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ test controls
    def fail(self, endpoint: str, repo_id: str, status: int, message: str) -> None:
        """Answer ``status`` on ``endpoint`` (create/branch/preupload/lfs_batch/commit) for ``repo_id``."""
        self._failures[(endpoint, repo_id)] = (status, message)

    def committed_files(self, repo_id: str) -> dict[str, CommittedFile]:
        return {f.path: f for c in self.commits if c.repo_id == repo_id for f in c.files}

    # ------------------------------------------------------------ routing
    def routes(self) -> list[tuple[str, re.Pattern[str], Any]]:
        return [
            ("GET", re.compile(r"/api/agent-harnesses"), self.agent_harnesses),
            ("POST", re.compile(r"/api/repos/create"), self.create_repo),
            ("POST", re.compile(rf"/api/{REPO}/branch/(?P<branch>[^/]+)"), self.create_branch),
            ("POST", re.compile(r"/api/validate-yaml"), self.validate_yaml),
            ("POST", re.compile(rf"/api/{REPO}/preupload/(?P<rev>[^/]+)"), self.preupload),
            (
                "POST",
                re.compile(rf"/(?:{REPO}|(?P<mrepo>[^/]+/[^/]+))\.git/info/lfs/objects/batch"),
                self.lfs_batch,
            ),
            ("PUT", re.compile(r"/_lfs/(?P<oid>[0-9a-f]{64})"), self.lfs_put),
            ("POST", re.compile(r"/_lfs/verify/(?P<oid>[0-9a-f]{64})"), self.lfs_verify),
            ("POST", re.compile(rf"/api/{REPO}/commit/(?P<rev>[^/]+)"), self.commit),
        ]

    def _check_failure(self, endpoint: str, repo_id: str) -> None:
        if (endpoint, repo_id) in self._failures:
            raise HubError(*self._failures[(endpoint, repo_id)])

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    # ------------------------------------------------------------ endpoints
    def agent_harnesses(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        """The client's best-effort user-agent registry lookup (sent without a token): an empty registry."""
        return 200, {"standardEnvVars": [], "harnesses": {}}

    def create_repo(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        self._check_failure("create", repo_id)
        url = f"{self.base_url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo", url=url)  # as the Hub does
            private = payload.get("visibility") == "private" or payload.get("private") is True
            self.repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, private)
        return 200, {"url": url, "name": repo_id, "id": repo_id}

    def create_branch(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        repo = self._repo(m["type"], m["repo"])
        self._check_failure("branch", repo.repo_id)
        branch, start = unquote(m["branch"]), (json.loads(body or b"{}").get("startingPoint") or "main")
        with self._lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            if start not in repo.branches:
                raise HubError(404, f"Invalid rev id: {start}", "RevisionNotFound")
            repo.branches[branch] = repo.branches[start]
        return 200, {}

    def validate_yaml(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        return 200, {"errors": [], "warnings": []}

    def preupload(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        repo = self._repo(m["type"], m["repo"])
        self._check_failure("preupload", repo.repo_id)
        self._revision(repo, m["rev"])
        files = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            mode = "regular"
            if self.upload_mode == "auto" and (
                item["path"].endswith(LFS_EXTENSIONS) or b"\0" in sample or item["size"] > 10_000_000
            ):
                mode = "lfs"
            files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": None})
        return 200, {"files": files, "commitOid": repo.branches[self._revision(repo, m["rev"])]}

    def lfs_batch(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        repo = self._repo(m["type"] or "model", m["repo"] or m["mrepo"])
        self._check_failure("lfs_batch", repo.repo_id)
        payload = json.loads(body)
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "only basic uploads are supported here")
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.base_url}/_lfs/{obj['oid']}"},
                    "verify": {"href": f"{self.base_url}/_lfs/verify/{obj['oid']}"},
                }
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_put(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        if hashlib.sha256(body).hexdigest() != m["oid"]:
            raise HubError(400, "content does not match its oid")
        with self._lock:
            self.lfs_objects[m["oid"]] = len(body)
        return 200, {}

    def lfs_verify(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        payload = json.loads(body)
        if self.lfs_objects.get(m["oid"]) != payload.get("size"):
            raise HubError(404, "object not uploaded")
        return 200, {}

    def commit(self, m: re.Match[str], body: bytes, query: dict) -> tuple[int, Any]:
        repo = self._repo(m["type"], m["repo"])
        self._check_failure("commit", repo.repo_id)
        revision = self._revision(repo, m["rev"])
        summary, files = "", []
        for line in body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value["summary"]
            elif item["key"] == "file":
                content = base64.b64decode(value["content"])
                files.append(
                    CommittedFile(value["path"], hashlib.sha256(content).hexdigest(), len(content), "inline")
                )
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    raise HubError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files.append(
                    CommittedFile(value["path"], value["oid"], self.lfs_objects[value["oid"]], "lfs")
                )
            else:
                raise HubError(400, f"unsupported commit operation {item['key']}")
        oid = hashlib.sha1(body).hexdigest()
        with self._lock:
            repo.branches[revision] = oid
            self.commits.append(Commit(repo.repo_id, repo.repo_type, revision, summary, oid, files))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return 200, {
            "commitUrl": f"{self.base_url}/{prefix}{repo.repo_id}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
        }

    @staticmethod
    def _revision(repo: Repo, quoted: str) -> str:
        revision = unquote(quoted)
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return revision


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            url = urlsplit(self.path)
            body = self._body()
            auth = self.headers.get("Authorization")
            headers = {
                k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()
            }
            record = Request(
                self.command, url.path, parse_qs(url.query), headers, auth == f"Bearer {hub.token}"
            )
            with hub._lock:
                hub.requests.append(record)
            status, payload, code = 404, {"error": f"not implemented: {self.command} {url.path}"}, None
            try:
                for method, pattern, endpoint in hub.routes():
                    match = pattern.fullmatch(url.path)
                    if method == self.command and match:
                        public = endpoint in (hub.lfs_put, hub.agent_harnesses)  # sent without a token
                        if hub.token and not public and not record.token_ok:
                            raise HubError(401, "Invalid credentials in Authorization header")
                        status, payload = endpoint(match, body, parse_qs(url.query))
                        break
                else:
                    hub.unhandled.append(f"{self.command} {url.path}")
            except HubError as exc:
                status, payload, code = exc.status, {"error": exc.message, **exc.extra}, exc.code
            record.status = status
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 400:
                self.send_header("X-Error-Message", payload["error"])
                if code:
                    self.send_header("X-Error-Code", code)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    return Handler


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run ``hub`` on 127.0.0.1 at an ephemeral port in a thread for the ``with`` block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


HF_TEST_TOKEN = "hf_dsforgeTestToken" + "x7Q2" * 6  # what tests put in HF_TOKEN; never a real token
