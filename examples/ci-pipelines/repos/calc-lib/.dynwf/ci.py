"""calc-lib's pipeline: checkout, install, then lint, test and build in parallel; a comment on
the pull request; and on main, a release to the package index once someone approves it.

The dispatcher runs this file as a durable workflow with three capabilities in ``self.env``:
``SANDBOX`` (commands in a throwaway copy of this repository), ``PULL_REQUESTS`` and
``DEPLOYMENTS``. Every step's result is persisted: waiting a day for the deploy approval holds
no machine, and a restart resumes after the last finished step.
"""

import asyncio

from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError

REPO = "calc-lib"

ARTIFACT = "calc-lib-1.2.0.zip"


def reason(output, lines=6):
    """The last lines a command printed: what a failed step says about itself."""
    return "\n".join(output.strip().splitlines()[-lines:]) or "no output"


class Pipeline(WorkflowEntrypoint):
    async def run(self, event, step):
        push = event["payload"]          # the webhook: sha, branch, pr
        sha, branch = push.get("sha", "HEAD"), push.get("branch", "main")
        sandbox = self.env.SANDBOX

        @step.do("checkout")
        async def checkout():
            return await sandbox.checkout(sha)

        @step.do("install")
        async def install():
            # Offline: the requirements must already be satisfied by the image. A failed install
            # fails its step, with pip's own words, and is not worth retrying.
            result = await sandbox.run(["python", "-m", "pip", "install", "--no-index",
                                        "--dry-run", "-q", "-r", "requirements.txt"])
            if result["exit_code"] != 0:
                raise NonRetryableError("the requirements did not install: "
                                        + reason(result["output"]))
            return result

        tree = await checkout()
        try:
            await install()
        except NonRetryableError as exc:
            return {"repo": REPO, "conclusion": "failure", "failed": ["install"],
                    "reason": str(exc)}

        @step.do("lint")
        async def lint():
            return await sandbox.run(["python", "-m", "compileall", "-q", "src", "tests"])

        @step.do("test")
        async def test():
            return await sandbox.run(["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"])

        @step.do("build")
        async def build():
            return await sandbox.run(["python", "-m", "zipfile", "-c", ARTIFACT, "src/calc"],
                                     artifacts=[ARTIFACT])

        # Three steps started together run together; each is persisted on its own.
        checks = dict(zip(["lint", "test", "build"], await asyncio.gather(lint(), test(), build())))
        failed = [name for name, result in checks.items() if result["exit_code"] != 0]
        conclusion = "failure" if failed else "success"

        summary = {"repo": REPO, "sha": sha, "branch": branch,
                   "tree": tree["tree"], "conclusion": conclusion, "failed": failed,
                   "checks": {name: "failed" if name in failed else "passed" for name in checks},
                   "artifact": checks["build"]["artifacts"].get(ARTIFACT)}

        if push.get("pr"):
            @step.do("comment on pull request")
            async def comment():
                lines = [f"### calc-lib CI: {conclusion} at `{sha}`", "",
                         "| check | result | seconds |", "|---|---|---|"]
                for name, result in checks.items():
                    mark = "failed" if name in failed else "passed"
                    lines.append(f"| {name} | {mark} | {result['seconds']} |")
                for name in failed:
                    lines += ["", f"<details><summary>{name} output</summary>", "", "```",
                              checks[name]["output"].strip(), "```", "</details>"]
                return await self.env.PULL_REQUESTS.comment(push["pr"], "\n".join(lines) + "\n")

            summary["comment"] = (await comment())["file"]

        if branch != "main" or failed:
            return summary

        try:
            approval = await step.wait_for_event("deploy approval", "deploy-approval",
                                                 timeout="24 hours")
        except Exception:        # a day passed without a decision: the release is not made
            return {**summary, "deploy": {"skipped": "no approval within 24 hours"}}
        if not approval["payload"].get("approved"):
            return {**summary, "deploy": {"skipped": "rejected",
                                          "by": approval["payload"].get("by")}}

        @step.do("publish", config={"retries": {"limit": 3, "delay": "30 seconds",
                                                "backoff": "exponential"}})
        async def publish():
            return await self.env.DEPLOYMENTS.deploy("package-index", sha,
                                                     summary["artifact"])

        return {**summary, "deploy": {**await publish(),
                                      "approved_by": approval["payload"].get("by")}}
