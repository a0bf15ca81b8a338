"""textkit's pipeline: the same shape as most Python libraries' (install, then lint, test and
build at once), with its tests split in two runs so a slow suite shows up on its own, and a
comment on the pull request listing every failing test by name.

Deploys (to the docs site) only from main, only when everything passed, and only once someone
approves within a day.
"""

import asyncio

from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError

REPO = "textkit"


def reason(output, lines=6):
    """The last lines a command printed: what a failed step says about itself."""
    return "\n".join(output.strip().splitlines()[-lines:]) or "no output"


def failing_tests(output):
    """The ``FAILED tests/...::name`` lines pytest prints in its short summary."""
    return [line.split(" ")[1] for line in output.splitlines() if line.startswith("FAILED ")]


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
            result = await sandbox.run(["python", "-m", "pip", "install", "--no-index",
                                        "--dry-run", "-q", "-r", "requirements.txt"])
            if result["exit_code"] != 0:   # a failed install fails its step, in pip's words
                raise NonRetryableError("the requirements did not install: "
                                        + reason(result["output"]))
            return result

        await checkout()
        try:
            await install()
        except NonRetryableError as exc:
            return {"repo": REPO, "conclusion": "failure", "failed": ["install"],
                    "reason": str(exc)}

        @step.do("lint")
        async def lint():
            return await sandbox.run(["python", "-m", "tabnanny", "src", "tests"])

        @step.do("unit tests")
        async def unit_tests():
            return await sandbox.run(["python", "-m", "pytest", "-q", "-rf", "-p",
                                      "no:cacheprovider", "tests"], timeout=60)

        @step.do("build docs")
        async def build_docs():
            return await sandbox.run(["python", "-m", "pydoc", "-w", "textkit"],
                                     artifacts=["textkit.html"])

        names = ["lint", "unit tests", "build docs"]
        checks = dict(zip(names, await asyncio.gather(lint(), unit_tests(), build_docs())))
        failed = [name for name, result in checks.items() if result["exit_code"] != 0]
        broken = failing_tests(checks["unit tests"]["output"])
        summary = {"repo": REPO, "sha": sha, "branch": branch,
                   "conclusion": "failure" if failed else "success", "failed": failed,
                   "failing_tests": broken,
                   "checks": {name: "failed" if name in failed else "passed" for name in checks}}

        if push.get("pr"):
            @step.do("comment on pull request")
            async def comment():
                if failed:
                    body = [f"textkit CI failed at `{sha}`: {', '.join(failed)}.", ""]
                    body += [f"- `{test}`" for test in broken] or ["(no test names reported)"]
                else:
                    body = [f"textkit CI passed at `{sha}`."]
                return await self.env.PULL_REQUESTS.comment(push["pr"], "\n".join(body) + "\n")

            summary["comment"] = (await comment())["file"]

        if branch != "main" or failed:
            return summary
        try:
            approval = await step.wait_for_event("deploy approval", "deploy-approval",
                                                 timeout="24 hours")
        except Exception:
            return {**summary, "deploy": {"skipped": "no approval within 24 hours"}}
        if not approval["payload"].get("approved"):
            return {**summary, "deploy": {"skipped": "rejected"}}

        @step.do("deploy docs")
        async def deploy_docs():
            artifact = checks["build docs"]["artifacts"].get("textkit.html")
            return await self.env.DEPLOYMENTS.deploy("docs", sha, artifact)

        return {**summary, "deploy": await deploy_docs()}
