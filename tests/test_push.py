"""`xlmr push` / `xlmr convert --push-to-hub` end to end against a local stand-in for the Hub API.

The server answers the routes huggingface_hub's `create_repo`, `create_branch` and `create_commit`
use (validate-yaml, preupload, the LFS batch API and uploads, the NDJSON commit) on 127.0.0.1. The
client runs in a subprocess pointed at it through `HF_ENDPOINT`, with Xet disabled
(`HF_HUB_DISABLE_XET=1`) so large files take the plain LFS path the server implements.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conversion import convert_fairseq_checkpoint
from tests.support.processes import REPO_ROOT

TOKEN = "hf_SecretTestToken1234567890abcdefXYZ"
LFS_SUFFIXES = (".safetensors", ".model", ".json")  # tokenizer.json is big on real repos; LFS path gets exercised


class FakeHub:
    """State of the stand-in Hub: repos, branches, commits, uploaded LFS objects and every request seen."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.commits: list[dict] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.lock = threading.Lock()


def make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # keep the test output clean
            pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, payload: dict | None = None):
            data = json.dumps(payload or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _endpoint(self) -> str:
            return f"http://{self.headers['Host']}"

        def do_POST(self):
            body = self._body()
            path = self.path.split("?")[0]
            with hub.lock:
                hub.requests.append(("POST", self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"error": "Invalid credentials in Authorization header"})
            if path == "/api/repos/create":
                request = json.loads(body)
                repo_id = (
                    f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
                )
                if repo_id in hub.repos:
                    # The Hub answers a re-create with 409 and the repo's URL (create_repo(exist_ok=True) reads it).
                    return self._reply(
                        409, {"error": "You already created this model repo", "url": f"{self._endpoint()}/{repo_id}"}
                    )
                hub.repos[repo_id] = {"visibility": request.get("visibility"), "branches": {"main": {}}}
                return self._reply(200, {"url": f"{self._endpoint()}/{repo_id}"})
            if path == "/api/validate-yaml":
                return self._reply(200, {"errors": [], "warnings": []})
            match = re.fullmatch(r"/api/models/(.+?/.+?)/branch/(.+)", path)
            if match:
                repo_id, branch = match.groups()
                branches = hub.repos[repo_id]["branches"]
                if branch in branches:
                    return self._reply(409, {"error": "Reference already exists"})
                branches[branch] = dict(branches["main"])
                return self._reply(200, {})
            match = re.fullmatch(r"/api/models/(.+?/.+?)/preupload/(.+)", path)
            if match:
                files = json.loads(body)["files"]
                modes = [
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                        "shouldIgnore": False,
                    }
                    for f in files
                ]
                return self._reply(200, {"files": modes})
            match = re.fullmatch(r"/(.+?/.+?)\.git/info/lfs/objects/batch", path)
            if match:
                objects = json.loads(body)["objects"]
                actions = [
                    {
                        "oid": o["oid"],
                        "size": o["size"],
                        "authenticated": True,
                        "actions": {"upload": {"href": f"{self._endpoint()}/lfs-upload/{o['oid']}"}},
                    }
                    for o in objects
                ]
                return self._reply(200, {"transfer": "basic", "objects": actions})
            match = re.fullmatch(r"/api/models/(.+?/.+?)/commit/(.+)", path)
            if match:
                return self._commit(*match.groups(), body)
            self._reply(404, {"error": f"no route {path}"})

        def _commit(self, repo_id: str, revision: str, body: bytes):
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header, files = lines[0], {}
            assert header["key"] == "header"
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    files[value["path"]] = hub.lfs_objects[value["oid"]]
            create_pr = "create_pr=1" in self.path
            branch = revision.replace("%2F", "/")
            hub.commits.append(
                {
                    "repo_id": repo_id,
                    "revision": branch,
                    "summary": header["value"]["summary"],
                    "files": files,
                    "create_pr": create_pr,
                }
            )
            if not create_pr:
                hub.repos[repo_id]["branches"].setdefault(branch, {}).update(files)
            oid = hashlib.sha1(body).hexdigest()
            number = len(hub.commits)
            return self._reply(
                200,
                {
                    "commitUrl": f"{self._endpoint()}/{repo_id}/commit/{oid}",
                    "commitOid": oid,
                    "pullRequestUrl": f"{self._endpoint()}/{repo_id}/discussions/{number}" if create_pr else None,
                },
            )

        def do_PUT(self):
            body = self._body()
            with hub.lock:
                hub.requests.append(("PUT", self.path, self.headers.get("Authorization")))
            match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", self.path)
            if not match or hashlib.sha256(body).hexdigest() != match.group(1):
                return self._reply(400, {"error": "sha256 mismatch"})
            hub.lfs_objects[match.group(1)] = body
            self._reply(200, {})

    return Handler


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(hub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    yield hub
    server.shutdown()
    server.server_close()


def run_xlmr(hub: FakeHub, *arguments, home, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_VERBOSITY": "debug",  # the token must stay out of even the most verbose logs
        "HF_HOME": str(home),
        "NO_PROXY": "127.0.0.1",
    }
    return subprocess.run(
        [sys.executable, "-m", "modeling_xlmr.cli", *map(str, arguments)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )


def folder_files(folder) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def converted(tmp_path, fairseq_checkpoint):
    source = fairseq_checkpoint(classification_heads={"mnli": 3})
    return convert_fairseq_checkpoint(source, tmp_path / "out", max_shard_size="100KB", log=lambda message: None).output


def test_push_uploads_the_folder_byte_for_byte_in_one_commit(tmp_path, fake_hub, converted):
    result = run_xlmr(
        fake_hub,
        "push",
        converted,
        "someone/xlmr-tiny",
        "--private",
        "--commit-message",
        "Add tiny XLM-R",
        home=tmp_path / "hf",
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert fake_hub.repos["someone/xlmr-tiny"]["visibility"] == "private"
    assert len(fake_hub.commits) == 1
    commit = fake_hub.commits[0]
    assert commit["summary"] == "Add tiny XLM-R" and commit["revision"] == "main"
    expected = folder_files(converted)
    assert commit["files"] == expected
    assert any(name.endswith(".safetensors") for name in expected) and fake_hub.lfs_objects  # the LFS path ran
    assert len([name for name in expected if name.startswith("model-")]) > 1  # sharded weights arrived too
    assert result.stdout.strip().startswith(f"{fake_hub.endpoint}/someone/xlmr-tiny/commit/")
    # The token did reach the server (authenticated requests), only never the output.
    assert {auth for _, _, auth in fake_hub.requests if auth} == {f"Bearer {TOKEN}"}


def test_push_to_a_new_branch_and_as_a_pull_request(tmp_path, fake_hub, converted):
    first = run_xlmr(fake_hub, "push", converted, "someone/xlmr-tiny", "--revision", "fp32", home=tmp_path / "hf")
    assert first.returncode == 0, first.stderr
    assert fake_hub.commits[-1]["revision"] == "fp32"
    assert fake_hub.repos["someone/xlmr-tiny"]["branches"]["fp32"] == folder_files(converted)
    assert fake_hub.repos["someone/xlmr-tiny"]["visibility"] != "private"

    second = run_xlmr(fake_hub, "push", converted, "someone/xlmr-tiny", "--create-pr", home=tmp_path / "hf")
    assert second.returncode == 0, second.stderr
    assert fake_hub.commits[-1]["create_pr"] and fake_hub.commits[-1]["files"] == folder_files(converted)
    assert second.stdout.strip() == f"{fake_hub.endpoint}/someone/xlmr-tiny/discussions/2"
    assert TOKEN not in first.stdout + first.stderr + second.stdout + second.stderr


def test_convert_with_push_to_hub(tmp_path, fake_hub, fairseq_checkpoint):
    source = fairseq_checkpoint(classification_heads={"mnli": 3})
    output = tmp_path / "pushed"
    result = run_xlmr(
        fake_hub,
        "convert",
        source,
        output,
        "--labels",
        "contradiction,neutral,entailment",
        "--push-to-hub",
        "someone/xlmr-mnli",
        home=tmp_path / "hf",
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert fake_hub.commits[0]["files"] == folder_files(output)
    assert 'model_id = "someone/xlmr-mnli"' in (output / "README.md").read_text()


def test_push_refuses_a_folder_that_is_not_a_converted_repo(tmp_path, fake_hub):
    (tmp_path / "empty").mkdir()
    result = run_xlmr(fake_hub, "push", tmp_path / "empty", "someone/x", home=tmp_path / "hf")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("xlmr push: error:") and "config.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert fake_hub.requests == []


def test_a_rejected_token_gives_one_line_without_the_token(tmp_path, fake_hub, converted):
    wrong = "hf_WrongTokenThatMustNotBePrinted0987"
    result = run_xlmr(fake_hub, "push", converted, "someone/xlmr-tiny", home=tmp_path / "hf", token=wrong)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("xlmr push: error:")]
    assert len(errors) == 1 and "401" in errors[0] and "Traceback" not in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert fake_hub.commits == []


def test_push_leaves_out_hidden_folders_and_training_state(tmp_path, fake_hub, converted):
    """What `hf download --local-dir`, git, Jupyter and Trainer leave in a folder never reaches the Hub."""
    extras = [
        ".git/HEAD",
        ".cache/huggingface/download/model.safetensors.metadata",
        ".ipynb_checkpoints/notes-checkpoint.ipynb",
        "checkpoint-500/optimizer.pt",
        "checkpoint-500/model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state_0.pth",
    ]
    expected = folder_files(converted)
    for name in extras:
        (converted / name).parent.mkdir(parents=True, exist_ok=True)
        (converted / name).write_bytes(b"not for the Hub")
    result = run_xlmr(fake_hub, "push", converted, "someone/xlmr-tiny", home=tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert fake_hub.commits[-1]["files"] == expected
    assert f"left out {len(extras)} hidden or training-state files" in result.stderr
