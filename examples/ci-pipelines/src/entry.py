"""The CI product's dispatcher: every repository brings its own pipeline, as code.

A webhook (``POST /webhook`` with ``{"repo", "sha", "branch", "pr"}``) starts a pipeline run of
that repository: the dispatcher loads ``repos/<repo>/.dynwf/ci.py`` into an isolate of its own
(no network, no file system, no processes) and runs its ``Pipeline`` class as a durable workflow.
Everything the pipeline does to the outside world goes through capabilities this module owns and
passes in its ``env``, each scoped to that one repository:

- ``SANDBOX`` (:class:`Sandbox`) runs a command in a throwaway copy of the repository and returns
  its exit code and output;
- ``PULL_REQUESTS`` (:class:`PullRequests`) posts the run's comment on a pull request (here: a
  Markdown file under ``out/comments/``, standing in for the forge's API);
- ``DEPLOYMENTS`` (:class:`Deployments`) records a deployment (``out/deployments/<repo>.jsonl``).

The sandbox here is a temporary folder and a child process with a timeout, which is what a
local stand-in can offer; a hosted product would run the same calls in a container or a VM.
"""

import asyncio
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from workers import Response, RpcTarget, WorkerEntrypoint
# DynamicWorkflowBinding is imported to be exported: wrapped bindings call back through it.
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               wrap_workflow_binding)

ROOT = Path(__file__).resolve().parent.parent
REPOS = ROOT / "repos"
OUT = ROOT / "out"
PIPELINE = Path(".dynwf") / "ci.py"
REPO_NAME = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9-_]{0,99}$")
NOT_COPIED = shutil.ignore_patterns(".dynwf", ".git", "__pycache__", ".pytest_cache", "*.pyc")
MAX_OUTPUT = 8000           # characters of a command's output kept in a step's result
MAX_TIMEOUT = 600           # seconds


class Sandbox(RpcTarget):
    """Runs commands for one repository's pipeline, each in a fresh copy of the repository."""

    def __init__(self, repo):
        self._repo = REPOS / repo

    def _files(self):
        return sorted(p for p in self._repo.rglob("*") if p.is_file()
                      and not any(part in (".dynwf", ".git", "__pycache__", ".pytest_cache")
                                  for part in p.relative_to(self._repo).parts))

    async def checkout(self, sha):
        """The files of the commit: here the sample repository as it is on disk, and a hash of
        its tree, so a run can show which content its commands saw."""
        digest, files = hashlib.sha256(), self._files()
        for path in files:
            digest.update(path.relative_to(self._repo).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
        return {"sha": sha, "files": len(files), "tree": digest.hexdigest()[:16]}

    async def run(self, command, timeout=120, artifacts=None):
        """Run ``command`` (a list; ``python`` is this interpreter) in a throwaway copy of the
        repository, with ``src/`` on the import path. Returns ``exit_code``, ``output`` (stdout
        and stderr together, the last 8,000 characters), ``seconds`` and, for each path named in
        ``artifacts`` that the command produced, its size and SHA-256."""
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise ValueError("a command is a non-empty list of strings, e.g. ['python', '-m', 'pytest']")
        if command[0] != "python":
            raise PermissionError(f"the sandbox runs python commands only, not {command[0]!r}")
        timeout = min(max(float(timeout), 1.0), MAX_TIMEOUT)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ci-sandbox-") as scratch:
            workdir = Path(scratch) / self._repo.name
            shutil.copytree(self._repo, workdir, ignore=NOT_COPIED)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch,
                   "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
                   "PYTHONPATH": str(workdir / "src"), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                   "PIP_NO_INPUT": "1", "CI": "true",
                   # pytest plugins installed beside dynwf are not the repository's: a clean
                   # CI image would not have them (and they cost a second per run).
                   "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
            process = await asyncio.create_subprocess_exec(
                sys.executable, *command[1:], cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                output, _ = await asyncio.wait_for(process.communicate(), timeout)
                exit_code = process.returncode
            except asyncio.TimeoutError:
                process.kill()
                output, _ = await process.communicate()
                output += f"\n[sandbox] killed after {timeout:g} seconds\n".encode()
                exit_code = 124
            produced = {}
            for name in artifacts or []:
                path = (workdir / name).resolve()
                if path.is_file() and path.is_relative_to(workdir.resolve()):
                    data = path.read_bytes()
                    produced[name] = {"bytes": len(data),
                                      "sha256": hashlib.sha256(data).hexdigest()[:16]}
        text = output.decode("utf-8", errors="replace")
        return {"command": " ".join(command), "exit_code": exit_code,
                "output": text[-MAX_OUTPUT:], "seconds": round(time.monotonic() - started, 2),
                "artifacts": produced}


class PullRequests(RpcTarget):
    """The forge's pull-request API, for one repository: a comment is a Markdown file."""

    def __init__(self, repo):
        self._repo = repo

    async def comment(self, pr, body):
        """Post (or update: one comment per pull request, as CI bots keep theirs) the comment."""
        if not isinstance(pr, int) or pr <= 0:
            raise ValueError(f"pull request numbers are positive ints, not {pr!r}")
        path = OUT / "comments" / f"{self._repo}-pr-{pr}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(body), encoding="utf-8")
        return {"pr": pr, "file": path.relative_to(ROOT).as_posix()}


class Deployments(RpcTarget):
    """Deployments of one repository, one JSON line each; deploying the same commit to the
    same environment again returns the existing deployment (a retried step deploys once)."""

    def __init__(self, repo):
        self._repo = repo

    async def deploy(self, environment, sha, artifact):
        path = OUT / "deployments" / f"{self._repo}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                if record["environment"] == environment and record["sha"] == sha:
                    return record
        record = {"environment": environment, "sha": sha, "artifact": artifact,
                  "url": f"https://{environment}.{self._repo}.example"}
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return record


def repositories():
    return sorted(p.name for p in REPOS.iterdir() if (p / PIPELINE).is_file())


def has_pipeline(repo):
    return bool(isinstance(repo, str) and REPO_NAME.fullmatch(repo)) \
        and (REPOS / repo / PIPELINE).is_file()


def load_pipeline(env, repo):
    if not has_pipeline(repo):
        raise LookupError(f"no repository {repo!r} with a pipeline: repos/{repo}/.dynwf/ci.py "
                          f"does not exist (repositories: {', '.join(repositories())})")

    async def code():
        return {"compatibility_date": "2026-04-01", "main_module": "ci.py",
                "modules": {"ci.py": (REPOS / repo / PIPELINE).read_text(encoding="utf-8")},
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": repo}),
                        "SANDBOX": Sandbox(repo), "PULL_REQUESTS": PullRequests(repo),
                        "DEPLOYMENTS": Deployments(repo)},
                "global_outbound": None}
    return env.LOADER.get(f"ci-{repo}", code)


DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_pipeline(ctx.env, ctx.metadata["tenantId"]).get_entrypoint("Pipeline"))


class Default(WorkerEntrypoint):
    """``POST /webhook`` ``{"repo", "sha", "branch", "pr"}`` starts a pipeline run;
    ``POST /approve`` ``{"repo", "id", "approved"}`` answers a run's deploy approval."""

    async def fetch(self, request):
        path = "/" + request.url.split("://", 1)[-1].partition("/")[2].partition("?")[0]
        if request.method != "POST" or path not in ("/webhook", "/approve"):
            return Response.json({"error": "POST /webhook or POST /approve",
                                  "repositories": repositories()}, status=404)
        body = await request.json()
        repo = body.get("repo")
        if not has_pipeline(repo):
            return Response.json({"error": f"no pipeline for repository {repo!r}",
                                  "repositories": repositories()}, status=404)
        runs = wrap_workflow_binding({"tenantId": repo})
        if path == "/approve":
            instance = await runs.get(body["id"])
            await instance.send_event({"type": "deploy-approval",
                                       "payload": {"approved": bool(body.get("approved")),
                                                   "by": body.get("by", "someone")}})
            return Response.json({"id": instance.id, "repo": repo})
        push = {"repo": repo, "sha": str(body.get("sha", "HEAD")),
                "branch": str(body.get("branch", "main")), "pr": body.get("pr")}
        instance = await runs.create({"params": push})
        return Response.json({"id": instance.id, **push})
